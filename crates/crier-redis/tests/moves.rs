//! A long-polling session moving between two engines on a real `redis-server` while one
//! node has not yet heard that it moved away: each message reaches the client once, in
//! order. (Behind a round-robin balancer under load, a connect can come back to a node
//! before that node has handled the other node's `close`.)

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crier_engine::conformance::Harness;
use crier_engine::{
    Backend, Delivery, DeliverySink, Pump, RequestContext, RequestInfo, SocketReplies, Transport, Turn,
};
use crier_protocol::{ClientId, Message};
use crier_redis::testing::{RedisServer, unique_prefix};
use crier_redis::{ControlHold, RedisBackend, RedisConfig};
use serde_json::{Value, json};
use tokio::time::Instant;

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

struct Node {
    harness: Harness,
    backend: Arc<RedisBackend>,
}

async fn node(prefix: &str) -> Node {
    node_with(RedisConfig { url: redis().url(), prefix: prefix.to_owned(), ..RedisConfig::default() }).await
}

async fn node_with(config: RedisConfig) -> Node {
    // Marks written often: what a socket was sent is recorded with them.
    let config = RedisConfig { cursor_flush_ms: 50, ..config };
    let backend =
        Arc::new(RedisBackend::connect(config, Duration::from_secs(20)).await.expect("redis backend connects"));
    let harness = Harness::new(backend.clone() as Arc<dyn Backend>);
    Node { harness, backend }
}

impl Node {
    fn metric(&self, name: &str) -> i64 {
        self.backend
            .metrics()
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("{name}"))
    }

    /// The data of one connect that waits up to 1 s for something to deliver.
    async fn poll(&self, id: &str) -> Vec<i64> {
        let mut r = self.harness.connect(id, Some(1000)).await;
        assert_eq!(r.first().and_then(|m| m.successful()), Some(true), "{r:?}");
        r.remove(0);
        r.iter().filter_map(|m| m.data().and_then(Value::as_i64)).collect()
    }

    /// Connects until `n` messages came, for at most 10 s.
    async fn poll_until(&self, id: &str, n: usize) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(Instant::now() < deadline, "only {got:?} of {n} messages arrived");
            got.extend(self.poll(id).await);
        }
        got
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two nodes after a move A did not hear of: A had the session and delivered 1–3; then B
/// took it (A's control messages are held back) and delivered 4–6, which A's stale copy
/// has queued too.
struct Moved {
    a: Node,
    b: Node,
    id: String,
    got: Vec<i64>,
    held: ControlHold,
}

async fn moved_unheard(prefix: &str) -> Moved {
    let (a, b) = (node(prefix).await, node(prefix).await);
    let id = a.harness.client().await;
    a.harness.subscribe(&id, "/move").await;
    let mut got = Vec::new();
    for i in 1..=3 {
        a.harness.publish("/move", json!(i)).await;
    }
    got.extend(a.poll_until(&id, 3).await);

    let held = a.backend.hold_control_messages().await;
    assert_eq!(b.poll(&id).await, Vec::<i64>::new(), "nothing new yet");
    let heard = a.metric("crier_redis_pubsub_messages_total");
    for i in 4..=6 {
        b.harness.publish("/move", json!(i)).await;
    }
    got.extend(b.poll_until(&id, 3).await);
    eventually("node A received 4 to 6", || a.metric("crier_redis_pubsub_messages_total") >= heard + 3).await;
    Moved { a, b, id, got, held }
}

/// A has the session and delivered 1–3. The client's next connects go to B, and A does not
/// hear of it (its control messages are held back), so A keeps queueing 4–6 for its stale
/// copy. B delivers 4–6. The client then comes back to A: A must see that B has the session,
/// drop what it queued and attach afresh, so the client gets 7 next, not 4–6 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_on_a_node_that_missed_a_move_repeats_nothing() {
    let prefix = unique_prefix("moves");
    let Moved { a, b, id, mut got, held } = moved_unheard(&prefix).await;

    a.harness.publish("/move", json!(7)).await;
    got.extend(a.poll_until(&id, 1).await);
    assert_eq!(a.metric("crier_redis_moved_unheard_total"), 1, "A noticed the move it had not heard of");
    // A's late `close` finds the session A's again and leaves it alone.
    drop(held);
    b.harness.publish("/move", json!(8)).await;
    got.extend(a.poll_until(&id, 1).await);
    // Back to B, which was told to let go when A took the session back.
    b.harness.publish("/move", json!(9)).await;
    got.extend(b.poll_until(&id, 1).await);
    // Anything repeated would come with these.
    got.extend(a.poll(&id).await);
    got.extend(b.poll(&id).await);
    assert_eq!(got, (1..=9).collect::<Vec<_>>());
}

