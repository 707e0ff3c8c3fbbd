//! Turning an HTTP request into the engine's request context, and reading its body in time.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use crier_engine::{RequestContext, RequestInfo, Transport};

/// Headers that only drive the HTTP connection or the WebSocket handshake. They mean
/// nothing to an extension, and a socket keeps its context for its whole life, so they
/// are not copied into it.
const MECHANICS: [&str; 6] =
    ["connection", "upgrade", "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "keep-alive"];

/// Builds the context extensions see: headers (lowercase names, without [`MECHANICS`]) and
/// remote address.
pub(crate) fn context(
    transport: Transport,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    path: &str,
) -> RequestContext {
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| !MECHANICS.contains(&k.as_str()))
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect();
    // Kept for a socket's whole life: no spare capacity (collect's growth leaves up to
    // half of it, 48 bytes a slot).
    headers.shrink_to_fit();
    RequestContext::new(transport, RequestInfo { headers, remote_addr: remote, path: path.to_owned() })
}

/// `read` if it completes within `timeout` (`server.read_timeout_secs`; `None`: no limit).
/// `None` when the client took longer to send its body.
pub(crate) async fn within<F: std::future::Future>(timeout: Option<std::time::Duration>, read: F) -> Option<F::Output> {
    match timeout {
        Some(t) => tokio::time::timeout(t, read).await.ok(),
        None => Some(read.await),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn connection_mechanics_are_left_out_of_the_context() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("host", "example.com"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            ("cookie", "s=1"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let ctx = context(Transport::WebSocket, &h, None, "/faye");
        let req = ctx.request.expect("request info");
        let names: Vec<&str> = req.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["host", "cookie"]);
        assert_eq!(req.header("Cookie"), Some("s=1"));
    }
}
