//! Publish backpressure on one node: publishers wait while the node has fallen behind on a
//! WebSocket's session (its pump parked, its task not run), and never for a slow client, a
//! long-polling client or an EventSource stream.
//!
//! A socket's task that has not been run is modelled by a `Pump::next` future polled once
//! (parked) and then left alone; the tests' runtime is single-threaded, so a spawned
//! socket task runs only when the publishers wait.

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
    subscriber_on(h, Transport::WebSocket).await
}

async fn subscriber_on(h: &Harness, transport: Transport) -> (String, Pump) {
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    let ctx = RequestContext::new(transport, RequestInfo::default());
    let pump = h.engine.pump(&a, &ctx).await.expect("pump");
    (a, pump)
}

fn behind(h: &Harness) -> i64 {
    h.engine.metrics().sessions_behind.load(Ordering::Relaxed)
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

fn data(batch: &crier_engine::Batch) -> Vec<Value> {
    batch.items().iter().map(|o| o.to_message().data().cloned().expect("data")).collect()
}

/// The socket's task as the fan-out leaves it when it is not run: its pump's future polled
/// once, parked waiting for messages, and not polled again.
async fn park(pump: &mut Pump) -> std::pin::Pin<Box<impl Future<Output = Option<crier_engine::Batch>> + '_>> {
    let mut parked = Box::pin(pump.next());
    assert!(futures::poll!(&mut parked).is_pending());
    parked
}

/// Fills the parked session's queue to half its limit (it falls behind), then starts a
/// publish and checks that it waits.
async fn behind_with_a_waiting_publish(h: &Arc<Harness>) -> tokio::task::JoinHandle<()> {
    publish_all(h, 0..5).await;
    assert_eq!(behind(h), 1);
    let next = spawn_publish(h, 5);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!next.is_finished(), "the publish waits while the socket's task has not run");
    next
}

/// 20 publishers of 10 messages each (0 to 199): 20 times the queue's limit, published
/// without the socket's task running in between unless they wait.
async fn twenty_publishers(h: &Arc<Harness>) {
    let publishers: Vec<_> = (0..20)
        .map(|p| {
            let h = h.clone();
            tokio::spawn(async move { publish_all(&h, p * 10..p * 10 + 10).await })
        })
        .collect();
    for p in publishers {
        p.await.expect("publisher");
    }
}

/// Publishes `range` and checks that no publish waited.
async fn publish_without_waiting(h: &Harness, range: std::ops::Range<i64>) {
    let started = Instant::now();
    publish_all(h, range).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(waits(h), (0, 0, 0));
}

fn spawn_publish(h: &Arc<Harness>, v: i64) -> tokio::task::JoinHandle<()> {
    let h = h.clone();
    tokio::spawn(async move { h.publish("/q", json!(v)).await })
}