/// Two connects for the session reach A at once after a move A did not hear of (a client's
/// retry racing its previous request): whichever finds the stale copy first attaches
/// afresh, the other must not deliver from the stale copy either. Each message still comes
/// once, in order. (The interleaving is whatever the run gets: typically both see the move
/// and the second finds the first's fresh copy. The one where the second only sees its
/// copy closed, after the first attached afresh, is not forced here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connects_on_a_node_that_missed_a_move_repeat_nothing() {
    let prefix = unique_prefix("moves-two");
    let Moved { a, b, id, mut got, held } = moved_unheard(&prefix).await;

    let publish_later = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.harness.publish("/move", json!(7)).await;
    };
    let (first, second, ()) = tokio::join!(a.poll(&id), a.poll(&id), publish_later);
    got.extend(first);
    got.extend(second);
    drop(held);
    // 7 may have gone to a connect that a newer one superseded first: then it waits here.
    got.extend(a.poll(&id).await);
    got.extend(b.poll(&id).await);
    got.extend(a.poll(&id).await);
    assert_eq!(got, (1..=7).collect::<Vec<_>>());
}

fn ws() -> RequestContext {
    RequestContext::new(Transport::WebSocket, RequestInfo::default())
}

/// The data of the pump's next batch, waiting at most 5 s; the batch counts as written.
async fn next_batch(pump: &mut Pump) -> Vec<i64> {
    let batch =
        tokio::time::timeout(Duration::from_secs(5), pump.next()).await.expect("a batch within 5 s").expect("a batch");
    let data = batch.items().iter().filter_map(|o| o.to_message().data().and_then(Value::as_i64)).collect();
    pump.written(batch);
    data
}

fn socket_connect(id: &str) -> Vec<Message> {
    let m = json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket","advice":{"timeout":5000}});
    vec![serde_json::from_value(m).expect("a message")]
}

/// The same over a WebSocket. A socket opened on a node that missed a move gets a pump on a
/// fresh copy of the session (not the stale one with 2 queued). And when the session moves
/// away unheard while a socket is open on A, the socket's next connect there is answered at
/// once and its pump ends, so the client's next connect brings a pump that delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_on_a_node_that_missed_a_move_repeats_nothing() {
    let prefix = unique_prefix("moves-ws");
    let (a, b) = (node(&prefix).await, node(&prefix).await);
    let id = a.harness.client().await;
    a.harness.subscribe(&id, "/move").await;
    a.harness.publish("/move", json!(1)).await;
    assert_eq!(a.poll_until(&id, 1).await, vec![1]);

    let held = a.backend.hold_control_messages().await;
    assert_eq!(b.poll(&id).await, Vec::<i64>::new(), "nothing new yet");
    let heard = a.metric("crier_redis_pubsub_messages_total");
    b.harness.publish("/move", json!(2)).await;
    assert_eq!(b.poll_until(&id, 1).await, vec![2]);
    eventually("node A received 2", || a.metric("crier_redis_pubsub_messages_total") > heard).await;

    let mut pump = a.harness.engine.pump(&id, &ws()).await.expect("a pump");
    a.harness.publish("/move", json!(3)).await;
    assert_eq!(next_batch(&mut pump).await, vec![3], "the socket starts after what B sent");
    assert_eq!(a.metric("crier_redis_moved_unheard_total"), 1);

    // B takes the session while the socket is open on A (after A recorded what the socket
    // was sent: before, B would send 3 again, as after a crash of A), and A does not hear.
    drop(held);
    let writes = a.metric("crier_redis_mark_writes_total");
    eventually("two mark writes on A", || a.metric("crier_redis_mark_writes_total") >= writes + 2).await;
    let held = a.backend.hold_control_messages().await;
    b.harness.publish("/move", json!(4)).await;
    assert_eq!(b.poll_until(&id, 1).await, vec![4]);
    let started = Instant::now();
    let replies = match a.harness.engine.process_socket(socket_connect(&id), &ws(), Turn::none()).await {
        SocketReplies::Now(r) => r,
        SocketReplies::Held(_) => panic!("a connect for a session attached afresh is not held"),
    };
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].to_message().successful(), Some(true), "{replies:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once");
    assert!(!pump.is_live(), "the old pump ends");
    let rest = tokio::time::timeout(Duration::from_secs(5), pump.next()).await.expect("the old pump returns");
    assert!(rest.is_none(), "the old pump does not send what its copy had queued (4, sent by B)");
    let mut pump = a.harness.engine.pump(&id, &ws()).await.expect("a new pump");
    a.harness.publish("/move", json!(5)).await;
    assert_eq!(next_batch(&mut pump).await, vec![5], "nothing repeated");
    drop(held);
}

