//! A Redis connection that goes silent (a network path that drops everything while both
//! ends keep their sockets open, as a partition or a dead proxy does) is noticed by the
//! pub/sub liveness probe (`redis.ping_interval_secs`): the node replaces its connections,
//! subscribes again, and delivers what was published meanwhile from the logs. The command
//! connection has a probe of its own: commands from many tasks keep fred's unresponsive
//! check (measured from the last write) from ever firing there, so without it every
//! command timed out for as long as the test ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crier_engine::conformance::Harness;
use crier_engine::{Backend, Engine, EngineConfig};
use crier_redis::testing::{RedisServer, unique_prefix};
use crier_redis::{RedisBackend, RedisConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to `target`. Bumping the generation silences every connection made
/// before: both ends stay open, and whatever either sends is dropped. Connections made
/// after work normally.
async fn proxy(target: u16) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("proxy addr").port();
    let generation = Arc::new(AtomicU64::new(0));
    let g = generation.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else { continue };
            let mine = g.load(Ordering::SeqCst);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pump(ri, wo, mine, g.clone()));
            tokio::spawn(pump(ro, wi, mine, g.clone()));
        }
    });
    (port, generation)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mine: u64,
    generation: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if generation.load(Ordering::SeqCst) == mine && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn harness(url: String, prefix: &str) -> (Harness, Arc<RedisBackend>) {
    let config = RedisConfig { url, prefix: prefix.to_owned(), ping_interval_secs: 1, ..RedisConfig::default() };
    let backend =
        Arc::new(RedisBackend::connect(config, Duration::from_secs(20)).await.expect("redis backend connects"));
    let config = EngineConfig { timeout_secs: 10, ..EngineConfig::default() };
    (Harness { engine: Engine::builder(config, backend.clone() as Arc<dyn Backend>).build() }, backend)
}

fn silent_reconnects(b: &RedisBackend) -> i64 {
    b.metrics().into_iter().find(|(name, _, _)| *name == "crier_redis_silent_reconnects_total").map_or(0, |m| m.2)
}

/// Polls the session on `h` until it has `want` messages, for at most `within`. A connect
/// that fails while Redis does not answer must tell the client to keep its session and
/// retry (a handshake would start a new session and lose what waits for the old one).
/// Returns the messages and how many connects failed.
async fn data_within(h: &Harness, id: &str, want: usize, within: Duration) -> (Vec<Value>, usize) {
    let deadline = tokio::time::Instant::now() + within;
    let (mut got, mut failed) = (Vec::new(), 0);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        let r = h.connect(id, Some(0)).await;
        if r[0].successful() == Some(true) {
            got.extend(r[1..].iter().filter_map(|m| m.data().cloned()));
        } else {
            failed += 1;
            let advice = r[0].0.get("advice").cloned().unwrap_or_default();
            assert_eq!(advice["reconnect"], json!("retry"), "{r:?}");
            assert_eq!(advice["interval"], json!(1000), "{r:?}");
            assert_eq!(advice["timeout"], json!(10_000), "the usual timeout: {r:?}");
            assert_eq!(r[0].error(), Some("500::Backend unavailable"), "{r:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (got, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_replaced_and_nothing_published_meanwhile_is_lost() {
    let server = RedisServer::start();
    let (proxy_port, generation) = proxy(server.port).await;
    let prefix = unique_prefix("silent");
    // The subscriber's node reaches Redis through the proxy; the publisher's directly.
    let (sub_node, sub_backend) = harness(format!("redis://127.0.0.1:{proxy_port}"), &prefix).await;
    let (pub_node, _) = harness(server.url(), &prefix).await;
    let id = sub_node.client().await;
    sub_node.subscribe(&id, "/live").await;
    pub_node.publish("/live", json!(1)).await;
    assert_eq!(data_within(&sub_node, &id, 1, Duration::from_secs(5)).await, (vec![json!(1)], 0), "before");

    // The path goes silent. Publishes go on through the other node.
    generation.fetch_add(1, Ordering::SeqCst);
    for n in 2..=3 {
        pub_node.publish("/live", json!(n)).await;
    }
    // Two probes unanswered for three intervals (3 s) each, then a new connection, a new
    // subscription and a catch-up from the logs.
    // Meanwhile this node's commands time out too (`redis.command_timeout_ms`), so the
    // session's connects may fail, with retry advice.
    let (got, failed) = data_within(&sub_node, &id, 2, Duration::from_secs(20)).await;
    assert_eq!(got, vec![json!(2), json!(3)], "what was published while the connection was silent ({failed} failed)");
    pub_node.publish("/live", json!(4)).await;
    assert_eq!(data_within(&sub_node, &id, 1, Duration::from_secs(5)).await, (vec![json!(4)], 0), "live again");
    assert_eq!(silent_reconnects(&sub_backend), 1, "the command connection was replaced by the probe");
}
