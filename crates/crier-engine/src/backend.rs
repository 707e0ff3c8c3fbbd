//! The storage and broker seam. The memory backend implements it for one node; the Redis
//! backend implements it for a cluster. Every backend runs the same conformance suite.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crier_protocol::{ChannelName, ChannelPattern, ClientId};

use crate::context::Identity;
use crate::delivery::Delivery;
use crate::retry::RetryKey;
use crate::users::{NodeStats, Presence, PresenceChange};

/// What [`Backend::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not seen within the window: go ahead, then [`Backend::finish`].
    New,
    /// Claimed, but the call that claimed it did not finish (it failed, or its node
    /// stopped): go ahead again; some recipients may get it twice, none loses it.
    Unfinished,
    /// Done within the window: a repeat, do nothing.
    Done,
}

/// How many expired sessions a backend may return from one `expired_sessions` call; a
/// sweep that gets this many asks again at once (up to `SWEEP_ROUNDS` times).
pub const SWEEP_BATCH: usize = 1000;

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

/// A page of the names with subscribers (see [`Backend::channels_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelsPage {
    /// The names and their numbers of sessions.
    pub channels: Vec<(ChannelPattern, u64)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<u64>,
}

/// Where a backend hands messages for sessions attached to this node.
pub trait DeliverySink: Send + Sync + 'static {
    /// Queues `delivery` for each of `sessions` that is attached to this node.
    fn deliver(&self, sessions: &[ClientId], delivery: &Arc<Delivery>);

    /// Ends the session's presence on this node: a held connect returns, a socket pump
    /// stops. Used when the session was destroyed or attached to another node elsewhere.
    fn close(&self, session: &ClientId);
}

/// Where a delivery sits in a backend's per-name log: the subscription name it came
/// through and its offset there (a Redis stream id, `ms-seq`). Lets the backend record
/// what a session was actually sent, so another node can resume from there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    /// The subscription name (channel or pattern) whose log holds the message.
    pub name: ChannelPattern,
    /// The offset in that log; offsets of one log increase.
    pub offset: (u64, u64),
}

