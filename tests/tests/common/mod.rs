//! Helpers shared by the wire-level test files (`mod common;` in each). Not a test target:
//! Cargo only builds the files directly under `tests/tests/`.

#![allow(dead_code)] // each test file uses a different subset

use std::time::{Duration, Instant};

use crier_engine::EngineConfig;
use crier_server::ServerConfig;
use crier_tests::{Options, TestServer, http};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// A server whose connects are held at most `timeout_secs`.
pub(crate) async fn server(timeout_secs: u64) -> TestServer {
    TestServer::start_with(Options {
        engine: Some(EngineConfig { timeout_secs, ..EngineConfig::default() }),
        ..Options::default()
    })
    .await
}

/// A server with the given edge settings and a 2 s timeout.
pub(crate) async fn server_with(server: ServerConfig) -> TestServer {
    TestServer::start_with(Options {
        engine: Some(EngineConfig { timeout_secs: 2, ..EngineConfig::default() }),
        server: Some(server),
        ..Options::default()
    })
    .await
}

/// POSTs a JSON body, asserts HTTP 200 and a JSON array reply, and returns the array.
pub(crate) async fn send(url: &str, body: Value) -> Vec<Value> {
    let (status, reply) = crier_tests::post_json(url, &body).await;
    assert_eq!(status, 200, "POST {body} -> {status} {reply}");
    match reply {
        Value::Array(items) => items,
        other => panic!("reply to {body} is not an array: {other}"),
    }
}

/// POSTs one message and returns its single reply.
pub(crate) async fn send1(url: &str, body: Value) -> Value {
    let mut r = send(url, body.clone()).await;
    assert_eq!(r.len(), 1, "one reply expected for {body}: {r:?}");
    r.remove(0)
}

/// A raw POST: optional content type, any body. Returns status, headers and body text.
pub(crate) async fn raw_post(
    url: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, HeaderMap, String) {
    let mut req = http().post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.expect("POST");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

/// A raw GET with extra headers. Returns status, headers and body text.
pub(crate) async fn raw_get(url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
    let mut req = http().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("GET");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap_or_default())
}

/// A header's value as a string ("" if absent).
pub(crate) fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Publishes `data` to `channel` anonymously and asserts success.
pub(crate) async fn publish(url: &str, channel: &str, data: Value) {
    let r = send1(url, json!({"channel": channel, "data": data})).await;
    assert_eq!(r["successful"], json!(true), "publish to {channel}: {r}");
}

/// The elements of a connect's reply array that are delivered messages: everything but
/// the `/meta/connect` reply (deliveries are never on a meta channel).
pub(crate) fn deliveries(reply: &[Value]) -> Vec<Value> {
    reply.iter().filter(|m| m["channel"] != "/meta/connect").cloned().collect()
}

/// A connect that is never held (`advice.timeout: 0`); asserts success and returns the
/// messages delivered with it.
pub(crate) async fn poll(url: &str, id: &str) -> Vec<Value> {
    let r = send(
        url,
        json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":0}}),
    )
    .await;
    assert_eq!(r[0]["channel"], "/meta/connect", "{r:?}");
    assert_eq!(r[0]["successful"], json!(true), "{r:?}");
    deliveries(&r)
}

/// A connect that may be held; returns the whole reply array and how long it took.
pub(crate) async fn timed_connect(url: &str, id: &str, extra: Value) -> (Vec<Value>, Duration) {
    let mut m = json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","id":"c"});
    if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
        m.extend(extra);
    }
    let t = Instant::now();
    let r = send(url, m).await;
    (r, t.elapsed())
}

/// A gauge or counter from `/metrics` (0 if absent).
pub(crate) async fn metric(server: &TestServer, name: &str) -> i64 {
    let text = http().get(server.at("/metrics")).send().await.expect("GET /metrics").text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until `name` on `/metrics` equals `want`.
pub(crate) async fn wait_metric(server: &TestServer, name: &str, want: i64) {
    let ok = crier_tests::eventually(Duration::from_secs(5), || async { metric(server, name).await == want }).await;
    assert!(ok, "{name} never reached {want} (now {})", metric(server, name).await);
}

/// A handshaken client whose first (immediate) connect is done and that is subscribed to
/// `sub`; later connects on it are held.
pub(crate) async fn subscriber(url: &str, sub: &str) -> String {
    let id = crier_tests::connected_client(url).await;
    crier_tests::subscribe(url, &id, sub).await;
    id
}

/// Proves a negative without sleeping: publishes a fence message to `fence` (which the
/// client must be subscribed to), polls until the fence arrives, and returns everything
/// delivered before it (callers usually assert that is empty).
pub(crate) async fn until_fence(url: &str, id: &str, fence: &str) -> Vec<Value> {
    publish(url, fence, json!("fence")).await;
    let mut got = Vec::new();
    for _ in 0..50 {
        for m in poll(url, id).await {
            if m["channel"] == fence {
                return got;
            }
            got.push(m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fence on {fence} never arrived; got {got:?}");
}
