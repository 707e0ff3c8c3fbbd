//! Engine settings. The binary loads them; this crate only defines and documents them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happens when a session's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Drop the oldest queued message to make room (counted in `queue_dropped`).
    #[default]
    DropOldest,
    /// Destroy the session: its next connect gets `401` and `reconnect: handshake` advice.
    Disconnect,
}

/// Bayeux semantics settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Seconds a `/meta/connect` may be held; advertised as `advice.timeout`. A session
    /// lives for twice this after its last connect.
    pub timeout_secs: u64,
    /// Milliseconds a client should wait between connects (`advice.interval`).
    pub interval_ms: u64,
    /// Most messages queued for one session before the overflow policy applies.
    pub max_queue: usize,
    /// What to do when a session's queue is full.
    pub overflow: OverflowPolicy,
    /// Most bytes of queued messages sent to a client at once (one WebSocket frame, one
    /// EventSource event or one connect reply); what is left goes out next, at once. A
    /// message larger than this still goes, alone. Bounds the memory a socket's write and
    /// a reply take, and the frame size clients must accept (Faye's client takes at most
    /// 64 MiB). 0: no limit.
    pub max_batch_bytes: usize,
    /// Most milliseconds a publish waits while this node has fallen behind on a WebSocket's
    /// session (half of `max_queue` or more queued while the socket's task waits to be
    /// run: the node is short of CPU, the client is not slow), instead of dropping messages
    /// for it, and after that while earlier waiters are let through a quarter of
    /// `max_queue` at a time; then it goes ahead. Slow clients, long-polling clients and
    /// EventSource streams never make publishers wait. 0: never wait.
    pub publish_wait_ms: u64,
    /// Most subscriptions one session may hold. Also the most distinct names one subscribe
    /// or unsubscribe message may carry (a name given twice counts once).
    /// Checked on each node under a per-session lock, so concurrent subscribes through one
    /// node cannot pass it together.
    pub max_subscriptions: usize,
    /// Seconds a session's publish is remembered, so that the same message re-sent by its
    /// client (same `clientId`, `id`, channel and content: Faye's client re-sends a message
    /// whose reply it missed, 1.2 × timeout after sending it or after a failed request) is
    /// answered as a success and not delivered twice. On Redis every node recognises it
    /// (one key of about 160 bytes with this expiry per publish, on the channel's shard; on
    /// one server only for a publish that reached a subscriber); the memory backend keeps each session's last 64 and the
    /// server API's last 100,000. Publishes without a `clientId` or an `id` are never taken
    /// for retries. Also the window of the server API's `idempotency_key`. At most 86,400;
    /// shorter than 1.2 × `timeout_secs` + 5 s misses the Faye client's re-send after a
    /// reply that never came (a warning at startup). 0: remember nothing.
    pub publish_retry_window_secs: u64,
    /// Seconds between sweeps for expired sessions (0: a quarter of the timeout, at least 1 s).
    /// A sweep takes expired sessions 1,000 at a time and goes on at once while it finds
    /// that many, up to 20,000 a node per sweep.
    pub sweep_interval_secs: u64,
    /// Longest channel name or pattern, in bytes (at most 1024, the protocol's hard limit);
    /// longer ones get `405:<channel>:Invalid channel`.
    pub max_channel_length: usize,
    /// Most segments in a channel name or pattern (at most 64, the protocol's hard limit).
    pub max_channel_depth: usize,
    /// Publish monitoring events (handshake, subscribe, unsubscribe, publish, disconnect,
    /// presence) on `/meta/crier/events/<kind>` for server-side subscribers. Costs one
    /// backend publish per event, so it is off by default.
    pub event_channels: bool,
    /// Seconds between this node's heartbeats (its figures for the cluster-stats API),
    /// 1 to 20; a node silent for three intervals is no longer listed. The API's channel
    /// and subscription counts are also reused for this long (counting them reads every
    /// channel).
    pub stats_interval_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeout_secs: 25,
            interval_ms: 0,
            max_queue: 1000,
            overflow: OverflowPolicy::DropOldest,
            max_batch_bytes: 1024 * 1024,
            publish_wait_ms: 2000,
            max_subscriptions: 1000,
            publish_retry_window_secs: 120,
            sweep_interval_secs: 0,
            max_channel_length: crier_protocol::channel::MAX_CHANNEL_LEN,
            max_channel_depth: crier_protocol::channel::MAX_CHANNEL_DEPTH,
            event_channels: false,
            stats_interval_secs: 5,
        }
    }
}

impl EngineConfig {
    /// The heartbeat interval, 1 to 20 s (a backend keeps a heartbeat for a minute).
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.stats_interval_secs.clamp(1, 20))
    }

    /// The most a publish waits for sessions this node has fallen behind on.
    pub fn publish_wait(&self) -> Duration {
        Duration::from_millis(self.publish_wait_ms)
    }

    /// The connect hold time.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// How long a session lives after its last connect (2 × timeout, as Faye).
    pub fn session_lifetime(&self) -> Duration {
        self.timeout() * 2
    }

    /// Why `publish_retry_window_secs` is too short to catch the Faye client's re-send of a
    /// publish it got no reply to (it waits 1.2 × the advised timeout, then `retry`
    /// seconds, 5 by default), if it is.
    pub fn publish_retry_window_shortfall(&self) -> Option<String> {
        let window = self.publish_retry_window()?;
        let needed = self.timeout().mul_f64(1.2) + Duration::from_secs(5);
        (window < needed).then(|| {
            format!(
                "engine.publish_retry_window_secs = {} is shorter than 1.2 × engine.timeout_secs + 5 s ({} s): a publish \
                 the Faye client re-sends after getting no reply is delivered twice",
                self.publish_retry_window_secs,
                needed.as_secs_f64().ceil()
            )
        })
    }

    /// How long a publish is remembered for recognising its retry; `None`: not at all.
    pub fn publish_retry_window(&self) -> Option<Duration> {
        (self.publish_retry_window_secs > 0).then(|| Duration::from_secs(self.publish_retry_window_secs))
    }

    /// Whether a channel name or pattern is within the configured length and depth.
    pub fn channel_allowed(&self, name: &str) -> bool {
        name.len() <= self.max_channel_length && name.bytes().filter(|&b| b == b'/').count() <= self.max_channel_depth
    }

    /// Time between sweeps for expired sessions.
    pub fn sweep_interval(&self) -> Duration {
        if self.sweep_interval_secs > 0 {
            Duration::from_secs(self.sweep_interval_secs)
        } else {
            (self.timeout() / 4).max(Duration::from_secs(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_window_shorter_than_the_faye_client_s_re_send_is_reported() {
        let config = |window, timeout| EngineConfig {
            publish_retry_window_secs: window,
            timeout_secs: timeout,
            ..EngineConfig::default()
        };
        assert_eq!(config(120, 25).publish_retry_window_shortfall(), None, "the defaults");
        assert_eq!(config(35, 25).publish_retry_window_shortfall(), None, "1.2 × 25 + 5 = 35");
        let short = config(34, 25).publish_retry_window_shortfall().unwrap_or_default();
        assert!(short.contains("shorter than 1.2 × engine.timeout_secs + 5 s (35 s)"), "{short}");
        assert_eq!(config(0, 25).publish_retry_window_shortfall(), None, "off is a choice, not a mistake");
    }
}
