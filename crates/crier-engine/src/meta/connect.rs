//! `/meta/connect`: the heartbeat, and the long-poll that carries deliveries.

use std::sync::Arc;
use std::time::Duration;

use crier_protocol::{Advice, BayeuxError, ClientId, Message};
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::RequestContext;
use crate::delivery::{Delivery, Outgoing};
use crate::engine::Inner;
use crate::metrics::Metrics;
use crate::session::{Requeue, Session};

/// What a connect came to: its replies, or (for a socket, when the caller can wait on it
/// separately) a hold kept as data.
pub(crate) enum Connected {
    Replies(Vec<Outgoing>),
    Held(Held),
}

/// A socket's connect being held: what waiting and answering need, and nothing else.
pub(crate) struct Held {
    session: Arc<Session>,
    generation: u64,
    deadline: Instant,
    stub: ReplyStub,
}

impl Held {
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    pub(crate) fn client_id(&self) -> &str {
        self.session.id.as_str()
    }
}

/// A connect that passed its checks: the session, this connect's number, how long it may
/// be held, and what its reply is built from.
struct Begun {
    session: Arc<Session>,
    generation: u64,
    hold: Duration,
    eventsource: bool,
    stub: ReplyStub,
}

impl Inner {
    /// Handles a connect. With `detach`, a socket's connect that is to be held comes back
    /// as [`Connected::Held`] instead of being held here, so the caller keeps only that
    /// data (and a small `Inner::wait_interrupted` future) for the whole hold.
    pub(crate) async fn connect(&self, m: Message, ctx: &RequestContext, batched: bool, detach: bool) -> Connected {
        if !ctx.transport.is_socket()
            && let Some(reply) = self.keep_alive_elsewhere(&m).await
        {
            return Connected::Replies(vec![Outgoing::Message(reply)]);
        }
        let b = match self.begin_connect(m, batched, ctx.transport.is_socket()).await {
            Ok(b) => b,
            Err(reply) => return Connected::Replies(vec![Outgoing::Message(reply)]),
        };
        let deadline = Instant::now() + b.hold;
        if ctx.transport.is_socket() {
            // Deliveries go to the socket's pump: its connect only waits to be superseded.
            let held = Held { session: b.session, generation: b.generation, deadline, stub: b.stub };
            if detach && !b.hold.is_zero() {
                return Connected::Held(held);
            }
            // Boxed: held long-polls wait in this future, and inline the socket branch
            // would enlarge it for all of them.
            return Connected::Replies(Box::pin(self.socket_connect(held, b.eventsource)).await);
        }
        // An EventSource client's connect while its stream is open here takes nothing: the
        // stream carries the messages (as in Faye), and a reply taking some would race the
        // stream's writes and could reach the client before earlier ones. Not while draining:
        // a stream whose client stopped reading would keep them until the grace period ends.
        let delivered = if b.eventsource && b.session.is_streaming() && !self.is_draining() {
            Vec::new()
        } else {
            self.hold(&b.session, b.generation, deadline).await
        };
        Connected::Replies(self.end_connect(&b.session, &b.stub, b.eventsource, delivered).await)
    }

