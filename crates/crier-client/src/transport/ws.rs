//! WebSocket transport: one socket per session, a task that owns it, and replies
//! matched to requests by `id`.
//!
//! Every frame either way is a JSON array. Messages with `successful` are replies and
//! complete the request with the same `id`; messages with a `channel` and `data` and no
//! `successful` are deliveries for the subscription registry. Faye keeps the
//! publisher's `id` in deliveries, which is why `successful` decides, not `id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crier_protocol::{Message, decode_batch, encode_batch};
use futures::{SinkExt, StreamExt};
use reqwest::Url;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Registry;
use crate::error::ClientError;
use crate::ids::id_key;
use crate::task::AbortOnDrop;
use crate::transport::LIMITS;
use crate::wire::{is_delivery, is_reply};

/// Frames queued for the writer before senders wait.
const OUT_QUEUE: usize = 1024;
/// How long a closing socket may take to send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Requests waiting for replies, by [`id_key`]. `closed` is set when the socket task
/// ends, so that no request can register after the final sweep and wait forever.
#[derive(Debug, Default)]
struct PendingMap {
    waiters: HashMap<String, oneshot::Sender<Message>>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Pending(Mutex<PendingMap>);

impl Pending {
    fn lock(&self) -> MutexGuard<'_, PendingMap> {
        // Each critical section is one map operation; a poisoned lock holds no torn state.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a request's waiters when the request finishes or is dropped (time-out,
/// cancellation), so late replies are discarded instead of accumulating.
struct PendingGuard<'a> {
    pending: &'a Pending,
    keys: Vec<String>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.pending.lock();
        for k in &self.keys {
            g.waiters.remove(k);
        }
    }
}

/// One open WebSocket.
#[derive(Debug)]
pub(crate) struct WsConn {
    out: mpsc::Sender<String>,
    pending: Arc<Pending>,
    alive: CancellationToken,
    _task: AbortOnDrop,
}

impl WsConn {
    /// Opens a socket and starts its task. The task stops when `parent` is cancelled,
    /// when the socket closes, or when this value is dropped.
    async fn open(
        url: &Url,
        timeout: Duration,
        dispatch: Option<Arc<Registry>>,
        parent: &CancellationToken,
    ) -> Result<Arc<Self>, ClientError> {
        // Nagle off: frames are small and latency-sensitive (request/reply).
        let connecting = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true);
        let (socket, _response) =
            tokio::time::timeout(timeout, connecting).await.map_err(|_| ClientError::Timeout(timeout))??;
        let alive = parent.child_token();
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let pending = Arc::new(Pending::default());
        let task = tokio::spawn(run(socket, out_rx, pending.clone(), dispatch, alive.clone()));
        tracing::debug!(%url, "websocket open");
        Ok(Arc::new(WsConn { out, pending, alive, _task: AbortOnDrop(task) }))
    }

    fn is_alive(&self) -> bool {
        !self.alive.is_cancelled()
    }

    /// Sends `msgs` as one frame and waits for the reply to each message that has an
    /// `id`; messages without one are sent and not waited for.
    pub(crate) async fn request(&self, msgs: &[Message], timeout: Duration) -> Result<Vec<Message>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut guard = PendingGuard { pending: &self.pending, keys: Vec::new() };
        let mut waits = Vec::new();
        {
            let mut g = self.pending.lock();
            if g.closed {
                return Err(ClientError::ConnectionClosed);
            }
            for id in msgs.iter().filter_map(Message::id) {
                let key = id_key(id);
                let (tx, rx) = oneshot::channel();
                if g.waiters.insert(key.clone(), tx).is_some() {
                    tracing::warn!(id = %key, "request id reused while another is in flight");
                }
                guard.keys.push(key);
                waits.push(rx);
            }
        }
        let frame = encode_batch(msgs);
        let timed_out = || ClientError::Timeout(timeout);
        tokio::time::timeout_at(deadline, self.out.send(frame))
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| ClientError::ConnectionClosed)?;
        let mut replies = Vec::with_capacity(waits.len());
        for rx in waits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(m)) => replies.push(m),
                Ok(Err(_)) => return Err(ClientError::ConnectionClosed),
                Err(_) => return Err(timed_out()),
            }
        }
        drop(guard);
        Ok(replies)
    }
}

