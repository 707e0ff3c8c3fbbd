//! The server API under `api.path` (default `/api`): JSON in and out, authenticated by
//! `api.keys`, described by an OpenAPI 3.1 document at `<path>/openapi.json` (also checked
//! in as `docs/openapi.json`). The operations themselves are the engine's `api_*` methods;
//! this module parses, checks limits and maps errors (see `crate::error::ApiFailure`).

mod config;
mod handlers;
pub(crate) mod openapi;
mod types;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use config::ApiConfig;

use crate::error::ApiFailure;
use crate::state::AppState;

/// The API's routes, relative to `api.path`.
pub(crate) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let authed = Router::new()
        .route("/publish", post(handlers::publish))
        .route("/broadcast", post(handlers::broadcast))
        .route("/send", post(handlers::send))
        .route("/subscribe", post(handlers::subscribe))
        .route("/unsubscribe", post(handlers::unsubscribe))
        .route("/disconnect", post(handlers::disconnect))
        .route("/sessions/{client_id}", get(handlers::session))
        .route("/users/{user}", get(handlers::user))
        .route("/channels", get(handlers::channels))
        .route("/channels/subscribers", get(handlers::channel_subscribers))
        .route("/presence", post(handlers::presence))
        .route("/presence/online", get(handlers::online))
        .route("/stats", get(handlers::stats))
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate));
    Router::new()
        .route("/openapi.json", get(handlers::openapi))
        .merge(authed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> ApiFailure {
    ApiFailure::NotFound("no such API endpoint (see openapi.json)".to_owned())
}

async fn method_not_allowed() -> ApiFailure {
    ApiFailure::Method
}

/// Answered on every API path while `api.keys` is empty.
pub(crate) async fn disabled() -> ApiFailure {
    ApiFailure::NotFound("the server API is off: set api.keys to enable it".to_owned())
}

/// Compares without an early exit, so response times do not leak a key's prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let ok = presented.is_some_and(|k| state.api.keys.iter().any(|key| same(key.trim().as_bytes(), k.as_bytes())));
    if !ok {
        return ApiFailure::Unauthorized.into_response();
    }
    next.run(req).await
}
