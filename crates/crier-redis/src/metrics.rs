//! The Redis backend's counters, exposed through the engine on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct RedisMetrics {
    pub(crate) command_errors: AtomicU64,
    pub(crate) pubsub_messages: AtomicU64,
    pub(crate) pubsub_lagged: AtomicU64,
    pub(crate) pending_dropped: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) attaches: AtomicU64,
    pub(crate) moved_unheard: AtomicU64,
    pub(crate) bridges: AtomicU64,
    pub(crate) bridged: AtomicU64,
    pub(crate) log_gaps: AtomicU64,
    pub(crate) recoveries: AtomicU64,
    pub(crate) silent_reconnects: AtomicU64,
    pub(crate) sessions_restored: AtomicU64,
    pub(crate) control_messages: AtomicU64,
    pub(crate) mark_writes: AtomicU64,
    pub(crate) marks_applied: AtomicU64,
    pub(crate) pressure_episodes: AtomicU64,
    pub(crate) publish_waits: AtomicU64,
    pub(crate) publish_wait_ms: AtomicU64,
    pub(crate) publish_wait_timeouts: AtomicU64,
}

impl RedisMetrics {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Vec<(&'static str, &'static str, i64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed) as i64;
        vec![
            ("crier_redis_command_errors_total", "Redis commands that failed.", g(&self.command_errors)),
            ("crier_redis_pubsub_messages_total", "Messages received over Redis pub/sub.", g(&self.pubsub_messages)),
            (
                "crier_redis_pubsub_lagged_total",
                "Times the fan-out fell behind the pub/sub buffer (recovered from the logs).",
                g(&self.pubsub_lagged),
            ),
            (
                "crier_redis_pending_dropped_total",
                "Live messages dropped from a full buffer while a session was catching up.",
                g(&self.pending_dropped),
            ),
            (
                "crier_redis_malformed_total",
                "Pub/sub payloads or log entries that could not be read.",
                g(&self.malformed),
            ),
            ("crier_redis_attaches_total", "Sessions that moved to this node.", g(&self.attaches)),
            (
                "crier_redis_moved_unheard_total",
                "Connects here for a session another node had taken before this node heard (attached afresh).",
                g(&self.moved_unheard),
            ),
            ("crier_redis_bridges_total", "Log catch-ups run for sessions.", g(&self.bridges)),
            ("crier_redis_bridged_messages_total", "Log entries read while catching up.", g(&self.bridged)),
            (
                "crier_redis_log_gaps_total",
                "Catch-ups that found the log trimmed past a session's position (messages lost).",
                g(&self.log_gaps),
            ),
            ("crier_redis_recoveries_total", "Recoveries after a pub/sub reconnect or lag.", g(&self.recoveries)),
            (
                "crier_redis_silent_reconnects_total",
                "Command connections replaced because a PING got no answer (a silent network path).",
                g(&self.silent_reconnects),
            ),
            (
                "crier_redis_sessions_restored_total",
                "Sessions re-created in Redis after it lost them.",
                g(&self.sessions_restored),
            ),
            (
                "crier_redis_control_messages_total",
                "Control messages from other nodes, counted once handled.",
                g(&self.control_messages),
            ),
            (
                "crier_redis_mark_writes_total",
                "Writes of this node's marks (how far its sessions were sent, per name).",
                g(&self.mark_writes),
            ),
            (
                "crier_redis_marks_applied_total",
                "Sessions that moved here and resumed after their previous node's marks.",
                g(&self.marks_applied),
            ),
            (
                "crier_redis_backpressure_episodes_total",
                "Times this node's fan-out fell behind and it asked every node's publishers to wait.",
                g(&self.pressure_episodes),
            ),
            (
                "crier_redis_publish_waits_total",
                "Publishes through this node that waited because some node's fan-out was behind.",
                g(&self.publish_waits),
            ),
            (
                "crier_redis_publish_wait_ms_total",
                "Milliseconds publishes through this node spent waiting for pressured nodes.",
                g(&self.publish_wait_ms),
            ),
            (
                "crier_redis_publish_wait_timeouts_total",
                "Publishes that went ahead after waiting redis.backpressure_max_wait_ms.",
                g(&self.publish_wait_timeouts),
            ),
        ]
    }
}
