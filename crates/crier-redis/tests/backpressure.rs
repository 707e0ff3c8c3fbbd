//! Backpressure across nodes on a real `redis-server`: a node whose fan-out falls behind
//! makes publishes through every node wait, for at most `redis.backpressure_max_wait_ms`.
//! Announcements are either sent raw on the pressure channel (to control them exactly) or
//! made by a node whose sink is slow.

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crier_engine::{Backend, Delivery, DeliverySink};
use crier_protocol::{ChannelName, ChannelPattern, ClientId, Message};
use crier_redis::testing::{RedisServer, unique_prefix};
use crier_redis::{RedisBackend, RedisConfig};
use tokio::time::Instant;

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    // Small stream nodes, so that `MAXLEN ~` trims a log to about its limit (by default it
    // keeps whole nodes of 100 entries, and a log of 20 would keep everything here).
    SERVER.get_or_init(|| RedisServer::start_with(&["--stream-node-max-entries", "4"]))
}

/// Collects what a node hands to its sessions, taking `delay` per message (a node whose
/// sockets cannot keep up: the listener hands messages over no faster than this), and,
/// while its gate is shut, nothing at all (the listener is stuck).
struct Sink {
    got: Mutex<Vec<u64>>,
    delay: Duration,
    open: (Mutex<bool>, Condvar),
}

impl DeliverySink for Sink {
    fn deliver(&self, sessions: &[ClientId], delivery: &Arc<Delivery>) {
        // Blocking in place hands this worker's queued tasks to another thread: a task
        // woken here (a Redis connection's reader, say) would otherwise wait for it.
        tokio::task::block_in_place(|| {
            let (open, turn) = &self.open;
            let mut is_open = open.lock().expect("gate");
            while !*is_open {
                is_open = turn.wait(is_open).expect("gate");
            }
            drop(is_open);
            if !self.delay.is_zero() {
                std::thread::sleep(self.delay);
            }
        });
        self.got.lock().expect("sink").extend(sessions.iter().map(|_| delivery.seq));
    }

    fn close(&self, _session: &ClientId) {}
}

impl Sink {
    fn seqs(&self) -> Vec<u64> {
        self.got.lock().expect("sink").clone()
    }

    fn set_open(&self, open: bool) {
        *self.open.0.lock().expect("gate") = open;
        self.open.1.notify_all();
    }
}

/// A node. Unless a test is about it, the runtime-lag sign is off: a loaded test machine
/// must not make a node ask for backpressure where a test expects none.
async fn node(config: RedisConfig, delay: Duration) -> (RedisBackend, Arc<Sink>) {
    let config = RedisConfig { url: redis().url(), ..config };
    let backend = RedisBackend::connect(config, Duration::from_secs(20)).await.expect("redis backend connects");
    let sink = Arc::new(Sink { got: Mutex::new(Vec::new()), delay, open: (Mutex::new(true), Condvar::new()) });
    backend.bind(sink.clone());
    (backend, sink)
}

fn config(label: &str) -> RedisConfig {
    RedisConfig { prefix: unique_prefix(label), backpressure_lag_ms: 0, ..RedisConfig::default() }
}

