//! EventSource stream marks on a real `redis-server`, two nodes: a connect on the node
//! without the stream learns that the stream's node delivers (and keeps the session alive);
//! a mark lapses; a stream on a node the session has left cannot overwrite the mark.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crier_engine::Backend;
use crier_engine::conformance::Harness;
use crier_protocol::ClientId;
use crier_redis::testing::{RedisServer, unique_prefix};
use crier_redis::{RedisBackend, RedisConfig};

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

async fn node(prefix: &str) -> (Harness, Arc<RedisBackend>) {
    let config = RedisConfig { url: redis().url(), prefix: prefix.to_owned(), ..RedisConfig::default() };
    let backend =
        Arc::new(RedisBackend::connect(config, Duration::from_secs(20)).await.expect("redis backend connects"));
    (Harness::new(backend.clone() as Arc<dyn Backend>), backend)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_mark_tells_other_nodes_where_the_session_is_delivered() {
    let prefix = unique_prefix("streams");
    let ((a, a_backend), (b, b_backend)) = (node(&prefix).await, node(&prefix).await);
    // Handshaken through A: attached there.
    let id = ClientId::parse(&a.client().await).expect("id");
    assert!(!b_backend.streaming_elsewhere(&id, now_ms()).await.expect("redis"), "no stream yet");

    a_backend.mark_streaming(&id, Duration::from_secs(30)).await.expect("redis");
    assert!(!a_backend.streaming_elsewhere(&id, now_ms()).await.expect("redis"), "not elsewhere on its own node");
    // On B it is, and asking keeps the session alive.
    let later = now_ms() + 10 * 60_000;
    assert!(b_backend.streaming_elsewhere(&id, later).await.expect("redis"));
    let expired = a_backend.expired_sessions(later - 60_000).await.expect("redis");
    assert!(!expired.contains(&id), "liveness refreshed: {expired:?}");

    // B takes the session (a long-poll connect there); A has not heard yet, and its stream
    // renews its mark late: refused, the session is B's.
    let held = a_backend.hold_control_messages().await;
    let r = b.connect(id.as_str(), Some(0)).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    b_backend.mark_streaming(&id, Duration::from_secs(30)).await.expect("redis");
    a_backend.mark_streaming(&id, Duration::from_secs(30)).await.expect("redis");
    assert!(a_backend.streaming_elsewhere(&id, now_ms()).await.expect("redis"), "B's mark stands");
    drop(held);

    // A mark lapses.
    b_backend.mark_streaming(&id, Duration::from_millis(200)).await.expect("redis");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!a_backend.streaming_elsewhere(&id, now_ms()).await.expect("redis"), "the mark lapsed");
}
