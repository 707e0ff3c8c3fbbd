//! Pumps deliver a session's messages to a socket (WebSocket or EventSource) as they
//! arrive, independently of the held `/meta/connect`.

use std::sync::Arc;

use tracing::Instrument;

use crate::context::{RequestContext, Transport};
use crate::delivery::{Delivery, Outgoing};
use crate::engine::Inner;
use crate::session::{Requeue, Session};

/// Messages taken from a session's queue for one write to the socket.
///
/// The socket reports what became of it: [`Pump::written`] records how far the session
/// got, [`Pump::requeue`] puts the messages back. A batch dropped without either is gone
/// from this node's queue and unrecorded (a move replays it). Recording only after the
/// write matters when the client moves: the node it moves to resumes after what was
/// recorded, so a batch recorded before a write that then failed would be skipped there.
/// (A WebSocket knows whether its frame was written; an EventSource stream hands its
/// chunk to the HTTP server and reports it written at once.)
///
/// Boxed, so it costs a socket's loop one pointer while it is written: that loop's state is
/// kept by every idle socket, and a few more bytes there cost a larger allocation each.
#[derive(Debug)]
#[must_use = "report the batch as written or requeue it"]
pub struct Batch(Box<Parts>);

#[derive(Debug)]
struct Parts {
    /// What to write, after outgoing extensions.
    items: Vec<Outgoing>,
    /// The deliveries they came from, in queue order (extensions may have rewritten or
    /// dropped some of `items`).
    taken: Vec<Arc<Delivery>>,
}

impl Batch {
    /// What to write, after outgoing extensions.
    pub fn items(&self) -> &[Outgoing] {
        &self.0.items
    }
}

/// Delivers one session's messages to the socket that owns this pump.
pub struct Pump {
    inner: Arc<Inner>,
    session: Arc<Session>,
    ctx: RequestContext,
}

impl Pump {
    pub(crate) fn new(inner: Arc<Inner>, session: Arc<Session>, ctx: RequestContext) -> Self {
        if ctx.transport == Transport::EventSource {
            session.stream_open(true);
        }
        Pump { inner, session, ctx }
    }

    /// The session's client id.
    pub fn client_id(&self) -> &str {
        self.session.id.as_str()
    }

    /// Records that an EventSource stream serves this pump's session here, for `ttl`; the
    /// stream renews it while it lasts (see `Backend::mark_streaming`). Not for a session
    /// that has left this node, nor while draining (the stream is about to end). A failure
    /// is counted and otherwise ignored: connects elsewhere then move the session, as
    /// without a mark. Owns what it needs, so the stream can run it beside its deliveries.
    pub fn mark_streaming(&self, ttl: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
        let (inner, session) = (self.inner.clone(), self.session.clone());
        async move {
            if session.is_closed() || inner.is_draining() {
                return;
            }
            if let Err(e) = inner.backend.mark_streaming(&session.id, ttl).await {
                crate::metrics::Metrics::inc(&inner.metrics.backend_errors);
                tracing::debug!(client_id = %session.id, error = %e, "marking an EventSource stream failed");
            }
        }
    }

    /// Whether the session it serves still lives on this node (it ends when the session is
    /// destroyed, moves to another node, or is attached here afresh).
    pub fn is_live(&self) -> bool {
        !self.session.is_closed()
    }

    /// Waits for messages and returns them (after outgoing extensions, for this socket's
    /// request). `None` once the session has ended or the engine is draining. The caller
    /// writes the batch, then hands it back to [`Pump::written`] or [`Pump::requeue`].
    ///
    /// Cancel safety: messages are taken from the queue only after the wait completes, and
    /// go back to it if this future is dropped while they are being delivered (outgoing
    /// extensions may wait), so dropping it loses nothing.
    ///
    /// (An async block, not an async fn, which would keep `self` twice: this future waits
    /// in every idle socket.)
    #[expect(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice")]
    #[expect(clippy::should_implement_trait, reason = "a future, not an iterator")]
    pub fn next(&mut self) -> impl Future<Output = Option<Batch>> + Send + '_ {
        async move {
            loop {
                let notified = self.session.queued().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // As for a held connect: a session closed on its own does not flush its
                // queue (it may have moved to a node that delivers it), one closed by the
                // drain does.
                if self.session.withholds_queue() {
                    return None;
                }
                let items = self.session.drain(self.inner.config.max_batch_bytes);
                if !items.is_empty() {
                    // Debug level: at info a span per socket write costs more than the write.
                    let span = tracing::debug_span!("deliver", count = items.len(), client_id = self.client_id());
                    // Boxed: this future waits inline in every idle socket's task, and the
                    // delivery step would make it several hundred bytes larger.
                    let guard = Requeue::new(&self.session, items);
                    let out = Box::pin(self.deliver(guard.items()).instrument(span)).await;
                    let taken = guard.disarm();
                    if !out.is_empty() {
                        return Some(Batch(Box::new(Parts { items: out, taken })));
                    }
                    continue;
                }
                if self.session.is_closed() || self.inner.is_draining() {
                    return None;
                }
                // Closing the session wakes `queued` too, so this one wake-up covers messages
                // and the end. No wait on the engine's shutdown token: draining closes every
                // attached session (and `is_draining`, checked above, covers a session attached
                // after that sweep). One shared token registered by every socket on every
                // delivery would be a hot spot.
                //
                // Parked: while this future waits here, messages that pile up mean its task
                // is not being run (the engine's backlog module; WebSockets only, see there
                // for why not EventSource streams).
                let _waiting =
                    (self.ctx.transport == crate::context::Transport::WebSocket).then(|| self.session.waiting());
                notified.await;
            }
        }
    }

    /// Runs outgoing extensions on messages taken from the queue; what the extensions drop
    /// is left out. If they drop everything, the messages are done with: recorded as sent
    /// here.
    async fn deliver(&self, items: &[Arc<Delivery>]) -> Vec<Outgoing> {
        self.inner.observe_latency(items);
        let mut out = Vec::with_capacity(items.len());
        for d in items {
            if let Some(o) = self.inner.outgoing_delivery(d.clone(), &self.ctx).await {
                out.push(o);
            }
        }
        if out.is_empty() {
            self.inner.backend.sent_soon(&self.session.id, items);
        }
        out
    }

    /// The batch was written: records how far the session got. A socket streams
    /// continuously, so the backend stores the position in the background.
    pub fn written(&self, batch: Batch) {
        self.inner.backend.sent_soon(&self.session.id, &batch.0.taken);
    }

    /// The batch could not be written: its messages go back to the front of the session's
    /// queue, as they were before outgoing extensions, so the next connect (on any
    /// transport, on any node) delivers them.
    pub fn requeue(&self, batch: Batch) {
        self.session.requeue(batch.0.taken);
    }
}

impl Drop for Pump {
    /// An EventSource stream's pump counts as its stream (see `Session::is_streaming`).
    fn drop(&mut self) {
        if self.ctx.transport == Transport::EventSource {
            self.session.stream_open(false);
        }
    }
}
