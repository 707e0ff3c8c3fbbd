//! Plain Bayeux on the wire, as both Crier and Faye accept it: every frame or body is a
//! JSON array of messages.
//!
//! Outgoing messages are formatted directly (channel names and payloads are ours; the
//! client id is JSON-quoted once per session). Incoming batches are read into borrowed,
//! typed structs so a delivery costs one pass over its bytes.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The channel publisher `p` publishes to: `/bench/c{p mod channels}`.
pub(crate) fn channel(publisher: usize, channels: usize) -> String {
    format!("/bench/c{}", publisher % channels.max(1))
}

/// `/meta/handshake` offering `types`.
pub(crate) fn handshake(id: u64, types: &[&str]) -> String {
    let types = serde_json::to_string(types).unwrap_or_else(|_| "[]".to_owned());
    format!(r#"[{{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":{types},"id":"{id}"}}]"#)
}

/// `/meta/connect`; `immediate` asks for an answer at once (`advice.timeout: 0`), which
/// Faye honours and Crier does anyway for a session's first connect.
pub(crate) fn connect(client_id: &str, connection_type: &str, id: u64, immediate: bool) -> String {
    let advice = if immediate { r#","advice":{"timeout":0}"# } else { "" };
    format!(
        r#"[{{"channel":"/meta/connect","clientId":{client_id},"connectionType":"{connection_type}","id":"{id}"{advice}}}]"#
    )
}

/// `/meta/subscribe` to `subscription`.
pub(crate) fn subscribe(client_id: &str, subscription: &str, id: u64) -> String {
    format!(r#"[{{"channel":"/meta/subscribe","clientId":{client_id},"subscription":"{subscription}","id":"{id}"}}]"#)
}

/// `/meta/disconnect`.
pub(crate) fn disconnect(client_id: &str, id: u64) -> String {
    format!(r#"[{{"channel":"/meta/disconnect","clientId":{client_id},"id":"{id}"}}]"#)
}

/// One publish, its id being its sequence number. The data carries the sequence number
/// (`s`), the send time in microseconds since the Unix epoch (`t`), the publisher (`p`)
/// and optional padding (`x`).
pub(crate) struct Publish<'a> {
    pub(crate) client_id: Option<&'a str>,
    pub(crate) channel: &'a str,
    pub(crate) publisher: usize,
    pub(crate) padding: &'a str,
}

impl Publish<'_> {
    /// The message with sequence number `seq` sent at `sent_us`, without the array brackets.
    pub(crate) fn message(&self, seq: u64, sent_us: u64) -> String {
        let cid = match self.client_id {
            Some(c) => format!(r#","clientId":{c}"#),
            None => String::new(),
        };
        let pad = if self.padding.is_empty() { String::new() } else { format!(r#","x":"{}""#, self.padding) };
        format!(
            r#"{{"channel":"{}"{cid},"id":"{seq}","data":{{"s":{seq},"t":{sent_us},"p":{}{pad}}}}}"#,
            self.channel, self.publisher
        )
    }
}

/// An incoming message: a reply (has `successful`) or a delivery (has `data`).
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming<'a> {
    #[serde(borrow)]
    pub(crate) channel: Option<Cow<'a, str>>,
    #[serde(rename = "clientId")]
    pub(crate) client_id: Option<String>,
    pub(crate) successful: Option<bool>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) data: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(crate) error: Option<Cow<'a, str>>,
    pub(crate) advice: Option<Advice>,
}

/// The parts of `advice` the bench follows.
#[derive(Debug, Deserialize)]
pub(crate) struct Advice {
    pub(crate) reconnect: Option<String>,
    pub(crate) interval: Option<f64>,
}

impl Incoming<'_> {
    /// The message id as a number (we send decimal strings; servers echo them).
    pub(crate) fn id(&self) -> Option<u64> {
        let raw = self.id?.get();
        raw.trim_matches('"').parse().ok()
    }

    /// True for `/meta/*` channels.
    pub(crate) fn is_meta(&self) -> bool {
        self.channel.as_deref().is_some_and(|c| c.starts_with("/meta/"))
    }

    /// True if this is a reply (meta or publish acknowledgement) rather than a delivery.
    pub(crate) fn is_reply(&self) -> bool {
        self.successful.is_some() || self.is_meta()
    }

    /// True if the server asks for a new handshake (the session is gone).
    pub(crate) fn wants_handshake(&self) -> bool {
        self.advice.as_ref().and_then(|a| a.reconnect.as_deref()) == Some("handshake")
    }

    /// A short description of a failed reply.
    pub(crate) fn failure(&self) -> String {
        format!(
            "{} failed: {}",
            self.channel.as_deref().unwrap_or("?"),
            self.error.as_deref().unwrap_or("no error given")
        )
    }
}

/// Reads a frame or response body: a JSON array of messages (a lone object is accepted).
pub(crate) fn parse_batch(text: &str) -> Result<Vec<Incoming<'_>>, serde_json::Error> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str::<Incoming<'_>>(text).map(|m| vec![m])
    } else {
        serde_json::from_str(text)
    }
}

/// The bench's payload inside a delivery's `data`.
#[derive(Debug, Deserialize)]
pub(crate) struct BenchData {
    /// Sequence number, per publisher, from 0.
    pub(crate) s: u64,
    /// Send time, microseconds since the Unix epoch.
    pub(crate) t: u64,
    /// Publisher index.
    pub(crate) p: usize,
}

impl BenchData {
    /// Reads the payload; `None` for data that is not ours.
    pub(crate) fn read(data: &RawValue) -> Option<Self> {
        serde_json::from_str(data.get()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips() {
        let cid = serde_json::to_string("abc").expect("json");
        let p = Publish { client_id: Some(&cid), channel: "/bench/c1", publisher: 7, padding: "xx" };
        let text = format!("[{}]", p.message(42, 1_000_000));
        let batch = parse_batch(&text).expect("valid JSON");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].id(), Some(42));
        assert!(!batch[0].is_reply());
        let d = BenchData::read(batch[0].data.expect("data")).expect("bench data");
        assert_eq!((d.s, d.t, d.p), (42, 1_000_000, 7));
    }

    #[test]
    fn replies_and_meta() {
        let text = r#"[{"channel":"/meta/connect","successful":false,"error":"401::Unknown client","advice":{"reconnect":"handshake"},"id":"3"},
                      {"channel":"/bench/c0","successful":true,"id":"9"},
                      {"channel":"/x","data":"not ours","id":9}]"#;
        let batch = parse_batch(text).expect("valid JSON");
        assert!(batch[0].is_meta() && batch[0].wants_handshake());
        assert_eq!(batch[0].failure(), "/meta/connect failed: 401::Unknown client");
        assert!(batch[1].is_reply() && batch[1].id() == Some(9));
        assert!(!batch[2].is_reply() && batch[2].id() == Some(9));
        assert!(BenchData::read(batch[2].data.expect("data")).is_none());
    }

    #[test]
    fn meta_messages_are_json() {
        let cid = serde_json::to_string("a\"b").expect("json");
        for text in [
            handshake(1, &["websocket", "long-polling"]),
            connect(&cid, "websocket", 2, true),
            subscribe(&cid, "/bench/*", 3),
            disconnect(&cid, 4),
        ] {
            let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert!(v.is_array(), "{text}");
        }
    }
}
