//! Bayeux semantics, independent of transport and storage.
//!
//! The [`Engine`] handles batches of messages (`process`) exactly as Faye's protocol server
//! does (handshake, connect hold and release, subscribe, unsubscribe, publish, disconnect,
//! session expiry), with the improvements listed in `docs/protocol-notes.md`. Storage and
//! cross-node fan-out sit behind the [`Backend`] trait; [`MemoryBackend`] is the single-node
//! implementation, and [`conformance`] (feature `test-util`) is the suite every backend runs.
//!
//! Messages for a session attached to this node wait in its bounded queue until a held
//! long-poll takes them or a socket's [`Pump`] pushes them.

mod admin;
mod backend;
mod backlog;
mod clock;
mod config;
mod context;
mod delivery;
mod engine;
mod events;
mod extension;
mod held;
mod hub;
mod memory;
mod meta;
mod metrics;
mod pump;
mod retry;
mod session;
mod session_locks;
mod turn;
mod users;

#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance_api;

pub use admin::{
    ApiError, ChannelInfo, ClusterStats, MAX_CHANNELS_PAGE, MAX_CURSOR, MAX_IDEMPOTENCY_KEY_LEN, MAX_PREFIX_LEN,
    Selector, SessionInfo,
};
pub use backend::{
    Backend, BackendError, ChannelsPage, Claim, DeliverySink, LogPosition, Millis, SWEEP_BATCH, Touched,
};
pub use clock::Clock;
pub use config::{EngineConfig, OverflowPolicy};
pub use context::{Identity, RequestContext, RequestInfo, Transport};
pub use delivery::{Delivery, Outgoing, encode_outgoing};
pub use engine::{Engine, EngineBuilder};
pub use events::Event;
pub use extension::{Extension, Verdict};
pub use held::{HeldConnect, SocketReplies};
pub use memory::{MemoryBackend, REMEMBERED_API_PUBLISHES, REMEMBERED_PUBLISHES};
pub use meta::PRESENCE_CHANNEL;
pub use metrics::{Histogram, Metrics};
pub use pump::{Batch, Pump};
pub use retry::RetryKey;
pub use session_locks::{SessionGuard, SessionLocks};
pub use turn::{Passed, Turn};
pub use users::{
    EVENTS_PREFIX, MAX_USER_LEN, NodeStats, Presence, PresenceChange, PresenceStatus, RESERVED_PREFIX, USER_PREFIX,
    is_reserved, user_name, user_of_name,
};
