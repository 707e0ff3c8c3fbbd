//! The HTTP edge of Crier: every Bayeux transport on one mount path, plus health, metrics
//! and the Faye browser client.
//!
//! [`serve`] takes a bound listener, an [`Engine`] and a shutdown future, so the binary and
//! the tests share one code path. On shutdown the engine drains (held connects are answered
//! at once with `retry` advice), sockets get a close frame, and the server stops within
//! `shutdown_grace_secs` (plus the engine's close and at most 2 s for the side ports).

mod accept;
mod api;
mod config;
mod cors;
mod error;
mod health;
mod limits;
mod request;
mod routes;
mod stall;
mod state;
mod static_js;
mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use api::ApiConfig;
pub use config::ServerConfig;
use crier_engine::Engine;
pub use error::ServerError;
pub use limits::LimitsConfig;
pub use state::ServerMetrics;
use tokio::net::TcpListener;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid (the message names the key).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The browser client file could not be read.
    #[error("cannot read server.client_js {path}: {source}")]
    ClientJs {
        /// The configured path.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The listener failed.
    #[error("server IO error: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds the router (for tests that drive it without sockets).
pub fn router(engine: Engine, config: ServerConfig) -> Result<axum::Router, ServeError> {
    let state = state::AppState::new(engine, config)?;
    Ok(routes::router(Arc::new(state)))
}

/// Serves until `shutdown` completes, then drains and returns within the grace period (plus
/// the engine's close and at most 2 s for the internal and API ports).
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let internal_addr = config.internal_listen.clone();
    let api_addr = config.api.listen.clone().filter(|_| config.api.enabled());
    let state = Arc::new(state::AppState::new(engine.clone(), config)?);
    let app = routes::router(state.clone());
    // The internal port stays up through the drain (so probes see /readyz turn 503) and
    // stops last.
    let internal_stop = tokio_util::sync::CancellationToken::new();
    let internal = match internal_addr {
        Some(addr) => Some(
            side_port(
                &addr,
                routes::internal_router(state.clone()),
                &state,
                &internal_stop,
                "internal port (health, metrics)",
            )
            .await?,
        ),
        None => None,
    };
    // A separate API port (`api.listen`) stops with the internal one, after the drain, so
    // the app can still act on sessions while they go.
    let api = match api_addr {
        Some(addr) => {
            Some(side_port(&addr, routes::api_only_router(state.clone()), &state, &internal_stop, "server API").await?)
        }
        None => None,
    };
    let stopping = state.clone();
    let drain_engine = engine.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown: draining");
        // Order matters: readiness goes false and held connects are answered first, then
        // sockets are told to close, then the accept loop stops and waits for requests.
        drain_engine.drain();
        stopping.stopping.send_replace(true);
    };
    let server = accept::serve(listener, app, state.clone(), accept::Admission::Counted, signal);
    let tracker = state.tasks.clone();
    let mut stopped = state.stopping.subscribe();
    let run = async move {
        server.await;
        tracker.close();
        tracker.wait().await;
    };
    // In a block of its own: when the grace period ends first, `run` (and the accept loop in
    // it, which then ends the connections still open) is dropped before the engine closes.
    {
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => {}
            _ = async {
                // An error (the sender gone) cannot happen while `state` lives; wait all the same.
                let _ = stopped.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await
            } => {
                tracing::warn!(grace_secs = grace.as_secs(), "shutdown grace period over; closing remaining connections");
            }
        }
    }
    engine.close().await;
    internal_stop.cancel();
    // Together, so that the whole stop takes at most the grace period, the engine's close
    // and these 2 s.
    let side_ports = [internal, api].into_iter().flatten().map(|mut task| async move {
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            // Aborting drops its accept loop, which ends the connections still open.
            task.abort();
        }
    });
    futures::future::join_all(side_ports).await;
    Ok(())
}

/// Serves `router` on a port of its own until `stop` is cancelled.
async fn side_port(
    addr: &str,
    router: axum::Router,
    state: &Arc<state::AppState>,
    stop: &tokio_util::sync::CancellationToken,
    what: &str,
) -> Result<tokio::task::JoinHandle<()>, std::io::Error> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    let stop = stop.clone();
    let state = state.clone();
    Ok(tokio::spawn(async move {
        accept::serve(listener, router, state, accept::Admission::Uncounted, stop.cancelled_owned()).await
    }))
}
