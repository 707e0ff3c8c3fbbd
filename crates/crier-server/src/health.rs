//! `/healthz`, `/readyz` and `/metrics`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The process is alive.
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready to take traffic: not draining, and the backend (Redis) reachable.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.engine.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !state.engine.backend_ready().await {
        (StatusCode::SERVICE_UNAVAILABLE, "backend unavailable\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

/// Prometheus text exposition of the engine's and the edge's counters.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::with_capacity(2048);
    let mut series: Vec<(&str, &str, i64)> = state.engine.metrics().snapshot();
    series.extend(state.engine.backend_metrics());
    series.extend(state.limiter.metrics());
    let m = &state.metrics;
    series.push((
        "crier_connections",
        "Open connections on the public port under limits.max_connections (HTTP, idle ones included, and WebSocket).",
        state.open_connections(),
    ));
    series.push((
        "crier_accept_errors_total",
        "Accept errors other than a peer leaving early (e.g. out of file descriptors).",
        m.accept_errors.load(Ordering::Relaxed) as i64,
    ));
    series.push((
        "crier_write_timeouts_total",
        "Connections closed because a write made no progress for server.write_timeout_secs (the peer stopped reading).",
        m.write_timeouts.load(Ordering::Relaxed) as i64,
    ));
    series.push(("crier_websocket_connections", "Open WebSocket connections.", m.websockets.load(Ordering::Relaxed)));
    series.push(("crier_eventsource_connections", "Open EventSource streams.", m.eventsources.load(Ordering::Relaxed)));
    series.push((
        "crier_polls_in_flight",
        "Long-poll and JSONP requests in progress.",
        m.polls.load(Ordering::Relaxed),
    ));
    series.push((
        "crier_http_rejected_total",
        "Requests refused before reaching the engine.",
        m.rejected.load(Ordering::Relaxed) as i64,
    ));
    series.push((
        "crier_websocket_bad_frames_total",
        "WebSocket frames refused.",
        m.bad_frames.load(Ordering::Relaxed) as i64,
    ));
    series.push((
        "crier_sessions_attached",
        "Sessions attached to this node.",
        state.engine.attached_sessions() as i64,
    ));
    for (name, help, value) in series {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
    out.push_str(&state.engine.metrics().delivery_latency.exposition(
        "crier_delivery_latency_seconds",
        "Time from publish to hand-off to the client (Redis: from when the message was logged).",
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
