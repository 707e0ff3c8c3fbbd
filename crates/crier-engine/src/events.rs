//! Monitoring events: the ones Faye's `bind` exposes, plus presence changes.
//!
//! Events are emitted by the node that handled the operation, on a bounded broadcast
//! channel ([`crate::Engine::events`]); a receiver that falls behind misses the oldest
//! (`RecvError::Lagged` tells it how many).

use std::sync::Arc;

use crier_protocol::{ChannelName, ChannelPattern, ClientId};
use serde_json::Value;

use crate::delivery::Delivery;
use crate::users::PresenceChange;

/// Something a client did, or that happened to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A session was created (with the user bound to it, if any).
    Handshake(ClientId, Option<String>),
    /// A session subscribed to a name or pattern it did not have.
    Subscribe(ClientId, ChannelPattern),
    /// A session lost a subscription (explicitly, or because it was destroyed).
    Unsubscribe(ClientId, ChannelPattern),
    /// A message was accepted: the publisher's client id (if it sent one), the channel and
    /// the message as delivered (shared with the fan-out, so an event costs no copy).
    Publish(Option<String>, ChannelName, Arc<Delivery>),
    /// A session ended (explicit disconnect, expiry, queue overflow or the API).
    Disconnect(ClientId),
    /// A user's presence changed.
    Presence(PresenceChange),
}

impl Event {
    /// A stable name for the kind of event (webhook payloads, the reserved channels).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Handshake(..) => "handshake",
            Event::Subscribe(..) => "subscribe",
            Event::Unsubscribe(..) => "unsubscribe",
            Event::Publish(..) => "publish",
            Event::Disconnect(..) => "disconnect",
            Event::Presence(..) => "presence",
        }
    }
}

impl Event {
    /// The event as a JSON object: `type`, then its fields (`client_id`, `user`,
    /// `channel`, `data`, `status`, `at_ms`). The shape of webhook payloads and of the
    /// `/meta/crier/events/<kind>` messages.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("type".to_owned(), Value::String(self.kind().to_owned()));
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        let s = |v: &str| Value::String(v.to_owned());
        match self {
            Event::Handshake(id, user) => {
                put("client_id", s(id.as_str()));
                if let Some(u) = user {
                    put("user", s(u));
                }
            }
            Event::Subscribe(id, p) | Event::Unsubscribe(id, p) => {
                put("client_id", s(id.as_str()));
                put("channel", s(p.as_str()));
            }
            Event::Publish(id, c, d) => {
                if let Some(id) = id {
                    put("client_id", s(id));
                }
                put("channel", s(c.as_str()));
                put("data", d.message.data().cloned().unwrap_or(Value::Null));
            }
            Event::Disconnect(id) => put("client_id", s(id.as_str())),
            Event::Presence(c) => {
                put("user", s(&c.user));
                put("status", s(c.status.as_str()));
                put("at_ms", Value::from(c.at));
            }
        }
        Value::Object(m)
    }
}
