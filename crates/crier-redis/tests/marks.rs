//! Node marks through the backend API, on a real `redis-server`: two nodes, sessions whose
//! delivery positions the test controls, moves between the nodes.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crier_engine::{Backend, Delivery, DeliverySink};
use crier_protocol::{ChannelName, ChannelPattern, ClientId, Message};
use crier_redis::testing::{RedisServer, unique_prefix};
use crier_redis::{RedisBackend, RedisConfig};

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// Collects what a node hands to its sessions.
#[derive(Default)]
struct Sink(Mutex<Vec<(ClientId, Arc<Delivery>)>>);

impl DeliverySink for Sink {
    fn deliver(&self, sessions: &[ClientId], delivery: &Arc<Delivery>) {
        let mut got = self.0.lock().expect("sink");
        got.extend(sessions.iter().map(|s| (s.clone(), delivery.clone())));
    }

    fn close(&self, _session: &ClientId) {}
}

impl Sink {
    fn of(&self, id: &ClientId) -> Vec<Arc<Delivery>> {
        self.0.lock().expect("sink").iter().filter(|(s, _)| s == id).map(|(_, d)| d.clone()).collect()
    }

    fn seqs(&self, id: &ClientId) -> Vec<u64> {
        self.of(id).iter().map(|d| d.seq).collect()
    }
}

async fn node(prefix: &str) -> (RedisBackend, Arc<Sink>) {
    let config =
        RedisConfig { url: redis().url(), prefix: prefix.to_owned(), cursor_flush_ms: 50, ..RedisConfig::default() };
    let backend = RedisBackend::connect(config, Duration::from_secs(20)).await.expect("redis backend connects");
    let sink = Arc::new(Sink::default());
    backend.bind(sink.clone());
    (backend, sink)
}

fn mark_writes(b: &RedisBackend) -> i64 {
    b.metrics().iter().find(|(n, _, _)| *n == "crier_redis_mark_writes_total").map(|(_, _, v)| *v).unwrap_or(0)
}