    /// An EventSource client's connect (a POST answered at once: its stream carries the
    /// messages) while its stream is open on another node. Behind a balancer without
    /// stickiness the connect lands on any node, and attaching the session here would take
    /// it from that stream's node, ending the stream. So it only keeps the session alive.
    /// Not when no stream is open (it never opened, or ended and its mark lapsed): then the
    /// usual path attaches the session here and the reply carries what is queued, so a
    /// client whose stream is gone for good still gets its messages. `None` where the usual
    /// path applies. Decided before this node's own copy is looked at: a copy here may be
    /// stale (the other node's `close` on its way), and the usual path would take the
    /// session back with it.
    async fn keep_alive_elsewhere(&self, m: &Message) -> Option<Message> {
        if m.connection_type() != Some("eventsource") {
            return None;
        }
        let id = m.client_id().and_then(ClientId::parse)?;
        match self.backend.streaming_elsewhere(&id, self.clock.now()).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                Metrics::inc(&self.metrics.backend_errors);
                return Some(unavailable(m.response(), &e, self.config.timeout()));
            }
        }
        // Failed by an extension (e.g. an expired token): answered here, without moving the
        // session (the usual path would attach it before looking at the error).
        if let Some(e) = m.error() {
            return Some(fail(m.response(), e.to_owned()));
        }
        let mut r = ReplyStub::of(m).build();
        r.set_advice(&Advice::retry(self.config.timeout().as_millis() as u64, 0));
        Some(r)
    }

    /// Waits out a hold: until a newer connect supersedes it, its session ends, the engine
    /// drains or the deadline passes. (By reference: an async fn keeps its own copy of what
    /// is moved into it for as long as it runs.)
    pub(crate) async fn wait_held(&self, h: &Held) {
        // A hold with no time left (a socket's first connect, or one batched with other
        // messages) returns now, not at the timer's next tick.
        if Instant::now() >= h.deadline {
            return;
        }
        tokio::select! {
            _ = self.wait_interrupted(h) => {}
            _ = tokio::time::sleep_until(h.deadline) => {}
        }
    }

    /// Waits until a newer connect supersedes a hold, its session ends or the engine
    /// drains (closing a session, which draining does to each, wakes `superseded` too).
    /// (An async block, not an async fn, which would keep its arguments twice.)
    #[expect(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice")]
    pub(crate) fn wait_interrupted<'a>(&'a self, h: &'a Held) -> impl Future<Output = ()> + Send + 'a {
        async move {
            let s = &h.session;
            loop {
                let superseded = s.superseded().notified();
                tokio::pin!(superseded);
                superseded.as_mut().enable();
                if !s.is_current(h.generation) || s.is_closed() || self.is_draining() {
                    return;
                }
                superseded.await;
            }
        }
    }

    /// A socket's connect answered in place (not detached): waited out, then answered.
    async fn socket_connect(&self, held: Held, eventsource: bool) -> Vec<Outgoing> {
        self.wait_held(&held).await;
        self.end_connect(&held.session, &held.stub, eventsource, Vec::new()).await
    }

    /// The reply to a detached hold, once waited out.
    pub(crate) async fn answer_held(&self, h: &Held) -> Vec<Outgoing> {
        self.end_connect(&h.session, &h.stub, false, Vec::new()).await
    }

    /// The checks and bookkeeping before a connect may be held; `Err` is the failed reply.
    async fn begin_connect(&self, m: Message, batched: bool, socket: bool) -> Result<Begun, Message> {
        let conntype = m.connection_type();
        let raw_id = m.client_id();
        let session = match m.client_id().and_then(ClientId::parse) {
            None => None,
            Some(id) => match self.session(&id).await {
                Ok(s) => s,
                Err(e) => {
                    Metrics::inc(&self.metrics.backend_errors);
                    return Err(unavailable(m.response(), &e, self.config.timeout()));
                }
            },
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
            (Some(e), _) => return Err(fail(m.response(), e)),
            (None, None) => {
                let e = BayeuxError::unknown_client(raw_id.unwrap_or_default()).to_string();
                return Err(fail(m.response(), e));
            }
        };

        // A session whose queue overflowed under the `disconnect` policy ends here.
        if session.overflowed() {
            let _ = self.destroy(&session.id).await;
            return Err(fail(m.response(), BayeuxError::unknown_client(session.id.as_str()).to_string()));
        }
        let (session, moved) = match self.current(session).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                return Err(fail(m.response(), BayeuxError::unknown_client(raw_id.unwrap_or_default()).to_string()));
            }
            Err(e) => {
                Metrics::inc(&self.metrics.backend_errors);
                return Err(unavailable(m.response(), &e, self.config.timeout()));
            }
        };

        let eventsource = conntype == Some("eventsource");
        let (generation, first) = session.begin_connect();
        let timeout = self.config.timeout();
        // Not held: the first connect after a handshake (CometD's rule, so clients learn
        // quickly that they are connected), a connect batched with other messages (its
        // replies would wait), EventSource connects (the stream carries the messages), and
        // anything while draining. Nor a socket's connect whose session was attached afresh
        // above: the socket's pump served the copy that was dropped, and the client's next
        // connect gets it a new one.
        let hold = if first || batched || eventsource || (moved && socket) || self.is_draining() {
            Duration::ZERO
        } else {
            m.advice_timeout_ms().map(Duration::from_millis).unwrap_or(timeout).min(timeout)
        };
        // Kept through the hold: what the reply needs, not the request and a reply (a map
        // allocation each).
        let stub = ReplyStub::of(&m);
        Ok(Begun { session, generation, hold, eventsource, stub })
    }

    /// Answers a connect after its hold: stores how far the session got, builds the reply.
    async fn end_connect(
        &self,
        session: &Arc<Session>,
        stub: &ReplyStub,
        eventsource: bool,
        mut delivered: Vec<Arc<Delivery>>,
    ) -> Vec<Outgoing> {
        let timeout = self.config.timeout();
        if !delivered.is_empty() {
            let span = tracing::info_span!("deliver", count = delivered.len(), client_id = session.id.as_str());
            // Boxed: only a long-poll reply carries deliveries, and inline this step would
            // enlarge every socket's held connect.
            delivered = Box::pin(
                async {
                    // Record how far the session got before the response leaves, so a next
                    // connect on another node resumes after these. If this request goes away
                    // meanwhile, the guard puts them back in the queue. Failing to store risks
                    // a duplicate later, never a loss, so the response goes out anyway.
                    let guard = Requeue::new(session, delivered);
                    let items = guard.items();
                    if let Err(e) = self.backend.sent(&session.id, items).await {
                        Metrics::inc(&self.metrics.backend_errors);
                        tracing::warn!(client_id = %session.id, error = %e, "storing delivery position failed");
                    }
                    let delivered = guard.disarm();
                    self.observe_latency(&delivered);
                    delivered
                }
                .instrument(span),
            )
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

    /// Holds an HTTP connect until messages are queued, the hold time passes, a newer
    /// connect supersedes it, the session ends, or the engine drains. (A socket's connect
    /// waits in [`Inner::wait_held`].)
    ///
    /// If the request goes away while held (the client closed the connection), this future
    /// is dropped before anything is taken from the queue, so nothing is lost: the next
    /// connect gets the messages. Faye loses them (its §2.11).
    async fn hold(&self, s: &Arc<Session>, generation: u64, deadline: Instant) -> Vec<Arc<Delivery>> {
        loop {
            let queued = s.queued().notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            // Closing the session (also done to every session when the engine drains)
            // notifies `superseded` too, so no cancellation futures are needed here.
            let superseded = s.superseded().notified();
            tokio::pin!(superseded);
            superseded.as_mut().enable();
            if !s.is_current(generation) {
                return Vec::new();
            }
            // A session closed on its own (destroyed, or gone to another node, which re-reads
            // what it was not sent) keeps its queue: delivering it here could repeat what
            // the other node delivers. One closed by the drain still flushes its queue.
            if s.withholds_queue() {
                return Vec::new();
            }
            let items = s.drain(self.config.max_batch_bytes);
            if !items.is_empty() {
                return items;
            }
            if s.is_closed() || self.is_draining() || Instant::now() >= deadline {
                return Vec::new();
            }
            tokio::select! {
                _ = queued => {
                    // Let messages published in the same burst share this response.
                    tokio::task::yield_now().await;
                }
                _ = superseded => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// How long a client waits before connecting again when the backend failed.
pub(crate) const BACKEND_RETRY_MS: u64 = 1000;

/// A connect that failed because the backend did (Redis unreachable or silent): the
/// session is not known to be gone, so the client keeps it and connects again after
/// [`BACKEND_RETRY_MS`] (`reconnect: retry`). Faye advises a handshake on any failed
/// connect; after a Redis blip that would make every client start a new session at once,
/// and lose what was published for its old one meanwhile. The advice keeps the usual
/// `timeout`: the Faye client derives its request timeout from it.
/// A failure that retrying cannot mend advises a handshake, as Faye does.
fn unavailable(mut r: Message, e: &crate::BackendError, timeout: Duration) -> Message {
    if !e.retryable {
        return fail(r, super::backend_error(e).to_string());
    }
    r.fail(super::backend_error(e).to_string());
    r.set_advice(&Advice::retry(BACKEND_RETRY_MS, timeout.as_millis() as u64));
    r
}

/// A failed connect reply: no `clientId`, and `reconnect: handshake` advice.
fn fail(mut r: Message, e: String) -> Message {
    r.remove("clientId");
    r.fail(e);
    r.set_advice(&Advice::handshake());
    r
}

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

    fn build(&self) -> Message {
        let mut r = Message::new();
        for (k, v) in REPLY_KEYS.into_iter().zip(&self.parts) {
            if let Some(v) = v {
                r.set(k, v.clone());
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
