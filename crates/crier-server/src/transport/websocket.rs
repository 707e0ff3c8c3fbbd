//! WebSocket: each text frame is a batch; replies go back as one frame; deliveries are
//! pushed as they arrive by the pump of the session the socket is bound to.
//!
//! A socket is bound to a session only by the `clientId` of a `/meta/connect` it carries,
//! and only if that session exists (no state for ids taken from a frame). Frames are
//! handled concurrently, so a held connect does not delay the frames behind it; the other
//! frames keep their order (`ws_inflight.rs`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use crier_engine::{Batch, HeldConnect, Pump, RequestContext, SocketReplies, Transport, Turn, encode_outgoing};
use crier_protocol::{Message, meta};
use futures::future::Either;
use futures::{Future, SinkExt};
use tokio::time::Instant;

use super::decode;
use super::ws_inflight::InFlight;
use crate::accept::Slot;
use crate::request::context;
use crate::stall::is_write_stall;
use crate::state::{AppState, Gauged, ServerMetrics, WebSockets};

/// Most batches handled at once on one socket; beyond it the socket is not read until one
/// finishes (backpressure instead of unbounded work).
const MAX_INFLIGHT: usize = 32;

/// How long the closing frame and handshake may take: the peer is going either way.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_INVALID_PAYLOAD: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;

pub(crate) fn handle(
    state: Arc<AppState>,
    ws: WebSocketUpgrade,
    headers: &HeaderMap,
    remote: Option<SocketAddr>,
    path: &str,
    slot: Option<Slot>,
) -> Response {
    // Accept and ignore a requested subprotocol: echo the first one, because browsers fail
    // the handshake when they asked for one and none comes back.
    let first_protocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    // Small buffers: tungstenite's defaults (128 KiB each) cost every idle socket that much
    // up front (136.6 KiB per idle connection measured; see docs/benchmarks.md). The read
    // buffer stays allocated while the socket is idle, so it is the configured size (512
    // bytes by default); a larger frame is still read whole. Writes go out a frame at a time.
    let mut ws = ws
        .max_message_size(state.config.max_frame_bytes)
        .max_frame_size(state.config.max_frame_bytes)
        .read_buffer_size(state.config.ws_read_buffer_bytes)
        .write_buffer_size(0);
    if let Some(p) = first_protocol {
        ws = ws.protocols([p]);
    }
    let ctx = context(Transport::WebSocket, headers, remote, path);
    // The callback stays in the socket's task for its whole life: it captures as little as
    // it can (the tracker is reached through `state`, not a clone of its own).
    ws.on_upgrade(move |socket| {
        // The socket counts as a WebSocket from here, before its connection's place is given
        // up, so it is never uncounted. Not in `run`, whose state would grow by the place.
        let tracker = state.tasks.clone();
        let state = Gauged::<WebSockets>::new(state);
        drop(slot);
        tracker.track_future(run(state, socket, ctx))
    })
}

/// Writes one frame; false if it failed, a peer that stopped reading included: its write
/// fails once it has made no progress for `server.write_timeout_secs` (see `stall.rs`).
///
/// Boxed: inline, the write's state would be part of every idle socket's task, a size
/// class up (measured with the idle benchmark); a box is one allocation per frame written.
fn send<'a>(
    ws: &'a mut WebSocket,
    frame: WsMessage,
    metrics: &'a ServerMetrics,
) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
    Box::pin(async move {
        match ws.send(frame).await {
            Ok(()) => true,
            Err(e) => {
                count_stall(&e, metrics);
                false
            }
        }
    })
}

fn count_stall(e: &axum::Error, metrics: &ServerMetrics) {
    if is_write_stall(e) {
        metrics.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}

fn close(code: u16, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code, reason: reason.into() }))
}