/// Waits for two more mark writes, so one was computed wholly after the call.
async fn two_mark_writes(b: &RedisBackend) {
    let start = mark_writes(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mark_writes(b) < start + 2 {
        assert!(tokio::time::Instant::now() < deadline, "no mark writes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_delivered(sink: &Sink, id: &ClientId, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sink.of(id).len() < n {
        assert!(tokio::time::Instant::now() < deadline, "{} of {n} delivered", sink.of(id).len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Two nodes on a fresh prefix; sessions X and Y attached to A and subscribed to `channel`,
/// with messages 1 to `n` published and handed to both (nothing recorded as sent yet).
struct Setup {
    a: RedisBackend,
    a_sink: Arc<Sink>,
    b: RedisBackend,
    b_sink: Arc<Sink>,
    x: ClientId,
    y: ClientId,
}

async fn setup(channel: &str, n: u64) -> Setup {
    let prefix = unique_prefix("marks");
    let (a, a_sink) = node(&prefix).await;
    let (b, b_sink) = node(&prefix).await;
    let (x, y) = (ClientId::from_random([1; 20]), ClientId::from_random([2; 20]));
    let name = ChannelPattern::parse(channel).expect("valid");
    let channel = ChannelName::parse(channel).expect("valid");
    for id in [&x, &y] {
        a.create_session(id, now()).await.expect("create");
        a.attach(id).await.expect("attach");
        a.subscribe(id, &name).await.expect("subscribe");
    }
    for seq in 1..=n {
        a.publish(&channel, Delivery::new(seq, channel.clone(), Message::new(), now())).await.expect("publish");
    }
    until_delivered(&a_sink, &x, n as usize).await;
    until_delivered(&a_sink, &y, n as usize).await;
    Setup { a, a_sink, b, b_sink, x, y }
}

/// Node A holds sessions X and Y on `/n`; Y was sent all ten messages, X only five. A then
/// drops X while Redis still records X as attached to A (an engine-level detach), so A's
/// marks, computed from Y alone, are ahead of X. When X attaches to B, it must still get
/// messages 6 to 10: A stopped vouching for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_drops_a_session_stops_vouching_for_it() {
    let Setup { a, a_sink, b, b_sink, x, y } = setup("/n", 10).await;
    a.sent_soon(&y, &a_sink.of(&y));
    a.sent_soon(&x, &a_sink.of(&x)[..5]);
    two_mark_writes(&a).await;

    a.detach(&x);
    two_mark_writes(&a).await;
    b.attach(&x).await.expect("attach at b");
    until_delivered(&b_sink, &x, 5).await;
    assert_eq!(b_sink.seqs(&x), vec![6, 7, 8, 9, 10]);

    // And a session A still holds moves with A's marks: Y replays nothing.
    b.attach(&y).await.expect("attach y at b");
    assert_eq!(b.metrics().iter().find(|(n, _, _)| *n == "crier_redis_marks_applied_total").map(|m| m.2), Some(1));
    assert!(b_sink.seqs(&y).is_empty(), "{:?}", b_sink.seqs(&y));
    a.close().await;
    b.close().await;
}

/// Two sessions on one node, one lagging: the node's mark is the lagging one's position, so
/// a move of either replays from there and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_session_holds_its_nodes_mark_back() {
    let Setup { a, a_sink, b, b_sink, x, y } = setup("/lag", 6).await;
    a.sent_soon(&x, &a_sink.of(&x));
    a.sent_soon(&y, &a_sink.of(&y)[..2]);
    two_mark_writes(&a).await;
    // Both move to B, which reads A's marks before A hears of each move.
    b.attach(&x).await.expect("attach x");
    b.attach(&y).await.expect("attach y");
    until_delivered(&b_sink, &y, 4).await;
    until_delivered(&b_sink, &x, 4).await;
    assert_eq!(b_sink.seqs(&y), vec![3, 4, 5, 6], "the lagging session gets what it was not sent");
    assert_eq!(b_sink.seqs(&x), vec![3, 4, 5, 6], "the other replays from the shared mark");
    b.close().await;
}

/// A socket's batch that could not be written goes back to the session's queue and is not
/// recorded as sent: when the session then moves, the node it moves to replays it (it was
/// once recorded before the write, so the new node resumed after it and skipped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_socket_could_not_write_is_delivered_after_a_move() {
    use crier_engine::conformance::Harness;
    use crier_engine::{RequestContext, RequestInfo, Transport};
    use serde_json::{Value, json};

    let prefix = unique_prefix("unwritten");
    let connect = || async {
        let config =
            RedisConfig { url: redis().url(), prefix: prefix.clone(), cursor_flush_ms: 50, ..RedisConfig::default() };
        Arc::new(RedisBackend::connect(config, Duration::from_secs(20)).await.expect("redis backend connects"))
    };
    let (a, b) = (connect().await, connect().await);
    let (ha, hb) = (Harness::new(a.clone()), Harness::new(b.clone()));
    let id = ha.client().await;
    ha.subscribe(&id, "/unwritten").await;
    let ws = RequestContext::new(Transport::WebSocket, RequestInfo::default());
    let mut pump = ha.engine.pump(&id, &ws).await.expect("a pump for the session");
    for i in 1..=3 {
        ha.publish("/unwritten", json!(i)).await;
    }
    // Each batch goes back as if the socket write failed, so the next one starts with it
    // again; wait for one with all three.
    loop {
        let batch = tokio::time::timeout(Duration::from_secs(10), pump.next())
            .await
            .expect("the pump yields what was published")
            .expect("a batch");
        let all = batch.items().len() == 3;
        pump.requeue(batch);
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(pump);
    // Anything recorded as sent on A is in Redis (A's marks) after this.
    two_mark_writes(&a).await;

    let mut got: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 3 && tokio::time::Instant::now() < deadline {
        let r = hb.connect(&id, Some(300)).await;
        assert_eq!(r.first().and_then(|m| m.successful()), Some(true), "{r:?}");
        got.extend(r.iter().filter_map(|m| m.data().cloned()));
    }
    assert_eq!(got, vec![json!(1), json!(2), json!(3)]);
    ha.engine.close().await;
    hb.engine.close().await;
}
