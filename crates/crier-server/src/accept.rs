//! The accept loop of every port: one task per TCP connection, HTTP/1.1 served by hyper,
//! a deadline for the first request and one for idle keep-alive connections, connections
//! counted against `limits.max_connections`, and a graceful stop.
//!
//! Not `axum::serve`: it gives hyper no timer, so hyper's header-read timeout never runs,
//! and a connection that sends nothing (or stops halfway through its headers, or stays
//! idle after a response) holds its descriptor and its task forever. Nor can it count
//! connections before their first request.
//!
//! Two deadlines, because hyper has one: its header-read timer runs from the moment a
//! connection waits for a request head, idle time included. Given `server.idle_timeout_secs`
//! it closes idle keep-alive connections late enough for load balancers that reuse them;
//! the first request, which a real client sends at once, gets the shorter
//! `server.read_timeout_secs` from this loop (and the handlers bound each body by it).
//! Writes are bound by `server.write_timeout_secs` at the socket ([`WriteDeadline`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::stall::{WriteDeadline, is_write_stall};
use crate::state::{AppState, Connections, Gauged, Refusing};

/// Most connections beyond `limits.max_connections` open at once to be answered HTTP 503;
/// beyond these a connection is closed at accept, unanswered. With [`REFUSAL_DEADLINE`]
/// this bounds the descriptors a flood can take on a full node.
const MAX_REFUSING: i64 = 64;

/// How long a connection beyond the limit may stay open, its request and answer included.
/// A client retrying a full node sends at once and reads its 503 at once.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(5);

/// How much longer than `server.write_timeout_secs` the kernel's `TCP_USER_TIMEOUT` is. The
/// kernel's clock for a client that stops reading starts when its window closes, before the
/// send buffer fills and the write deadline's starts: without the margin the kernel would
/// close such connections first, and they would not be counted as write timeouts.
const USER_TIMEOUT_MARGIN: Duration = Duration::from_secs(30);

/// How long the loop waits after an accept error that is not about one connection (out of
/// descriptors, out of memory) before it tries again: such errors repeat at once.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Marks the requests of a connection accepted while `limits.max_connections` others were
/// open. The Bayeux endpoint answers them 503 and closes the connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverLimit;

/// Whether the port counts its connections against `limits.max_connections` (the public
/// port) or not (internal and API ports, which must answer even when the public one is full).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Counted,
    Uncounted,
}