fn metric(b: &RedisBackend, name: &str) -> i64 {
    b.metrics().iter().find(|(n, _, _)| *n == name).map(|(_, _, v)| *v).unwrap_or_else(|| panic!("no metric {name}"))
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Everything said on a sharded channel, read by a plain client on its own thread (the
/// RESP push frames as text: enough to look for a message).
fn listen(channel: &str) -> Arc<Mutex<String>> {
    use std::io::{Read, Write};
    let heard = Arc::new(Mutex::new(String::new()));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", redis().port)).expect("connect to redis");
    let cmd = format!("*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{channel}\r\n", channel.len());
    conn.write_all(cmd.as_bytes()).expect("SSUBSCRIBE");
    let mut first = [0u8; 256];
    let n = conn.read(&mut first).expect("subscribed");
    assert!(String::from_utf8_lossy(&first[..n]).contains("ssubscribe"), "SSUBSCRIBE answered");
    let sink = heard.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("heard").push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    heard
}

/// Announces on the pressure channel as a node would (`on NODE HOLD_MS` / `off NODE`).
fn announce(prefix: &str, what: &str) {
    let reply = redis().cmd(&["SPUBLISH", &format!("{prefix}:{{pressure}}"), what]);
    assert!(reply.is_some_and(|r| r.starts_with(':')), "SPUBLISH answered");
}

fn publish(b: &RedisBackend, seq: u64) -> impl Future<Output = ()> + '_ {
    let channel = ChannelName::parse("/bp").expect("valid");
    // As the engine publishes: `admit` first, then the publish itself.
    async move {
        b.admit().await;
        b.publish(&channel, Delivery::new(seq, channel.clone(), Message::new(), now_ms())).await.expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_waits_while_a_node_is_pressured_and_goes_ahead_when_it_recovers() {
    let config = RedisConfig { backpressure_max_wait_ms: 30_000, ..config("bp-wait") };
    let prefix = config.prefix.clone();
    let (b, _) = node(config, Duration::ZERO).await;
    // Unhindered before.
    tokio::time::timeout(Duration::from_secs(5), publish(&b, 1)).await.expect("no wait without pressure");
    assert_eq!(metric(&b, "crier_redis_publish_waits_total"), 0);

    announce(&prefix, "on other 60000");
    eventually("b hears of the pressured node", || metric(&b, "crier_redis_pressured_nodes") == 1).await;
    let started = Instant::now();
    let waiting = tokio::spawn(async move {
        publish(&b, 2).await;
        b
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the publish waits while the node is pressured");
    announce(&prefix, "off other");
    let b = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("goes ahead after off").expect("task");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(metric(&b, "crier_redis_publish_waits_total"), 1);
    assert_eq!(metric(&b, "crier_redis_publish_wait_timeouts_total"), 0);
    assert!(metric(&b, "crier_redis_publish_wait_ms_total") >= 250);
    assert_eq!(metric(&b, "crier_redis_pressured_nodes"), 0);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_waits_at_most_the_configured_time_and_not_at_all_with_zero() {
    let config = RedisConfig { backpressure_max_wait_ms: 400, ..config("bp-max") };
    let prefix = config.prefix.clone();
    let (b, _) = node(config.clone(), Duration::ZERO).await;
    let (never, _) = node(RedisConfig { backpressure_max_wait_ms: 0, ..config }, Duration::ZERO).await;
    announce(&prefix, "on stuck 60000");
    eventually("both hear of it", || {
        metric(&b, "crier_redis_pressured_nodes") == 1 && metric(&never, "crier_redis_pressured_nodes") == 1
    })
    .await;

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), publish(&b, 1)).await.expect("goes ahead after the max wait");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "{took:?}");
    assert_eq!(metric(&b, "crier_redis_publish_wait_timeouts_total"), 1);

    let started = Instant::now();
    publish(&never, 2).await;
    assert!(started.elapsed() < Duration::from_millis(300), "max wait 0: no wait ({:?})", started.elapsed());
    assert_eq!(metric(&never, "crier_redis_publish_waits_total"), 0);
    announce(&prefix, "off stuck");
    b.close().await;
    never.close().await;
}

/// A node that died pressured (or whose `off` was lost) holds publishers back only for the
/// hold it announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_that_is_not_repeated_runs_out() {
    let config = RedisConfig { backpressure_max_wait_ms: 30_000, ..config("bp-hold") };
    let prefix = config.prefix.clone();
    let (b, _) = node(config, Duration::ZERO).await;
    announce(&prefix, "on gone 2000");
    eventually("b hears of it", || metric(&b, "crier_redis_pressured_nodes") == 1).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), publish(&b, 1)).await.expect("goes ahead when the hold runs out");
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited ({:?})", started.elapsed());
    assert_eq!(metric(&b, "crier_redis_publish_waits_total"), 1);
    assert_eq!(metric(&b, "crier_redis_publish_wait_timeouts_total"), 0);
    assert_eq!(metric(&b, "crier_redis_pressured_nodes"), 0);
    // Junk on the channel is counted and ignored.
    announce(&prefix, "on");
    eventually("the junk is counted", || metric(&b, "crier_redis_malformed_total") == 1).await;
    tokio::time::timeout(Duration::from_secs(1), publish(&b, 2)).await.expect("no wait");
    b.close().await;
}

/// A node whose runtime runs its timers late (its CPU is saturated, here: every worker
/// busy for 300 ms, four times in a row) asks publishers to wait, and stops asking once it
/// catches up. One late timer is a hiccup, not a reason. A node with `backpressure_lag_ms`
/// 0, in the same runtime, does not ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_runtime_lags_asks_publishers_to_wait_until_it_catches_up() {
    let prefix = unique_prefix("bp-lag");
    let config = RedisConfig { prefix, backpressure_lag_ms: 100, ..RedisConfig::default() };
    let (a, _) = node(config.clone(), Duration::ZERO).await;
    let (off, _) = node(RedisConfig { backpressure_lag_ms: 0, ..config }, Duration::ZERO).await;
    let block = || async {
        let busy: Vec<_> =
            (0..2).map(|_| tokio::spawn(async { std::thread::sleep(Duration::from_millis(300)) })).collect();
        for b in busy {
            b.await.expect("busy task");
        }
    };
    block().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(metric(&a, "crier_redis_backpressure_episodes_total"), 0, "one late timer is a hiccup");
    for _ in 0..4 {
        block().await;
    }
    eventually("a asked publishers to wait", || metric(&a, "crier_redis_backpressure_episodes_total") >= 1).await;
    eventually("and stopped asking", || metric(&a, "crier_redis_pressured") == 0).await;
    assert_eq!(metric(&off, "crier_redis_backpressure_episodes_total"), 0);
    a.close().await;
    off.close().await;
}

