//! Event webhooks against a real HTTP receiver: batching, retries with backoff, giving up,
//! kinds, bounded queues and lag, and the bounded flush on shutdown.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{App, Reply, black_hole_url, eventually};
use crier_engine::{Event, PresenceChange, PresenceStatus};
use crier_hooks::{EventKind, EventWebhooks, EventsConfig, WebhookMetrics};
use crier_protocol::{ChannelName, ChannelPattern, ClientId};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Running webhooks fed by a broadcast channel the test writes to (as the engine would).
struct Running {
    events: broadcast::Sender<Event>,
    metrics: Arc<WebhookMetrics>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Running {
    fn start(config: EventsConfig, capacity: usize) -> Running {
        let (events, rx) = broadcast::channel(capacity);
        let hooks = EventWebhooks::new(&config, crier_hooks::client().expect("client")).expect("valid config");
        let metrics = hooks.metrics();
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        hooks.spawn(rx, "node-a", &tracker, stop.clone());
        Running { events, metrics, tracker, stop }
    }

    fn send(&self, e: Event) {
        self.events.send(e).expect("the collector listens");
    }

    fn metric(&self, name: &str) -> i64 {
        self.metrics.snapshot().into_iter().find(|(n, _, _)| *n == name).map(|(_, _, v)| v).expect("metric exists")
    }

    /// Cancels and waits for every task; returns how long that took.
    async fn shutdown(self) -> Duration {
        let started = Instant::now();
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(20), self.tracker.wait()).await.expect("tasks end");
        started.elapsed()
    }
}

fn config(url: &str) -> EventsConfig {
    EventsConfig {
        urls: vec![url.to_owned()],
        kinds: vec![
            EventKind::Handshake,
            EventKind::Subscribe,
            EventKind::Unsubscribe,
            EventKind::Publish,
            EventKind::Disconnect,
            EventKind::Presence,
        ],
        flush_ms: 50,
        backoff_ms: 10,
        backoff_max_ms: 40,
        timeout_ms: 2000,
        shutdown_flush_ms: 1000,
        ..EventsConfig::default()
    }
}

fn client(i: u8) -> ClientId {
    ClientId::from_random([i; 20])
}

fn subscribe(i: u8) -> Event {
    Event::Subscribe(client(i), ChannelPattern::parse(&format!("/chat/{i}")).expect("pattern"))
}

fn publish(i: u8) -> Event {
    let name = ChannelName::parse("/chat/x").expect("name");
    let m = crier_protocol::Message(
        json!({"channel": "/chat/x", "data": {"n": i}}).as_object().cloned().unwrap_or_default(),
    );
    Event::Publish(None, name.clone(), crier_engine::Delivery::new(u64::from(i), name, m, 0))
}

/// Every event delivered in accepted batches, in order.
fn delivered(app: &App) -> Vec<Value> {
    app.accepted().into_iter().flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default()).collect()
}

#[tokio::test]
async fn events_arrive_in_order_in_batches_with_the_node_and_headers() {
    let app = App::start(|_, _| Reply::status(204)).await;
    let mut c = EventsConfig { batch_max: 10, ..config(&app.url) };
    c.headers = BTreeMap::from([("authorization".to_owned(), "Bearer hook-key".to_owned())]);
    let hooks = Running::start(c, 1024);
    for i in 0..25 {
        hooks.send(subscribe(i));
    }
    assert!(eventually(Duration::from_secs(5), || delivered(&app).len() == 25).await, "{:?}", app.requests());
    let requests = app.requests();
    assert!(requests.len() >= 3, "25 events in batches of at most 10: {}", requests.len());
    for r in &requests {
        assert_eq!(r.body["node"], "node-a");
        assert!(r.body["events"].as_array().is_some_and(|e| !e.is_empty() && e.len() <= 10), "{}", r.body);
        assert_eq!(r.headers.get("authorization").and_then(|v| v.to_str().ok()), Some("Bearer hook-key"));
        assert_eq!(r.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    }
    let events = delivered(&app);
    let channels: Vec<String> = (0..25).map(|i| format!("/chat/{i}")).collect();
    assert_eq!(events.iter().map(|e| e["channel"].as_str().unwrap_or_default()).collect::<Vec<_>>(), channels);
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 25, "event ids are unique");
    assert_eq!(events[0]["type"], "subscribe");
    assert_eq!(events[0]["client_id"], client(0).as_str());
    assert!(events[0]["at_ms"].as_u64().is_some_and(|t| t > 1_600_000_000_000), "{}", events[0]);
    assert!(
        eventually(Duration::from_secs(5), || hooks.metric("crier_hooks_event_batches_sent_total")
            == requests.len() as i64)
        .await
    );
    assert_eq!(hooks.metric("crier_hooks_events_sent_total"), 25);
    assert_eq!(hooks.metric("crier_hooks_events_queued"), 0);
    hooks.shutdown().await;
}

