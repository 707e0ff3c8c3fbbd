//! Building the client's requests and reading the server's replies: the pure part of
//! the protocol logic, kept apart from IO so it can be unit-tested.

use crier_protocol::{Advice, BAYEUX_VERSION, ConnectionType, Message, Reconnect, meta};
use serde_json::Value;

use crate::error::ClientError;
use crate::ids::id_key;

/// Whether a message is a reply to a request: Faye sets `successful` on every reply and
/// on nothing else. (Faye 1.3 fixed its own client to rely on exactly this, because a
/// delivered message carries the *publisher's* `id` and can collide with ours.)
pub(crate) fn is_reply(m: &Message) -> bool {
    m.0.contains_key("successful")
}

/// Whether a message is a delivery for subscriptions: it has a `channel` and `data`
/// (even `null`) and is not a reply. This is the Faye client's `_deliverMessage` rule.
pub(crate) fn is_delivery(m: &Message) -> bool {
    !is_reply(m) && m.channel().is_some() && m.0.contains_key("data")
}

/// Finds the reply to the request whose id is `id`.
pub(crate) fn find_reply<'a>(replies: &'a [Message], id: &str) -> Option<&'a Message> {
    let key = id_key(&Value::from(id));
    replies.iter().find(|m| is_reply(m) && m.id().map(id_key).as_deref() == Some(key.as_str()))
}

/// Turns a reply into `Ok(reply)` or `Err(Bayeux(error))`. A missing reply is a
/// protocol error, because the server answered the batch but skipped this message.
pub(crate) fn check_reply(reply: Option<&Message>, what: &str) -> Result<Message, ClientError> {
    let reply = reply.ok_or_else(|| ClientError::Protocol(format!("no reply to {what}")))?;
    if reply.successful() == Some(true) {
        Ok(reply.clone())
    } else {
        let e = reply.error().unwrap_or("unsuccessful reply without an error string");
        Err(ClientError::Bayeux(e.to_owned()))
    }
}

/// Reads `advice` from a handshake or connect reply; fields of the wrong type are
/// ignored rather than failing the whole reply.
pub(crate) fn read_advice(m: &Message) -> Option<AdviceUpdate> {
    let a = m.0.get("advice")?.as_object()?;
    let reconnect = a.get("reconnect").and_then(Value::as_str).and_then(|s| match s {
        "retry" => Some(Reconnect::Retry),
        "handshake" => Some(Reconnect::Handshake),
        "none" => Some(Reconnect::None),
        _ => None,
    });
    let ms = |k: &str| a.get(k).and_then(|v| v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)));
    Some(AdviceUpdate { reconnect, interval: ms("interval"), timeout: ms("timeout") })
}

/// The parts of an `advice` object that were present; merged into the session's
/// advice, as the Faye client merges (`_handleAdvice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdviceUpdate {
    pub(crate) reconnect: Option<Reconnect>,
    pub(crate) interval: Option<u64>,
    pub(crate) timeout: Option<u64>,
}

impl AdviceUpdate {
    /// Merges the present fields into `advice`.
    pub(crate) fn apply(self, advice: &mut Advice) {
        if let Some(r) = self.reconnect {
            advice.reconnect = r;
        }
        if self.interval.is_some() {
            advice.interval = self.interval;
        }
        if self.timeout.is_some() {
            advice.timeout = self.timeout;
        }
    }
}

fn base(channel: &str, id: &str) -> Message {
    let mut m = Message::new();
    m.set("channel", channel);
    m.set("id", id);
    m
}

/// `/meta/handshake` offering `types`, with the user's `ext` (e.g. an auth token).
pub(crate) fn handshake(id: &str, types: &[ConnectionType], ext: Option<&Value>) -> Message {
    let mut m = base(meta::HANDSHAKE, id);
    m.set("version", BAYEUX_VERSION);
    m.set("supportedConnectionTypes", types.iter().map(|t| t.as_str()).collect::<Vec<_>>());
    if let Some(ext) = ext {
        m.set("ext", ext.clone());
    }
    m
}

