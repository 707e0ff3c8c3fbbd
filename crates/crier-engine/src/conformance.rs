//! The conformance suite every [`Backend`] runs, ported from Faye's engine spec
//! ("faye engine" examples) and driven through the [`Engine`] with wire messages.
//!
//! Use it from a backend's tests:
//!
//! ```text
//! async fn make() -> Arc<dyn Backend> { Arc::new(MemoryBackend::new()) }
//! crier_engine::conformance_suite!(make, (start_paused = true));
//! ```
//!
//! Each case takes a fresh backend from the factory (a backend shared between cases must
//! isolate them, e.g. with a key prefix per call).

use std::sync::Arc;
use std::time::Duration;

use crier_protocol::{ChannelPattern, ClientId, Message};
use serde_json::{Value, json};

use crate::{Backend, Engine, EngineConfig, Event, RequestContext, RequestInfo, Transport};

/// A small driver around an engine for the suite.
pub struct Harness {
    /// The engine under test.
    pub engine: Engine,
}

fn msg(v: Value) -> Message {
    match v {
        Value::Object(m) => Message(m),
        _ => Message::new(),
    }
}

fn lp() -> RequestContext {
    RequestContext::new(Transport::LongPolling, RequestInfo::default())
}

impl Harness {
    /// An engine on `backend` with a 2 s timeout.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        let config = EngineConfig { timeout_secs: 2, ..EngineConfig::default() };
        Harness { engine: Engine::builder(config, backend).build() }
    }

    /// Sends a batch over long-polling; returns the replies as messages.
    pub async fn send(&self, batch: Vec<Value>) -> Vec<Message> {
        let out = self.engine.process(batch.into_iter().map(msg).collect(), &lp()).await;
        out.iter().map(|o| o.to_message()).collect()
    }

    /// Handshakes and makes the first (immediate) connect; returns the client id.
    pub async fn client(&self) -> String {
        let r = self
            .send(vec![
                json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}),
            ])
            .await;
        let id = r[0].client_id().unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "handshake failed: {r:?}");
        let c = self.connect(&id, Some(0)).await;
        assert_eq!(c[0].successful(), Some(true), "{c:?}");
        id
    }

    /// A connect with an optional `advice.timeout` in ms.
    pub async fn connect(&self, id: &str, timeout_ms: Option<u64>) -> Vec<Message> {
        let mut m = json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"});
        if let Some(t) = timeout_ms {
            m["advice"] = json!({"timeout": t});
        }
        self.send(vec![m]).await
    }

    /// Subscribes and asserts success.
    pub async fn subscribe(&self, id: &str, sub: &str) {
        let r = self.send(vec![json!({"channel":"/meta/subscribe","clientId":id,"subscription":sub})]).await;
        assert_eq!(r[0].successful(), Some(true), "{r:?}");
    }

    /// Publishes and asserts success.
    pub async fn publish(&self, channel: &str, data: Value) {
        let r = self.send(vec![json!({"channel":channel,"data":data})]).await;
        assert_eq!(r[0].successful(), Some(true), "{r:?}");
    }

    /// The deliveries (messages after the connect reply) of a non-held connect.
    pub async fn poll(&self, id: &str) -> Vec<Message> {
        let mut r = self.connect(id, Some(0)).await;
        assert_eq!(r.first().and_then(|m| m.successful()), Some(true), "{r:?}");
        r.remove(0);
        r
    }
}

fn data_of(ms: &[Message]) -> Vec<Value> {
    ms.iter().filter_map(|m| m.data().cloned()).collect()
}

/// Handshake creates distinct sessions that exist in the backend.
pub async fn creates_distinct_sessions(b: Arc<dyn Backend>) {
    let h = Harness::new(b.clone());
    let a = h.client().await;
    let c = h.client().await;
    assert_ne!(a, c);
    for id in [&a, &c] {
        let cid = ClientId::parse(id).expect("server ids parse");
        assert!(b.session_exists(&cid).await.expect("backend"));
    }
}

/// A destroyed session no longer exists, and destroy reports it to exactly one caller.
pub async fn destroy_is_claimed_once(b: Arc<dyn Backend>) {
    let h = Harness::new(b.clone());
    let a = h.client().await;
    h.subscribe(&a, "/foo").await;
    let id = ClientId::parse(&a).expect("id");
    let (x, y) = tokio::join!(b.destroy_session(&id), b.destroy_session(&id));
    let wins = [x.expect("backend"), y.expect("backend")];
    assert_eq!(wins.iter().filter(|w| w.is_some()).count(), 1, "{wins:?}");
    let subs = wins.into_iter().flatten().next().unwrap_or_default();
    assert_eq!(subs, vec![ChannelPattern::parse("/foo").expect("valid")]);
    assert!(!b.session_exists(&id).await.expect("backend"));
}