/// B publishes N messages to a session on A as fast as each is acknowledged. A's pub/sub
/// buffer holds 256 and its logs about 20, so a backlog beyond that loses messages for
/// good. Returns what A's session got and the counters.
const N: u64 = 300;

struct Overload {
    seqs: Vec<u64>,
    lagged: i64,
    episodes: i64,
    waits: i64,
}

async fn overload(backlog: usize, delay: Duration, gated: bool) -> Overload {
    let base = RedisConfig {
        pubsub_buffer: 256,
        log_max_len: 20,
        backpressure_backlog: backlog,
        backpressure_max_wait_ms: 30_000,
        ..config("bp-load")
    };
    let (a, a_sink) = node(base.clone(), delay).await;
    let (b, _) = node(base, Duration::ZERO).await;
    let id = ClientId::from_random([7; 20]);
    a.create_session(&id, now_ms()).await.expect("create");
    a.attach(&id).await.expect("attach");
    a.subscribe(&id, &ChannelPattern::parse("/bp").expect("valid")).await.expect("subscribe");
    a_sink.set_open(!gated);
    for seq in 1..=N {
        publish(&b, seq).await;
    }
    a_sink.set_open(true);
    // Settled: everything that will arrive has (the log catch-up after a lag included).
    let mut last = usize::MAX;
    eventually("a's deliveries settle", || {
        let n = a_sink.seqs().len();
        let settled = n == N as usize || (n == last && metric(&a, "crier_redis_pressured") == 0);
        last = n;
        settled
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = Overload {
        seqs: a_sink.seqs(),
        lagged: metric(&a, "crier_redis_pubsub_lagged_total"),
        episodes: metric(&a, "crier_redis_backpressure_episodes_total"),
        waits: metric(&b, "crier_redis_publish_waits_total"),
    };
    a.close().await;
    b.close().await;
    out
}

/// A's sink takes 10 ms per message, so B (at hundreds of publishes a second) outruns it;
/// with a backlog limit of 16, A asks B to wait and every message arrives, in order. (The
/// slack between the limit and the buffer, 240 messages, covers the time the announcement
/// takes to reach B on a loaded machine; the defaults leave 16,128.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_fan_out_falls_behind_slows_publishers_and_loses_nothing() {
    let Overload { seqs, lagged, episodes, waits } = overload(16, Duration::from_millis(10), false).await;
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<u64>>(),
        "every message, once, in order (lagged {lagged}, episodes {episodes}, waits {waits})"
    );
    assert_eq!(lagged, 0, "the pub/sub buffer never overflowed");
    assert!(episodes >= 1, "a asked publishers to wait");
    assert!(waits >= 1, "b's publishes waited");
}

/// The same load with backpressure off, A's listener held until B is done (so the overflow
/// does not depend on how fast this machine is): the buffer overflows and the trimmed logs
/// cannot fill the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_backpressure_the_same_load_overflows() {
    let Overload { seqs, lagged, episodes, waits } = overload(0, Duration::ZERO, true).await;
    assert!(lagged >= 1, "the pub/sub buffer overflowed");
    assert!(seqs.len() < N as usize, "messages were lost for good ({} of {N} arrived)", seqs.len());
    assert_eq!((episodes, waits), (0, 0));
}

/// A pressured node that shuts down says `off`: the others go ahead at once, not when its
/// last announcement's hold (1 s, repeated every 250 ms) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pressured_node_that_shuts_down_releases_publishers_at_once() {
    let base = RedisConfig { backpressure_backlog: 16, backpressure_max_wait_ms: 30_000, ..config("bp-close") };
    let heard = listen(&format!("{}:{{pressure}}", base.prefix));
    let (a, _) = node(base.clone(), Duration::from_millis(10)).await;
    let (b, _) = node(base, Duration::ZERO).await;
    let b = Arc::new(b);
    let off = format!("off {}", a.node_id());
    let id = ClientId::from_random([8; 20]);
    a.create_session(&id, now_ms()).await.expect("create");
    a.attach(&id).await.expect("attach");
    a.subscribe(&id, &ChannelPattern::parse("/bp").expect("valid")).await.expect("subscribe");
    let publisher = b.clone();
    let publishing = tokio::spawn(async move {
        for seq in 1..=10_000 {
            publish(&publisher, seq).await;
        }
    });
    eventually("b hears that a is pressured", || metric(&b, "crier_redis_pressured_nodes") == 1).await;
    let closing = Instant::now();
    a.close().await;
    eventually("b hears that a is not", || metric(&b, "crier_redis_pressured_nodes") == 0).await;
    let took = closing.elapsed();
    assert!(took < Duration::from_millis(700), "released by `off`, not by the hold running out ({took:?})");
    eventually("a said `off` on the channel", || heard.lock().expect("heard").contains(&off)).await;
    publishing.abort();
    let _ = publishing.await;
    match Arc::try_unwrap(b) {
        Ok(b) => b.close().await,
        Err(_) => panic!("the publishing task still holds b"),
    }
}
