//! The storage and broker seam. The memory backend implements it for one node; the Redis
//! backend implements it for a cluster. Every backend runs the same conformance suite.

use std::sync::Arc;

use async_trait::async_trait;
use crier_protocol::{ChannelName, ChannelPattern, ClientId};

use crate::delivery::Delivery;

/// A backend failure. The engine maps it to Bayeux errors (`407` on publish, `500` otherwise).
#[derive(Debug, thiserror::Error)]
#[error("backend unavailable: {message}")]
pub struct BackendError {
    /// What went wrong, for logs.
    pub message: String,
    /// Whether retrying the same call may succeed.
    pub retryable: bool,
}

impl BackendError {
    /// A retryable failure (e.g. the store is unreachable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        BackendError { message: message.into(), retryable: true }
    }
}

/// Where a backend hands messages for sessions attached to this node.
pub trait DeliverySink: Send + Sync + 'static {
    /// Queues `delivery` for each of `sessions` that is attached to this node.
    fn deliver(&self, sessions: &[ClientId], delivery: &Arc<Delivery>);
}

/// Times are milliseconds on the engine's clock (see [`crate::Clock`]); every node of a
/// cluster uses wall-clock milliseconds so their values compare.
pub type Millis = u64;

/// Sessions, subscriptions and fan-out.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Called once by the engine before any other call, with the sink for local deliveries.
    fn bind(&self, sink: Arc<dyn DeliverySink>);

    /// Records a new session, alive as of `now`.
    async fn create_session(&self, id: &ClientId, now: Millis) -> Result<(), BackendError>;

    /// Whether the session exists (and has not expired).
    async fn session_exists(&self, id: &ClientId) -> Result<bool, BackendError>;

    /// Refreshes liveness; returns `false` if the session does not exist.
    async fn touch(&self, id: &ClientId, now: Millis) -> Result<bool, BackendError>;

    /// Removes the session and its subscriptions. Returns the subscriptions it had, or
    /// `None` if it did not exist (or another caller destroyed it first): exactly one caller
    /// wins, so events fire once.
    async fn destroy_session(&self, id: &ClientId) -> Result<Option<Vec<ChannelPattern>>, BackendError>;

    /// Sessions whose last touch is older than `cutoff`.
    async fn expired_sessions(&self, cutoff: Millis) -> Result<Vec<ClientId>, BackendError>;

    /// Adds a subscription; `true` if it is new. Returns only once the subscription is
    /// durable: a publish through any node after this returns reaches the session.
    async fn subscribe(&self, id: &ClientId, pattern: &ChannelPattern) -> Result<bool, BackendError>;

    /// Removes a subscription; `true` if it existed.
    async fn unsubscribe(&self, id: &ClientId, pattern: &ChannelPattern) -> Result<bool, BackendError>;

    /// The session's subscriptions.
    async fn subscriptions(&self, id: &ClientId) -> Result<Vec<ChannelPattern>, BackendError>;

    /// Fans a message out to every session subscribed to a name matching `channel`, once per
    /// session, wherever it is attached. Returns once the message is accepted for delivery.
    async fn publish(&self, channel: &ChannelName, delivery: Arc<Delivery>) -> Result<(), BackendError>;
}
