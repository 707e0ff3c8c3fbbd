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
    /// The body did not arrive within `server.read_timeout_secs`.
    #[error("Request timeout: the body did not arrive within {0} s")]
    BodyTimeout(u64),
}

impl ServerError {
    fn status(&self) -> StatusCode {
        match self {
            ServerError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::Origin => StatusCode::FORBIDDEN,
            ServerError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status(), [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response();
        // (A `Busy` connection is closed by the accept loop, after whatever it is answered.)
        if matches!(self, ServerError::BodyTimeout(_)) {
            // The rest of the body may still come and cannot be told from a next request.
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        response
    }
}

/// Why a server-API request failed; answered as JSON `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiFailure {
    /// No or a wrong API key.
    #[error("missing or invalid API key (send Authorization: Bearer KEY)")]
    Unauthorized,
    /// The API is off (`api.keys` is empty) or the path is not an API endpoint.
    #[error("{0}")]
    NotFound(String),
    /// A method the endpoint does not serve.
    #[error("method not allowed")]
    Method,
    /// The body is larger than `api.max_body_bytes`.
    #[error("payload too large: the limit is {0} bytes")]
    TooLarge(usize),
    /// The body or a parameter is malformed; the text says why.
    #[error("{0}")]
    Invalid(String),
    /// The body did not arrive within `server.read_timeout_secs`.
    #[error("request timeout: the body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// The backend failed.
    #[error("backend unavailable")]
    Unavailable,
}

impl From<crier_engine::ApiError> for ApiFailure {
    fn from(e: crier_engine::ApiError) -> Self {
        match e {
            crier_engine::ApiError::Invalid(s) => ApiFailure::Invalid(s),
            crier_engine::ApiError::Backend(e) => {
                tracing::warn!(error = %e, "API call failed in the backend");
                ApiFailure::Unavailable
            }
        }
    }
}

impl ApiFailure {
    fn status(&self) -> StatusCode {
        match self {
            ApiFailure::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiFailure::NotFound(_) => StatusCode::NOT_FOUND,
            ApiFailure::Method => StatusCode::METHOD_NOT_ALLOWED,
            ApiFailure::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiFailure::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiFailure::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiFailure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        let mut r = (self.status(), axum::Json(body)).into_response();
        if matches!(self, ApiFailure::Unauthorized) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        if matches!(self, ApiFailure::BodyTimeout(_)) {
            // The rest of the body may still come and cannot be told from a next request.
            r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        r
    }
}