/// What [`Backend::touch`] found out about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// It exists, and this node delivers its messages (or the backend has one node).
    Here,
    /// It exists, but another node attached it since this node did, and this node had not
    /// heard yet (that node's `close` is on its way). What this node queued for it since may
    /// have been delivered there, so the backend has let go of it here (as that `close`
    /// would, closing it through the sink), and the engine attaches it afresh.
    Elsewhere,
    /// It does not exist (destroyed, or expired).
    Gone,
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

    /// Binds an identity to an existing session (at handshake); every node then sees it.
    async fn set_identity(&self, id: &ClientId, identity: &Identity) -> Result<(), BackendError>;

    /// The identity bound to the session, if any.
    async fn identity(&self, id: &ClientId) -> Result<Option<Identity>, BackendError>;

    /// Whether the session exists (and has not expired).
    async fn session_exists(&self, id: &ClientId) -> Result<bool, BackendError>;

    /// Refreshes liveness, and says whether the session exists and which node delivers it
    /// (a connect is about to deliver from this node's queue).
    async fn touch(&self, id: &ClientId, now: Millis) -> Result<Touched, BackendError>;

    /// Records that this node's EventSource stream for the session is open, for `ttl`; the
    /// stream renews it while it lasts. Only while the session is attached to this node: a
    /// stream on a node the session has left must not overwrite the mark of the one that
    /// delivers. Lets a connect on another node keep the session alive without taking it
    /// from the stream (see [`Backend::streaming_elsewhere`]).
    async fn mark_streaming(&self, id: &ClientId, ttl: std::time::Duration) -> Result<(), BackendError>;

    /// Whether the session is attached to another node whose EventSource stream for it is
    /// open (marked there, the mark not expired); if so, its liveness is refreshed as of
    /// `now`. `false` in every other case (attached here, no open stream, unknown session):
    /// the caller then takes the usual path, which attaches the session and delivers.
    async fn streaming_elsewhere(&self, id: &ClientId, now: Millis) -> Result<bool, BackendError>;

    /// Removes the session and its subscriptions. Returns the subscriptions it had, or
    /// `None` if it did not exist (or another caller destroyed it first): exactly one caller
    /// wins, so events fire once.
    async fn destroy_session(&self, id: &ClientId) -> Result<Option<Vec<ChannelPattern>>, BackendError>;

    /// Sessions whose last touch is older than `cutoff`: all of them, or at least
    /// [`SWEEP_BATCH`] (the oldest) when there are more; the sweep then asks again at once.
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

    /// [`Backend::publish`] for a session's publish that its client may re-send: publishes
    /// only if no publish with the same `key` was accepted within the last `window`, and
    /// remembers this one for `window` from `now`. `Ok(false)`: a retry; nothing was
    /// published. Checking, remembering and publishing are one step, so a retry that races
    /// its original is still published once.
    async fn publish_once(
        &self,
        channel: &ChannelName,
        delivery: Arc<Delivery>,
        key: &RetryKey,
        window: Duration,
        now: Millis,
    ) -> Result<bool, BackendError>;

    /// Whether [`Backend::publish`] and [`Backend::publish_once`] send everything they write
    /// on their future's first poll, so that a publish polled after that takes effect after
    /// it. The engine then lets a client's next message start while a publish still waits
    /// for its answer (see [`crate::Turn`]), and a publisher's messages keep their order. If
    /// not, each publish is answered before the client's next message starts. Default: not.
    fn publish_sends_at_once(&self) -> bool {
        false
    }

    /// Claims `key` for `window` from `now`, for a server API call that publishes in
    /// several steps (a broadcast, a send to users), where the check cannot be part of one
    /// publish as in [`Backend::publish_once`].
    async fn claim(&self, key: &RetryKey, window: Duration, now: Millis) -> Result<Claim, BackendError>;

    /// Marks a claimed call done: a later [`Backend::claim`] of `key` within the window
    /// finds [`Claim::Done`].
    async fn finish(&self, key: &RetryKey) -> Result<(), BackendError>;

    /// Logs each delivery under exactly the given subscription name (no channel
    /// expansion) and fans it out to that name's sessions. The deliveries of one call share
    /// a `seq`, so a session reached through several of the names receives one of them.
    /// Used for user-targeted messages, de-duplicated broadcasts and monitoring events.
    async fn publish_to(&self, targets: &[(ChannelPattern, Arc<Delivery>)]) -> Result<(), BackendError>;

    /// Waits, bounded, while the cluster asks publishers to hold back (a node is behind).
    /// `publish` and `publish_to` never wait: the engine calls this once before each
    /// publish of a client or of the API (a broadcast to many channels waits once), and not
    /// for the server's monitoring events (their loop would drop events while it waited).
    /// Default: never waits (one node needs no signal: its own fan-out slows its publishes).
    async fn admit(&self) {}

    /// Sessions subscribed to a name matching `channel` (the sessions a publish to it
    /// reaches), each once, sorted.
    async fn subscribers(&self, channel: &ChannelName) -> Result<Vec<ClientId>, BackendError>;

    /// Every subscription name with at least one session, with its number of sessions.
    async fn channels(&self) -> Result<Vec<(ChannelPattern, u64)>, BackendError>;

    /// A page of [`Backend::channels`]: names starting with `prefix`, from `cursor` (0 for
    /// the first page) on, about `limit` of them. A page may hold fewer, even none, before
    /// the last; `next` is `None` on the last. A name that has subscribers during the whole
    /// listing is listed (on Redis, possibly twice); any `cursor` is taken (one not handed
    /// out lists from somewhere, or nothing).
    async fn channels_page(&self, prefix: &str, cursor: u64, limit: usize) -> Result<ChannelsPage, BackendError>;

    /// Number of live sessions in the whole cluster.
    async fn session_count(&self) -> Result<u64, BackendError>;

    /// Records that `id` is one of `user`'s sessions; returns the user's new status if it
    /// changed (offline → online).
    async fn user_joined(&self, user: &str, id: &ClientId, now: Millis)
    -> Result<Option<PresenceChange>, BackendError>;

    /// Removes `id` from `user`'s sessions; returns the new status if it changed (to
    /// offline when it was the last session, to away when every remaining one is away).
    async fn user_left(&self, user: &str, id: &ClientId, now: Millis) -> Result<Option<PresenceChange>, BackendError>;

    /// Marks one of `user`'s sessions away (or back); returns the new status if it changed.
    async fn set_away(
        &self,
        user: &str,
        id: &ClientId,
        away: bool,
        now: Millis,
    ) -> Result<Option<PresenceChange>, BackendError>;

    /// The live sessions of a user, sorted.
    async fn user_sessions(&self, user: &str) -> Result<Vec<ClientId>, BackendError>;

    /// The presence of each user, in the order asked (offline for unknown users).
    async fn presence(&self, users: &[String], now: Millis) -> Result<Vec<Presence>, BackendError>;

    /// Number of users with at least one session.
    async fn online_users(&self) -> Result<u64, BackendError>;

    /// Up to `n` users with at least one session, picked at random (for the sweep that
    /// prunes sessions a failed or interrupted disconnect left in a user's presence).
    async fn online_user_sample(&self, n: usize) -> Result<Vec<String>, BackendError>;

    /// Publishes this node's figures for the cluster-stats API (every few seconds).
    async fn heartbeat(&self, stats: &NodeStats) -> Result<(), BackendError>;

    /// The figures of every node that sent a heartbeat since `since` (ms), sorted by node.
    async fn nodes(&self, since: Millis) -> Result<Vec<NodeStats>, BackendError>;

    /// This node's id in the cluster.
    fn node_id(&self) -> String {
        "local".to_owned()
    }

    /// This node becomes the one that delivers the session's messages (a handshake, or a
    /// connect or socket for a session not attached here). Returns once anything the session
    /// missed since its last delivery elsewhere is queued through the sink. Single-node
    /// backends have nothing to do.
    async fn attach(&self, _id: &ClientId) -> Result<(), BackendError> {
        Ok(())
    }

    /// The session is no longer attached here (the engine dropped it locally).
    fn detach(&self, _id: &ClientId) {}

    /// Deliveries about to be sent to the client in the response to an HTTP request (a
    /// long-poll, or a connect posted for an EventSource stream): the backend records how
    /// far the session got (see [`LogPosition`]) and stores it before returning, so a next
    /// connect on another node resumes after them.
    async fn sent(&self, _id: &ClientId, _items: &[Arc<Delivery>]) -> Result<(), BackendError> {
        Ok(())
    }

    /// Deliveries written to a socket (WebSocket, EventSource), which streams
    /// continuously: the backend records how far the session got, and the position reaches
    /// storage later (Redis: through the node's marks, and the session's own cursors when
    /// it leaves the node or at shutdown). Not async on purpose: it
    /// is called from every socket's loop, whose state every idle socket keeps, and a wait
    /// there makes that state larger.
    fn sent_soon(&self, _id: &ClientId, _items: &[Arc<Delivery>]) {}

    /// Whether the backend can serve requests now (for `/readyz`).
    async fn ready(&self) -> bool {
        true
    }

    /// The backend's own counters and gauges as `(name, help, value)`, for `/metrics`.
    fn metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        Vec::new()
    }

    /// Stops background work (listeners, flushers) and stores what must survive, bounded.
    async fn close(&self) {}
}
