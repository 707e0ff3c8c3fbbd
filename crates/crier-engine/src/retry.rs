//! Recognising a retried publish.
//!
//! Faye's client re-sends a message whose reply it did not get (a dropped connection, a
//! node restarting, no reply within 1.2 × timeout) with the same `id`, and Faye's server
//! delivers it a second time. Crier remembers each accepted publish of a session for
//! `engine.publish_retry_window_secs` under a [`RetryKey`]: the session, the message id,
//! the channel and the content. A publish whose key is remembered is answered as a success
//! and not delivered again. The server API's publish takes an idempotency key from the
//! app for the same purpose (as Centrifugo's and Ably's do).

use crier_protocol::{ChannelName, ClientId, Message};

/// What identifies one publish: for a session's, a digest of the client id, the message
/// `id`, the channel and the delivered content. The content is part of it so that a client
/// that reuses message ids (the Bayeux spec asks for unique ones, not every client obeys)
/// loses nothing: only an identical message counts as a retry. For the API's, a digest of
/// the app's idempotency key and the channel: the app promises that one key is one message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetryKey {
    /// The publishing session; `None` for the server API.
    client: Option<ClientId>,
    digest: [u8; 16],
}

/// The first 128 bits of SHA-1 over length-prefixed parts (so no two different tuples
/// share an input).
fn digest(parts: &[&str]) -> [u8; 16] {
    let mut h = sha1_smol::Sha1::new();
    for part in parts {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let full = h.digest().bytes();
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&full[..16]);
    digest
}

impl RetryKey {
    /// The identity of a publish taken from it before it is delivered: its client id and
    /// its `id` as JSON text, if it has both.
    pub fn parts_of(m: &Message) -> Option<(String, String)> {
        Some((m.client_id()?.to_owned(), m.id()?.to_string()))
    }

    /// The key of a publish with [`RetryKey::parts_of`] `(client, id)`, if the client id is
    /// well formed. `json` is the content as delivered (after incoming extensions), which
    /// a re-sent copy reproduces.
    pub fn new(client: &str, id: &str, channel: &ChannelName, json: &str) -> Option<RetryKey> {
        let client = ClientId::parse(client)?;
        let digest = digest(&["session", client.as_str(), id, channel.as_str(), json]);
        Some(RetryKey { client: Some(client), digest })
    }

    /// The key of a server API publish to `channel` with the app's idempotency key.
    pub fn api(idempotency_key: &str, channel: &ChannelName) -> RetryKey {
        RetryKey { client: None, digest: digest(&["api", idempotency_key, channel.as_str()]) }
    }

    /// The key of a server API call that publishes in several steps (`call` is `broadcast`
    /// or `send`; not a channel name, which starts with `/`) with the app's idempotency key.
    pub fn api_call(idempotency_key: &str, call: &str) -> RetryKey {
        RetryKey { client: None, digest: digest(&["api", idempotency_key, call]) }
    }

    /// The publishing session; `None` for the server API.
    pub fn client(&self) -> Option<&ClientId> {
        self.client.as_ref()
    }

    /// 128 bits identifying the publish (the client id included).
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }

    /// [`RetryKey::digest`] in lowercase hex, for key names.
    pub fn hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn msg(v: serde_json::Value) -> Message {
        match v {
            serde_json::Value::Object(m) => Message(m),
            _ => Message::new(),
        }
    }

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).expect("valid")
    }

    const ID: &str = "0123456789abcdefghijklmnopqrstu";

    #[test]
    fn only_a_session_s_publish_with_an_id_has_a_key() {
        let of = |v| {
            let (c, id) = RetryKey::parts_of(&msg(v))?;
            RetryKey::new(&c, &id, &ch("/a"), "{}")
        };
        assert!(of(json!({"channel":"/a","id":"1"})).is_none());
        assert!(of(json!({"channel":"/a","clientId":ID})).is_none());
        assert!(of(json!({"channel":"/a","clientId":"x y","id":"1"})).is_none());
        let k = of(json!({"channel":"/a","clientId":ID,"id":"1"})).expect("key");
        assert_eq!(k.client().map(ClientId::as_str), Some(ID));
        assert_eq!(k.hex().len(), 32);
    }

    #[test]
    fn the_same_publish_has_the_same_key_and_any_difference_changes_it() {
        let key = |client: &str, id: serde_json::Value, channel: &str, json: &str| {
            let (c, id) =
                RetryKey::parts_of(&msg(json!({"channel":channel,"clientId":client,"id":id}))).expect("parts");
            RetryKey::new(&c, &id, &ch(channel), json).expect("key")
        };
        let base = key(ID, json!("1"), "/a", r#"{"data":1}"#);
        assert_eq!(base, key(ID, json!("1"), "/a", r#"{"data":1}"#));
        let other_client = "1123456789abcdefghijklmnopqrstu";
        for different in [
            key(other_client, json!("1"), "/a", r#"{"data":1}"#),
            key(ID, json!("2"), "/a", r#"{"data":1}"#),
            key(ID, json!(1), "/a", r#"{"data":1}"#),
            key(ID, json!("1"), "/b", r#"{"data":1}"#),
            key(ID, json!("1"), "/a", r#"{"data":2}"#),
        ] {
            assert_ne!(base.digest(), different.digest());
        }
    }

    #[test]
    fn an_api_key_is_per_idempotency_key_and_channel() {
        let k = RetryKey::api("order-1", &ch("/a"));
        assert_eq!(k, RetryKey::api("order-1", &ch("/a")));
        assert!(k.client().is_none());
        assert_ne!(k, RetryKey::api("order-2", &ch("/a")));
        assert_ne!(k, RetryKey::api("order-1", &ch("/b")));
        assert_ne!(RetryKey::api_call("order-1", "broadcast"), RetryKey::api_call("order-1", "send"));
    }
}