/// The close frame for a failed read, classified by the error's text (axum does not expose
/// tungstenite's error type): 1009 for an over-size message, 1007 for a text frame that is
/// not UTF-8 (RFC 6455 §8.1), like a frame that is not JSON; nothing for IO errors (the
/// peer is gone) or protocol violations.
fn read_error_close(text: &str) -> Option<WsMessage> {
    if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
        Some(close(CLOSE_TOO_BIG, "message too big"))
    } else if text.contains("UTF-8") {
        Some(close(CLOSE_INVALID_PAYLOAD, "invalid UTF-8"))
    } else {
        None
    }
}

/// The `clientId` of the last `/meta/connect` in a batch.
fn connect_client_id(batch: &[Message]) -> Option<String> {
    batch.iter().rev().find(|m| m.channel() == Some(meta::CONNECT)).and_then(|m| m.client_id()).map(str::to_owned)
}

// These two wait in every idle socket's `select!`: plain functions returning `Either`
// rather than async fns, which would add a state of their own around the inner future.
fn pump_next(pump: &mut Option<Pump>) -> impl Future<Output = Option<Batch>> + '_ {
    match pump {
        Some(p) => Either::Left(p.next()),
        None => Either::Right(std::future::pending()),
    }
}

fn held_interrupted(held: &Option<Box<HeldConnect>>) -> impl Future<Output = ()> + '_ {
    match held {
        Some(h) => Either::Left(h.interrupted()),
        None => Either::Right(std::future::pending()),
    }
}

/// Answers a held connect in the in-flight set (outgoing extensions may wait).
fn answer(inflight: &mut InFlight, held: Box<HeldConnect>, ctx: &RequestContext) {
    let ctx = ctx.clone();
    inflight.push(async move { (false, SocketReplies::Now(held.answer(&ctx).await)) });
}

