//! Shared state of the edge.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crier_engine::Engine;
use tokio_util::task::TaskTracker;

use crate::ServeError;
use crate::config::ServerConfig;
use crate::static_js::ClientJs;

/// Counters of the edge, exposed on `/metrics`.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// Open HTTP connections on the public port under `limits.max_connections`, idle ones
    /// included (an upgraded one counts in `websockets` instead).
    pub connections: AtomicI64,
    /// Connections beyond `limits.max_connections` open until answered (at most 64).
    pub refusing: AtomicI64,
    /// Accept errors other than a peer leaving early (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Connections closed because a write made no progress for `server.write_timeout_secs`
    /// (the peer stopped reading).
    pub write_timeouts: AtomicU64,
    /// Open WebSocket connections.
    pub websockets: AtomicI64,
    /// Open EventSource streams.
    pub eventsources: AtomicI64,
    /// Long-poll and JSONP requests in progress.
    pub polls: AtomicI64,
    /// Requests refused with HTTP 4xx before reaching the engine.
    pub rejected: AtomicU64,
    /// WebSocket frames refused (malformed, too large).
    pub bad_frames: AtomicU64,
}

impl ServerMetrics {
    pub(crate) fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) config: ServerConfig,
    pub(crate) client_js: Option<ClientJs>,
    pub(crate) metrics: ServerMetrics,
    /// Turns true when the server starts shutting down; sockets close on it, and the grace
    /// period starts. A watch, not a cancellation token: a receiver is a pointer and a
    /// number, where a child token would be an allocation in every idle socket, and its
    /// wake-ups are spread over several locks rather than one.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Owns every socket task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// `limits.*` enforcement.
    pub(crate) limiter: crate::limits::Limiter,
    /// `api.*` (a copy of `config.api`, for short access).
    pub(crate) api: crate::api::ApiConfig,
}

impl AppState {
    pub(crate) fn new(engine: Engine, config: ServerConfig) -> Result<Self, ServeError> {
        config.validate().map_err(ServeError::Config)?;
        let client_js = match &config.client_js {
            Some(p) => Some(
                ClientJs::load(p).map_err(|source| ServeError::ClientJs { path: p.display().to_string(), source })?,
            ),
            None => None,
        };
        let limiter = crate::limits::Limiter::new(config.limits.clone());
        config.api.validate(&config.mount).map_err(ServeError::Config)?;
        Ok(AppState {
            limiter,
            api: config.api.clone(),
            engine,
            config,
            client_js,
            metrics: ServerMetrics::default(),
            stopping: tokio::sync::watch::Sender::new(false),
            tasks: TaskTracker::new(),
        })
    }

    /// Whether `path` is the Bayeux endpoint: the mount, any sub-path, or the mount with an
    /// extension (`/faye.js`), as Faye's `^<mount>(/[^/]*)*(\.[^\.]+)?$`.
    /// Open connections on the public port, as `limits.max_connections` counts them: HTTP
    /// connections (idle, or carrying a request, a held long-poll or an EventSource stream)
    /// and WebSockets.
    pub(crate) fn open_connections(&self) -> i64 {
        self.metrics.connections.load(Ordering::Relaxed) + self.metrics.websockets.load(Ordering::Relaxed)
    }

    pub(crate) fn is_bayeux_path(&self, path: &str) -> bool {
        let mount = self.config.mount.as_str();
        let Some(rest) = path.strip_prefix(mount) else { return false };
        if rest.is_empty() || rest.starts_with('/') {
            return true;
        }
        // `/faye.js`, `/faye.json`: one extension with no further dots or slashes.
        rest.starts_with('.') && rest.len() > 1 && !rest[1..].contains(['.', '/'])
    }
}

/// Which gauge of [`ServerMetrics`] a [`Gauged`] is one unit of.
pub(crate) trait Gauge {
    fn of(metrics: &ServerMetrics) -> &AtomicI64;
}

/// `ServerMetrics::connections`: HTTP connections on the public port, under the limit.
pub(crate) struct Connections;
/// `ServerMetrics::refusing`: connections beyond the limit, open until answered.
pub(crate) struct Refusing;
/// `ServerMetrics::websockets`.
pub(crate) struct WebSockets;

impl Gauge for Connections {
    fn of(metrics: &ServerMetrics) -> &AtomicI64 {
        &metrics.connections
    }
}

impl Gauge for Refusing {
    fn of(metrics: &ServerMetrics) -> &AtomicI64 {
        &metrics.refusing
    }
}

impl Gauge for WebSockets {
    fn of(metrics: &ServerMetrics) -> &AtomicI64 {
        &metrics.websockets
    }
}

/// One unit of gauge `G`, counted while this lives and uncounted however it ends (a panic
/// included). It carries the state, so a task holding it needs no other pointer to it: one
/// pointer in size (what an idle WebSocket's task keeps).
pub(crate) struct Gauged<G: Gauge>(Arc<AppState>, PhantomData<G>);

impl<G: Gauge> Gauged<G> {
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        G::of(&state.metrics).fetch_add(1, Ordering::Relaxed);
        Gauged(state, PhantomData)
    }
}

impl<G: Gauge> std::ops::Deref for Gauged<G> {
    type Target = Arc<AppState>;
    fn deref(&self) -> &Arc<AppState> {
        &self.0
    }
}

impl<G: Gauge> Drop for Gauged<G> {
    fn drop(&mut self) {
        G::of(&self.0.metrics).fetch_sub(1, Ordering::Relaxed);
    }
}
