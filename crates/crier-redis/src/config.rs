//! Redis backend settings. The binary loads them; this crate defines and documents them.

use serde::{Deserialize, Serialize};

/// How to reach Redis and how long to keep what sessions may still need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL. Empty: no Redis, the single-node memory engine. `redis://[user:pass@]host:port[/db]`
    /// for one server; `redis-cluster://host:port?node=host:port` for Redis Cluster (any
    /// known nodes); `redis-sentinel://host:port?sentinelServiceName=NAME&node=host:port` for
    /// Sentinel (the sentinels' addresses and the monitored master's name).
    pub url: String,
    /// Prefix of every key and pub/sub channel, so several deployments can share a Redis.
    /// Must not contain `{` or `}` (they delimit hash tags).
    pub prefix: String,
    /// Most entries kept in each subscription name's message log (trimmed approximately).
    pub log_max_len: u64,
    /// Seconds a log keeps messages for sessions between connects. 0: the session lifetime
    /// (2 × `engine.timeout_secs`) plus a margin; a smaller value is raised to that.
    pub log_retention_secs: u64,
    /// Milliseconds a Redis command may take before it fails (a publish then gets `407`).
    pub command_timeout_ms: u64,
    /// Milliseconds between writes of the node's marks: per subscription name, how far every
    /// socket session attached to the node was sent (one write per node, however many
    /// sessions). A session that moves after a node crash may get up to this much again.
    pub cursor_flush_ms: u64,
    /// Seconds between liveness probes (PING) of the pub/sub and the command connections. The
    /// pub/sub connection is replaced (and resubscribed) when a probe gets no answer within
    /// three intervals; the command connection when two probes in a row get none within
    /// three intervals each (not on Redis Cluster, where a shard connection is left to the
    /// client's own check). A network path that goes silent then costs seconds, not the
    /// kernel's quarter of an hour.
    pub ping_interval_secs: u64,
    /// Pub/sub messages buffered between the Redis connection and the node's fan-out. If
    /// the fan-out falls behind by more, the node re-reads what it missed from the logs.
    pub pubsub_buffer: usize,
    /// Live messages received from Redis but not yet fanned out, above which this node asks
    /// the publishers on every node to wait (until this backlog and the lateness below are
    /// both down to a quarter of their limits). 0: the backlog never makes it ask. Must be
    /// below `pubsub_buffer`.
    pub backpressure_backlog: usize,
    /// Milliseconds late this node's runtime may run a timer twice in a row (its CPU is
    /// saturated, so its sockets fall behind) before it asks the publishers on every node to
    /// wait (until the lateness and the backlog above are both down to a quarter of their
    /// limits). 0: lateness never makes it ask.
    pub backpressure_lag_ms: u64,
    /// Longest a publish waits while some node asks publishers to wait; then it goes ahead
    /// anyway. 0: publishes through this node never wait.
    pub backpressure_max_wait_ms: u64,
    /// Seconds a user's presence record (`last_online` and the other timestamps) is kept
    /// after its last change.
    pub presence_retention_secs: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            prefix: "crier".to_owned(),
            log_max_len: 1000,
            log_retention_secs: 0,
            command_timeout_ms: 5000,
            cursor_flush_ms: 1000,
            ping_interval_secs: 5,
            pubsub_buffer: 16_384,
            backpressure_backlog: 256,
            backpressure_lag_ms: 100,
            backpressure_max_wait_ms: 2000,
            presence_retention_secs: 30 * 24 * 3600,
        }
    }
}

impl RedisConfig {
    /// Whether a Redis URL is configured.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// Checks values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(format!("redis.prefix: must be non-empty without '{{' or '}}' (got {:?})", self.prefix));
        }
        if self.log_max_len == 0 {
            return Err("redis.log_max_len: must be at least 1".to_owned());
        }
        if self.command_timeout_ms == 0 {
            return Err("redis.command_timeout_ms: must be at least 1".to_owned());
        }
        if self.cursor_flush_ms == 0 {
            return Err("redis.cursor_flush_ms: must be at least 1".to_owned());
        }
        if self.ping_interval_secs == 0 {
            return Err("redis.ping_interval_secs: must be at least 1".to_owned());
        }
        if self.presence_retention_secs == 0 {
            return Err("redis.presence_retention_secs: must be at least 1".to_owned());
        }
        if self.pubsub_buffer < 16 {
            return Err("redis.pubsub_buffer: must be at least 16".to_owned());
        }
        if self.backpressure_backlog >= self.pubsub_buffer {
            return Err(format!(
                "redis.backpressure_backlog: must be below redis.pubsub_buffer ({}), or 0 (got {})",
                self.pubsub_buffer, self.backpressure_backlog
            ));
        }
        if self.enabled() {
            // This build's Redis client has no TLS: a TLS URL would connect in plain text to a
            // TLS port and fail on every command, so it stops startup instead.
            if self.url.trim().to_ascii_lowercase().starts_with("rediss") {
                return Err(format!(
                    "redis.url: TLS (rediss://) is not supported by this build; use redis:// on a private \
                     network, or a TLS-terminating proxy such as stunnel next to each node: {}",
                    crate::error::redact(self.url.trim())
                ));
            }
            fred::prelude::Config::from_url(self.url.trim()).map_err(|e| format!("redis.url: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_the_error_names_the_key() {
        assert_eq!(RedisConfig::default().validate(), Ok(()));
        let err = |c: RedisConfig| c.validate().expect_err("invalid");
        let backlog = err(RedisConfig { backpressure_backlog: 16_384, ..RedisConfig::default() });
        assert!(backlog.starts_with("redis.backpressure_backlog:"), "{backlog}");
        let small = RedisConfig { pubsub_buffer: 64, backpressure_backlog: 64, ..RedisConfig::default() };
        assert!(err(small).contains("below redis.pubsub_buffer (64)"));
        // 0 turns each sign (and the wait) off.
        let off = RedisConfig {
            backpressure_backlog: 0,
            backpressure_lag_ms: 0,
            backpressure_max_wait_ms: 0,
            ..RedisConfig::default()
        };
        assert_eq!(off.validate(), Ok(()));
        assert!(err(RedisConfig { pubsub_buffer: 8, ..RedisConfig::default() }).starts_with("redis.pubsub_buffer:"));
        assert!(err(RedisConfig { log_max_len: 0, ..RedisConfig::default() }).starts_with("redis.log_max_len:"));
        for url in ["rediss://:secret@redis:6380", "rediss-cluster://redis:6380", "REDISS://redis"] {
            let e = err(RedisConfig { url: url.to_owned(), ..RedisConfig::default() });
            assert!(e.starts_with("redis.url: TLS (rediss://) is not supported"), "{e}");
            assert!(!e.contains("secret"), "the password is not printed: {e}");
        }
    }
}