/// Serves `router` on `listener` until `stop` completes, then stops accepting, lets each
/// connection finish its request in progress, and returns once all have closed. (Upgraded
/// WebSockets are not connections here any more: their tasks are `AppState::tasks`'.)
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    admission: Admission,
    stop: impl Future<Output = ()>,
) {
    let first_request_timeout = state.config.read_timeout();
    let idle_timeout = state.config.idle_timeout();
    let write_timeout = state.config.write_timeout();
    let keepalive = state.config.tcp_keepalive();
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    // Cancelled when this future is dropped, as `serve` does when the grace period is over:
    // the connections still open then end with it rather than outlive the server.
    let force = CancellationToken::new();
    let _force = force.clone().drop_guard();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            // The peer gave up before it was accepted: nothing to wait for.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                state.metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("accept error: {e}");
                tokio::select! {
                    () = &mut stop => break,
                    () = tokio::time::sleep(ACCEPT_RETRY) => continue,
                }
            }
        };
        tune(&tcp, write_timeout, keepalive);
        let (slot, refusing) = match admission {
            Admission::Uncounted => (None, None),
            Admission::Counted if state.limiter.has_room(state.open_connections()) => (Some(Slot::new(&state)), None),
            Admission::Counted if state.metrics.refusing.load(Ordering::Relaxed) < MAX_REFUSING => {
                state.limiter.refuse_connection();
                (None, Some(Gauged::<Refusing>::new(state.clone())))
            }
            Admission::Counted => {
                // Already answering `MAX_REFUSING` others: no descriptor for this one.
                state.limiter.refuse_connection();
                continue;
            }
        };
        let over_limit = refusing.is_some();
        // A connection beyond the limit has `REFUSAL_DEADLINE` in all, not only until its
        // request: one that asks for something and never reads the answer goes too.
        let first_request_timeout = if over_limit { None } else { first_request_timeout };
        let refusal_deadline = over_limit.then_some(REFUSAL_DEADLINE);
        let request_slot = slot.clone();
        // Set by the first request head hyper reads: the first-request deadline is off. (A
        // flag, not a token: this runs on every request, and a token's check takes a lock.)
        let got_request = Arc::new(AtomicBool::new(false));
        let seen = got_request.clone();
        let service = router.clone().map_request(move |req: hyper::Request<Incoming>| {
            if !seen.load(Ordering::Relaxed) {
                seen.store(true, Ordering::Relaxed);
            }
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(remote));
            if let Some(slot) = &request_slot {
                req.extensions_mut().insert(slot.clone());
            }
            if over_limit {
                req.extensions_mut().insert(OverLimit);
            }
            req
        });
        // A connection beyond the limit is not counted, so it must not linger: whatever it
        // asked for (a Bayeux request gets a 503, a health check is answered), it is closed
        // after the answer.
        let service = service.map_response(move |mut res: axum::response::Response| {
            if over_limit {
                res.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            res
        });
        let closing = closing.clone();
        let force = force.clone();
        let state = state.clone();
        connections.spawn(async move {
            // Held until hyper lets go of the socket: on close, or on an upgrade, whose
            // request holds a copy until the WebSocket counts itself.
            let _slot = slot;
            let _refusing = refusing;
            let mut http = hyper::server::conn::http1::Builder::new();
            if idle_timeout.is_some() {
                http.timer(TokioTimer::new()).header_read_timeout(idle_timeout);
            }
            let io = TokioIo::new(WriteDeadline::new(tcp, write_timeout));
            let conn = http.serve_connection(io, TowerToHyperService::new(service)).with_upgrades();
            tokio::pin!(conn);
            let deadline = async {
                match refusal_deadline {
                    Some(t) => tokio::time::sleep(t).await,
                    None => no_request_within(first_request_timeout, &got_request).await,
                }
            };
            tokio::pin!(deadline);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = &mut deadline => {
                    // Dropping the connection closes the socket (the peer's own slowness).
                    tracing::debug!(%remote, "no request in time, or refused connection too slow; closing");
                    return;
                }
                () = force.cancelled() => return,
                () = closing.cancelled() => {
                    // Idle connections close now; a request in progress finishes, but a
                    // first request still has its deadline, and the grace period ends all.
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        served = conn.as_mut() => served,
                        () = &mut deadline => return,
                        () = force.cancelled() => return,
                    }
                }
            };
            if let Err(e) = served {
                if is_write_stall(&e) {
                    state.metrics.write_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                // Header timeouts, resets, malformed requests, peers that stopped reading:
                // the peer's doing, not ours.
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    connections.wait().await;
}

/// Completes if no request head has been read within `timeout` of now; otherwise never.
async fn no_request_within(timeout: Option<Duration>, got_request: &AtomicBool) {
    if let Some(timeout) = timeout {
        tokio::time::sleep(timeout).await;
        if !got_request.load(Ordering::Relaxed) {
            return;
        }
    }
    std::future::pending().await
}

/// Errors about one connection that went away before it was accepted; the next accept is
/// unaffected. (The same test as hyper's and axum's accept loops.)
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Sets up an accepted socket.
///
/// Nagle's algorithm off: a push server writes small frames whose latency matters; with
/// Nagle on, a frame written while the previous one is still unacknowledged waits for the
/// peer's (possibly delayed) ACK.
///
/// `TCP_USER_TIMEOUT` at [`USER_TIMEOUT_MARGIN`] beyond the write timeout (Linux): the
/// kernel drops a connection whose sent data stays unacknowledged that long. A client that
/// vanished without closing (a laptop shut, a network gone) otherwise holds an EventSource
/// stream or a held long-poll until the kernel's retransmissions give up, about 15
/// minutes: its small writes still fit the socket buffer, so the write deadline never sees
/// them wait.
///
/// TCP keep-alive probes after `server.tcp_keepalive_secs` of silence: a vanished client
/// that is sent nothing (a WebSocket without pings) has no unacknowledged data for the user
/// timeout to act on; unanswered probes are. Linux checks at the first probe and at each
/// one after it, and drops the connection at the first check that finds it unheard for the
/// user timeout: about 100 s after the client was last heard with the defaults (probes at
/// 60 s, then every 20 s; user timeout 90 s).
fn tune(tcp: &TcpStream, write_timeout: Duration, keepalive: Option<Duration>) {
    let user_timeout = write_timeout + USER_TIMEOUT_MARGIN;
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "setting TCP_NODELAY failed");
    }
    if let Some(idle) = keepalive {
        // Where the user timeout is not set, three probes a third of `idle` apart decide.
        // (socket2 offers the interval and the count only on these systems.)
        let probes = socket2::TcpKeepalive::new().with_time(idle);
        #[cfg(any(
            target_os = "android",
            target_os = "dragonfly",
            target_os = "freebsd",
            target_os = "fuchsia",
            target_os = "illumos",
            target_os = "ios",
            target_os = "linux",
            target_os = "macos",
            target_os = "netbsd",
            target_os = "tvos",
            target_os = "visionos",
            target_os = "watchos",
            target_os = "windows",
        ))]
        let probes = probes.with_interval((idle / 3).max(Duration::from_secs(1))).with_retries(3);
        if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes) {
            tracing::debug!(error = %e, "setting TCP keep-alive failed");
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(user_timeout)) {
        tracing::debug!(error = %e, "setting TCP_USER_TIMEOUT failed");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    let _ = user_timeout;
}

/// A connection's place under `limits.max_connections`, in `ServerMetrics::connections`
/// while it lives. The connection's task holds it, and each of its requests a copy: a
/// WebSocket upgrade gives its copy up only once the socket counts in `websockets`.
#[derive(Clone)]
pub(crate) struct Slot {
    _counted: Arc<Gauged<Connections>>,
}

impl Slot {
    fn new(state: &Arc<AppState>) -> Self {
        Slot { _counted: Arc::new(Gauged::new(state.clone())) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_have_no_nagle_a_user_timeout_beyond_the_write_timeout_and_keepalive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        tune(&tcp, Duration::from_secs(42), Some(Duration::from_secs(60)));
        assert!(tcp.nodelay().expect("nodelay"));
        let sock = socket2::SockRef::from(&tcp);
        let user_timeout = sock.tcp_user_timeout().expect("getsockopt");
        assert_eq!(user_timeout, Some(Duration::from_secs(42) + USER_TIMEOUT_MARGIN));
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(sock.tcp_keepalive_time().expect("TCP_KEEPIDLE"), Duration::from_secs(60));
        assert_eq!(sock.tcp_keepalive_interval().expect("TCP_KEEPINTVL"), Duration::from_secs(20));
        assert_eq!(sock.tcp_keepalive_retries().expect("TCP_KEEPCNT"), 3);

        // 0 in the configuration: no probes.
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        tune(&tcp, Duration::from_secs(42), None);
        assert!(!socket2::SockRef::from(&tcp).keepalive().expect("SO_KEEPALIVE"));
    }
}