/// Records the sessions a node's backend closes.
#[derive(Default)]
struct Closes(std::sync::Mutex<Vec<ClientId>>);

impl DeliverySink for Closes {
    fn deliver(&self, _sessions: &[ClientId], _delivery: &Arc<Delivery>) {}

    fn close(&self, session: &ClientId) {
        self.0.lock().expect("closes").push(session.clone());
    }
}

impl Closes {
    fn of(&self, id: &ClientId) -> usize {
        self.0.lock().expect("closes").iter().filter(|c| *c == id).count()
    }
}

/// Waits until node `a` has handled `n` control messages in all (they are counted once
/// handled).
async fn handled(a: &RedisBackend, n: i64) {
    let count = || a.metrics().iter().find(|(m, _, _)| *m == "crier_redis_control_messages_total").map(|(_, _, v)| *v);
    eventually("control messages handled", || count() >= Some(n)).await;
}

/// A `close` reaches the engine only for a session the node holds. A copy the engine has
/// only begun to attach (its attach waits for the session's lock, as when a connect finds
/// its copy stale and attaches afresh) is not the one meant: closing it would leave the
/// attach registering a session with no copy to deliver to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_for_a_session_this_node_does_not_hold_reaches_no_copy() {
    let prefix = unique_prefix("moves-close");
    let config = || RedisConfig { url: redis().url(), prefix: prefix.clone(), ..RedisConfig::default() };
    let a = RedisBackend::connect(config(), Duration::from_secs(20)).await.expect("node a");
    let b = RedisBackend::connect(config(), Duration::from_secs(20)).await.expect("node b");
    let (a_closes, b_closes) = (Arc::new(Closes::default()), Arc::new(Closes::default()));
    a.bind(a_closes.clone());
    b.bind(b_closes.clone());
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);

    // Held by A, taken by B: A closes its copy.
    let held = ClientId::from_random([7; 20]);
    a.create_session(&held, now).await.expect("create");
    a.attach(&held).await.expect("attach to a");
    b.attach(&held).await.expect("attach to b");
    handled(&a, 1).await;
    assert_eq!(a_closes.of(&held), 1, "A let go of the session B took");

    // Never held by A (B's): a `close` to A, as a late one would be, closes nothing there.
    let other = ClientId::from_random([8; 20]);
    b.create_session(&other, now).await.expect("create");
    b.attach(&other).await.expect("attach to b");
    let channel = format!("{prefix}:{{n:{}}}", a.node_id());
    redis().cmd(&["SPUBLISH", &channel, &format!("close {}", other.as_str())]).expect("SPUBLISH");
    handled(&a, 2).await;
    assert_eq!(a_closes.of(&other), 0, "no copy on A is closed for a session A does not hold");
    assert_eq!(b_closes.of(&other), 0);
}

/// A session moving to another node catches up from the log, and a gap is counted only
/// when messages after the session's position were trimmed away. Its own entry alone may
/// go (by age after a quiet spell; here by length) with nothing lost. Trimming removes
/// whole stream nodes; with one entry per node (a Redis of its own) and `log_max_len` 1,
/// each publish leaves only itself in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_gap_is_counted_only_when_messages_were_lost() {
    let redis = RedisServer::start_with(&["--stream-node-max-entries", "1"]);
    for lost in [false, true] {
        let prefix = unique_prefix("gap");
        let config =
            || RedisConfig { url: redis.url(), prefix: prefix.clone(), log_max_len: 1, ..RedisConfig::default() };
        let (a, b) = (node_with(config()).await, node_with(config()).await);
        let id = a.harness.client().await;
        a.harness.subscribe(&id, "/gap").await;
        // The client is sent 1 to 100, or only 1 to 10 when messages are to be lost, on A.
        let seen: i64 = if lost { 10 } else { 100 };
        for i in 1..=100 {
            a.harness.publish("/gap", json!(i)).await;
            if i == seen {
                assert_eq!(a.poll_until(&id, seen as usize).await, (1..=seen).collect::<Vec<i64>>());
                // Its next connect tells A that they arrived; A records it with its marks.
                assert_eq!(a.poll(&id).await, Vec::<i64>::new());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // 101 pushes the older entries out of the log, the client's own last one included,
        // and its next connect goes to B, which reads the log from there.
        a.harness.publish("/gap", json!(101)).await;
        let got = b.poll_until(&id, 1).await;
        assert_eq!(got.last(), Some(&101), "{got:?}");
        assert_eq!(got, vec![101], "the log holds nothing else");
        let gaps = b.metric("crier_redis_log_gaps_total");
        assert_eq!(gaps, i64::from(lost), "lost {lost}: {gaps} gaps counted, got {got:?}");
    }
}
