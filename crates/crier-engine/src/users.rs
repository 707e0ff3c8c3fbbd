//! Users and presence: the reserved subscription names that carry user-targeted messages,
//! and the presence model every backend keeps.
//!
//! A session bound to a user at handshake is subscribed to the user's private name
//! `/meta/crier/users/<hex of the user id>`. Sending to a user is a publish to that one name,
//! so it rides the backend's ordinary fan-out (logs, cursors, bridging between nodes) and
//! reaches every session of the user wherever it is attached. Names under `/meta/` cannot be
//! subscribed to or published to by remote clients, and a `/**` subscriber never sees them
//! because reserved names are published to by name, never by channel expansion.

use crier_protocol::ChannelPattern;

use crate::backend::Millis;

/// Subscription names under this prefix belong to the server (users, monitoring events).
pub const RESERVED_PREFIX: &str = "/meta/crier/";

/// Prefix of the per-user private names.
pub const USER_PREFIX: &str = "/meta/crier/users/";

/// Prefix of the monitoring-event channels (`/meta/crier/events/<kind>`).
pub const EVENTS_PREFIX: &str = "/meta/crier/events/";

/// Longest user id accepted (bytes), so its private name stays under the protocol's
/// channel-length cap.
pub const MAX_USER_LEN: usize = 256;

/// The private subscription name of a user, or `None` for an empty or too long id.
pub fn user_name(user: &str) -> Option<ChannelPattern> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return None;
    }
    let mut s = String::with_capacity(USER_PREFIX.len() + user.len() * 2);
    s.push_str(USER_PREFIX);
    for b in user.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    ChannelPattern::parse(&s).ok()
}

/// The user whose private name this is.
pub fn user_of_name(name: &ChannelPattern) -> Option<String> {
    let hex = name.as_str().strip_prefix(USER_PREFIX)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// Whether a subscription name is the server's own (never listed, counted or reported as
/// a client's subscription).
pub fn is_reserved(name: &ChannelPattern) -> bool {
    name.as_str().starts_with(RESERVED_PREFIX)
}

/// A user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    /// At least one session, and not every session is away.
    Online,
    /// Every session of the user said it is away.
    Away,
    /// No session.
    Offline,
}

impl PresenceStatus {
    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceStatus::Online => "online",
            PresenceStatus::Away => "away",
            PresenceStatus::Offline => "offline",
        }
    }
}

/// What a backend knows of a user's presence. Times are ms since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Presence {
    /// The user id.
    pub user: String,
    /// Online, away or offline.
    pub status: PresenceStatus,
    /// Number of live sessions.
    pub sessions: u64,
    /// When the current online period began (absent when offline).
    pub online_since: Option<Millis>,
    /// When the user was last online: now while online, else when the last session ended
    /// (absent for a user never seen).
    pub last_online: Option<Millis>,
    /// When the user became away (absent unless away).
    pub away_since: Option<Millis>,
}

/// A change of a user's presence status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// The user id.
    pub user: String,
    /// The new status.
    pub status: PresenceStatus,
    /// When it changed (ms since the epoch).
    pub at: Millis,
}

/// One node's figures, written by each node periodically and read by the cluster-stats API.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct NodeStats {
    /// The node id.
    pub node: String,
    /// When this node started (ms since the epoch).
    pub started_ms: Millis,
    /// When these figures were taken.
    pub updated_ms: Millis,
    /// Sessions whose messages this node delivers.
    pub sessions_attached: u64,
    /// Messages published through this node since it started.
    pub published_total: u64,
    /// Messages delivered to clients by this node since it started.
    pub delivered_total: u64,
    /// Publishes per second over the last interval.
    pub published_per_sec: f64,
    /// Deliveries per second over the last interval.
    pub delivered_per_sec: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_round_trip_and_are_reserved() {
        for u in ["42", "alice@example.com", "ünï/cødé *", "a b{c}"] {
            let n = user_name(u).expect("name");
            assert!(is_reserved(&n), "{n}");
            assert_eq!(user_of_name(&n).as_deref(), Some(u));
        }
        assert_eq!(user_name(""), None);
        assert_eq!(user_name(&"x".repeat(MAX_USER_LEN + 1)), None);
        assert!(user_name(&"x".repeat(MAX_USER_LEN)).is_some());
        assert!(!is_reserved(&ChannelPattern::parse("/meta/crierx").expect("valid")));
        assert_eq!(user_of_name(&ChannelPattern::parse("/meta/crier/users/4").expect("valid")), None);
    }
}
