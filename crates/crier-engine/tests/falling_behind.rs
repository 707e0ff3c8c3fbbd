//! Publish backpressure on one node: publishers wait while the node has fallen behind on a
//! socket's session, and never for a slow, long-polling or vanished client.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crier_engine::conformance::Harness;
use crier_engine::{Engine, EngineConfig, MemoryBackend, Pump, RequestContext, RequestInfo, Transport};
use serde_json::{Value, json};
use tokio::time::Instant;

fn harness(max_queue: usize, publish_wait_ms: u64) -> Arc<Harness> {
    let config = EngineConfig { max_queue, publish_wait_ms, ..EngineConfig::default() };
    Arc::new(Harness { engine: Engine::builder(config, Arc::new(MemoryBackend::new())).build() })
}

/// A subscriber to `/q` whose messages a socket pumps.
async fn socket_subscriber(h: &Harness) -> (String, Pump) {
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    let ctx = RequestContext::new(Transport::WebSocket, RequestInfo::default());
    let pump = h.engine.pump(&a, &ctx).await.expect("pump");
    (a, pump)
}

fn waits(h: &Harness) -> (u64, u64, u64) {
    let m = h.engine.metrics();
    (
        m.publish_waits.load(Ordering::Relaxed),
        m.publish_wait_ms.load(Ordering::Relaxed),
        m.publish_wait_timeouts.load(Ordering::Relaxed),
    )
}

fn dropped(h: &Harness) -> u64 {
    h.engine.metrics().queue_dropped.load(Ordering::Relaxed)
}

async fn publish_all(h: &Harness, range: std::ops::Range<i64>) {
    for i in range {
        h.publish("/q", json!(i)).await;
    }
}

async fn take(pump: &mut Pump) -> Vec<Value> {
    let batch = pump.next().await.expect("a batch");
    let data = batch.items().iter().map(|o| o.to_message().data().cloned().expect("data")).collect();
    pump.written(batch);
    data
}

#[tokio::test(start_paused = true)]
async fn publishers_wait_for_a_socket_session_the_node_fell_behind_on() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    // Half the queue's limit: the session is behind, and the next publish waits.
    publish_all(&h, 0..5).await;
    assert_eq!(h.engine.metrics().sessions_behind.load(Ordering::Relaxed), 1);
    let started = Instant::now();
    let next = tokio::spawn({
        let h = h.clone();
        async move { h.publish("/q", json!(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!next.is_finished(), "the publish waits while the socket has not taken its messages");
    // The socket takes them: the publish goes ahead at once.
    assert_eq!(take(&mut pump).await, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    next.await.expect("publish");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(waits(&h), (1, 100, 0));
    assert_eq!(h.engine.metrics().sessions_behind.load(Ordering::Relaxed), 0);
    assert_eq!(take(&mut pump).await, vec![json!(5)]);
    assert_eq!(dropped(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn many_publishers_and_one_socket_lose_nothing() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    // 20 publishers of 10 messages each, twice the queue's limit in all. The socket reads
    // only every 20 ms, so without waiting most of it would be dropped.
    let publishers: Vec<_> = (0..20)
        .map(|p| {
            let h = h.clone();
            tokio::spawn(async move { publish_all(&h, p * 10..p * 10 + 10).await })
        })
        .collect();
    let mut got = Vec::new();
    while got.len() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        got.extend(take(&mut pump).await);
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    assert_eq!(dropped(&h), 0);
    got.sort_by_key(|v| v.as_i64());
    assert_eq!(got, (0..200).map(|i| json!(i)).collect::<Vec<_>>());
    assert!(waits(&h).0 > 0);
    assert_eq!(waits(&h).2, 0, "no publish reached the limit");
}

#[tokio::test(start_paused = true)]
async fn a_slow_socket_client_does_not_hold_publishers() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    h.publish("/q", json!("first")).await;
    // Taken but never reported written: the socket's write has not finished, so the client
    // is not reading. Its queue is left to the overflow policy.
    let _stuck = pump.next().await.expect("a batch");
    let started = Instant::now();
    publish_all(&h, 0..30).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(waits(&h), (0, 0, 0));
    assert_eq!(dropped(&h), 20);
}

#[tokio::test(start_paused = true)]
async fn long_polling_clients_do_not_hold_publishers() {
    let h = harness(10, 2000);
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    let started = Instant::now();
    publish_all(&h, 0..30).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(waits(&h), (0, 0, 0));
    assert_eq!(h.poll(&a).await.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_socket_that_stopped_taking_messages_does_not_hold_publishers() {
    let h = harness(10, 2000);
    let (_a, _pump) = socket_subscriber(&h).await;
    // Its task has not run for longer than a served socket's gap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    publish_all(&h, 0..30).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(waits(&h), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn publishers_stop_waiting_when_nothing_catches_up() {
    let h = harness(10, 2000);
    let (_a, _pump) = socket_subscriber(&h).await;
    publish_all(&h, 0..5).await;
    let started = Instant::now();
    // The socket never takes its messages: one publish waits out the staleness bound
    // (250 ms), and after it none waits.
    publish_all(&h, 5..30).await;
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(waits(&h), (1, 250, 0));
    assert_eq!(dropped(&h), 20);
}

#[tokio::test(start_paused = true)]
async fn publishers_give_up_at_the_configured_wait() {
    let h = harness(10, 100);
    let (_a, _pump) = socket_subscriber(&h).await;
    publish_all(&h, 0..5).await;
    let started = Instant::now();
    h.publish("/q", json!(5)).await;
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(waits(&h), (1, 100, 1));
}

#[tokio::test(start_paused = true)]
async fn zero_never_waits() {
    let h = harness(10, 0);
    let (_a, _pump) = socket_subscriber(&h).await;
    let started = Instant::now();
    publish_all(&h, 0..30).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(waits(&h), (0, 0, 0));
    assert_eq!(dropped(&h), 20);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_ends_releases_publishers() {
    let h = harness(10, 2000);
    let (a, _pump) = socket_subscriber(&h).await;
    publish_all(&h, 0..5).await;
    let next = tokio::spawn({
        let h = h.clone();
        async move { h.publish("/q", json!(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!next.is_finished());
    h.send(vec![json!({"channel":"/meta/disconnect","clientId":a})]).await;
    tokio::time::timeout(Duration::from_millis(1), next).await.expect("released at once").expect("publish");
    assert_eq!(h.engine.metrics().sessions_behind.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn draining_releases_publishers() {
    let h = harness(10, 2000);
    let (_a, _pump) = socket_subscriber(&h).await;
    publish_all(&h, 0..5).await;
    let next = tokio::spawn({
        let h = h.clone();
        async move { h.publish("/q", json!(5)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!next.is_finished());
    h.engine.drain();
    tokio::time::timeout(Duration::from_millis(1), next).await.expect("released at once").expect("publish");
}