/// `/meta/connect`.
pub(crate) fn connect(id: &str, client_id: &str, ct: ConnectionType) -> Message {
    let mut m = base(meta::CONNECT, id);
    m.set("clientId", client_id);
    m.set("connectionType", ct.as_str());
    m
}

/// `/meta/subscribe` or `/meta/unsubscribe` for one pattern.
pub(crate) fn membership(channel: &str, id: &str, client_id: &str, pattern: &str) -> Message {
    let mut m = base(channel, id);
    m.set("clientId", client_id);
    m.set("subscription", pattern);
    m
}

/// `/meta/disconnect`.
pub(crate) fn disconnect(id: &str, client_id: &str) -> Message {
    let mut m = base(meta::DISCONNECT, id);
    m.set("clientId", client_id);
    m
}

/// A publish; `client_id` is optional because Faye accepts anonymous publishes.
pub(crate) fn publish(id: &str, channel: &str, data: Value, client_id: Option<&str>) -> Message {
    let mut m = base(channel, id);
    m.set("data", data);
    if let Some(c) = client_id {
        m.set("clientId", c);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(v: Value) -> Message {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn classifies_replies_and_deliveries() {
        // Faye keeps the publisher's id in deliveries: it must not look like a reply.
        let delivery = msg(json!({"channel":"/a","data":{"x":1},"id":"3"}));
        assert!(is_delivery(&delivery) && !is_reply(&delivery));
        let null_data = msg(json!({"channel":"/a","data":null}));
        assert!(is_delivery(&null_data));
        let reply = msg(json!({"channel":"/a","successful":true,"id":"3"}));
        assert!(is_reply(&reply) && !is_delivery(&reply));
        assert!(!is_delivery(&msg(json!({"channel":"/a"}))));
    }

    #[test]
    fn finds_reply_by_id_not_delivery() {
        let batch = vec![
            msg(json!({"channel":"/a","data":1,"id":"2"})),
            msg(json!({"channel":"/meta/connect","successful":true,"id":"1"})),
            msg(json!({"channel":"/a","successful":false,"id":"2","error":"405:/a:Invalid channel"})),
        ];
        assert_eq!(find_reply(&batch, "1").and_then(|m| m.channel()), Some("/meta/connect"));
        let r = check_reply(find_reply(&batch, "2"), "publish");
        assert_eq!(
            r.err().and_then(|e| e.bayeux_error().map(str::to_owned)).as_deref(),
            Some("405:/a:Invalid channel")
        );
        assert!(matches!(check_reply(find_reply(&batch, "9"), "x"), Err(ClientError::Protocol(_))));
        // A numeric id 1 is not the string "1".
        let numeric = vec![msg(json!({"successful":true,"id":1}))];
        assert!(find_reply(&numeric, "1").is_none());
    }

    #[test]
    fn advice_merges_present_fields() {
        let mut a = Advice::retry(0, 60_000);
        let reply = msg(json!({"advice":{"reconnect":"handshake"}}));
        read_advice(&reply).into_iter().for_each(|u| u.apply(&mut a));
        assert_eq!(a, Advice { reconnect: Reconnect::Handshake, interval: Some(0), timeout: Some(60_000) });
        let reply = msg(json!({"advice":{"reconnect":"retry","interval":250,"timeout":5000.0}}));
        read_advice(&reply).into_iter().for_each(|u| u.apply(&mut a));
        assert_eq!(a, Advice::retry(250, 5000));
        assert!(read_advice(&msg(json!({"advice":"x"}))).is_none());
    }

    #[test]
    fn builds_faye_shaped_requests() {
        let h = handshake("1", &[ConnectionType::WebSocket, ConnectionType::LongPolling], Some(&json!({"token":"t"})));
        assert_eq!(
            serde_json::to_value(&h).ok(),
            Some(json!({"channel":"/meta/handshake","id":"1","version":"1.0",
                "supportedConnectionTypes":["websocket","long-polling"],"ext":{"token":"t"}}))
        );
        let c = connect("2", "abc", ConnectionType::LongPolling);
        assert_eq!(c.connection_type(), Some("long-polling"));
        let p = publish("3", "/a", json!(null), None);
        assert!(p.client_id().is_none() && p.data() == Some(&Value::Null));
    }
}
