//! The one error type every fallible client operation returns.

use std::sync::Arc;
use std::time::Duration;

/// Why a client operation failed.
///
/// The type is `Clone` (non-clonable sources sit behind an `Arc`) because one network
/// failure of a batched request has to be reported to every caller in the batch
/// (see [`Publisher`](crate::Publisher)).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The HTTP request failed below the Bayeux layer (connect refused, reset, ...).
    #[error("HTTP error: {0}")]
    Http(Arc<reqwest::Error>),
    /// The server answered with a non-2xx HTTP status (Faye sends 400 "Bad request"
    /// for a body it cannot parse).
    #[error("HTTP status {status}: {body}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The start of the response body, for diagnosis.
        body: String,
    },
    /// Opening or using the WebSocket failed, or the server closed it.
    #[error("WebSocket error: {0}")]
    WebSocket(Arc<tokio_tungstenite::tungstenite::Error>),
    /// The server replied `successful:false`; this is its `error` string
    /// (`"<code>:<params>:<text>"`, e.g. `"405:/a/*:Invalid channel"`).
    #[error("Bayeux error: {0}")]
    Bayeux(String),
    /// No reply arrived within the time-out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The client (or publisher) was disconnected or dropped, or the server told it to
    /// stop (`reconnect:"none"`).
    #[error("client closed")]
    Closed,
    /// The operation needs a session, but [`Client::connect`](crate::Client::connect)
    /// has not succeeded yet.
    #[error("not connected: call connect() first")]
    NotConnected,
    /// The WebSocket closed (or failed) before the reply arrived. The session may still
    /// be alive: the client opens a new socket for the next request.
    #[error("WebSocket closed before the reply arrived")]
    ConnectionClosed,
    /// The server's answer was not a Bayeux batch.
    #[error("undecodable response: {0}")]
    Decode(String),
    /// A channel name or subscription pattern is not valid Bayeux grammar; refused
    /// locally so a typo does not cost a round trip.
    #[error("invalid channel {channel:?}: {reason}")]
    InvalidChannel {
        /// The string that was refused.
        channel: String,
        /// Why.
        reason: crier_protocol::ChannelError,
    },
    /// The URL cannot be used (bad syntax or a scheme other than http/https).
    #[error("invalid URL {0:?}")]
    Url(String),
    /// The server broke the protocol in a way the client cannot work with (no reply to
    /// a request, a handshake without `clientId`, no WebSocket support, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The Bayeux error string, if the server refused the request.
    pub fn bayeux_error(&self) -> Option<&str> {
        match self {
            ClientError::Bayeux(s) => Some(s),
            _ => None,
        }
    }

    /// The numeric code of a Bayeux error (`401` for `"401:abc:Unknown client"`), if the
    /// error string starts with one; extensions may send strings without a code.
    pub fn bayeux_code(&self) -> Option<u16> {
        let s = self.bayeux_error()?;
        let (code, rest) = s.split_once(':')?;
        rest.contains(':').then(|| code.parse().ok()).flatten()
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Http(Arc::new(e))
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Arc::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bayeux_code_parses_faye_strings_only() {
        let e = ClientError::Bayeux("401:abc:Unknown client".into());
        assert_eq!(e.bayeux_code(), Some(401));
        assert_eq!(ClientError::Bayeux("405::Invalid channel".into()).bayeux_code(), Some(405));
        assert_eq!(ClientError::Bayeux("Invalid auth".into()).bayeux_code(), None);
        assert_eq!(ClientError::Closed.bayeux_code(), None);
    }
}
