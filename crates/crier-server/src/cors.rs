//! CORS exactly as Faye answers it, plus the optional Origin allow-list.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ServerError;
use crate::state::AppState;

/// Refuses a request whose `Origin` is not allowed (only when an allow-list is set).
pub(crate) fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ServerError> {
    if state.config.allowed_origins.is_empty() {
        return Ok(());
    }
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => Ok(()),
        Some(o) if state.config.allowed_origins.iter().any(|a| a == o) => Ok(()),
        Some(o) => {
            tracing::info!(origin = o, "request from an origin not in server.allowed_origins");
            Err(ServerError::Origin)
        }
    }
}

/// Adds `Access-Control-Allow-Origin: <Origin>` and `-Credentials: true` when the request
/// had an `Origin` (no CORS headers otherwise), as Faye does on POST and JSONP replies.
pub(crate) fn add_cors(req_headers: &HeaderMap, resp: &mut Response) {
    if let Some(origin) = req_headers.get(header::ORIGIN) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

/// The preflight answer: 200, empty body, Faye's exact header set. The allowed origin is
/// the `Origin` header, else the whole `Referer` (Faye's quirk), else `*`.
pub(crate) fn preflight(req_headers: &HeaderMap) -> Response {
    let origin = req_headers
        .get(header::ORIGIN)
        .or_else(|| req_headers.get(header::REFERER))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("*"));
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Accept, Authorization, Content-Type, Pragma, X-Requested-With"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, GET"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}