#[tokio::test]
async fn a_failed_batch_is_retried_with_the_same_events() {
    let app = App::start(|n, _| if n < 2 { Reply::status(500) } else { Reply::status(200) }).await;
    let hooks = Running::start(EventsConfig { batch_max: 100, ..config(&app.url) }, 1024);
    for i in 0..3 {
        hooks.send(subscribe(i));
    }
    assert!(eventually(Duration::from_secs(5), || app.accepted().len() == 1).await, "{:?}", app.requests());
    let requests = app.requests();
    assert_eq!(requests.len(), 3, "two failures, then success");
    assert_eq!(requests[0].body, requests[2].body, "a retry sends the same batch (same event ids)");
    assert_eq!(delivered(&app).len(), 3);
    assert!(eventually(Duration::from_secs(5), || hooks.metric("crier_hooks_event_batches_sent_total") == 1).await);
    assert_eq!(hooks.metric("crier_hooks_event_retries_total"), 2);
    assert_eq!(hooks.metric("crier_hooks_event_batches_failed_total"), 0);
    hooks.shutdown().await;
}

#[tokio::test]
async fn a_batch_is_dropped_after_its_retries_and_the_next_one_goes_on() {
    // Fails everything about the first batch (marked by its first event), accepts the rest.
    let app =
        App::start(
            |_, body| {
                if body["events"][0]["channel"] == "/chat/0" { Reply::status(502) } else { Reply::status(200) }
            },
        )
        .await;
    let hooks = Running::start(EventsConfig { retries: 2, ..config(&app.url) }, 1024);
    hooks.send(subscribe(0));
    assert!(eventually(Duration::from_secs(5), || hooks.metric("crier_hooks_event_batches_failed_total") == 1).await);
    assert_eq!(app.requests().len(), 3, "one attempt and two retries");
    hooks.send(subscribe(1));
    assert!(eventually(Duration::from_secs(5), || delivered(&app).len() == 1).await);
    assert_eq!(delivered(&app)[0]["channel"], "/chat/1");
    hooks.shutdown().await;
}

