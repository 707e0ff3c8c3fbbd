//! The `/service` forwarder against a real HTTP app: the request it sends, each kind of
//! answer and failure, time-outs and the in-flight bound.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{App, Reply, black_hole_url, closed_url};
use crier_engine::{Extension, Identity, RequestContext, RequestInfo, Transport};
use crier_hooks::{ServiceForwarder, ServiceRoute};
use crier_protocol::Message;
use serde_json::{Value, json};

fn route(channel: &str, url: &str) -> ServiceRoute {
    ServiceRoute { channel: channel.to_owned(), url: url.to_owned(), ..ServiceRoute::default() }
}

fn forwarder(routes: &[ServiceRoute]) -> ServiceForwarder {
    ServiceForwarder::new(routes, crier_hooks::client().expect("client")).expect("valid routes")
}

fn publish(channel: &str, data: Value) -> Message {
    let mut m = Message::new();
    m.set("channel", channel);
    m.set("data", data);
    m.set("id", "7");
    m.set("clientId", "abc123");
    m
}

fn ctx(user: Option<&str>) -> RequestContext {
    let mut c = RequestContext::new(Transport::LongPolling, RequestInfo::default());
    c.identity = user.map(|u| Arc::new(Identity { user: Some(u.to_owned()), ..Identity::default() }));
    c
}

/// The forwarder's answer to a publish on `channel` (panics if it does not handle it).
async fn call(f: &ServiceForwarder, channel: &str, data: Value) -> Result<Value, String> {
    f.service(&publish(channel, data), &ctx(None)).await.expect("handled")
}

fn metric(f: &ServiceForwarder, name: &str) -> i64 {
    f.metrics().snapshot().into_iter().find(|(n, _, _)| *n == name).map(|(_, _, v)| v).expect("metric exists")
}

