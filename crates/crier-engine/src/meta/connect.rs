//! `/meta/connect`: the heartbeat, and the long-poll that carries deliveries.

use std::sync::Arc;
use std::time::Duration;

use crier_protocol::{Advice, BayeuxError, Message};
use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::Durability;
use crate::context::RequestContext;
use crate::delivery::{Delivery, Outgoing};
use crate::engine::Inner;
use crate::metrics::Metrics;
use crate::session::{Requeue, Session};

impl Inner {
    pub(crate) async fn connect(&self, m: Message, ctx: &RequestContext, batched: bool) -> Vec<Outgoing> {
        let conntype = m.connection_type();
        let raw_id = m.client_id();
        let session = match self.session_of(&m).await {
            Ok(s) => s,
            Err(e) => return vec![Outgoing::Message(fail(m.response(), e.to_string()))],
        };
        let error = if conntype.is_none() {
            Some(BayeuxError::missing("connectionType").to_string())
        } else if !conntype.is_some_and(super::handshake::server_supports) {
            Some(BayeuxError::conntype_mismatch([conntype.unwrap_or_default()]).to_string())
        } else if raw_id.is_none() {
            Some(BayeuxError::missing("clientId").to_string())
        } else if session.is_none() {
            Some(BayeuxError::unknown_client(raw_id.unwrap_or_default()).to_string())
        } else {
            m.error().map(str::to_owned)
        };
        let session = match (error, session) {
            (None, Some(s)) => s,
            (Some(e), _) => return vec![Outgoing::Message(fail(m.response(), e))],
            (None, None) => {
                let e = BayeuxError::unknown_client(raw_id.unwrap_or_default()).to_string();
                return vec![Outgoing::Message(fail(m.response(), e))];
            }
        };

        // A session whose queue overflowed under the `disconnect` policy ends here.
        if session.overflowed() {
            let _ = self.destroy(&session.id).await;
            return vec![Outgoing::Message(fail(
                m.response(),
                BayeuxError::unknown_client(session.id.as_str()).to_string(),
            ))];
        }
        match self.backend.touch(&session.id, self.clock.now()).await {
            Ok(true) => {}
            Ok(false) => {
                self.detach(&session.id);
                return vec![Outgoing::Message(fail(
                    m.response(),
                    BayeuxError::unknown_client(session.id.as_str()).to_string(),
                ))];
            }
            Err(e) => {
                Metrics::inc(&self.metrics.backend_errors);
                return vec![Outgoing::Message(fail(m.response(), super::backend_error(&e).to_string()))];
            }
        }

        let eventsource = conntype == Some("eventsource");
        let (generation, first) = session.begin_connect();
        let timeout = self.config.timeout();
        // Not held: the first connect after a handshake (CometD's rule, so clients learn
        // quickly that they are connected), a connect batched with other messages (its
        // replies would wait), EventSource connects (the stream carries the messages), and
        // anything while draining.
        let hold = if first || batched || eventsource || self.is_draining() {
            Duration::ZERO
        } else {
            m.advice_timeout_ms().map(Duration::from_millis).unwrap_or(timeout).min(timeout)
        };
        let drain = !ctx.transport.is_socket();
        // An idle socket keeps this future for the whole hold: keep what the reply needs,
        // not the request and a reply (a map allocation each).
        let stub = ReplyStub::of(&m);
        drop(m);
        let mut delivered = self.hold(&session, generation, hold, drain).await;
        if !delivered.is_empty() {
            let span = tracing::info_span!("deliver", count = delivered.len(), client_id = session.id.as_str());
            delivered = async {
                // Record how far the session got before the response leaves, so a next
                // connect on another node resumes after these. If this request goes away
                // meanwhile, the guard puts them back in the queue. Failing to store risks
                // a duplicate later, never a loss, so the response goes out anyway.
                let guard = Requeue::new(&session, delivered);
                let items = guard.items();
                if let Err(e) = self.backend.sent(&session.id, items, Durability::Now).await {
                    Metrics::inc(&self.metrics.backend_errors);
                    tracing::warn!(client_id = %session.id, error = %e, "storing delivery position failed");
                }
                let delivered = guard.disarm();
                self.observe_latency(&delivered);
                delivered
            }
            .instrument(span)
            .await;
        }

        let advice = if eventsource {
            Advice::retry(timeout.as_millis() as u64, 0)
        } else {
            Advice::retry(self.config.interval_ms, timeout.as_millis() as u64)
        };
        let mut r = stub.build();
        r.set_advice(&advice);
        let mut out = Vec::with_capacity(1 + delivered.len());
        out.push(Outgoing::Message(r));
        out.extend(delivered.into_iter().map(Outgoing::Delivery));
        out
    }

