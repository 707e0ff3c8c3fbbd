//! Dispatch: health and metrics routes, and Faye's order of checks on the mount path.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::cors;
use crate::error::ServerError;
use crate::health;
use crate::state::AppState;
use crate::static_js;
use crate::transport::{eventsource, jsonp, polling, websocket};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    // Health and metrics live on the internal port when there is one.
    let base = if state.config.internal_listen.is_some() { Router::new() } else { internal_routes() };
    let base = if state.api.listen.is_none() { base.nest(&api_path(&state), api_routes(&state)) } else { base };
    base.fallback(dispatch).with_state(state)
}

fn api_path(state: &AppState) -> String {
    state.api.path.trim_end_matches('/').to_owned()
}

/// The API's routes, or a 404 with the reason on every API path when it is off.
fn api_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    if state.api.enabled() { crate::api::router(state.clone()) } else { Router::new().fallback(crate::api::disabled) }
}

/// The router of the API port (`api.listen`).
pub(crate) fn api_only_router(state: Arc<AppState>) -> Router {
    Router::new().nest(&api_path(&state), api_routes(&state)).with_state(state)
}

/// `/healthz`, `/readyz`, `/metrics`.
fn internal_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
}

/// The router of the internal port (`server.internal_listen`).
pub(crate) fn internal_router(state: Arc<AppState>) -> Router {
    internal_routes().with_state(state)
}

/// Requests outside the mount path get a plain answer (Faye's Node adapter would leave
/// them hanging; its Ruby adapter answers 404 the same way).
fn not_ours(state: &AppState) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Not found. This is a Bayeux server; its endpoint is {}\n", state.config.mount),
    )
        .into_response()
}

fn wants_event_stream(req: &Request) -> bool {
    req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"))
}

fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Faye's order inside the mount: static client file, CORS preflight, EventSource,
/// WebSocket, JSONP GET, POST; anything else is a 400.
async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if !state.is_bayeux_path(&path) {
        return not_ours(&state);
    }
    if path.ends_with(".js") || path.ends_with(".map") {
        return static_js::serve(&state, &path, req.headers());
    }
    if let Err(e) = cors::check_origin(&state, req.headers()) {
        state.metrics.reject();
        return e.into_response();
    }
    if req.method() == Method::OPTIONS || req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return cors::preflight(req.headers());
    }
    if req.extensions().get::<crate::accept::OverLimit>().is_some() {
        // Counted as refused when it was accepted.
        return ServerError::Busy(state.limiter.config.max_connections).into_response();
    }
    let remote = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if req.method() == Method::GET && wants_event_stream(&req) {
        return eventsource::handle(state, req, remote).await;
    }
    if req.method() == Method::GET && is_upgrade(&req) {
        let (mut parts, _body) = req.into_parts();
        let slot = parts.extensions.remove::<crate::accept::Slot>();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => websocket::handle(state, ws, &parts.headers, remote, &path, slot),
            Err(rejection) => rejection.into_response(),
        };
    }
    match *req.method() {
        Method::GET => jsonp::handle(state, req, remote).await,
        Method::POST => polling::handle(state, req, remote).await,
        _ => {
            state.metrics.reject();
            ServerError::Method.into_response()
        }
    }
}
