//! The floor: the least a Bayeux server must do for a WebSocket fan-out, to measure what
//! the machine itself allows. It answers handshake, first connect, subscribe and publish
//! over the socket, and writes each published message, encoded once, to every socket
//! subscribed to its exact channel: one task per socket, one frame per message per
//! subscriber. No sessions, no queues, no extensions, no wildcards, no long-polling,
//! nothing kept for a reconnect. Its latency is a lower bound for any real server on the
//! same machine, load generator included; it is a measuring instrument, not a server.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

/// Frames a subscriber may fall behind by before it misses some (counted by the bench as
/// lost, so a floor run that overflows shows it).
const BACKLOG: usize = 4096;

#[derive(Default)]
struct Floor {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
    next_id: AtomicU64,
}

impl Floor {
    fn sender(&self, channel: &str) -> broadcast::Sender<Arc<str>> {
        self.channels.lock().entry(channel.to_owned()).or_insert_with(|| broadcast::channel(BACKLOG).0).clone()
    }
}

/// Serves WebSocket clients on `listener` (any path) until `stop` is cancelled.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    let floor = Arc::new(Floor::default());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(socket(tcp, floor.clone(), stop.clone()));
    }
}

async fn socket(tcp: TcpStream, floor: Arc<Floor>, stop: CancellationToken) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
    // One subscription per socket is all the bench's fan-out needs.
    let mut feed: Option<broadcast::Receiver<Arc<str>>> = None;
    let mut connected = false;
    loop {
        let next = async {
            match feed.as_mut() {
                Some(rx) => rx.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            frame = next => {
                if let Some(frame) = frame
                    && ws.send(WsMessage::text(frame.as_ref())).await.is_err()
                {
                    return;
                }
            }
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let Ok(batch) = serde_json::from_str::<Value>(text.as_str()) else { return };
                let batch = match batch {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                let mut replies = Vec::new();
                for m in batch {
                    let channel = m["channel"].as_str().unwrap_or_default().to_owned();
                    let id = m.get("id").cloned().unwrap_or(Value::Null);
                    match channel.as_str() {
                        "/meta/handshake" => {
                            let n = floor.next_id.fetch_add(1, Ordering::Relaxed);
                            replies.push(json!({"channel": channel, "successful": true, "version": "1.0",
                                "clientId": format!("floor{n}"), "supportedConnectionTypes": ["websocket"], "id": id}));
                        }
                        // The first connect is answered; later ones are held for good.
                        "/meta/connect" if !connected => {
                            connected = true;
                            replies.push(json!({"channel": channel, "successful": true, "id": id,
                                "advice": {"reconnect": "retry", "interval": 0, "timeout": 45_000}}));
                        }
                        "/meta/connect" => {}
                        "/meta/subscribe" => {
                            let sub = m["subscription"].as_str().unwrap_or_default();
                            feed = Some(floor.sender(sub).subscribe());
                            replies.push(json!({"channel": channel, "successful": true, "subscription": sub, "id": id}));
                        }
                        "/meta/disconnect" | "/meta/unsubscribe" => {
                            replies.push(json!({"channel": channel, "successful": true, "id": id}));
                        }
                        _ => {
                            let frame: Arc<str> = json!([{"channel": channel, "data": m["data"]}]).to_string().into();
                            // No subscriber yet: nothing to deliver.
                            let _ = floor.sender(&channel).send(frame);
                            replies.push(json!({"channel": channel, "successful": true, "id": id}));
                        }
                    }
                }
                if !replies.is_empty() && ws.send(WsMessage::text(Value::Array(replies).to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}
