//! The crate's errors, and their mapping to the engine's [`BackendError`].

use crier_engine::BackendError;

/// Failure to start the Redis backend.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The configuration is invalid (the message names the key).
    #[error("{0}")]
    Config(String),
    /// Redis could not be reached or refused the connection.
    #[error("cannot connect to Redis at {url}: {message}")]
    Connect {
        /// The configured URL, without credentials.
        url: String,
        /// What fred reported.
        message: String,
    },
}

/// Every Redis command failure becomes a retryable backend error: the store may come back.
pub(crate) fn unavailable(e: fred::error::Error) -> BackendError {
    BackendError::unavailable(format!("redis: {e}"))
}

/// A URL safe to log: credentials removed.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}
