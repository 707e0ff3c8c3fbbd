//! EventSource: `GET <mount>/<clientId>` with `Accept: text/event-stream` streams the
//! session's deliveries as `data: [msg]` events; the client's messages, connects included,
//! arrive by POST with `connectionType: "eventsource"`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crier_engine::{Pump, Transport, encode_outgoing};

use crate::error::ServerError;
use crate::request::context;
use crate::state::AppState;

struct Stream {
    state: Arc<AppState>,
    pump: Pump,
    ping: tokio::time::Interval,
    mark_ttl: Duration,
    /// The renewal of the stream's mark in progress, run beside the deliveries: a slow
    /// Redis must not hold them up.
    marking: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    started: bool,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.state.metrics.eventsources.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn handle(state: Arc<AppState>, req: Request, remote: Option<SocketAddr>) -> Response {
    let path = req.uri().path().to_owned();
    let client_id = path.rsplit('/').next().unwrap_or("");
    let ctx = context(Transport::EventSource, req.headers(), remote, &path);
    // No stream (and no state) for a client id this server did not issue.
    let Some(pump) = state.engine.pump(client_id, &ctx).await else {
        state.metrics.reject();
        return ServerError::UnknownClient.into_response();
    };
    let every = Duration::from_secs(state.config.eventsource_ping_secs.max(1));
    // The stream's mark, renewed at each keep-alive comment: while it holds, the client's
    // connects on other nodes (a balancer without stickiness) leave the session here. It
    // outlives one missed comment. Once the stream ends it lapses, and a connect anywhere
    // takes the session and its queue. (A connection that died silently keeps being
    // marked until the write timeout or the kernel notices: the comments are small.)
    // Awaited before the response opens: Faye sends its first EventSource connect only
    // once the stream is open, so that connect finds the mark.
    let mark_ttl = every * 2 + Duration::from_secs(1);
    pump.mark_streaming(mark_ttl).await;
    // Counted from here, where the guard that uncounts it is made (no await between).
    state.metrics.eventsources.fetch_add(1, Ordering::Relaxed);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    // After a stretch without polls (the client reading slowly), one comment, not a burst.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let s = Stream { state, pump, ping, mark_ttl, marking: None, started: false };
    let body = futures::stream::unfold(s, |mut s| async move {
        if !s.started {
            s.started = true;
            return Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from_static(b"retry: 5000\r\n\r\n")), s));
        }
        loop {
            tokio::select! {
                batch = s.pump.next() => {
                    let batch = batch?;
                    let chunk = format!("data: {}\r\n\r\n", encode_outgoing(batch.items()));
                    // Handed to the response body here; whether it reaches the client is not
                    // known to this stream.
                    s.pump.written(batch);
                    return Some((Ok(Bytes::from(chunk)), s));
                }
                _ = s.ping.tick() => {
                    // (One renewal at a time: a new one replaces one still waiting.)
                    s.marking = Some(Box::pin(s.pump.mark_streaming(s.mark_ttl)));
                    return Some((Ok(Bytes::from_static(b":\r\n\r\n")), s));
                }
                () = async { if let Some(m) = s.marking.as_mut() { m.await } }, if s.marking.is_some() => {
                    s.marking = None;
                }
            }
        }
    });
    let mut resp = Body::from_stream(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    resp
}
