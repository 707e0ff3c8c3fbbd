//! Pumps deliver a session's messages to a socket (WebSocket or EventSource) as they
//! arrive, independently of the held `/meta/connect`.

use std::sync::Arc;

use tracing::Instrument;

use crate::backend::Durability;
use crate::context::RequestContext;
use crate::delivery::{Delivery, Outgoing};
use crate::engine::Inner;
use crate::session::{Requeue, Session};

/// Delivers one session's messages to the socket that owns this pump.
pub struct Pump {
    inner: Arc<Inner>,
    session: Arc<Session>,
    ctx: RequestContext,
}

impl Pump {
    pub(crate) fn new(inner: Arc<Inner>, session: Arc<Session>, ctx: RequestContext) -> Self {
        Pump { inner, session, ctx }
    }

    /// The session's client id.
    pub fn client_id(&self) -> &str {
        self.session.id.as_str()
    }

    /// Waits for messages and returns them (after outgoing extensions, for this socket's
    /// request). `None` once the session has ended or the engine is draining.
    ///
    /// Cancel safety: messages are taken from the queue only after the wait completes, and
    /// go back to it if this future is dropped while they are being delivered (outgoing
    /// extensions may wait), so dropping it loses nothing.
    ///
    /// (An async block, not an async fn, which would keep `self` twice: this future waits
    /// in every idle socket.)
    #[expect(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice")]
    #[expect(clippy::should_implement_trait, reason = "a future, not an iterator")]
    pub fn next(&mut self) -> impl Future<Output = Option<Vec<Outgoing>>> + Send + '_ {
        async move {
            loop {
                let notified = self.session.queued().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let items = self.session.drain();
                if !items.is_empty() {
                    // Debug level: at info a span per socket write costs more than the write.
                    let span = tracing::debug_span!("deliver", count = items.len(), client_id = self.client_id());
                    // Boxed: this future waits inline in every idle socket's task, and the
                    // delivery step would make it several hundred bytes larger.
                    let guard = Requeue::new(&self.session, items);
                    let out = Box::pin(self.deliver(guard.items()).instrument(span)).await;
                    guard.disarm();
                    if !out.is_empty() {
                        return Some(out);
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
                notified.await;
            }
        }
    }

    /// Records the position of messages taken from the queue and runs outgoing extensions
    /// on them; what the extensions drop is left out.
    async fn deliver(&self, items: &[Arc<Delivery>]) -> Vec<Outgoing> {
        // A socket streams continuously: positions are stored in the background.
        if let Err(e) = self.inner.backend.sent(&self.session.id, items, Durability::Soon).await {
            tracing::debug!(client_id = %self.session.id, error = %e, "recording delivery position failed");
        }
        self.inner.observe_latency(items);
        let mut out = Vec::with_capacity(items.len());
        for d in items {
            if let Some(o) = self.inner.outgoing_delivery(d.clone(), &self.ctx).await {
                out.push(o);
            }
        }
        out
    }

    /// Puts messages that could not be written back at the front of the session's queue,
    /// so the next connect (on any transport) delivers them.
    pub fn requeue(&self, items: Vec<Outgoing>) {
        let ds = items
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::Delivery(d) => Some(d),
                Outgoing::Message(_) => None,
            })
            .collect();
        self.session.requeue(ds);
    }
}
