//! Long-polling: POST with a JSON body, or a form body with `message=` (any content type
//! other than `application/json`, as Faye).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use crier_engine::{Transport, encode_outgoing};

use super::{PollGuard, check_http_sessions, decode, json_response};
use crate::cors::add_cors;
use crate::error::ServerError;
use crate::request::context;
use crate::request::within;
use crate::state::AppState;

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
        .unwrap_or(false)
}

pub(crate) async fn handle(state: Arc<AppState>, req: Request, remote: Option<SocketAddr>) -> Response {
    let headers = req.headers().clone();
    let path = req.uri().path().to_owned();
    let json = is_json(&req);
    let limit = state.config.max_body_bytes;
    let body = match within(state.config.read_timeout(), to_bytes(req.into_body(), limit)).await {
        Some(Ok(b)) => b,
        None => {
            state.metrics.reject();
            return ServerError::BodyTimeout(state.config.read_timeout_secs).into_response();
        }
        Some(Err(e)) => {
            state.metrics.reject();
            // axum reports an over-limit body as a length-limit error.
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            return if too_large { ServerError::TooLarge(limit) } else { ServerError::Body }.into_response();
        }
    };
    let raw = if json {
        body.to_vec()
    } else {
        match form_urlencoded::parse(&body).find(|(k, _)| k == "message") {
            Some((_, v)) => v.into_owned().into_bytes(),
            None => {
                state.metrics.reject();
                return ServerError::MissingMessage.into_response();
            }
        }
    };
    let mut batch = match decode(&state, &raw) {
        Ok(b) => b,
        Err(e) => {
            state.metrics.reject();
            return ServerError::Decode(e).into_response();
        }
    };
    check_http_sessions(&state, &mut batch);
    let ctx = context(Transport::LongPolling, &headers, remote, &path);
    let _guard = PollGuard::new(&state);
    let replies = state.engine.process(batch, &ctx).await;
    let mut resp = json_response(encode_outgoing(&replies));
    add_cors(&headers, &mut resp);
    resp
}
