//! Limits on what one connection or session may do (`limits.*`), enforced at the edge:
//! connections per node, sessions per WebSocket connection, publishes per second per
//! session. Each refusal is counted and logged with the client id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crier_protocol::{Message, meta};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Per-node, per-connection and per-session limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most open TCP connections on a node's public port: WebSockets and HTTP connections
    /// alike, idle keep-alive ones and ones that have not sent a request yet included. A
    /// connection accepted beyond it gets HTTP 503 (with the reason) to its Bayeux request
    /// and is closed; at most 64 such are answered at once, more are closed unanswered.
    /// 0: no limit.
    pub max_connections: usize,
    /// Most sessions one WebSocket connection, or one HTTP request, may create (handshakes
    /// on it; an HTTP connection is not counted as a whole, since a reverse proxy carries
    /// many clients over each); beyond it the handshake gets
    /// `403::Too many sessions on this connection (limit N)`. 0: no limit.
    pub max_sessions_per_connection: usize,
    /// Publishes per second one session may make, on average; beyond it (and the burst) a
    /// publish gets `403::Too many publishes (limit N/s)`. Anonymous publishes (no
    /// `clientId`, e.g. a backend's form POST) are not limited. 0: no limit.
    pub publish_rate: u32,
    /// Publishes a session may make at once above the rate.
    pub publish_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_connections: 100_000, max_sessions_per_connection: 16, publish_rate: 0, publish_burst: 100 }
    }
}

/// Sessions' publish budgets beyond which the table is pruned of idle entries.
const PRUNE_AT: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The node's enforcement state.
#[derive(Default)]
pub(crate) struct Limiter {
    pub(crate) config: LimitsConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) sessions_refused: AtomicU64,
    pub(crate) publishes_refused: AtomicU64,
}

impl Limiter {
    pub(crate) fn new(config: LimitsConfig) -> Self {
        Limiter { config, ..Limiter::default() }
    }

    /// Whether a new connection may open while `open` are.
    pub(crate) fn has_room(&self, open: i64) -> bool {
        let max = self.config.max_connections;
        max == 0 || open < max as i64
    }

    /// Counts and logs a connection accepted beyond the limit (to be answered 503 and
    /// closed, or closed at once when too many others are being answered).
    pub(crate) fn refuse_connection(&self) {
        let refused = self.connections_refused.fetch_add(1, Ordering::Relaxed) + 1;
        // The first and then every thousandth: a full node under a reconnect storm refuses
        // thousands a second, and the metric has the count.
        if refused == 1 || refused % 1000 == 0 {
            tracing::warn!(
                limit = self.config.max_connections,
                refused,
                "connection limit reached, refusing connections"
            );
        }
    }

    /// Refuses (sets `error` on) publishes of sessions over their rate.
    pub(crate) fn check_publishes(&self, batch: &mut [Message]) {
        let rate = self.config.publish_rate;
        if rate == 0 {
            return;
        }
        let burst = f64::from(self.config.publish_burst.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        for m in batch.iter_mut() {
            let is_publish = m.channel().is_some_and(|c| c != "/meta" && !c.starts_with("/meta/"));
            let Some(id) = m.client_id().filter(|_| is_publish).map(str::to_owned) else { continue };
            if buckets.len() >= PRUNE_AT && !buckets.contains_key(&id) {
                buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() * f64::from(rate) < burst);
            }
            let b = buckets.entry(id.clone()).or_insert(Bucket { tokens: burst, at: now });
            b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * f64::from(rate)).min(burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
            } else {
                self.publishes_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(client_id = %id, limit = rate, "publish rate limit reached");
                m.set("error", format!("403::Too many publishes (limit {rate}/s)"));
            }
        }
    }

    /// Counts the handshakes of a batch against a connection's allowance; refuses (sets
    /// `error` on) those beyond it. (Refused before the engine sees them: no session, and
    /// no backend work, is made for them.)
    pub(crate) fn check_sessions(&self, batch: &mut [Message], made: &mut usize) {
        let max = self.config.max_sessions_per_connection;
        for m in batch.iter_mut().filter(|m| m.channel() == Some(meta::HANDSHAKE)) {
            *made += 1;
            if max > 0 && *made > max {
                self.sessions_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(limit = max, "sessions per connection limit reached");
                m.set("error", format!("403::Too many sessions on this connection (limit {max})"));
            }
        }
    }

    pub(crate) fn metrics(&self) -> [(&'static str, &'static str, i64); 3] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed) as i64;
        [
            (
                "crier_limit_connections_refused_total",
                "Connections refused at limits.max_connections (answered 503, or closed unanswered in a flood).",
                g(&self.connections_refused),
            ),
            (
                "crier_limit_sessions_refused_total",
                "Handshakes refused at limits.max_sessions_per_connection.",
                g(&self.sessions_refused),
            ),
            (
                "crier_limit_publishes_refused_total",
                "Publishes refused at limits.publish_rate.",
                g(&self.publishes_refused),
            ),
        ]
    }
}