#[tokio::test]
async fn only_the_configured_kinds_are_sent_and_publish_is_off_by_default() {
    let app = App::start(|_, _| Reply::status(200)).await;
    let defaults = EventsConfig::default();
    let hooks = Running::start(EventsConfig { kinds: defaults.kinds, ..config(&app.url) }, 1024);
    hooks.send(publish(1));
    hooks.send(Event::Handshake(client(1), Some("u1".to_owned())));
    hooks.send(Event::Presence(PresenceChange { user: "u1".to_owned(), status: PresenceStatus::Online, at: 42 }));
    hooks.send(publish(2));
    hooks.send(Event::Disconnect(client(1)));
    assert!(eventually(Duration::from_secs(5), || delivered(&app).len() == 3).await);
    let kinds: Vec<Value> = delivered(&app).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(kinds, [json!("handshake"), json!("presence"), json!("disconnect")]);
    assert_eq!(delivered(&app)[0]["user"], "u1");
    assert_eq!(delivered(&app)[1]["status"], "online");
    hooks.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_what_is_queued_without_waiting_for_flush() {
    let app = App::start(|_, _| Reply::status(200)).await;
    let hooks = Running::start(EventsConfig { flush_ms: 600_000, batch_max: 1000, ..config(&app.url) }, 1024);
    for i in 0..5 {
        hooks.send(subscribe(i));
    }
    // Let the collector queue them; nothing is due for ten minutes.
    assert!(eventually(Duration::from_secs(5), || hooks.metric("crier_hooks_events_queued") == 5).await);
    assert!(app.requests().is_empty());
    let took = hooks.shutdown().await;
    assert_eq!(delivered(&app).len(), 5);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn shutdown_is_bounded_when_the_app_never_answers() {
    let hole = black_hole_url().await;
    let hooks = Running::start(EventsConfig { timeout_ms: 60_000, shutdown_flush_ms: 300, ..config(&hole) }, 1024);
    for i in 0..5 {
        hooks.send(subscribe(i));
    }
    // The first batch is on its way (and will never be answered).
    assert!(eventually(Duration::from_secs(5), || hooks.metric("crier_hooks_events_queued") == 0).await);
    hooks.send(subscribe(9));
    let metrics = hooks.metrics.clone();
    let took = hooks.shutdown().await;
    assert!(took < Duration::from_secs(2), "stopped at the flush deadline: {took:?}");
    let dropped = metrics.snapshot().into_iter().find(|(n, _, _)| *n == "crier_hooks_events_dropped_total");
    assert_eq!(dropped.map(|(_, _, v)| v), Some(6), "the batch in flight and the queued event");
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_a_lagging_collector_counts_what_it_missed() {
    let hole = black_hole_url().await;
    let hooks = Running::start(EventsConfig { queue_max: 5, timeout_ms: 60_000, ..config(&hole) }, 1024);
    // On this single-threaded runtime the collector runs only when the test yields: all 20
    // events reach the queue before the sender takes any.
    for i in 0..20 {
        hooks.send(subscribe(i));
    }
    assert!(eventually(Duration::from_secs(5), || hooks.metric("crier_hooks_events_dropped_total") == 15).await);
    hooks.shutdown().await;

    let app = App::start(|_, _| Reply::status(200)).await;
    let hooks = Running::start(config(&app.url), 4);
    for i in 0..10 {
        hooks.send(subscribe(i));
    }
    assert!(eventually(Duration::from_secs(5), || delivered(&app).len() == 4).await);
    assert_eq!(hooks.metric("crier_hooks_events_dropped_total"), 6, "the broadcast channel overwrote 6");
    let channels: Vec<Value> = delivered(&app).iter().map(|e| e["channel"].clone()).collect();
    assert_eq!(channels, [json!("/chat/6"), json!("/chat/7"), json!("/chat/8"), json!("/chat/9")]);
    hooks.shutdown().await;
}

#[tokio::test]
async fn every_url_gets_every_event_and_a_dead_one_does_not_hold_up_the_others() {
    let app = App::start(|_, _| Reply::status(200)).await;
    let hole = black_hole_url().await;
    let hooks = Running::start(
        EventsConfig {
            urls: vec![hole, app.url.clone()],
            timeout_ms: 60_000,
            shutdown_flush_ms: 200,
            ..config(&app.url)
        },
        1024,
    );
    for i in 0..3 {
        hooks.send(subscribe(i));
    }
    assert!(eventually(Duration::from_secs(5), || delivered(&app).len() == 3).await);
    hooks.shutdown().await;
}

#[test]
fn metrics_are_reported_through_the_engine_extension() {
    let hooks =
        EventWebhooks::new(&config("http://127.0.0.1:9/"), crier_hooks::client().expect("client")).expect("valid");
    let names: Vec<&str> = hooks.metrics_extension().metrics().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        names,
        [
            "crier_hooks_events_sent_total",
            "crier_hooks_event_batches_sent_total",
            "crier_hooks_event_batches_failed_total",
            "crier_hooks_event_retries_total",
            "crier_hooks_events_dropped_total",
            "crier_hooks_events_queued",
        ]
    );
}
