//! Every Redis key and pub/sub channel name, built in one place.
//!
//! Keys of one session share the hash tag `{s:ID}`; keys of one subscription name share
//! `{c:NAME}`, and so does its sharded pub/sub channel. No command or script touches keys of
//! two tags, so everything runs unchanged on Redis Cluster; the one exception, the publish
//! script for one server (`PUBLISH_MANY` in `scripts.rs`), is not used on Redis Cluster, and
//! a server that refuses it (cluster mode behind a `redis://` URL) gets one call per name. Channel names cannot contain
//! braces (the Bayeux grammar excludes them), so a name never breaks its tag.

use crier_engine::RetryKey;
use crier_protocol::{ChannelName, ChannelPattern, ClientId};

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys { prefix: prefix.to_owned() }
    }

    /// Hash: `node` (attached node), `created` (ms).
    pub(crate) fn session(&self, id: &ClientId) -> String {
        format!("{}:{{s:{}}}:info", self.prefix, id.as_str())
    }

    /// Hash: subscription name → delivery cursor (the last log offset sent to the session).
    pub(crate) fn subs(&self, id: &ClientId) -> String {
        format!("{}:{{s:{}}}:subs", self.prefix, id.as_str())
    }

    /// String with a TTL: the node whose EventSource stream for the session is open, renewed
    /// by the stream (see `Backend::mark_streaming`). Same hash tag as the session.
    pub(crate) fn stream(&self, id: &ClientId) -> String {
        format!("{}:{{s:{}}}:stream", self.prefix, id.as_str())
    }

    /// Sorted set: client id scored by last connect (ms); the expiry index.
    pub(crate) fn index(&self) -> String {
        format!("{}:sessions", self.prefix)
    }

    /// String: a random value set once per data set. If it vanishes or changes, Redis lost
    /// its data (a restart without persistence, a failover to an unsynced replica).
    pub(crate) fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// Set: client ids subscribed to a name. A publish logs for a name only if it is non-empty.
    pub(crate) fn members(&self, name: &ChannelPattern) -> String {
        format!("{}:{{c:{}}}:members", self.prefix, name.as_str())
    }

    /// Stream: the name's message log.
    pub(crate) fn log(&self, name: &ChannelPattern) -> String {
        format!("{}:{{c:{}}}:log", self.prefix, name.as_str())
    }

    /// String with a TTL: a session's publish remembered for recognising its retry
    /// (`engine.publish_retry_window_secs`). On the exact channel's tag, so the publish
    /// script that logs the message for that name also checks and sets it.
    pub(crate) fn retry(&self, channel: &ChannelName, key: &RetryKey) -> String {
        format!("{}:{{c:{}}}:r:{}", self.prefix, channel.as_str(), key.hex())
    }

    /// String with a TTL: a server API call (broadcast, send) claimed with an idempotency
    /// key, `p` while it runs and `d` once done. A tag of its own.
    pub(crate) fn claim(&self, key: &RetryKey) -> String {
        format!("{}:{{r:{}}}", self.prefix, key.hex())
    }

    /// Sharded pub/sub channel carrying the name's messages live.
    pub(crate) fn channel(&self, name: &ChannelPattern) -> String {
        format!("{}:{{c:{}}}", self.prefix, name.as_str())
    }

    /// Sharded pub/sub channel of one node's control messages.
    pub(crate) fn node(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}", self.prefix)
    }

    /// Set: client ids of one user (`hex` is the user id in hex, so any id makes a valid
    /// key). Every user key shares the tag `{users}`: a presence change and the online
    /// index change in one script. On Redis Cluster, presence traffic (handshakes and
    /// disconnects of sessions with a user) therefore sits on one shard.
    pub(crate) fn user_sessions(&self, hex: &str) -> String {
        format!("{}:{{users}}:{hex}:sessions", self.prefix)
    }

    /// Set: the user's sessions that said they are away (a subset of its sessions).
    pub(crate) fn user_away(&self, hex: &str) -> String {
        format!("{}:{{users}}:{hex}:away", self.prefix)
    }

    /// Hash: `online_since`, `last_online`, `away_since` (ms).
    pub(crate) fn user_presence(&self, hex: &str) -> String {
        format!("{}:{{users}}:{hex}:presence", self.prefix)
    }

    /// Set: users with at least one session.
    pub(crate) fn online(&self) -> String {
        format!("{}:{{users}}:online", self.prefix)
    }

    /// Sharded pub/sub channel every node listens to: nodes whose fan-out fell behind say
    /// so here (see `pressure`).
    pub(crate) fn pressure(&self) -> String {
        format!("{}:{{pressure}}", self.prefix)
    }

    /// Hash: subscription name → the least position sent to any session attached to the
    /// node, plus `_v`, the write's validity number (see `marks`). Expires unless rewritten.
    pub(crate) fn marks(&self, node: &str) -> String {
        format!("{}:{{n:{node}}}:marks", self.prefix)
    }

    /// Set: subscription names that had a member when added; pruned lazily when listed.
    pub(crate) fn names(&self) -> String {
        format!("{}:names", self.prefix)
    }

    /// Set: ids of nodes that sent a heartbeat.
    pub(crate) fn stats_nodes(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    /// String (JSON) with a TTL: one node's latest figures.
    pub(crate) fn node_stats(&self, node: &str) -> String {
        format!("{}:stats:{node}", self.prefix)
    }

    /// The subscription name carried by a pub/sub channel from [`Keys::channel`].
    pub(crate) fn name_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.prefix.as_str())?.strip_prefix(":{c:")?.strip_suffix('}')
    }
}

/// A user id in lowercase hex: what user keys are named by.
pub(crate) fn user_hex(user: &str) -> String {
    user.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_tag_and_round_trip() {
        let k = Keys::new("crier");
        let name = ChannelPattern::parse("/a/*").expect("valid");
        assert_eq!(k.members(&name), "crier:{c:/a/*}:members");
        assert_eq!(k.log(&name), "crier:{c:/a/*}:log");
        assert_eq!(k.channel(&name), "crier:{c:/a/*}");
        assert_eq!(k.name_of(&k.channel(&name)), Some("/a/*"));
        assert_eq!(k.name_of("other:{c:/a}"), None);
        assert_eq!(k.name_of(&k.node("n1")), None);
        assert_eq!(k.name_of(&k.pressure()), None);
        assert_eq!(k.marks("n1"), "crier:{n:n1}:marks");
    }
}