/// The socket's task: writes queued frames, reads frames and routes their messages.
async fn run(
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    mut out: mpsc::Receiver<String>,
    pending: Arc<Pending>,
    dispatch: Option<Arc<Registry>>,
    alive: CancellationToken,
) {
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            () = alive.cancelled() => {
                let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Frame::Close(None))).await;
                break;
            }
            frame = out.recv() => match frame {
                Some(text) => {
                    if let Err(e) = sink.send(Frame::text(text)).await {
                        tracing::debug!(error = %e, "websocket write failed");
                        break;
                    }
                }
                None => break,
            },
            frame = stream.next() => match frame {
                Some(Ok(Frame::Text(t))) => on_frame(t.as_bytes(), &pending, dispatch.as_deref()),
                Some(Ok(Frame::Binary(b))) => on_frame(&b, &pending, dispatch.as_deref()),
                Some(Ok(Frame::Close(_))) | None => {
                    tracing::debug!("websocket closed by the server");
                    break;
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    break;
                }
            },
        }
    }
    alive.cancel();
    let mut g = pending.lock();
    g.closed = true;
    // Dropping the senders fails every waiting request with `ConnectionClosed` at once.
    g.waiters.clear();
}

/// Routes the messages of one inbound frame.
fn on_frame(bytes: &[u8], pending: &Pending, dispatch: Option<&Registry>) {
    let msgs = match decode_batch(bytes, &LIMITS) {
        Ok(m) => m,
        Err(e) => {
            // Faye ignores undecodable frames too; one bad frame must not end the session.
            tracing::debug!(error = %e, "undecodable websocket frame ignored");
            return;
        }
    };
    for m in msgs {
        if is_reply(&m) {
            let waiter = m.id().map(id_key).and_then(|k| pending.lock().waiters.remove(&k));
            match waiter {
                Some(tx) => {
                    let _ = tx.send(m);
                }
                None => tracing::debug!(id = ?m.id(), "reply to no pending request ignored"),
            }
        } else if is_delivery(&m) {
            if let Some(d) = dispatch {
                d.dispatch(&m);
            }
        } else {
            tracing::debug!(channel = ?m.channel(), "message that is neither reply nor delivery ignored");
        }
    }
}

/// The current WebSocket of a link, opened on first use and re-opened after it dies.
#[derive(Debug)]
pub(crate) struct WsSlot {
    url: Url,
    conn: tokio::sync::Mutex<Option<Arc<WsConn>>>,
    dispatch: Option<Arc<Registry>>,
    cancel: CancellationToken,
}

impl WsSlot {
    pub(crate) fn new(url: Url, dispatch: Option<Arc<Registry>>, cancel: CancellationToken) -> Self {
        WsSlot { url, conn: tokio::sync::Mutex::new(None), dispatch, cancel }
    }

    /// The live socket, opening a new one if there is none.
    pub(crate) async fn get(&self, timeout: Duration) -> Result<Arc<WsConn>, ClientError> {
        if self.cancel.is_cancelled() {
            return Err(ClientError::Closed);
        }
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let c = WsConn::open(&self.url, timeout, self.dispatch.clone(), &self.cancel).await?;
        *slot = Some(c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crier_protocol::ChannelPattern;

    #[test]
    fn frame_routes_replies_by_id_and_deliveries_by_shape() {
        let pending = Pending::default();
        let (tx, mut rx) = oneshot::channel();
        pending.lock().waiters.insert(id_key(&"1".into()), tx);
        let registry = Registry::new(10);
        let pattern = ChannelPattern::parse("/a").unwrap();
        let mut sub = registry.add(pattern).unwrap();
        // Faye keeps the publisher's id on deliveries: id "1" here is someone else's.
        let frame =
            br#"[{"channel":"/a","data":"x","id":"1"},{"channel":"/meta/subscribe","successful":true,"id":"1"}]"#;
        on_frame(frame, &pending, Some(&registry));
        let reply = rx.try_recv().unwrap();
        assert_eq!(reply.channel(), Some("/meta/subscribe"));
        assert_eq!(sub.rx.try_recv().unwrap().data(), Some(&"x".into()));
        assert!(pending.lock().waiters.is_empty());
        // Garbage and stray replies are ignored without panicking.
        on_frame(b"not json", &pending, Some(&registry));
        on_frame(br#"[{"successful":true,"id":"9"}]"#, &pending, None);
        assert!(sub.rx.try_recv().is_err());
    }
}
