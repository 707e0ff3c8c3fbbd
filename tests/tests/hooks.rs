//! Calls to the app (`crier-hooks`) on a live server with real clients: `/service`
//! forwarding answered to the Faye client and to CometD's `remoteCall`, event webhooks fed
//! by real Faye clients (batches, retries), and a dead webhook that must not slow Bayeux
//! traffic. The app is a real HTTP server started by each test.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crier_hooks::{EventKind, EventsConfig, Hooks, HooksConfig, ServiceRoute};
use crier_tests::{Options, TestServer, eventually, run_node};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One request the app received, and the status it answered.
#[derive(Clone, Debug)]
struct Seen {
    body: Value,
    status: u16,
}

/// How the app answers the n-th request (status, JSON body, delay before answering).
type Answer = Box<dyn Fn(usize, &Value) -> (u16, Value, Duration) + Send + Sync>;

/// A real HTTP app on an ephemeral port that records every request.
struct App {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    async fn start(answer: Answer) -> App {
        use axum::body::Bytes;
        let answer = Arc::new(answer);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let (answer, recorded) = (answer.clone(), recorded.clone());
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, reply, delay) = {
                    let mut seen = recorded.lock().expect("lock");
                    let r = answer(seen.len(), &body);
                    seen.push(Seen { body, status: r.0 });
                    r
                };
                tokio::time::sleep(delay).await;
                (axum::http::StatusCode::from_u16(status).expect("status"), axum::Json(reply))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        App { url: format!("http://{addr}/hook"), seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The events of every batch the app accepted, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .flat_map(|s| s.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

/// A URL that accepts connections and never answers.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/hook")
}

/// A URL where nothing listens.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/hook")
}

/// A server with the hooks installed as the binary installs them, and the webhooks' tasks.
struct Hooked {
    server: TestServer,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Hooked {
    async fn start(config: HooksConfig) -> Hooked {
        let mut hooks = Hooks::new(&config).expect("valid hooks");
        let server = TestServer::start_with(Options { extensions: hooks.extensions(), ..Options::default() }).await;
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        if let Some(webhooks) = hooks.webhooks.take() {
            webhooks.spawn(server.engine.events(), "test-node", &tasks, stop.clone());
        }
        tasks.close();
        Hooked { server, tasks, stop }
    }

    /// Stops the webhooks as the binary does after the server drained; returns how long it took.
    async fn stop_webhooks(&self) -> Duration {
        let started = Instant::now();
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.tasks.wait()).await.expect("webhooks stop");
        started.elapsed()
    }
}

fn route(channel: &str, url: &str) -> ServiceRoute {
    ServiceRoute { channel: channel.to_owned(), url: url.to_owned(), ..ServiceRoute::default() }
}

/// The echo app: `{"data": {"echo": data, "clientId": clientId}}`, or an app error for
/// `/service/rpc/refuse`.
async fn echo_app() -> App {
    App::start(Box::new(|_, body| {
        let answer = if body["channel"] == "/service/rpc/refuse" {
            json!({"error": "Not allowed here"})
        } else {
            json!({"data": {"echo": body["data"], "clientId": body["clientId"]}})
        };
        (200, answer, Duration::ZERO)
    }))
    .await
}

/// The JSON line a Node script printed (the last line of its stdout that parses).
fn result_of(out: &str) -> Value {
    out.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_faye_client_publishing_to_a_service_channel_gets_the_apps_answer() {
    let app = echo_app().await;
    let hooked =
        Hooked::start(HooksConfig { service: vec![route("/service/rpc/**", &app.url)], ..Default::default() }).await;
    let calls = json!([
        {"channel": "/service/rpc/echo", "data": {"text": "hi", "n": [1, 2.5, "ü"]}},
        {"channel": "/service/rpc/refuse", "data": 1},
    ])
    .to_string();
    for transport in ["websocket", "long-polling"] {
        let (ok, out) =
            run_node("hooks.js", &hooked.server.url(), transport, &["--scenario", "service", "--calls", &calls]).await;
        assert!(ok, "{transport}: {out}");
        let r = result_of(&out);
        let echo = &r["calls"][0];
        assert_eq!(echo["ok"], json!(true), "{transport}: {out}");
        let reply = &echo["reply"];
        assert_eq!(reply["successful"], json!(true), "{transport}: {reply}");
        assert_eq!(reply["data"]["echo"], json!({"text": "hi", "n": [1, 2.5, "ü"]}), "{transport}: {reply}");
        assert!(reply["data"]["clientId"].as_str().is_some_and(|c| !c.is_empty()), "the app saw the session: {reply}");
        assert_eq!(reply["data"]["clientId"], reply["clientId"], "{reply}");
        let refused = &r["calls"][1];
        assert_eq!(refused["ok"], json!(false), "{transport}: {out}");
        assert_eq!(refused["error"], json!({"code": 407, "message": "Not allowed here"}), "{transport}: {out}");
        assert_eq!(refused["reply"]["error"], json!("407:/service/rpc/refuse:Not allowed here"));
    }
    let seen = app.seen();
    assert_eq!(seen.len(), 4, "two calls per transport: {seen:?}");
    let body = &seen[0].body;
    assert_eq!(body["channel"], "/service/rpc/echo");
    assert!(body["id"].is_string() && body["user"].is_null() && body["ext"].is_null(), "{body}");
}

#[tokio::test]
async fn cometd_remote_calls_get_the_answer_or_fail_in_time() {
    let app = echo_app().await;
    let slow = App::start(Box::new(|_, _| (200, json!({"data": "late"}), Duration::from_secs(10)))).await;
    let config = HooksConfig {
        service: vec![
            ServiceRoute { timeout_ms: 300, ..route("/service/rpc/slow", &slow.url) },
            route("/service/rpc/down", &closed_port().await),
            route("/service/rpc/**", &app.url),
        ],
        ..Default::default()
    };
    let hooked = Hooked::start(config).await;
    let calls = json!([
        {"target": "rpc/echo", "data": {"q": "ping"}, "timeout": 5000},
        {"target": "rpc/slow", "data": 1, "timeout": 5000},
        {"target": "rpc/down", "data": 1, "timeout": 5000},
        {"target": "rpc/refuse", "data": 1, "timeout": 5000},
    ])
    .to_string();
    for transport in ["websocket", "long-polling"] {
        let (ok, out) = run_node("hooks_cometd.mjs", &hooked.server.url(), transport, &["--calls", &calls]).await;
        assert!(ok, "{transport}: {out}");
        let r = result_of(&out);
        let call = |i: usize| r["calls"][i].clone();
        assert_eq!(call(0)["successful"], json!(true), "{transport}: {out}");
        assert_eq!(call(0)["data"]["echo"], json!({"q": "ping"}), "{transport}: {out}");
        for (i, error) in [
            (1, "500:/service/rpc/slow:Service timed out"),
            (2, "500:/service/rpc/down:Service unavailable"),
            (3, "407:/service/rpc/refuse:Not allowed here"),
        ] {
            let c = call(i);
            assert_eq!(c["successful"], json!(false), "{transport}: {c}");
            assert_eq!(c["error"], json!(error), "{transport}: a server answer, not the client's time-out: {c}");
            assert!(c["ms"].as_u64().is_some_and(|ms| ms < 3000), "{transport}: failed in time: {c}");
        }
    }
    let metric = |name| common::metric(&hooked.server, name);
    assert_eq!(metric("crier_hooks_service_forwarded_total").await, 8);
    assert_eq!(metric("crier_hooks_service_timeouts_total").await, 2);
    assert_eq!(metric("crier_hooks_service_failed_total").await, 4);
    assert_eq!(metric("crier_hooks_service_app_errors_total").await, 2);
    assert_eq!(metric("crier_hooks_service_in_flight").await, 0);
}

#[tokio::test]
async fn webhooks_get_every_event_of_real_faye_clients_in_batches_despite_failures() {
    // The first two attempts fail: the first batch is retried twice.
    let app = App::start(Box::new(|n, _| (if n < 2 { 500 } else { 200 }, json!({}), Duration::ZERO))).await;
    let events = EventsConfig {
        urls: vec![app.url.clone()],
        kinds: vec![
            EventKind::Handshake,
            EventKind::Subscribe,
            EventKind::Unsubscribe,
            EventKind::Publish,
            EventKind::Disconnect,
            EventKind::Presence,
        ],
        batch_max: 3,
        flush_ms: 100,
        backoff_ms: 20,
        backoff_max_ms: 100,
        ..EventsConfig::default()
    };
    let hooked = Hooked::start(HooksConfig { events, ..Default::default() }).await;
    let channel = "/hooks/room";
    let (ok, out) =
        run_node("hooks.js", &hooked.server.url(), "long-polling", &["--scenario", "events", "--channel", channel])
            .await;
    assert!(ok, "{out}");
    let ids = result_of(&out);
    let (a, b) = (ids["a"].as_str().unwrap_or_default(), ids["b"].as_str().unwrap_or_default());
    let done = |events: &[Value]| {
        [a, b].iter().all(|c| events.iter().any(|e| e["type"] == "disconnect" && e["client_id"] == *c))
    };
    assert!(eventually(Duration::from_secs(10), || async { done(&app.events()) }).await, "{:?}", app.seen());
    let events = app.events();
    let of = |client: &str| -> Vec<(String, Value)> {
        events
            .iter()
            .filter(|e| e["client_id"] == client)
            .map(|e| (e["type"].as_str().unwrap_or_default().to_owned(), e["channel"].clone()))
            .collect()
    };
    let ch = json!(channel);
    assert_eq!(
        of(a),
        [
            ("handshake".to_owned(), Value::Null),
            ("subscribe".to_owned(), ch.clone()),
            ("unsubscribe".to_owned(), ch.clone()),
            ("disconnect".to_owned(), Value::Null),
        ],
        "{events:?}"
    );
    assert_eq!(
        of(b),
        [
            ("handshake".to_owned(), Value::Null),
            ("publish".to_owned(), ch.clone()),
            ("disconnect".to_owned(), Value::Null)
        ]
    );
    let publish = events.iter().find(|e| e["type"] == "publish").expect("publish event");
    assert_eq!(publish["data"], json!({"n": 1}));
    // Delivered once each (the failed attempts were the same batch, retried).
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in &events {
        *count.entry(e["id"].as_str().unwrap_or_default()).or_default() += 1;
    }
    assert!(count.values().all(|n| *n == 1), "each event once: {count:?}");
    assert_eq!(count.len(), 7);
    let seen = app.seen();
    assert_eq!(seen[0].body, seen[2].body, "the failed batch was sent again as it was");
    assert!(seen.iter().filter(|s| s.status == 200).count() >= 3, "7 events in batches of at most 3");
    for s in &seen {
        assert_eq!(s.body["node"], "test-node");
        assert!(s.body["events"].as_array().is_some_and(|e| (1..=3).contains(&e.len())), "{}", s.body);
    }
    // Counted when the answer is back, a moment after the app saw the last batch.
    common::wait_metric(&hooked.server, "crier_hooks_events_sent_total", 7).await;
    let metric = |name| common::metric(&hooked.server, name);
    assert_eq!(metric("crier_hooks_event_retries_total").await, 2);
    assert_eq!(metric("crier_hooks_event_batches_failed_total").await, 0);
    assert_eq!(metric("crier_hooks_events_dropped_total").await, 0);
    hooked.stop_webhooks().await;
}

#[tokio::test]
async fn a_dead_webhook_never_slows_bayeux_traffic() {
    let events = EventsConfig {
        urls: vec![black_hole().await],
        kinds: vec![EventKind::Handshake, EventKind::Subscribe, EventKind::Publish, EventKind::Disconnect],
        batch_max: 5,
        queue_max: 5,
        flush_ms: 50,
        timeout_ms: 10_000,
        shutdown_flush_ms: 500,
        ..EventsConfig::default()
    };
    let hooked = Hooked::start(HooksConfig { events, ..Default::default() }).await;
    for transport in ["websocket", "long-polling"] {
        let (ok, out) = run_node(
            "hooks.js",
            &hooked.server.url(),
            transport,
            &["--scenario", "roundtrips", "--channel", "/hooks/fast", "--count", "30"],
        )
        .await;
        assert!(ok, "{transport}: {out}");
        let ms: Vec<u64> = result_of(&out)["ms"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
        assert_eq!(ms.len(), 30, "{out}");
        // A call to the dead webhook takes 10 s: any round trip waiting on one would show.
        assert!(ms.iter().all(|m| *m < 1000), "{transport}: round trips (ms) {ms:?}");
    }
    // The bounded queue overflowed instead of growing, and said so.
    assert!(common::metric(&hooked.server, "crier_hooks_events_dropped_total").await > 0);
    assert!(common::metric(&hooked.server, "crier_hooks_events_queued").await <= 5);
    let took = hooked.stop_webhooks().await;
    assert!(took < Duration::from_secs(3), "stopped at the flush deadline: {took:?}");
}
