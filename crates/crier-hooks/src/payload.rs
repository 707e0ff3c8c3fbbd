//! The webhook payload: each engine event as a JSON object, encoded once and shared by
//! every URL's queue, and the batch envelope around them (docs/hooks.md has the schema).

use crier_engine::Event;
use serde_json::Value;

use crate::config::EventKind;

/// The configuration kind of an engine event (a new engine event fails to compile here
/// until it is given a kind and a payload).
pub(crate) fn kind_of(e: &Event) -> EventKind {
    match e {
        Event::Handshake(..) => EventKind::Handshake,
        Event::Subscribe(..) => EventKind::Subscribe,
        Event::Unsubscribe(..) => EventKind::Unsubscribe,
        Event::Publish(..) => EventKind::Publish,
        Event::Disconnect(..) => EventKind::Disconnect,
        Event::Presence(..) => EventKind::Presence,
    }
}

/// One event as JSON text: the engine's [`Event::to_json`] plus `id`, unique per event
/// and the same when a batch is retried (receivers de-duplicate on it), and `at_ms`, when
/// this node saw the event (presence events keep the time the status changed).
pub(crate) fn encode(e: &Event, id: &str, now_ms: u64) -> String {
    let mut v = e.to_json();
    if let Some(m) = v.as_object_mut() {
        m.insert("id".to_owned(), Value::from(id));
        m.entry("at_ms").or_insert(Value::from(now_ms));
    }
    v.to_string()
}

/// The body of one POST: `{"node": ..., "events": [...]}`, spliced from the events'
/// encoded text rather than re-serialised.
pub(crate) fn batch_body(node: &str, events: &[std::sync::Arc<str>]) -> String {
    let node = Value::from(node).to_string();
    let mut body = String::with_capacity(32 + node.len() + events.iter().map(|e| e.len() + 1).sum::<usize>());
    body.push_str("{\"node\":");
    body.push_str(&node);
    body.push_str(",\"events\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(e);
    }
    body.push_str("]}");
    body
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crier_engine::{PresenceChange, PresenceStatus};
    use crier_protocol::{ChannelName, ChannelPattern, ClientId};

    use serde_json::json;

    use super::*;

    fn delivery(name: &ChannelName, data: Value) -> Arc<crier_engine::Delivery> {
        let m = json!({"channel": name.as_str(), "data": data});
        let m = crier_protocol::Message(m.as_object().cloned().unwrap_or_default());
        crier_engine::Delivery::new(1, name.clone(), m, 0)
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).expect("json")
    }

    #[test]
    fn each_event_has_its_fields() {
        let c = ClientId::from_random([7; 20]);
        let cid = c.as_str().to_owned();
        let ch = || ChannelPattern::parse("/chat/*").expect("pattern");
        let name = ChannelName::parse("/chat/a").expect("name");
        let cases = [
            (
                Event::Handshake(c.clone(), Some("u1".to_owned())),
                json!({"id":"e","type":"handshake","at_ms":5,"client_id":cid,"user":"u1"}),
            ),
            (Event::Handshake(c.clone(), None), json!({"id":"e","type":"handshake","at_ms":5,"client_id":cid})),
            (
                Event::Subscribe(c.clone(), ch()),
                json!({"id":"e","type":"subscribe","at_ms":5,"client_id":cid,"channel":"/chat/*"}),
            ),
            (
                Event::Unsubscribe(c.clone(), ch()),
                json!({"id":"e","type":"unsubscribe","at_ms":5,"client_id":cid,"channel":"/chat/*"}),
            ),
            (
                Event::Publish(Some(cid.clone()), name.clone(), delivery(&name, json!({"text":"hi"}))),
                json!({"id":"e","type":"publish","at_ms":5,"client_id":cid,"channel":"/chat/a","data":{"text":"hi"}}),
            ),
            (
                Event::Publish(None, name.clone(), delivery(&name, json!(1.5))),
                json!({"id":"e","type":"publish","at_ms":5,"channel":"/chat/a","data":1.5}),
            ),
            (Event::Disconnect(c.clone()), json!({"id":"e","type":"disconnect","at_ms":5,"client_id":cid})),
            (
                Event::Presence(PresenceChange { user: "u1".to_owned(), status: PresenceStatus::Away, at: 3 }),
                json!({"id":"e","type":"presence","at_ms":3,"user":"u1","status":"away"}),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(parse(&encode(&e, "e", 5)), want, "{e:?}");
        }
    }

    #[test]
    fn a_batch_is_an_envelope_of_events() {
        let events: Vec<Arc<str>> = vec![Arc::from(r#"{"id":"a"}"#), Arc::from(r#"{"id":"b"}"#)];
        assert_eq!(
            parse(&batch_body("node \"1\"", &events)),
            json!({"node":"node \"1\"","events":[{"id":"a"},{"id":"b"}]})
        );
        assert_eq!(parse(&batch_body("n", &[])), json!({"node":"n","events":[]}));
    }
}