/// Subscribe reports new subscriptions only; unsubscribe reports existing ones only.
pub async fn subscribe_reports_changes(b: Arc<dyn Backend>) {
    let h = Harness::new(b.clone());
    let a = h.client().await;
    let id = ClientId::parse(&a).expect("id");
    let p = ChannelPattern::parse("/foo/*").expect("valid");
    assert!(b.subscribe(&id, &p).await.expect("backend"));
    assert!(!b.subscribe(&id, &p).await.expect("backend"));
    assert_eq!(b.subscriptions(&id).await.expect("backend"), vec![p.clone()]);
    assert!(b.unsubscribe(&id, &p).await.expect("backend"));
    assert!(!b.unsubscribe(&id, &p).await.expect("backend"));
}

/// A publish reaches subscribers of the channel and of matching patterns, once per session
/// even when several of its subscriptions match, and not sessions with no matching one.
pub async fn delivers_once_per_session(b: Arc<dyn Backend>) {
    let h = Harness::new(b);
    let alice = h.client().await;
    let bob = h.client().await;
    let carol = h.client().await;
    for s in ["/messages/*", "/messages/**", "/**", "/messages/foo"] {
        h.subscribe(&alice, s).await;
    }
    h.subscribe(&bob, "/messages/bar").await;
    h.subscribe(&carol, "/*").await;
    h.publish("/messages/foo", json!("hello")).await;
    assert_eq!(data_of(&h.poll(&alice).await), vec![json!("hello")]);
    assert!(h.poll(&bob).await.is_empty());
    assert!(h.poll(&carol).await.is_empty());
}

/// Publishing twice delivers twice, in order; messages queue while the session is not
/// connected and arrive on its next connect.
pub async fn queues_between_connects_in_order(b: Arc<dyn Backend>) {
    let h = Harness::new(b);
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    for i in 0..20 {
        h.publish("/q", json!(i)).await;
    }
    let got = data_of(&h.poll(&a).await);
    assert_eq!(got, (0..20).map(|i| json!(i)).collect::<Vec<_>>());
    assert!(h.poll(&a).await.is_empty());
}