#[tokio::test]
async fn the_app_gets_the_publish_and_its_data_is_the_reply() {
    let app = App::start(|_, body| Reply::json(json!({"data": {"echo": body["data"], "user": body["user"]}}))).await;
    let mut r = route("/service/rpc/**", &app.url);
    r.headers = BTreeMap::from([("authorization".to_owned(), "Bearer app-secret".to_owned())]);
    let f = forwarder(&[r]);
    let mut m = publish("/service/rpc/echo", json!({"q": [1, 2.5, "ü"]}));
    m.set("ext", json!({"trace": "t1"}));
    let answer = f.service(&m, &ctx(Some("u42"))).await.expect("handled");
    assert_eq!(answer, Ok(json!({"echo": {"q": [1, 2.5, "ü"]}, "user": "u42"})));
    let seen = app.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body,
        json!({
            "channel": "/service/rpc/echo",
            "data": {"q": [1, 2.5, "ü"]},
            "clientId": "abc123",
            "id": "7",
            "user": "u42",
            "ext": {"trace": "t1"},
        })
    );
    assert_eq!(seen[0].headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer app-secret"));
    assert_eq!(seen[0].headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    assert_eq!(metric(&f, "crier_hooks_service_forwarded_total"), 1);
    assert_eq!(metric(&f, "crier_hooks_service_failed_total"), 0);
}

#[tokio::test]
async fn only_matching_channels_are_handled_and_the_first_route_wins() {
    let a = App::start(|_, _| Reply::json(json!({"data": "a"}))).await;
    let b = App::start(|_, _| Reply::json(json!({"data": "b"}))).await;
    let f = forwarder(&[route("/service/rpc/special", &a.url), route("/service/rpc/*", &b.url)]);
    assert_eq!(call(&f, "/service/rpc/special", json!(1)).await, Ok(json!("a")));
    assert_eq!(call(&f, "/service/rpc/other", json!(1)).await, Ok(json!("b")));
    for unhandled in ["/service/rpc/deep/er", "/service/other", "/chat/room"] {
        assert!(f.service(&publish(unhandled, json!(1)), &ctx(None)).await.is_none(), "{unhandled}");
    }
}

#[tokio::test]
async fn app_errors_become_bayeux_errors() {
    let app = App::start(|_, body| match body["data"].as_str() {
        Some("plain") => Reply::json(json!({"error": "No such order"})),
        Some("bayeux") => Reply::json(json!({"error": "403::Not your order"})),
        Some("null-data") => Reply::json(json!({"data": null})),
        Some("status") => Reply::status(503),
        Some("not-json") => Reply { status: 200, body: "<html>".to_owned(), delay: Duration::ZERO },
        Some("no-fields") => Reply::json(json!({"result": 1})),
        _ => Reply::json(json!({"data": "big".repeat(100)})),
    })
    .await;
    let f = forwarder(&[ServiceRoute { max_response_bytes: 100, ..route("/service/rpc/**", &app.url) }]);
    let ch = "/service/rpc/orders";
    let cases = [
        ("plain", Err("407:/service/rpc/orders:No such order")),
        ("bayeux", Err("403::Not your order")),
        ("null-data", Ok(Value::Null)),
        ("status", Err("500:/service/rpc/orders:Service unavailable")),
        ("not-json", Err("500:/service/rpc/orders:Invalid service answer")),
        ("no-fields", Err("500:/service/rpc/orders:Invalid service answer")),
        ("too-large", Err("500:/service/rpc/orders:Invalid service answer")),
    ];
    for (data, want) in cases {
        assert_eq!(call(&f, ch, json!(data)).await, want.map_err(str::to_owned), "{data}");
    }
    assert_eq!(metric(&f, "crier_hooks_service_forwarded_total"), 7);
    assert_eq!(metric(&f, "crier_hooks_service_app_errors_total"), 2);
    assert_eq!(metric(&f, "crier_hooks_service_failed_total"), 4);
}

#[tokio::test]
async fn a_slow_or_absent_app_fails_the_call_in_time() {
    let slow = App::start(|_, _| Reply::json(json!({"data": 1})).after(Duration::from_secs(5))).await;
    let hole = black_hole_url().await;
    let closed = closed_url().await;
    let f = forwarder(&[
        ServiceRoute { timeout_ms: 200, ..route("/service/slow", &slow.url) },
        ServiceRoute { timeout_ms: 200, ..route("/service/hole", &hole) },
        route("/service/closed", &closed),
    ]);
    for (ch, want) in [
        ("/service/slow", "500:/service/slow:Service timed out"),
        ("/service/hole", "500:/service/hole:Service timed out"),
        ("/service/closed", "500:/service/closed:Service unavailable"),
    ] {
        let started = Instant::now();
        assert_eq!(call(&f, ch, json!(1)).await, Err(want.to_owned()));
        assert!(started.elapsed() < Duration::from_secs(2), "{ch} took {:?}", started.elapsed());
    }
    assert_eq!(metric(&f, "crier_hooks_service_timeouts_total"), 2);
    assert_eq!(metric(&f, "crier_hooks_service_failed_total"), 3);
    assert_eq!(metric(&f, "crier_hooks_service_in_flight"), 0);
}

#[tokio::test]
async fn calls_beyond_max_in_flight_are_refused_at_once() {
    let app = App::start(|_, _| Reply::json(json!({"data": "done"})).after(Duration::from_millis(500))).await;
    let f = Arc::new(forwarder(&[ServiceRoute { max_in_flight: 1, ..route("/service/rpc/**", &app.url) }]));
    let first = {
        let f = f.clone();
        tokio::spawn(async move { call(&f, "/service/rpc/a", json!(1)).await })
    };
    assert!(common::eventually(Duration::from_secs(5), || metric(&f, "crier_hooks_service_in_flight") == 1).await);
    let started = Instant::now();
    assert_eq!(call(&f, "/service/rpc/b", json!(2)).await, Err("500:/service/rpc/b:Service busy".to_owned()));
    assert!(started.elapsed() < Duration::from_millis(250), "refused without waiting");
    assert_eq!(first.await.expect("task"), Ok(json!("done")));
    assert_eq!(metric(&f, "crier_hooks_service_busy_total"), 1);
    assert_eq!(metric(&f, "crier_hooks_service_in_flight"), 0);
    // A permit is free again.
    assert_eq!(call(&f, "/service/rpc/c", json!(3)).await, Ok(json!("done")));
}

#[tokio::test]
async fn bad_routes_are_refused_naming_the_key() {
    let e = ServiceForwarder::new(
        &[route("/service/a", "http://127.0.0.1:1/"), route("/service/b", "https://app/")],
        crier_hooks::client().expect("client"),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.starts_with("hooks.service[1].url: https is not supported"), "{e}");
}
