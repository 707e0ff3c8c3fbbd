//! The Bayeux message: a JSON object whose known fields have typed accessors.
//!
//! Messages stay JSON objects rather than a fixed struct because Faye forwards a published
//! message verbatim, unknown fields included, and echoes `id` with whatever JSON type the
//! client sent. Accessors never fail: a field of the wrong type reads as absent, and the
//! engine turns that into the matching Bayeux error.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::advice::Advice;

/// The exact names of the five meta channels. Matching is exact (CVE-2020-11020).
pub mod meta {
    /// `/meta/handshake`
    pub const HANDSHAKE: &str = "/meta/handshake";
    /// `/meta/connect`
    pub const CONNECT: &str = "/meta/connect";
    /// `/meta/subscribe`
    pub const SUBSCRIBE: &str = "/meta/subscribe";
    /// `/meta/unsubscribe`
    pub const UNSUBSCRIBE: &str = "/meta/unsubscribe";
    /// `/meta/disconnect`
    pub const DISCONNECT: &str = "/meta/disconnect";
}

/// The connection types Faye knows, in the order Faye's handshake reply lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// HTTP POST long-polling.
    LongPolling,
    /// The browser CORS variant of long-polling.
    CrossOriginLongPolling,
    /// JSONP over GET.
    CallbackPolling,
    /// WebSocket.
    WebSocket,
    /// EventSource stream plus POSTs.
    EventSource,
    /// Faye's in-process client (server-side client in the same process).
    InProcess,
}

impl ConnectionType {
    /// All types, in Faye's order.
    pub const ALL: [ConnectionType; 6] = [
        ConnectionType::LongPolling,
        ConnectionType::CrossOriginLongPolling,
        ConnectionType::CallbackPolling,
        ConnectionType::WebSocket,
        ConnectionType::EventSource,
        ConnectionType::InProcess,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionType::LongPolling => "long-polling",
            ConnectionType::CrossOriginLongPolling => "cross-origin-long-polling",
            ConnectionType::CallbackPolling => "callback-polling",
            ConnectionType::WebSocket => "websocket",
            ConnectionType::EventSource => "eventsource",
            ConnectionType::InProcess => "in-process",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One Bayeux message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Message(pub Map<String, Value>);

/// Whether a value is "truthy" in JavaScript's sense; Faye echoes `id`, `clientId`,
/// `channel` and `error` only when they are, and treats a falsy required parameter
/// (`version`, `subscription`, ...) as missing.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Message(Map::new())
    }

    fn str_field(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(Value::as_str)
    }

    /// `channel`, if it is a string.
    pub fn channel(&self) -> Option<&str> {
        self.str_field("channel")
    }

    /// The raw `channel` value, whatever its type (for error parameters).
    pub fn channel_raw(&self) -> Option<&Value> {
        self.0.get("channel")
    }

    /// `clientId`, if it is a non-empty string.
    pub fn client_id(&self) -> Option<&str> {
        self.str_field("clientId").filter(|s| !s.is_empty())
    }

    /// `id`, any JSON type, if truthy.
    pub fn id(&self) -> Option<&Value> {
        self.0.get("id").filter(|v| truthy(v))
    }

    /// `data`; `Some(Value::Null)` for an explicit `null`.
    pub fn data(&self) -> Option<&Value> {
        self.0.get("data")
    }

    /// `subscription`, any type (the engine validates it and echoes it verbatim).
    pub fn subscription(&self) -> Option<&Value> {
        self.0.get("subscription")
    }

    /// `connectionType`, if it is a non-empty string.
    pub fn connection_type(&self) -> Option<&str> {
        // `""` is missing, as in Faye (`!message.connectionType`), not an unsupported type.
        self.str_field("connectionType").filter(|s| !s.is_empty())
    }

    /// `version`, any type (its value is never checked, as in Faye).
    pub fn version(&self) -> Option<&Value> {
        self.0.get("version")
    }

    /// `supportedConnectionTypes`, any type.
    pub fn supported_connection_types(&self) -> Option<&Value> {
        self.0.get("supportedConnectionTypes")
    }

