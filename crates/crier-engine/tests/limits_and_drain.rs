//! Queue overflow policies, subscription limits and draining, through the engine's API.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crier_engine::conformance::Harness;
use crier_engine::{
    Engine, EngineConfig, MemoryBackend, OverflowPolicy, RequestContext, RequestInfo, SocketReplies, Transport, Turn,
};
use crier_protocol::Message;
use serde_json::json;

fn harness(config: EngineConfig) -> Harness {
    Harness { engine: Engine::builder(config, Arc::new(MemoryBackend::new())).build() }
}

#[tokio::test(start_paused = true)]
async fn full_queue_drops_oldest_and_counts_it() {
    let h = harness(EngineConfig { max_queue: 3, overflow: OverflowPolicy::DropOldest, ..EngineConfig::default() });
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    for i in 0..5 {
        h.publish("/q", json!(i)).await;
    }
    let got: Vec<_> = h.poll(&a).await.iter().filter_map(|m| m.data().cloned()).collect();
    assert_eq!(got, vec![json!(2), json!(3), json!(4)]);
    assert_eq!(h.engine.metrics().queue_dropped.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn full_queue_disconnects_under_disconnect_policy() {
    let h = harness(EngineConfig { max_queue: 2, overflow: OverflowPolicy::Disconnect, ..EngineConfig::default() });
    let a = h.client().await;
    let b = h.client().await;
    h.subscribe(&a, "/q").await;
    h.subscribe(&b, "/other").await;
    for i in 0..3 {
        h.publish("/q", json!(i)).await;
    }
    let r = h.connect(&a, Some(0)).await;
    assert_eq!(r[0].error(), Some(format!("401:{a}:Unknown client").as_str()));
    assert_eq!(r[0].0.get("advice"), Some(&json!({"reconnect":"handshake"})));
    assert_eq!(h.engine.metrics().queue_disconnects.load(Ordering::Relaxed), 1);
    // Another session is unaffected.
    h.publish("/other", json!("fine")).await;
    assert_eq!(h.poll(&b).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn subscription_limit_refuses_the_whole_message() {
    let h = harness(EngineConfig { max_subscriptions: 3, ..EngineConfig::default() });
    let a = h.client().await;
    h.subscribe(&a, "/one").await;
    let r =
        h.send(vec![json!({"channel":"/meta/subscribe","clientId":a,"subscription":["/a","/b","/c"],"id":"9"})]).await;
    assert_eq!(r[0].error(), Some("403::Too many subscriptions (limit 3)"));
    assert_eq!(r[0].0.get("id"), Some(&json!("9")));
    // Nothing from the refused message was subscribed.
    h.publish("/a", json!(1)).await;
    assert!(h.poll(&a).await.is_empty());
    // Re-subscribing to an existing channel does not count twice.
    h.subscribe(&a, "/one").await;
}

// A message naming more distinct names than a session may hold is refused before the
// backend does any work (subscribe and unsubscribe alike); a name given twice counts once.
#[tokio::test(start_paused = true)]
async fn subscription_messages_are_bounded_and_deduplicated() {
    let h = harness(EngineConfig { max_subscriptions: 3, ..EngineConfig::default() });
    let a = h.client().await;
    for channel in ["/meta/subscribe", "/meta/unsubscribe"] {
        let r = h.send(vec![json!({"channel":channel,"clientId":a,"subscription":["/a","/b","/c","/d"]})]).await;
        assert_eq!(r[0].error(), Some("403::Too many subscriptions (limit 3)"), "{channel}: {r:?}");
    }
    h.publish("/a", json!(0)).await;
    assert!(h.poll(&a).await.is_empty(), "nothing of the refused message was subscribed");
    let r =
        h.send(vec![json!({"channel":"/meta/subscribe","clientId":a,"subscription":["/a","/a","/a","/a","/a"]})]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    assert_eq!(h.engine.metrics().subscriptions.load(Ordering::Relaxed), 1, "one subscription, not five");
    h.publish("/a", json!(1)).await;
    assert_eq!(h.poll(&a).await.len(), 1);
    // Two more distinct names fit: the repeated one took one place.
    let r = h.send(vec![json!({"channel":"/meta/subscribe","clientId":a,"subscription":["/b","/c"]})]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn drain_answers_held_connects_at_once_with_retry_advice() {
    let h = Arc::new(harness(EngineConfig { timeout_secs: 60, ..EngineConfig::default() }));
    let a = h.client().await;
    let h2 = h.clone();
    let a2 = a.clone();
    let started = tokio::time::Instant::now();
    let held = tokio::spawn(async move { h2.connect(&a2, None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!held.is_finished());
    h.engine.drain();
    let r = held.await.expect("task");
    assert!(started.elapsed() < Duration::from_secs(1), "released at once");
    assert_eq!(r[0].successful(), Some(true));
    assert_eq!(r[0].0.get("advice").and_then(|a| a.get("reconnect")), Some(&json!("retry")));
    assert!(h.engine.is_draining());
    // New connects are not held while draining.
    let again = h.connect(&a, None).await;
    assert_eq!(again[0].successful(), Some(true));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn second_concurrent_connect_releases_the_first() {
    let h = Arc::new(harness(EngineConfig { timeout_secs: 30, ..EngineConfig::default() }));
    let a = h.client().await;
    h.subscribe(&a, "/c").await;
    let (h1, a1) = (h.clone(), a.clone());
    let first = tokio::spawn(async move { h1.connect(&a1, None).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (h2, a2) = (h.clone(), a.clone());
    let second = tokio::spawn(async move { h2.connect(&a2, None).await });
    let r1 = tokio::time::timeout(Duration::from_millis(500), first).await.expect("first released").expect("task");
    assert_eq!(r1.len(), 1, "the superseded connect carries no messages: {r1:?}");
    assert_eq!(r1[0].successful(), Some(true));
    assert!(!second.is_finished());
    h.publish("/c", json!("to the newest")).await;
    let r2 = tokio::time::timeout(Duration::from_millis(500), second).await.expect("second released").expect("task");
    assert_eq!(r2[1].data(), Some(&json!("to the newest")));
}

// A socket's held connect waits only to be superseded or closed (deliveries go to its
// pump), so an overflow under the `disconnect` policy must close the session in a way that
// wakes it: it answers at once, and the next connect learns the session is gone.
#[tokio::test(start_paused = true)]
async fn overflow_answers_a_held_socket_connect_at_once() {
    let h = harness(EngineConfig { max_queue: 2, overflow: OverflowPolicy::Disconnect, ..EngineConfig::default() });
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    h.connect(&a, Some(0)).await;
    let engine = h.engine.clone();
    let connect: Message = serde_json::from_value(
        json!({"channel":"/meta/connect","clientId":a,"connectionType":"websocket","id":"held"}),
    )
    .expect("message");
    let started = tokio::time::Instant::now();
    let held = tokio::spawn(async move {
        let ws = RequestContext::new(Transport::WebSocket, RequestInfo::default());
        match engine.process_socket(vec![connect], &ws, Turn::none()).await {
            SocketReplies::Held(held) => held.finish(&ws).await,
            SocketReplies::Now(r) => panic!("not held: {r:?}"),
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!held.is_finished(), "the connect is held");
    for i in 0..3 {
        h.publish("/q", json!(i)).await;
    }
    let reply = held.await.expect("held connect task");
    assert!(started.elapsed() < Duration::from_secs(1), "answered after {:?}", started.elapsed());
    assert_eq!(reply.len(), 1);
    let r = h.connect(&a, Some(0)).await;
    assert_eq!(r[0].error(), Some(format!("401:{a}:Unknown client").as_str()));
}

/// An outgoing extension that takes its time with deliveries (a lookup, a webhook).
struct SlowOutgoing;

#[async_trait::async_trait]
impl crier_engine::Extension for SlowOutgoing {
    async fn outgoing(&self, m: &mut Message, _ctx: &RequestContext) -> crier_engine::Verdict {
        if !m.channel().is_some_and(|c| c.starts_with("/meta/")) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        crier_engine::Verdict::Pass
    }
}

// A socket's pump that is dropped while its messages pass through outgoing extensions
// (the socket's loop chose another branch, or the socket closed) puts them back: the next
// connect delivers them.
#[tokio::test(start_paused = true)]
async fn a_pump_dropped_mid_delivery_puts_its_messages_back() {
    let engine = Engine::builder(EngineConfig::default(), Arc::new(MemoryBackend::new()))
        .extension(Arc::new(SlowOutgoing))
        .build();
    let h = Harness { engine };
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    h.connect(&a, Some(0)).await;
    let ws = RequestContext::new(Transport::WebSocket, RequestInfo::default());
    let mut pump = h.engine.pump(&a, &ws).await.expect("pump");
    h.publish("/q", json!(1)).await;
    h.publish("/q", json!(2)).await;
    assert!(tokio::time::timeout(Duration::from_millis(500), pump.next()).await.is_err(), "still delivering");
    drop(pump);
    let got: Vec<_> = h.poll(&a).await.iter().filter_map(|m| m.data().cloned()).collect();
    assert_eq!(got, vec![json!(1), json!(2)]);
}

/// Draining closes every session, and a pump still hands over what was queued (its socket's
/// last frame) before it ends. A session closed on its own (destroyed) hands over nothing:
/// in a cluster its queue may repeat what another node delivers.
#[tokio::test(start_paused = true)]
async fn a_pump_flushes_its_queue_on_drain_but_not_after_a_disconnect() {
    let h = harness(EngineConfig::default());
    let ws = RequestContext::new(Transport::WebSocket, RequestInfo::default());
    let (a, b) = (h.client().await, h.client().await);
    h.subscribe(&a, "/q").await;
    h.subscribe(&b, "/q").await;
    let mut pump_a = h.engine.pump(&a, &ws).await.expect("pump a");
    let mut pump_b = h.engine.pump(&b, &ws).await.expect("pump b");
    h.publish("/q", json!(1)).await;
    h.publish("/q", json!(2)).await;

    let r = h.send(vec![json!({"channel":"/meta/disconnect","clientId":b})]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    assert!(pump_b.next().await.is_none(), "a destroyed session's pump ends without its queue");

    h.engine.drain();
    let batch = pump_a.next().await.expect("the queue, flushed on drain");
    let got: Vec<_> = batch.items().iter().filter_map(|o| o.to_message().data().cloned()).collect();
    assert_eq!(got, vec![json!(1), json!(2)]);
    pump_a.written(batch);
    assert!(pump_a.next().await.is_none(), "then the pump ends");
}

// `engine.max_batch_bytes` splits what is queued into replies and socket batches of at most
// that many bytes of messages; a message larger than the limit still goes, alone.
#[tokio::test(start_paused = true)]
async fn deliveries_are_split_at_max_batch_bytes() {
    let h = harness(EngineConfig { max_batch_bytes: 250, ..EngineConfig::default() });
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    let pad = "x".repeat(80);
    for i in 0..3 {
        h.publish("/q", json!({"i": i, "pad": pad})).await;
    }
    h.publish("/q", json!({"big": "y".repeat(400)})).await;
    h.publish("/q", json!({"i": 4})).await;
    // Long-polling: each connect reply carries what fits, and the rest waits for the next.
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let got = h.poll(&a).await;
        sizes.push(got.len());
        seen.extend(got.iter().filter_map(|m| m.data().cloned()));
    }
    assert_eq!(sizes, vec![2, 1, 1, 1], "two of ~100 bytes fit in 250; the big one goes alone");
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[4], json!({"i": 4}), "in order");
    // A socket's pump: the same split, batch by batch.
    for i in 0..3 {
        h.publish("/q", json!({"i": i, "pad": pad})).await;
    }
    let ctx = RequestContext::new(Transport::WebSocket, RequestInfo::default());
    let mut pump = h.engine.pump(&a, &ctx).await.expect("pump");
    let first = pump.next().await.expect("a batch");
    assert_eq!(first.items().len(), 2);
    pump.written(first);
    let second = pump.next().await.expect("a batch");
    assert_eq!(second.items().len(), 1);
    pump.written(second);
}

#[tokio::test(start_paused = true)]
async fn max_batch_bytes_zero_sends_everything_at_once() {
    let h = harness(EngineConfig { max_batch_bytes: 0, ..EngineConfig::default() });
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    for i in 0..50 {
        h.publish("/q", json!({"i": i, "pad": "x".repeat(1000)})).await;
    }
    assert_eq!(h.poll(&a).await.len(), 50);
}

/// `engine.sweep_interval_secs` is how often the engine looks for expired sessions: one
/// that expired is ended at the next sweep, not before. 0 means a quarter of the timeout,
/// at least 1 s.
#[tokio::test(start_paused = true)]
async fn expired_sessions_end_at_the_next_sweep() {
    use crier_engine::Backend;
    use crier_protocol::ClientId;
    // The session lives 4 s (2 × timeout) and expires then. Sweeps run at 0, I, 2I, ...:
    // with I = 30 s it is still there at 29 s and gone at 31 s; with the default (1 s here)
    // the sweep at 5 s ends it.
    for (interval, still_there_ms, gone_ms) in [(30, 29_000, 31_000), (0, 4_500, 5_500)] {
        let backend = Arc::new(MemoryBackend::new());
        let config = EngineConfig { timeout_secs: 2, sweep_interval_secs: interval, ..EngineConfig::default() };
        let h = Harness { engine: Engine::builder(config, backend.clone()).build() };
        let start = tokio::time::Instant::now();
        let id = ClientId::parse(&h.client().await).expect("id");
        tokio::time::sleep_until(start + Duration::from_millis(still_there_ms)).await;
        assert!(backend.session_exists(&id).await.expect("memory"), "interval {interval}: swept before its time");
        tokio::time::sleep_until(start + Duration::from_millis(gone_ms)).await;
        assert!(!backend.session_exists(&id).await.expect("memory"), "interval {interval}: not swept");
        assert_eq!(h.engine.metrics().sessions_expired.load(Ordering::Relaxed), 1);
    }
}
