//! Transport-level failures and their HTTP answers, in one place.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use crier_protocol::DecodeError;

/// A request the edge refuses before the engine sees it.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The body or query could not be decoded into messages.
    #[error("Bad request: {0}")]
    Decode(#[from] DecodeError),
    /// A POST form or GET query without a `message` parameter.
    #[error("Bad request: missing 'message' parameter")]
    MissingMessage,
    /// A JSONP callback name that is not a plain JavaScript identifier path.
    #[error("Bad request: invalid JSONP callback")]
    BadCallback,
    /// A method the endpoint does not serve.
    #[error("Bad request: unsupported method")]
    Method,
    /// The body is larger than `server.max_body_bytes`.
    #[error("Payload too large: the limit is {0} bytes")]
    TooLarge(usize),
    /// The body could not be read.
    #[error("Bad request: could not read the body")]
    Body,
    /// An EventSource for a client id this server does not know.
    #[error("Bad request: unknown client")]
    UnknownClient,
    /// The request's Origin is not in `server.allowed_origins`.
    #[error("Forbidden: origin not allowed")]
    Origin,
    /// `limits.max_connections` connections are open.
    #[error("Service unavailable: connection limit ({0}) reached, try another node")]
    Busy(usize),
}

impl ServerError {
    fn status(&self) -> StatusCode {
        match self {
            ServerError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::Origin => StatusCode::FORBIDDEN,
            ServerError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        (self.status(), [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}
