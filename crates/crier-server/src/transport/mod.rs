//! The Bayeux transports. Each turns its framing into batches for the engine and the
//! engine's replies back into its framing.

pub(crate) mod eventsource;
pub(crate) mod jsonp;
pub(crate) mod polling;
pub(crate) mod websocket;
mod ws_inflight;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use crier_protocol::{DecodeError, DecodeLimits, Message, decode_batch};

use crate::state::AppState;

pub(crate) fn limits(state: &AppState) -> DecodeLimits {
    DecodeLimits { max_depth: state.config.max_json_depth, max_messages: state.config.max_batch }
}

/// Counts an HTTP request's handshakes against `limits.max_sessions_per_connection`, so a
/// request cannot make a thousand sessions. Per request, not per keep-alive connection: a
/// reverse proxy carries many clients' requests over each of its upstream connections.
pub(crate) fn check_http_sessions(state: &AppState, batch: &mut [Message]) {
    state.limiter.check_sessions(batch, &mut 0);
}

pub(crate) fn decode(state: &AppState, bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut batch = decode_batch(bytes, &limits(state))?;
    state.limiter.check_publishes(&mut batch);
    Ok(batch)
}

/// Headers every Bayeux reply carries (Faye's set).
pub(crate) fn reply_headers(resp: &mut Response, content_type: &'static str) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

/// A JSON reply body as a response.
pub(crate) fn json_response(body: String) -> Response {
    let mut resp = body.into_response();
    reply_headers(&mut resp, "application/json; charset=utf-8");
    resp
}

/// Tracks a poll in flight for the metrics gauge.
pub(crate) struct PollGuard<'a>(&'a AppState);

impl<'a> PollGuard<'a> {
    pub(crate) fn new(state: &'a AppState) -> Self {
        state.metrics.polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PollGuard(state)
    }
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.metrics.polls.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
