//! The engine's backend conformance suite, run against Redis: a real `redis-server` started
//! for this test process, a fresh key prefix per case. Real time (not paused): the backend
//! talks to a real server, whose replies paused time would not wait for.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crier_engine::Backend;
use crier_redis::testing::{RedisServer, unique_prefix};
use crier_redis::{RedisBackend, RedisConfig};

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

async fn make() -> Arc<dyn Backend> {
    let config = RedisConfig { url: redis().url(), prefix: unique_prefix("conf"), ..RedisConfig::default() };
    // The suite's engine uses a 2 s timeout: sessions live 4 s.
    Arc::new(RedisBackend::connect(config, Duration::from_secs(4)).await.expect("redis backend connects"))
}

crier_engine::conformance_suite!(make);
