//! An async Bayeux client that speaks to Faye and to Crier.
//!
//! Used by Crier's integration tests, by its benchmark tool and by Rust backends that
//! publish. It follows the Faye client's behaviour where it matters for
//! interoperability:
//!
//! - the handshake goes over HTTP POST, even for a WebSocket session (Faye's client
//!   does this; [`ClientBuilder::handshake_over_websocket`] switches to the CometD way);
//! - message ids are a base-36 counter (`"1"`, `"2"`, ...), and a message is a reply only
//!   if it has `successful`, because deliveries carry the *publisher's* `id`;
//! - a background loop keeps one `/meta/connect` in flight and follows the server's
//!   advice: `interval` between connects, `timeout` (plus a margin) as the connect's
//!   time-out, `reconnect:"handshake"` → new handshake and re-subscription of every
//!   current subscription, `reconnect:"none"` → stop;
//! - deliveries found anywhere (a long-poll response, any reply batch, a WebSocket
//!   frame) are dispatched once to every [`Subscription`] whose pattern matches.
//!
//! ```no_run
//! # async fn demo() -> Result<(), crier_client::ClientError> {
//! use crier_client::{Client, Transport};
//! use serde_json::json;
//!
//! let client = Client::builder("http://127.0.0.1:8000/faye")
//!     .transport(Transport::WebSocket)
//!     .ext(json!({ "token": "secret" }))
//!     .build()?;
//! client.connect().await?;
//! let mut sub = client.subscribe("/chat/**").await?;
//! client.publish("/chat/room1", json!({ "text": "hi" })).await?;
//! let msg = sub.recv().await;
//! client.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Only `http://` and `ws://` endpoints are reachable: the client is built without a
//! TLS stack.

mod client;
mod config;
mod connect_loop;
mod dispatch;
mod error;
mod ids;
mod publisher;
mod session;
mod subscription;
mod task;
mod transport;
mod wire;

pub use client::Client;
pub use config::{ClientBuilder, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SUBSCRIPTION_CAPACITY, Transport};
pub use crier_protocol::{ChannelName, ChannelPattern, Message};
pub use error::ClientError;
pub use publisher::{Publisher, PublisherBuilder};
pub use subscription::Subscription;

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}

    #[test]
    fn public_types_cross_threads() {
        send_sync::<Client>();
        send_sync::<Subscription>();
        send_sync::<Publisher>();
        send_sync::<ClientError>();
    }

    #[tokio::test]
    async fn futures_are_send() {
        let client = Client::builder("http://127.0.0.1:9/x").build().unwrap();
        send(&client.publish("/a", serde_json::Value::Null));
        send(&client.subscribe("/a"));
        send(&client.connect());
        let publisher = Publisher::builder("http://127.0.0.1:9/x").build().unwrap();
        let pending = publisher.publish("/a", serde_json::Value::Null);
        send(&pending);
        drop(pending);
        publisher.close().await;
        // Without connect() a session request fails at once rather than timing out.
        assert!(matches!(client.publish("/a", 1.into()).await, Err(ClientError::NotConnected)));
    }
}
