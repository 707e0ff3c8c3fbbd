//! Engine counters. Plain atomics, read by the server's metrics endpoint; no labels per
//! client or channel.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters and gauges kept by the engine.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Sessions created.
    pub handshakes: AtomicU64,
    /// Sessions currently known to this node.
    pub sessions: AtomicI64,
    /// Sessions destroyed by the expiry sweep.
    pub sessions_expired: AtomicU64,
    /// Publishes accepted.
    pub published: AtomicU64,
    /// Publishes recognised as a client re-sending one already accepted (answered, not
    /// delivered again).
    pub publish_retries: AtomicU64,
    /// Messages queued for sessions (one per recipient).
    pub delivered: AtomicU64,
    /// Messages dropped because a session's queue was full.
    pub queue_dropped: AtomicU64,
    /// Sessions disconnected because their queue was full.
    pub queue_disconnects: AtomicU64,
    /// Socket sessions this node has fallen behind on (publishers wait for them).
    pub sessions_behind: AtomicI64,
    /// Publishes that waited for a session this node had fallen behind on.
    pub publish_waits: AtomicU64,
    /// Milliseconds those publishes waited, in all.
    pub publish_wait_ms: AtomicU64,
    /// Publishes that stopped waiting at `engine.publish_wait_ms`.
    pub publish_wait_timeouts: AtomicU64,
    /// Subscriptions added.
    pub subscribes: AtomicU64,
    /// Subscriptions added minus removed through this node (each change is counted on the
    /// one node that made it, so the sum over nodes is the cluster's total).
    pub subscriptions: AtomicI64,
    /// Messages refused by an error (any code).
    pub errors: AtomicU64,
    /// Backend calls that failed.
    pub backend_errors: AtomicU64,
    /// Time from publish to hand-off to the client.
    pub delivery_latency: Histogram,
}

/// Upper bounds of the latency buckets, in milliseconds.
const BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10_000];

/// A fixed-bucket histogram of milliseconds (Prometheus exposition in seconds).
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; 13],
    sum_ms: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe_ms(&self, ms: u64) {
        let i = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Prometheus text for this histogram under `name`.
    pub fn exposition(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            out.push_str(&format!("{name}_bucket{{le=\"{}\"}} {cumulative}\n", *bound as f64 / 1000.0));
        }
        cumulative += self.counts[BUCKETS_MS.len()].load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {cumulative}\n"));
        out.push_str(&format!("{name}_sum {}\n", self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0));
        out.push_str(&format!("{name}_count {cumulative}\n"));
        out
    }
}

impl Metrics {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot as `(name, help, value)` triples, for exposition.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, i64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed) as i64;
        vec![
            ("crier_handshakes_total", "Sessions created.", g(&self.handshakes)),
            ("crier_sessions", "Sessions known to this node.", self.sessions.load(Ordering::Relaxed)),
            ("crier_sessions_expired_total", "Sessions destroyed by the expiry sweep.", g(&self.sessions_expired)),
            ("crier_messages_published_total", "Publishes accepted.", g(&self.published)),
            (
                "crier_publish_retries_total",
                "Publishes recognised as a re-sent copy of one already accepted (answered, not delivered again).",
                g(&self.publish_retries),
            ),
            ("crier_messages_delivered_total", "Messages queued for sessions.", g(&self.delivered)),
            ("crier_queue_dropped_total", "Messages dropped because a session queue was full.", g(&self.queue_dropped)),
            (
                "crier_queue_disconnects_total",
                "Sessions disconnected because their queue was full.",
                g(&self.queue_disconnects),
            ),
            (
                "crier_sessions_behind",
                "Socket sessions this node has fallen behind on (publishers wait for them).",
                self.sessions_behind.load(Ordering::Relaxed),
            ),
            (
                "crier_publish_waits_total",
                "Publishes that waited for a socket session this node had fallen behind on.",
                g(&self.publish_waits),
            ),
            (
                "crier_publish_wait_ms_total",
                "Milliseconds publishes waited for such sessions.",
                g(&self.publish_wait_ms),
            ),
            (
                "crier_publish_wait_timeouts_total",
                "Publishes that stopped waiting at engine.publish_wait_ms.",
                g(&self.publish_wait_timeouts),
            ),
            ("crier_subscribes_total", "Subscriptions added.", g(&self.subscribes)),
            (
                "crier_subscriptions",
                "Subscriptions added minus removed through this node (sum over nodes: the cluster's total).",
                self.subscriptions.load(Ordering::Relaxed),
            ),
            ("crier_errors_total", "Messages answered with a Bayeux error.", g(&self.errors)),
            ("crier_backend_errors_total", "Backend calls that failed.", g(&self.backend_errors)),
        ]
    }
}
