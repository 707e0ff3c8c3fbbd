//! A live subscription: a stream of the messages delivered for one pattern.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crier_protocol::{ChannelPattern, Message};
use futures::Stream;
use tokio::sync::mpsc;

use crate::dispatch::Added;
use crate::error::ClientError;
use crate::session::Shared;

/// The messages delivered for one subscribed pattern, as a [`Stream`] or through
/// [`Subscription::recv`].
///
/// Each subscription buffers up to the client's
/// [`subscription_capacity`](crate::ClientBuilder::subscription_capacity) messages. When
/// the buffer is full, further messages for this subscription are **dropped** and
/// counted in [`Subscription::dropped`]; other subscriptions are unaffected. Delivery
/// never waits for a slow consumer, because that would stall the whole session.
///
/// Dropping the subscription unsubscribes: deliveries stop at once and
/// `/meta/unsubscribe` is sent in the background (when no other subscription of this
/// client uses the same pattern). [`Subscription::unsubscribe`] does the same and
/// reports the server's answer. The stream ends when the client is closed.
pub struct Subscription {
    shared: Arc<Shared>,
    pattern: ChannelPattern,
    key: u64,
    rx: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    /// False once unsubscribed explicitly, so Drop does not release twice.
    active: bool,
}

impl Subscription {
    pub(crate) fn new(shared: Arc<Shared>, pattern: ChannelPattern, added: Added) -> Self {
        Subscription { shared, pattern, key: added.key, rx: added.rx, dropped: added.dropped, active: true }
    }

    /// The subscribed pattern.
    pub fn pattern(&self) -> &ChannelPattern {
        &self.pattern
    }

    /// The next delivered message; `None` once the client is closed and the buffer is
    /// drained.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// A delivered message if one is buffered now (for asserting that nothing arrived).
    pub fn try_recv(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// How many messages were dropped because this subscription's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Unsubscribes and waits for the server's reply (sent only if no other
    /// subscription of this client uses the same pattern).
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.active = false;
        self.shared.unsubscribe(self.key).await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.active {
            self.shared.release(self.key);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("buffered", &self.rx.len())
            .field("dropped", &self.dropped())
            .finish()
    }
}
