//! A published message on its way to subscribers, encoded once for all of them.

use std::sync::Arc;

use crier_protocol::{ChannelName, Message};

use crate::backend::LogPosition;

/// A message accepted for delivery. It is shared (`Arc`) by every recipient's queue and
/// carries its JSON encoding, made once, so fan-out costs no per-recipient encoding.
#[derive(Debug)]
pub struct Delivery {
    /// Server-assigned identity, unique per publish; lets a session reached through several
    /// matching names (or through a log and a live stream) receive it once.
    pub seq: u64,
    /// The channel it was published to.
    pub channel: ChannelName,
    /// The message as subscribers see it (no `clientId`, no `id`).
    pub message: Message,
    /// `message` encoded as a JSON object.
    pub json: Arc<str>,
    /// Where the backend's log holds it, if the backend keeps logs.
    pub position: Option<LogPosition>,
    /// When it was published (wall-clock ms), for the delivery latency metric.
    pub published_ms: u64,
}

/// Two deliveries are the same message if they share the publish and the encoding.
impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && self.json == other.json
    }
}

impl Delivery {
    /// Builds a delivery from a publish message (after incoming extensions ran).
    pub fn new(seq: u64, channel: ChannelName, message: Message, published_ms: u64) -> Arc<Self> {
        let message = message.for_delivery();
        let json: Arc<str> = serde_json::to_string(&message).unwrap_or_else(|_| "{}".to_owned()).into();
        Arc::new(Delivery { seq, channel, message, json, position: None, published_ms })
    }

    /// A delivery read back from a backend (a log or a pub/sub payload): `json` is the
    /// encoding made once by the publishing node, kept as is.
    pub fn from_backend(
        seq: u64,
        channel: ChannelName,
        message: Message,
        json: Arc<str>,
        position: Option<LogPosition>,
        published_ms: u64,
    ) -> Arc<Self> {
        Arc::new(Delivery { seq, channel, message, json, position, published_ms })
    }
}

/// One element of a reply array: a reply built for this request, or a delivery whose
/// shared encoding is written as is.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A reply (or a delivery rewritten by an outgoing extension).
    Message(Message),
    /// A delivery, written with its shared encoding.
    Delivery(Arc<Delivery>),
}

impl Outgoing {
    /// Appends this element's JSON to `out`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Outgoing::Message(m) => out.push_str(&serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned())),
            Outgoing::Delivery(d) => out.push_str(&d.json),
        }
    }

    /// The element as a message (clones a delivery's message).
    pub fn to_message(&self) -> Message {
        match self {
            Outgoing::Message(m) => m.clone(),
            Outgoing::Delivery(d) => d.message.clone(),
        }
    }
}

/// Encodes a reply array: `[a,b,c]`.
///
/// A batch of deliveries (what a socket writes for every message) is made with its exact
/// capacity: a `String` whose length is its capacity becomes the socket's frame (`Bytes`)
/// without another allocation and without a shared, atomically counted header, which
/// showed in profiles of the fan-out (`bytes::shared_drop`).
pub fn encode_outgoing(items: &[Outgoing]) -> String {
    let exact = items.iter().try_fold(1 + items.len().max(1), |n, it| match it {
        Outgoing::Delivery(d) => Some(n + d.json.len()),
        Outgoing::Message(_) => None,
    });
    let mut out = String::with_capacity(exact.unwrap_or(64 + items.len() * 64));
    out.push('[');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        it.write_json(&mut out);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_deliveries_is_encoded_at_its_exact_size() {
        let channel = ChannelName::parse("/a").expect("valid");
        let mut m = Message::new();
        m.0.insert("data".to_owned(), serde_json::json!({"text": "hi"}));
        let d = Delivery::new(1, channel, m, 0);
        for n in 0..4 {
            let items: Vec<Outgoing> = (0..n).map(|_| Outgoing::Delivery(d.clone())).collect();
            let out = encode_outgoing(&items);
            let parsed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
            assert_eq!(parsed.as_array().map(Vec::len), Some(n));
            assert_eq!(out.capacity(), out.len(), "{n} deliveries: {out}");
        }
        // A reply among them: encoded all the same.
        let mixed = encode_outgoing(&[Outgoing::Message(Message::new()), Outgoing::Delivery(d)]);
        assert!(mixed.starts_with("[{},{") && mixed.ends_with("}]"), "{mixed}");
    }
}
