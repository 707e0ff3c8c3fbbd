//! Turning an HTTP request into the engine's request context.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use crier_engine::{RequestContext, RequestInfo, Transport};

/// Builds the context extensions see: headers (lowercase names) and remote address.
pub(crate) fn context(
    transport: Transport,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    path: &str,
) -> RequestContext {
    let headers =
        headers.iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned()))).collect();
    RequestContext::new(transport, RequestInfo { headers, remote_addr: remote, path: path.to_owned() })
}