// An async block, not an `async fn`: an async fn moves its arguments into locals, and its
// state keeps both the argument slots and the locals (the socket, 368 bytes, twice in
// every idle socket's task, -Zprint-type-sizes showed). The block's captures are used in
// place.
//
// What an idle socket keeps is this task alone: its held `/meta/connect` is data here
// (`held`), waited on by a small future made again each turn, its deadline and the ping
// share one timer, and the in-flight set exists only while a batch is being handled.
//
// The state comes wrapped in the socket's count in `websockets`, so it is uncounted however
// the task ends, at no cost in size.
#[expect(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice")]
fn run(state: Gauged<WebSockets>, mut ws: WebSocket, ctx: RequestContext) -> impl Future<Output = ()> + Send {
    async move {
        // Not split: the read is the only branch future that borrows the socket, and select!
        // drops the branch futures before a handler writes. split() would cost every socket an
        // `Arc` (the socket inside it, ~400 bytes) and a lock taken on every read and write.
        let mut inflight = InFlight::default();
        let mut held: Option<Box<HeldConnect>> = None;
        let mut pump: Option<Pump> = None;
        let pinging = state.config.ws_ping_secs > 0;
        let ping_every = Duration::from_secs(state.config.ws_ping_secs.max(1));
        let mut next_ping = Instant::now() + ping_every;
        // Pings sent, and how many had been when a frame last came (u32s, so the pair is the
        // size the ping count alone was): a peer that answers none of two pings is gone.
        let mut ping_n: u32 = 0;
        let mut heard_at: u32 = 0;
        // One timer, for the next ping and the held connect's deadline, whichever is first.
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        let mut sessions_made = 0;
        // Made once: its wake-up stays registered across turns. The value changes only
        // once, to true; a socket that arrives after that sees it as a change too.
        let mut stopping = state.stopping.subscribe();
        if *stopping.borrow() {
            stopping.mark_changed();
        }
        let shutdown = stopping.changed();
        tokio::pin!(shutdown);

        let close_with = loop {
            let armed = {
                let due = match (pinging.then_some(next_ping), held.as_ref().map(|h| h.deadline())) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(at) = due
                    && timer.deadline() != at
                {
                    timer.as_mut().reset(at);
                }
                due.is_some()
            };
            tokio::select! {
                frame = ws.recv(), if inflight.len() < MAX_INFLIGHT => {
                    heard_at = ping_n;
                    let bytes = match frame {
                        None => break None,
                        // A read also writes (what tungstenite has pending, pongs): a peer
                        // that stopped reading can be found out here.
                        Some(Err(e)) if is_write_stall(&e) => {
                            count_stall(&e, &state.metrics);
                            break None;
                        }
                        Some(Err(e)) => {
                            let text = e.to_string();
                            state.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(error = %text, "websocket read failed");
                            break read_error_close(&text);
                        }
                        Some(Ok(WsMessage::Text(t))) => bytes::Bytes::from(t),
                        Some(Ok(WsMessage::Binary(b))) => b,
                        Some(Ok(WsMessage::Close(_))) => break None,
                        Some(Ok(_)) => continue,
                    };
                    let mut batch = match decode(&state, &bytes) {
                        Ok(b) => b,
                        Err(e) => {
                            state.metrics.bad_frames.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(error = %e, "closing websocket after a malformed frame");
                            let code = match e {
                                crier_protocol::DecodeError::TooMany { .. } | crier_protocol::DecodeError::TooDeep(_) => CLOSE_POLICY,
                                _ => CLOSE_INVALID_PAYLOAD,
                            };
                            break Some(close(code, "malformed Bayeux message"));
                        }
                    };
                    state.limiter.check_sessions(&mut batch, &mut sessions_made);
                    if let Some(id) = connect_client_id(&batch)
                        // (A pump whose session was attached afresh serves nobody.)
                        && pump.as_ref().filter(|p| p.is_live()).map(|p| p.client_id()) != Some(id.as_str())
                        // Boxed: this runs once per socket, and inline its state would be part
                        // of every idle socket's task.
                        && let Some(p) = Box::pin(state.engine.pump(&id, &ctx)).await
                    {
                        pump = Some(p);
                    }
                    let empty = batch.is_empty();
                    // Only a connect alone in its frame is held (one batched with other
                    // messages is answered at once), so only that one need not wait its turn.
                    let lone_connect = matches!(batch.as_slice(), [m] if m.channel() == Some(meta::CONNECT));
                    let engine = state.engine.clone();
                    let ctx = ctx.clone();
                    let task = move |turn| async move { (empty, engine.process_socket(batch, &ctx, turn).await) };
                    if lone_connect {
                        inflight.push(task(Turn::none()));
                    } else {
                        inflight.push_in_order(task);
                    }
                }
                (empty, replies) = inflight.next() => {
                    match replies {
                        SocketReplies::Now(replies) => {
                            // An empty batch (old Faye clients' keep-alive `[]`) is answered
                            // with `[]`; a batch whose replies were all dropped by extensions
                            // gets nothing.
                            if (empty || !replies.is_empty())
                                && !send(&mut ws, WsMessage::Text(encode_outgoing(&replies).into()), &state.metrics).await
                            {
                                break None;
                            }
                        }
                        SocketReplies::Held(h) => {
                            if let Some(old) = held.replace(h) {
                                if old.client_id() == held.as_ref().map_or("", |h| h.client_id()) {
                                    // Superseded by the newer connect: answered now.
                                    answer(&mut inflight, old, &ctx);
                                } else {
                                    // Another session on the same socket (see
                                    // `limits.max_sessions_per_connection`): its hold runs
                                    // its course in the in-flight set.
                                    let ctx = ctx.clone();
                                    inflight.push(async move { (false, SocketReplies::Now(old.finish(&ctx).await)) });
                                }
                            }
                        }
                    }
                }
                () = held_interrupted(&held) => {
                    if let Some(h) = held.take() {
                        answer(&mut inflight, h, &ctx);
                    }
                }
                batch = pump_next(&mut pump) => {
                    match batch {
                        Some(batch) => {
                            let frame = encode_outgoing(batch.items());
                            let written = send(&mut ws, WsMessage::Text(frame.into()), &state.metrics).await;
                            // (A batch only comes from a pump, so there is one.)
                            if let Some(p) = &pump {
                                if written {
                                    p.written(batch);
                                } else {
                                    // Not written: keep them for the session's next connect.
                                    p.requeue(batch);
                                }
                            }
                            if !written {
                                break None;
                            }
                        }
                        None => pump = None,
                    }
                }
                () = &mut timer, if armed => {
                    // At least the timer's own deadline counts as now, so whatever it was
                    // set for is handled and it is set again (no busy turns).
                    let now = Instant::now().max(timer.deadline());
                    if let Some(h) = held.take_if(|h| h.deadline() <= now) {
                        answer(&mut inflight, h, &ctx);
                    }
                    if pinging && next_ping <= now {
                        if inflight.len() >= MAX_INFLIGHT {
                            // Not reading for our own backlog: the silence is not the peer's.
                            heard_at = ping_n;
                        }
                        if ping_n.wrapping_sub(heard_at) >= 2 {
                            // No frame, not even a pong, for over two ping intervals.
                            tracing::debug!("closing a websocket that answers no pings");
                            break Some(close(CLOSE_GOING_AWAY, "no answer to pings"));
                        }
                        ping_n = ping_n.wrapping_add(1);
                        if !send(&mut ws, WsMessage::Ping(ping_n.to_string().into_bytes().into()), &state.metrics).await {
                            break None;
                        }
                        // From when the ping went out: a slow write does not bring the next
                        // one, and the check above, closer. (Not from `now`: kept across the
                        // write, it would be part of every idle socket's task.)
                        next_ping = Instant::now() + ping_every;
                    }
                }
                _ = &mut shutdown => {
                    // The engine is draining, so a held connect is answered at once: send
                    // the replies in flight (with their retry advice) before closing.
                    if let Some(h) = held.take() {
                        answer(&mut inflight, h, &ctx);
                    }
                    let flush = async {
                        while let Some((_, replies)) = inflight.finish_next().await {
                            let replies = match replies {
                                SocketReplies::Now(r) => r,
                                // Not held while draining; answered all the same.
                                SocketReplies::Held(h) => h.answer(&ctx).await,
                            };
                            // The first failed write ends it: the rest would fail too.
                            if !replies.is_empty()
                                && !send(&mut ws, WsMessage::Text(encode_outgoing(&replies).into()), &state.metrics).await
                            {
                                return;
                            }
                        }
                        // Then what is queued for the socket's session, a batch at a time
                        // (`engine.max_batch_bytes`): the drain closed the session, so the
                        // pump ends once the queue is empty.
                        let Some(p) = pump.as_mut() else { return };
                        while let Some(batch) = p.next().await {
                            let frame = encode_outgoing(batch.items());
                            if send(&mut ws, WsMessage::Text(frame.into()), &state.metrics).await {
                                p.written(batch);
                            } else {
                                p.requeue(batch);
                                return;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), Box::pin(flush)).await;
                    break Some(close(CLOSE_GOING_AWAY, "server shutting down"));
                }
            }
        };
        // Bounded by its own limit, shorter than the write timeout: the peer is going either
        // way. (After a write that timed out, both fail at once: see `stall.rs`.)
        let closing = async {
            if let Some(frame) = close_with {
                let _ = ws.send(frame).await;
            }
            let _ = ws.close().await;
        };
        let _ = Box::pin(tokio::time::timeout(CLOSE_LIMIT, closing)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> Option<u16> {
        match read_error_close(text) {
            Some(WsMessage::Close(Some(f))) => Some(f.code),
            _ => None,
        }
    }

    #[test]
    fn read_errors_map_to_close_codes() {
        assert_eq!(code("Space limit exceeded: Message too long: 8000 > 4096"), Some(CLOSE_TOO_BIG));
        assert_eq!(
            code("UTF-8 encoding error: invalid utf-8 sequence of 1 bytes from index 2"),
            Some(CLOSE_INVALID_PAYLOAD)
        );
        assert_eq!(code("IO error: Connection reset by peer (os error 104)"), None);
    }
}
