//! The Redis backend of Crier: any node serves any client.
//!
//! Sessions, their subscriptions and per-subscription delivery cursors live in Redis. A
//! publish appends once to a bounded log per matching subscription name and pushes once on
//! that name's sharded pub/sub channel; nodes listen only to the names their attached
//! sessions need and fan out in memory. A session that moves to another node (a long-poll
//! hop, a reconnect after a node died) is caught up from the logs. Redis work per publish
//! does not depend on the number of subscribers. The design and its invariants:
//! `docs/adr/0001-redis-backend.md`.
//!
//! This crate is the only one that knows Redis key names (`keys.rs`) or uses fred.

mod backend;
mod codec;
mod config;
mod error;
mod keys;
mod listener;
mod local;
mod marks;
mod metrics;
mod positions;
mod pressure;
mod scripts;
mod users;
mod values;

#[cfg(any(test, feature = "test-util"))]
pub use backend::ControlHold;
pub use backend::RedisBackend;
pub use config::RedisConfig;
pub use error::RedisError;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;