    /// `advice.timeout` in milliseconds, if the client sent a non-negative number.
    pub fn advice_timeout_ms(&self) -> Option<u64> {
        let t = self.0.get("advice")?.get("timeout")?;
        t.as_u64().or_else(|| t.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    }

    /// `ext`, if present.
    pub fn ext(&self) -> Option<&Value> {
        self.0.get("ext")
    }

    /// Mutable `ext` object, created if absent (replacing a non-object value).
    pub fn ext_mut(&mut self) -> &mut Map<String, Value> {
        let slot = self.0.entry("ext").or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        match slot {
            Value::Object(m) => m,
            _ => unreachable!("just made it an object"),
        }
    }

    /// `error`, if it is a non-empty string (Faye ignores a falsy `error`).
    pub fn error(&self) -> Option<&str> {
        self.str_field("error").filter(|s| !s.is_empty())
    }

    /// `successful`, if it is a boolean.
    pub fn successful(&self) -> Option<bool> {
        self.0.get("successful").and_then(Value::as_bool)
    }

    /// Sets a field.
    pub fn set(&mut self, k: &str, v: impl Into<Value>) {
        self.0.insert(k.to_owned(), v.into());
    }

    /// Removes a field.
    pub fn remove(&mut self, k: &str) -> Option<Value> {
        self.0.remove(k)
    }

    /// Sets `error` (an error string such as `403::Password required`).
    pub fn set_error(&mut self, e: impl ToString) {
        self.set("error", e.to_string());
    }

    /// Builds the reply skeleton Faye's `_makeResponse` builds: `id`, `clientId`, `channel`
    /// and `error` copied when truthy, then `successful = !error`.
    ///
    /// `error` is copied only when it is a non-empty string: the handlers read any other
    /// value as absent ([`Message::error`]) and go ahead, so the reply must not claim a
    /// failure for a message that was in fact handled (e.g. published).
    pub fn response(&self) -> Message {
        let mut r = Map::new();
        for k in ["id", "clientId", "channel"] {
            if let Some(v) = self.0.get(k).filter(|v| truthy(v)) {
                r.insert(k.to_owned(), v.clone());
            }
        }
        if let Some(e) = self.error() {
            r.insert("error".to_owned(), Value::String(e.to_owned()));
        }
        let ok = !r.contains_key("error");
        r.insert("successful".to_owned(), Value::Bool(ok));
        Message(r)
    }

    /// Sets `error` and `successful:false` on a reply.
    pub fn fail(&mut self, e: impl ToString) {
        self.set_error(e);
        self.set("successful", false);
    }

    /// Sets `advice`.
    pub fn set_advice(&mut self, a: &Advice) {
        self.set("advice", a.to_value());
    }

    /// The message as delivered to subscribers: the publisher's message without
    /// `clientId` and `id` (CometD's rule; see docs/protocol-notes.md).
    pub fn for_delivery(mut self) -> Message {
        self.0.remove("clientId");
        self.0.remove("id");
        self
    }
}

impl From<Map<String, Value>> for Message {
    fn from(m: Map<String, Value>) -> Self {
        Message(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(v: Value) -> Message {
        match v {
            Value::Object(m) => Message(m),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn response_copies_truthy_fields_only() {
        let m = msg(json!({"id": 5, "clientId": "", "channel": "/foo", "data": 1}));
        let r = m.response();
        assert_eq!(serde_json::to_value(&r).ok(), Some(json!({"id": 5, "channel": "/foo", "successful": true})));
        let m = msg(json!({"id": 0, "channel": "/foo", "error": "403::No"}));
        let r = m.response();
        assert_eq!(
            serde_json::to_value(&r).ok(),
            Some(json!({"channel": "/foo", "error": "403::No", "successful": false}))
        );
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let m = msg(json!({"channel": 5, "clientId": ["x"], "connectionType": {}, "advice": "x"}));
        assert_eq!(m.channel(), None);
        assert_eq!(m.client_id(), None);
        assert_eq!(m.connection_type(), None);
        assert_eq!(m.advice_timeout_ms(), None);
        assert_eq!(msg(json!({"connectionType": ""})).connection_type(), None);
    }

    #[test]
    fn response_ignores_an_error_that_is_not_a_string() {
        let r = msg(json!({"channel": "/foo", "error": 5})).response();
        assert_eq!(serde_json::to_value(&r).ok(), Some(json!({"channel": "/foo", "successful": true})));
    }

    #[test]
    fn delivery_strips_identity() {
        let m = msg(json!({"id": "1", "clientId": "abc", "channel": "/a", "data": 1, "blank": null}));
        let d = m.for_delivery();
        assert_eq!(serde_json::to_value(&d).ok(), Some(json!({"channel": "/a", "data": 1, "blank": null})));
    }
}
