//! Helpers shared by the policies.

use crier_protocol::{ChannelPattern, Message};
use serde_json::Value;

/// Reads `ext.<field>` as a string.
pub(crate) fn ext_str(m: &Message, field: &str) -> Option<String> {
    m.0.get("ext")?.get(field)?.as_str().map(str::to_owned)
}

/// Removes `ext.<field>`, and `ext` itself if that leaves it empty.
pub(crate) fn strip_ext(m: &mut Message, field: &str) {
    let empty = match m.0.get_mut("ext") {
        Some(Value::Object(ext)) => {
            ext.remove(field);
            ext.is_empty()
        }
        _ => false,
    };
    if empty {
        m.remove("ext");
    }
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// The subscription names of a `/meta/subscribe` (one or an array). Invalid entries are
/// left to the engine, which refuses them.
pub(crate) fn subscriptions(m: &Message) -> Vec<ChannelPattern> {
    match m.subscription() {
        Some(Value::Array(a)) => a.iter().filter_map(|v| ChannelPattern::parse(v.as_str()?).ok()).collect(),
        Some(Value::String(s)) => ChannelPattern::parse(s).ok().into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Whether a message is a publish (not a `/meta` message).
pub(crate) fn is_publish(m: &Message) -> bool {
    m.channel().is_some_and(|c| c != "/meta" && !c.starts_with("/meta/"))
}

/// Sets a Bayeux error on the message (the engine then refuses it) and logs the refusal.
pub(crate) fn refuse(m: &mut Message, error: String, policy: &str) {
    tracing::info!(client_id = m.client_id().unwrap_or(""), channel = m.channel().unwrap_or(""), %policy, %error, "refused by policy");
    m.set("error", error);
}