#[tokio::test(start_paused = true)]
async fn publishers_wait_for_a_socket_session_the_node_fell_behind_on() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let parked = park(&mut pump).await;
    // Half the queue's limit with the pump parked: behind, and the next publish waits.
    publish_all(&h, 0..5).await;
    assert_eq!(behind(&h), 1);
    let started = Instant::now();
    let next = spawn_publish(&h, 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!next.is_finished(), "the publish waits while the socket's task has not run");
    // The socket's task runs and takes them: the publish goes ahead at once.
    let batch = parked.await.expect("a batch");
    assert_eq!(data(&batch), (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    pump.written(batch);
    next.await.expect("publish");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(waits(&h), (1, 100, 0));
    assert_eq!(behind(&h), 0);
    let batch = pump.next().await.expect("a batch");
    assert_eq!(data(&batch), vec![json!(5)]);
    assert_eq!(dropped(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn many_publishers_and_one_socket_lose_nothing() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The socket's task: runs only when every publisher waits (one thread), as when the
    // publishers' sockets keep a node's workers busy.
    let socket = tokio::spawn(async move {
        while let Some(batch) = pump.next().await {
            for v in data(&batch) {
                let _ = tx.send(v);
            }
            pump.written(batch);
        }
    });
    twenty_publishers(&h).await;
    let mut got = Vec::new();
    while got.len() < 200 {
        got.push(tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.expect("all delivered").expect("value"));
    }
    socket.abort();
    assert_eq!(dropped(&h), 0);
    got.sort_by_key(Value::as_i64);
    assert_eq!(got, (0..200).map(|i| json!(i)).collect::<Vec<_>>());
    assert!(waits(&h).0 > 0);
    assert_eq!(waits(&h).2, 0, "no publish reached the limit");
}

#[tokio::test(start_paused = true)]
async fn without_waiting_the_same_load_overflows() {
    let h = harness(10, 0);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let socket = tokio::spawn(async move {
        while let Some(batch) = pump.next().await {
            pump.written(batch);
        }
    });
    twenty_publishers(&h).await;
    socket.abort();
    assert!(dropped(&h) >= 100, "dropped {}", dropped(&h));
}

#[tokio::test(start_paused = true)]
async fn a_slow_socket_client_does_not_hold_publishers() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let (taken_tx, taken) = tokio::sync::oneshot::channel();
    // The socket's task takes a batch and its write never finishes: the client does not
    // read. Its queue is left to the overflow policy.
    let socket = tokio::spawn(async move {
        let batch = pump.next().await.expect("a batch");
        let _ = taken_tx.send(());
        std::future::pending::<()>().await;
        drop(batch);
    });
    h.publish("/q", json!("first")).await;
    taken.await.expect("taken");
    publish_without_waiting(&h, 0..30).await;
    assert_eq!(behind(&h), 0);
    assert_eq!(dropped(&h), 20);
    socket.abort();
}

#[tokio::test(start_paused = true)]
async fn long_polling_clients_do_not_hold_publishers() {
    let h = harness(10, 2000);
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    publish_without_waiting(&h, 0..30).await;
    assert_eq!(h.poll(&a).await.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn eventsource_streams_do_not_hold_publishers() {
    let h = harness(10, 2000);
    let (_a, mut pump) = subscriber_on(&h, Transport::EventSource).await;
    // Parked: the HTTP server stopped asking for chunks (the client does not read).
    let _parked = park(&mut pump).await;
    publish_without_waiting(&h, 0..30).await;
    assert_eq!(behind(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn a_pump_that_stops_waiting_releases_publishers() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let parked = park(&mut pump).await;
    let next = behind_with_a_waiting_publish(&h).await;
    // The socket's loop drops its pump's future to do something else (write a reply,
    // close): the session no longer counts.
    drop(parked);
    tokio::time::timeout(Duration::from_millis(1), next).await.expect("released at once").expect("publish");
    assert_eq!(behind(&h), 0);
    // Nor does it while nothing waits on it, however full its queue.
    let started = Instant::now();
    publish_all(&h, 6..30).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn publishers_stop_waiting_when_nothing_catches_up() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let _parked = park(&mut pump).await;
    publish_all(&h, 0..5).await;
    let started = Instant::now();
    // The socket's task never runs: one publish waits out the staleness bound (250 ms),
    // and after it none waits.
    publish_all(&h, 5..30).await;
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(waits(&h), (1, 250, 0));
    assert_eq!(dropped(&h), 20);
}

#[tokio::test(start_paused = true)]
async fn publishers_give_up_at_the_configured_wait() {
    let h = harness(10, 100);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let _parked = park(&mut pump).await;
    publish_all(&h, 0..5).await;
    let started = Instant::now();
    h.publish("/q", json!(5)).await;
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(waits(&h), (1, 100, 1));
}

#[tokio::test(start_paused = true)]
async fn zero_never_waits() {
    let h = harness(10, 0);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let _parked = park(&mut pump).await;
    publish_without_waiting(&h, 0..30).await;
    assert_eq!(dropped(&h), 20);
}

#[tokio::test(start_paused = true)]
async fn a_session_that_ends_releases_publishers() {
    let h = harness(10, 2000);
    let (a, mut pump) = socket_subscriber(&h).await;
    let _parked = park(&mut pump).await;
    let next = behind_with_a_waiting_publish(&h).await;
    h.send(vec![json!({"channel":"/meta/disconnect","clientId":a})]).await;
    tokio::time::timeout(Duration::from_millis(1), next).await.expect("released at once").expect("publish");
    assert_eq!(behind(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn draining_releases_publishers() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let _parked = park(&mut pump).await;
    let next = behind_with_a_waiting_publish(&h).await;
    h.engine.drain();
    tokio::time::timeout(Duration::from_millis(1), next).await.expect("released at once").expect("publish");
    assert_eq!(behind(&h), 0);
}

#[tokio::test(start_paused = true)]
async fn publishers_released_together_do_not_overfill_the_queue() {
    let h = harness(10, 2000);
    let (_a, mut pump) = socket_subscriber(&h).await;
    let parked = park(&mut pump).await;
    publish_all(&h, 0..5).await;
    // 30 publishes wait, three times the queue's limit.
    let waiting: Vec<_> = (5..35).map(|v| spawn_publish(&h, v)).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(waiting.iter().all(|p| !p.is_finished()));
    // The socket's task runs once and takes what is queued, then keeps taking.
    let batch = parked.await.expect("a batch");
    pump.written(batch);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let socket = tokio::spawn(async move {
        while let Some(batch) = pump.next().await {
            let _ = tx.send(data(&batch).len());
            pump.written(batch);
        }
    });
    for p in waiting {
        p.await.expect("publish");
    }
    let mut got = 0;
    while got < 30 {
        got += tokio::time::timeout(Duration::from_secs(1), rx.recv()).await.expect("all delivered").expect("count");
    }
    socket.abort();
    assert_eq!(dropped(&h), 0);
}
