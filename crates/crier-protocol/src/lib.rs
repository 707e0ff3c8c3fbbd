//! The Bayeux wire protocol as Faye speaks it, with no IO, no async and no clock.
//!
//! Everything here is a pure function of its inputs: time and randomness come in as
//! arguments (see [`ClientId::from_random`]). The engine, the server edge and the client
//! all share this crate, so a message encoded by one is decoded by the other with the
//! same rules.
//!
//! - [`channel`]: validated channel names and subscription patterns, `*` / `**` matching
//!   and Faye's expansion of a published channel into the names that can match it.
//! - [`message`]: the message model (a JSON object with typed accessors) and connection types.
//! - [`error`]: Faye's error strings, `code:params:text`.
//! - [`advice`]: the `advice` object on handshake and connect replies.
//! - [`batch`]: decoding a request body or frame into messages, and encoding replies.
//! - [`client_id`]: client identifiers.

pub mod advice;
pub mod batch;
pub mod channel;
pub mod client_id;
pub mod error;
pub mod message;

pub use advice::{Advice, Reconnect};
pub use batch::{DecodeError, DecodeLimits, decode_batch, encode_batch};
pub use channel::{ChannelError, ChannelKind, ChannelName, ChannelPattern};
pub use client_id::ClientId;
pub use error::{BayeuxError, ErrorCode};
pub use message::{ConnectionType, Message, meta};

/// The Bayeux protocol version this server speaks (Faye sends and answers `"1.0"`).
pub const BAYEUX_VERSION: &str = "1.0";