/// A held connect returns as soon as a message arrives.
pub async fn held_connect_returns_on_publish(b: Arc<dyn Backend>) {
    let h = Arc::new(Harness::new(b));
    let a = h.client().await;
    h.subscribe(&a, "/held").await;
    let h2 = h.clone();
    let a2 = a.clone();
    let held = tokio::spawn(async move { h2.connect(&a2, None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!held.is_finished(), "connect should be held");
    h.publish("/held", json!({"n":1})).await;
    let r = tokio::time::timeout(Duration::from_secs(1), held).await.expect("released").expect("task");
    assert_eq!(r[0].successful(), Some(true));
    assert_eq!(data_of(&r[1..]), vec![json!({"n":1})]);
}

/// Unsubscribing stops deliveries.
pub async fn unsubscribe_stops_delivery(b: Arc<dyn Backend>) {
    let h = Harness::new(b);
    let a = h.client().await;
    h.subscribe(&a, "/u/**").await;
    let r = h.send(vec![json!({"channel":"/meta/unsubscribe","clientId":a,"subscription":"/u/**"})]).await;
    assert_eq!(r[0].successful(), Some(true));
    h.publish("/u/x", json!(1)).await;
    assert!(h.poll(&a).await.is_empty());
}

/// A disconnect releases a held connect (with a successful reply) and ends the session,
/// firing unsubscribe events for its subscriptions and one disconnect event.
pub async fn disconnect_releases_and_fires_events(b: Arc<dyn Backend>) {
    let h = Arc::new(Harness::new(b));
    let mut events = h.engine.events();
    let a = h.client().await;
    h.subscribe(&a, "/d").await;
    let h2 = h.clone();
    let a2 = a.clone();
    let held = tokio::spawn(async move { h2.connect(&a2, None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = h.send(vec![json!({"channel":"/meta/disconnect","clientId":a})]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    let c = tokio::time::timeout(Duration::from_secs(1), held).await.expect("released").expect("task");
    assert_eq!(c[0].successful(), Some(true));
    let again = h.connect(&a, Some(0)).await;
    assert_eq!(again[0].error(), Some(format!("401:{a}:Unknown client").as_str()));
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    let id = ClientId::parse(&a).expect("id");
    let unsub = Event::Unsubscribe(id.clone(), ChannelPattern::parse("/d").expect("valid"));
    assert_eq!(seen.iter().filter(|e| **e == unsub).count(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|e| **e == Event::Disconnect(id.clone())).count(), 1, "{seen:?}");
}

/// A session not seen for longer than its lifetime is destroyed by the sweep.
pub async fn expires_idle_sessions(b: Arc<dyn Backend>) {
    let h = Harness::new(b.clone());
    let a = h.client().await;
    let keep = h.client().await;
    h.subscribe(&a, "/e").await;
    // Lifetime is 2 × timeout = 4 s; keep one session alive past it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    h.connect(&keep, Some(0)).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    h.engine.sweep().await;
    let r = h.connect(&a, Some(0)).await;
    assert_eq!(r[0].error(), Some(format!("401:{a}:Unknown client").as_str()));
    let k = h.connect(&keep, Some(0)).await;
    assert_eq!(k[0].successful(), Some(true), "{k:?}");
    assert!(!b.session_exists(&ClientId::parse(&a).expect("id")).await.expect("backend"));
}

/// A sweep clears every expired session, not one backend batch of them: a flood of
/// abandoned handshakes goes in one interval, not a batch per interval.
pub async fn a_sweep_clears_more_than_one_batch(b: Arc<dyn Backend>) {
    let h = Harness::new(b.clone());
    let now = crate::clock::Clock::new().now();
    let ids: Vec<ClientId> =
        (0..crate::backend::SWEEP_BATCH + 500).map(|i| ClientId::parse(&format!("sweep{i}")).expect("id")).collect();
    futures::future::try_join_all(ids.iter().map(|id| b.create_session(id, now.saturating_sub(3_600_000))))
        .await
        .expect("backend");
    h.engine.sweep().await;
    assert!(b.expired_sessions(now).await.expect("backend").is_empty(), "every expired session is gone");
    // (The engine's own sweep task may have taken some of them: counted all the same.)
    let expired = h.engine.metrics().sessions_expired.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(expired, ids.len() as u64);
}

/// A publish its client re-sends (same `clientId`, `id`, channel and content: Faye's
/// client does so when it missed the reply) is answered as a success and delivered once,
/// also to a session reached through several names. Anything that differs, and any
/// publish without a client id, is a new message.
pub async fn a_retried_publish_is_delivered_once(b: Arc<dyn Backend>) {
    let h = Harness::new(b);
    let alice = h.client().await;
    let carol = h.client().await;
    let bob = h.client().await;
    h.subscribe(&alice, "/r/x").await;
    for s in ["/r/*", "/**"] {
        h.subscribe(&carol, s).await;
    }
    let sent = |id: &str, data: Value| json!({"channel":"/r/x","clientId":bob,"id":id,"data":data});
    for m in [
        sent("7", json!(1)),
        sent("7", json!(1)),
        sent("7", json!(2)),
        sent("8", json!(1)),
        sent("8", json!(1)),
        json!({"channel":"/r/x","id":"7","data":3}),
        json!({"channel":"/r/x","id":"7","data":3}),
    ] {
        let r = h.send(vec![m]).await;
        assert_eq!(r[0].successful(), Some(true), "{r:?}");
    }
    for id in [&alice, &carol] {
        assert_eq!(data_of(&h.poll(id).await), vec![json!(1), json!(2), json!(1), json!(3), json!(3)], "{id}");
    }
    let retries = h.engine.metrics().publish_retries.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(retries, 2);
}

/// A publish is remembered for `engine.publish_retry_window_secs`, then a copy is new; a
/// window of 0 remembers nothing.
pub async fn a_publish_is_remembered_for_the_window_only(b: Arc<dyn Backend>) {
    let window = EngineConfig { timeout_secs: 2, publish_retry_window_secs: 1, ..EngineConfig::default() };
    let h = Harness { engine: Engine::builder(window, b.clone()).build() };
    let none = EngineConfig { timeout_secs: 2, publish_retry_window_secs: 0, ..EngineConfig::default() };
    let off = Harness { engine: Engine::builder(none, b).build() };
    let alice = h.client().await;
    let bob = h.client().await;
    h.subscribe(&alice, "/w").await;
    let m = |id: &str| json!({"channel":"/w","clientId":bob,"id":id,"data":id});
    h.send(vec![m("1")]).await;
    h.send(vec![m("1")]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h.send(vec![m("1")]).await;
    off.send(vec![m("2")]).await;
    off.send(vec![m("2")]).await;
    assert_eq!(data_of(&h.poll(&alice).await), vec![json!("1"), json!("1"), json!("2"), json!("2")]);
}

/// An EventSource stream's mark is about the node that made it: on that node the session
/// is never "streaming elsewhere", and an unknown session never is.
pub async fn a_stream_is_never_elsewhere_on_its_own_node(b: Arc<dyn Backend>) {
    let h = Harness::new(b.clone());
    let id = ClientId::parse(&h.client().await).expect("id");
    let now = crate::clock::Clock::new().now();
    assert!(!b.streaming_elsewhere(&id, now).await.expect("backend"));
    b.mark_streaming(&id, Duration::from_secs(30)).await.expect("backend");
    assert!(!b.streaming_elsewhere(&id, now).await.expect("backend"));
    let unknown = ClientId::parse("0000000000000000000000000000000").expect("id");
    b.mark_streaming(&unknown, Duration::from_secs(30)).await.expect("backend");
    assert!(!b.streaming_elsewhere(&unknown, now).await.expect("backend"));
    assert!(!b.session_exists(&unknown).await.expect("backend"), "a mark creates no session");
}

/// An EventSource client's connect on the node that holds its open stream leaves the queue
/// to the stream (in Faye the stream carries every message); once no stream is open, the
/// connect's reply carries what is queued, so the client still gets it.
pub async fn an_eventsource_connect_leaves_messages_to_its_stream(b: Arc<dyn Backend>) {
    let h = Harness::new(b);
    let a = h.client().await;
    h.subscribe(&a, "/q").await;
    let es_connect = json!({"channel":"/meta/connect","clientId":a,"connectionType":"eventsource"});
    let ctx = RequestContext::new(Transport::EventSource, RequestInfo::default());
    let mut stream = h.engine.pump(&a, &ctx).await.expect("pump");
    h.publish("/q", json!(1)).await;
    h.publish("/q", json!(2)).await;
    let r = h.send(vec![es_connect.clone()]).await;
    assert_eq!(r.len(), 1, "the connect reply only: {r:?}");
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    let batch = stream.next().await.expect("the stream's batch");
    let items: Vec<Message> = batch.items().iter().map(|o| o.to_message()).collect();
    assert_eq!(data_of(&items), vec![json!(1), json!(2)]);
    stream.written(batch);
    drop(stream);
    h.publish("/q", json!(3)).await;
    let r = h.send(vec![es_connect]).await;
    assert_eq!(data_of(&r), vec![json!(3)], "{r:?}");
}

/// Subscribes of one session sent at once (frames of one WebSocket, parallel POSTs) are
/// counted one after the other: together they cannot pass `engine.max_subscriptions`, and
/// each is accepted or refused whole.
pub async fn concurrent_subscribes_respect_the_limit(b: Arc<dyn Backend>) {
    let config = EngineConfig { timeout_secs: 2, max_subscriptions: 5, ..EngineConfig::default() };
    let h = Harness { engine: Engine::builder(config, b.clone()).build() };
    let a = h.client().await;
    let sends = (0..8).map(|i| {
        h.send(vec![
            json!({"channel":"/meta/subscribe","clientId":a,"subscription":[format!("/c{i}/a"), format!("/c{i}/b")]}),
        ])
    });
    let replies = futures::future::join_all(sends).await;
    let accepted = replies.iter().filter(|r| r[0].successful() == Some(true)).count();
    let cid = ClientId::parse(&a).expect("id");
    let held = b.subscriptions(&cid).await.expect("backend");
    assert_eq!(accepted, 2, "two messages of two names fit in five: {replies:?}");
    assert_eq!(held.len(), 4, "{held:?}");
}

/// An identity bound to a session is read back through the backend (so every node sees it)
/// and goes away with the session.
pub async fn identity_is_bound_to_the_session(b: Arc<dyn Backend>) {
    let h = Harness::new(b.clone());
    let id = h.client().await;
    let cid = ClientId::parse(&id).expect("id");
    assert_eq!(b.identity(&cid).await.expect("backend"), None);
    let mut claims = serde_json::Map::new();
    claims.insert("sub".to_owned(), json!("42"));
    claims.insert("roles".to_owned(), json!(["admin"]));
    let identity = crate::Identity { user: Some("42".to_owned()), claims, expires_ms: Some(1_900_000_000_000) };
    b.set_identity(&cid, &identity).await.expect("backend");
    assert_eq!(b.identity(&cid).await.expect("backend"), Some(identity));
    let r = h.send(vec![json!({"channel":"/meta/disconnect","clientId":id})]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    assert_eq!(b.identity(&cid).await.expect("backend"), None);
}

/// Generates one `#[tokio::test]` per conformance case for a backend factory.
///
/// `$make` is an async function (or closure returning a future) that yields a fresh
/// `Arc<dyn Backend>`; an optional second argument is the `tokio::test` attribute
/// arguments in parentheses, e.g. `(start_paused = true)`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr $(, $attr:tt)?) => {
        $crate::conformance_suite!(@case $make, ($($attr)?), creates_distinct_sessions);
        $crate::conformance_suite!(@case $make, ($($attr)?), destroy_is_claimed_once);
        $crate::conformance_suite!(@case $make, ($($attr)?), subscribe_reports_changes);
        $crate::conformance_suite!(@case $make, ($($attr)?), delivers_once_per_session);
        $crate::conformance_suite!(@case $make, ($($attr)?), queues_between_connects_in_order);
        $crate::conformance_suite!(@case $make, ($($attr)?), held_connect_returns_on_publish);
        $crate::conformance_suite!(@case $make, ($($attr)?), unsubscribe_stops_delivery);
        $crate::conformance_suite!(@case $make, ($($attr)?), disconnect_releases_and_fires_events);
        $crate::conformance_suite!(@case $make, ($($attr)?), expires_idle_sessions);
        $crate::conformance_suite!(@case $make, ($($attr)?), identity_is_bound_to_the_session);
        $crate::conformance_suite!(@case $make, ($($attr)?), a_stream_is_never_elsewhere_on_its_own_node);
        $crate::conformance_suite!(@case $make, ($($attr)?), an_eventsource_connect_leaves_messages_to_its_stream);
        $crate::conformance_suite!(@case $make, ($($attr)?), concurrent_subscribes_respect_the_limit);
        $crate::conformance_suite!(@case $make, ($($attr)?), a_sweep_clears_more_than_one_batch);
        $crate::conformance_suite!(@case $make, ($($attr)?), a_retried_publish_is_delivered_once);
        $crate::conformance_suite!(@case $make, ($($attr)?), a_publish_is_remembered_for_the_window_only);
        $crate::conformance_suite!(@api $make, ($($attr)?), users_presence_and_targeted_sends);
        $crate::conformance_suite!(@api $make, ($($attr)?), broadcast_delivers_once_per_session);
        $crate::conformance_suite!(@api $make, ($($attr)?), server_side_subscriptions_and_listings);
        $crate::conformance_suite!(@api $make, ($($attr)?), cluster_stats_count_what_exists);
        $crate::conformance_suite!(@api $make, ($($attr)?), channels_are_listed_a_page_at_a_time);
        $crate::conformance_suite!(@api $make, ($($attr)?), presence_heals_sessions_ended_without_an_update);
        $crate::conformance_suite!(@api $make, ($($attr)?), api_publish_with_an_idempotency_key_is_published_once);
        $crate::conformance_suite!(@api $make, ($($attr)?), api_broadcasts_and_sends_with_an_idempotency_key_happen_once);
    };
    (@api $make:expr, ($($attr:tt)?), $case:ident) => {
        #[tokio::test $($attr)?]
        async fn $case() {
            let backend = ($make)().await;
            $crate::conformance_api::$case(backend).await;
        }
    };
    (@case $make:expr, ($($attr:tt)?), $case:ident) => {
        #[tokio::test $($attr)?]
        async fn $case() {
            let backend = ($make)().await;
            $crate::conformance::$case(backend).await;
        }
    };
}

#[cfg(test)]
mod memory {
    use std::sync::Arc;

    use crate::{Backend, MemoryBackend};

    async fn make() -> Arc<dyn Backend> {
        Arc::new(MemoryBackend::new())
    }

    crate::conformance_suite!(make, (start_paused = true));
}
