//! The handlers for the five meta channels and for publishes, each in its own file. Each
//! follows Faye's validation order, where a later check overrides an earlier one; the
//! code checks in reverse (highest precedence first) and stops at the first failure.

pub(crate) mod connect;
mod disconnect;
mod handshake;
mod publish;

pub use publish::PRESENCE_CHANNEL;
mod subscribe;

use crier_protocol::BayeuxError;

/// Maps a backend failure to the Bayeux error a client sees.
pub(crate) fn backend_error(e: &crate::BackendError) -> BayeuxError {
    tracing::warn!(error = %e, "backend call failed");
    BayeuxError::with_text(crier_protocol::ErrorCode::ServerError, Vec::<String>::new(), "Backend unavailable")
}
