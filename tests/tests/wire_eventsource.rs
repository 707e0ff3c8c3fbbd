//! The EventSource transport on the wire: faye-behaviour.md §6.3 item 39 (and item 12's
//! immediate `eventsource` connect over POST), read as a raw streaming body.

mod common;

use std::time::Duration;

use common::{header, publish, raw_get, server_with, timed_connect};
use crier_server::ServerConfig;
use crier_tests::{handshake, http, subscribe};
use futures::StreamExt;
use serde_json::{Value, json};

/// Reads the event stream until `want` events (`data:` lines or `:` comments, as chosen by
/// `pick`) have arrived, within `limit`. Returns them and all text read.
async fn read_events<B: AsRef<[u8]> + std::fmt::Debug>(
    body: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    text: &mut String,
    want: usize,
    pick: fn(&str) -> Option<String>,
    limit: Duration,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let events: Vec<String> = text.split("\r\n\r\n").filter_map(pick).collect();
        // Only count complete events (followed by the blank line).
        let complete = if text.ends_with("\r\n\r\n") { events.len() } else { events.len().saturating_sub(1) };
        if complete >= want {
            return events.into_iter().take(want).collect();
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(chunk.as_ref())),
            other => panic!("stream ended or timed out ({other:?}); read so far: {text:?}"),
        }
    }
}

fn data_event(e: &str) -> Option<String> {
    e.strip_prefix("data: ").map(str::to_owned)
}

fn comment_event(e: &str) -> Option<String> {
    (e == ":").then(|| e.to_owned())
}

// §6.3 item 39.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_stream_carries_deliveries() {
    let s = server_with(ServerConfig { eventsource_ping_secs: 1, ..ServerConfig::default() }).await;
    let url = s.url();
    let id = handshake(&url).await;
    subscribe(&url, &id, "/es/**").await;
    // Connects come by POST with connectionType eventsource and are never held (the first
    // and every later one), with advice to wait the timeout between them.
    for _ in 0..2 {
        let (r, took) = timed_connect(&url, &id, json!({"connectionType":"eventsource"})).await;
        assert!(took < Duration::from_millis(1000), "{took:?}");
        assert_eq!(r[0]["successful"], json!(true), "{r:?}");
        assert_eq!(r[0]["advice"], json!({"reconnect":"retry","interval":2000,"timeout":0}));
    }

    let resp =
        http().get(format!("{url}/{id}")).header("accept", "text/event-stream").send().await.expect("GET event stream");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(resp.headers(), "content-type"), "text/event-stream");
    assert_eq!(header(resp.headers(), "cache-control"), "no-cache, no-store");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let first = body.next().await.expect("first chunk").expect("chunk");
    text.push_str(&String::from_utf8_lossy(&first));
    assert!(text.starts_with("retry: 5000\r\n\r\n"), "{text:?}");

    publish(&url, "/es/a", json!({"n":1})).await;
    let events = read_events(&mut body, &mut text, 1, data_event, Duration::from_secs(3)).await;
    let parsed: Value = serde_json::from_str(&events[0]).expect("event data is JSON");
    assert_eq!(parsed, json!([{"channel":"/es/a","data":{"n":1}}]));
    publish(&url, "/es/b/c", json!("two")).await;
    let events = read_events(&mut body, &mut text, 2, data_event, Duration::from_secs(3)).await;
    let parsed: Value = serde_json::from_str(&events[1]).expect("event data is JSON");
    assert_eq!(parsed, json!([{"channel":"/es/b/c","data":"two"}]));

    // Keep-alive comments every `eventsource_ping_secs`.
    let pings = read_events(&mut body, &mut text, 1, comment_event, Duration::from_secs(3)).await;
    assert_eq!(pings, [":"]);

    // Ending the session ends the stream.
    let r = common::send1(&url, json!({"channel":"/meta/disconnect","clientId":id})).await;
    assert_eq!(r["successful"], json!(true));
    let ended =
        tokio::time::timeout(Duration::from_secs(3), async { while let Some(Ok(_)) = body.next().await {} }).await;
    assert!(ended.is_ok(), "stream still open after disconnect");
}

// No stream, and no state, for a client id this server did not issue (Faye opens one for
// any id; faye-behaviour.md §2.12 is why Crier refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_for_unknown_client_is_refused() {
    let s = server_with(ServerConfig::default()).await;
    for id in ["z".repeat(31), "__proto__".to_owned()] {
        let (status, h, body) = raw_get(&format!("{}/{id}", s.url()), &[("accept", "text/event-stream")]).await;
        assert_eq!(status, 400, "{id}");
        assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");
        assert_eq!(body, "Bad request: unknown client");
    }
}