    /// Holds a connect until messages are queued (when `drain`), the hold time passes, a
    /// newer connect supersedes it, the session ends, or the engine drains.
    ///
    /// If the request goes away while held (the client closed the connection), this future
    /// is dropped before anything is taken from the queue, so nothing is lost: the next
    /// connect gets the messages. Faye loses them (its §2.11).
    async fn hold(&self, s: &Arc<Session>, generation: u64, hold: Duration, drain: bool) -> Vec<Arc<Delivery>> {
        let deadline = Instant::now() + hold;
        loop {
            // A socket's connect only waits to be superseded: deliveries go to its pump.
            let queued = s.queued().notified();
            tokio::pin!(queued);
            if drain {
                queued.as_mut().enable();
            }
            // Closing the session (also done to every session when the engine drains)
            // notifies `superseded` too, so no cancellation futures are needed here.
            let superseded = s.superseded().notified();
            tokio::pin!(superseded);
            superseded.as_mut().enable();
            if !s.is_current(generation) {
                return Vec::new();
            }
            if drain {
                let items = s.drain();
                if !items.is_empty() {
                    return items;
                }
            }
            if s.is_closed() || self.is_draining() || Instant::now() >= deadline {
                return Vec::new();
            }
            tokio::select! {
                _ = queued, if drain => {
                    // Let messages published in the same burst share this response.
                    tokio::task::yield_now().await;
                }
                _ = superseded => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// A failed connect reply: no `clientId`, and `reconnect: handshake` advice.
fn fail(mut r: Message, e: String) -> Message {
    r.remove("clientId");
    r.fail(e);
    r.set_advice(&Advice::handshake());
    r
}

/// Puts taken messages back at the front of the session's queue if dropped armed: the
/// connect that took them was cancelled before answering.
/// The parts of a connect's reply taken from the request: `Message::response` of a request
/// without `error`, kept without the request itself.
struct ReplyStub {
    parts: [Option<serde_json::Value>; 3],
}

const REPLY_KEYS: [&str; 3] = ["id", "clientId", "channel"];

impl ReplyStub {
    fn of(m: &Message) -> Self {
        ReplyStub { parts: REPLY_KEYS.map(|k| m.0.get(k).filter(|v| crier_protocol::message::truthy(v)).cloned()) }
    }

    fn build(self) -> Message {
        let mut r = Message::new();
        for (k, v) in REPLY_KEYS.into_iter().zip(self.parts) {
            if let Some(v) = v {
                r.set(k, v);
            }
        }
        r.set("successful", true);
        r
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_reply_stub_builds_the_response() {
        for m in [
            json!({"channel":"/meta/connect","clientId":"abc","id":"7","connectionType":"websocket"}),
            json!({"channel":"/meta/connect","clientId":"abc","id":0,"advice":{"timeout":0}}),
            json!({"channel":"/meta/connect","clientId":"abc","id":""}),
            json!({"channel":"/meta/connect","clientId":"abc"}),
        ] {
            let m: Message = serde_json::from_value(m).expect("message");
            assert_eq!(ReplyStub::of(&m).build(), m.response(), "{m:?}");
        }
    }
}
