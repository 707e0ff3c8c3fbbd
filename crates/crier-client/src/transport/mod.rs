//! Moving batches to the server: HTTP POST ([`http`]) and WebSocket ([`ws`]), behind a
//! [`Link`] that routes each request and hands deliveries found in any response to the
//! subscription registry.

pub(crate) mod http;
pub(crate) mod ws;

use std::sync::Arc;
use std::time::Duration;

use crier_protocol::{DecodeLimits, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Registry;
use crate::error::ClientError;
use crate::wire::is_delivery;
use http::HttpTransport;
use ws::WsSlot;

/// Decoding limits for server responses. The server is trusted more than a client is
/// on the server side, but the depth limit still guards the parser's recursion; the
/// message count is not limited because a long-poll response may carry any backlog.
pub(crate) const LIMITS: DecodeLimits = DecodeLimits { max_depth: 256, max_messages: usize::MAX };

/// Which way a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// HTTP POST even when a WebSocket is configured (the Faye-style handshake).
    Http,
    /// The WebSocket if one is configured, else HTTP.
    Preferred,
}

/// The transports of one client (or anonymous publisher).
#[derive(Debug)]
pub(crate) struct Link {
    http: HttpTransport,
    ws: Option<WsSlot>,
    dispatch: Option<Arc<Registry>>,
}

impl Link {
    /// An HTTP-only link, or HTTP plus a lazily opened WebSocket at `ws_url`.
    pub(crate) fn new(
        http: HttpTransport,
        ws_url: Option<reqwest::Url>,
        dispatch: Option<Arc<Registry>>,
        cancel: CancellationToken,
    ) -> Self {
        let ws = ws_url.map(|u| WsSlot::new(u, dispatch.clone(), cancel));
        Link { http, ws, dispatch }
    }

    /// Opens the WebSocket now (if configured) so that failures surface at connect time.
    pub(crate) async fn open(&self, timeout: Duration) -> Result<(), ClientError> {
        match &self.ws {
            Some(ws) => ws.get(timeout).await.map(drop),
            None => Ok(()),
        }
    }

    /// Sends `msgs` and returns the replies. Over HTTP that is the whole response array
    /// (deliveries in it are also dispatched); over WebSocket it is the replies matched
    /// by `id` to the messages that have one, in request order.
    pub(crate) async fn request(
        &self,
        msgs: &[Message],
        timeout: Duration,
        route: Route,
    ) -> Result<Vec<Message>, ClientError> {
        match (&self.ws, route) {
            (Some(ws), Route::Preferred) => {
                let deadline = Instant::now() + timeout;
                let conn = ws.get(timeout).await?;
                let left = deadline.saturating_duration_since(Instant::now());
                conn.request(msgs, left).await.map_err(|e| match e {
                    ClientError::Timeout(_) => ClientError::Timeout(timeout),
                    e => e,
                })
            }
            _ => {
                let all = self.http.post(msgs, timeout).await?;
                if let Some(d) = &self.dispatch {
                    all.iter().filter(|m| is_delivery(m)).for_each(|m| {
                        d.dispatch(m);
                    });
                }
                Ok(all)
            }
        }
    }
}
