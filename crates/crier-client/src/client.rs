//! The public client handle.

use std::sync::{Arc, Mutex, PoisonError};

use crier_protocol::{ChannelPattern, Message};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::config::{ClientBuilder, Config, Transport};
use crate::error::ClientError;
use crate::publisher::PublisherBuilder;
use crate::session::{Shared, parse_pattern};
use crate::subscription::Subscription;
use crate::task::AbortOnDrop;

/// A Bayeux client session. Cheap to clone; all clones share one session.
///
/// Dropping the last clone closes the session locally (the background task and the
/// WebSocket stop, subscription streams end) without telling the server, which then
/// forgets the client after its own time-out; call [`Client::disconnect`] to end the
/// session cleanly.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    shared: Arc<Shared>,
    /// The background task; aborted when the last handle goes.
    task: Mutex<Option<AbortOnDrop>>,
    unsubs: Mutex<Option<mpsc::UnboundedReceiver<ChannelPattern>>>,
    /// Makes concurrent `connect` calls handshake once.
    connecting: tokio::sync::Mutex<()>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl Client {
    /// Starts configuring a client for the endpoint `url` (`http://` or `https://`,
    /// e.g. `http://127.0.0.1:8000/faye`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    pub(crate) fn from_config(cfg: Config, http: reqwest::Client) -> Self {
        let (shared, unsubs) = Shared::new(cfg, http);
        Client {
            inner: Arc::new(ClientInner {
                shared,
                task: Mutex::new(None),
                unsubs: Mutex::new(Some(unsubs)),
                connecting: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Handshakes (over HTTP POST, or over the WebSocket if so configured), opens the
    /// WebSocket for that transport, and starts the background connect loop. Returns
    /// once the session is usable; it does not wait for the first `/meta/connect`
    /// reply, which Faye holds for its full time-out. Calling it again is a no-op.
    pub async fn connect(&self) -> Result<(), ClientError> {
        let shared = &self.inner.shared;
        let _once = self.inner.connecting.lock().await;
        if shared.root.is_cancelled() {
            return Err(ClientError::Closed);
        }
        if self.inner.task.lock().unwrap_or_else(PoisonError::into_inner).is_some() {
            return Ok(());
        }
        shared.handshake().await?;
        shared.establish();
        let unsubs = self.inner.unsubs.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(unsubs) = unsubs else { return Err(ClientError::Closed) };
        let task = tokio::spawn(crate::connect_loop::run(shared.clone(), unsubs));
        *self.inner.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(AbortOnDrop(task));
        Ok(())
    }

    /// The current client id; `None` before the handshake, while re-handshaking and
    /// after the client is closed. It changes when the server forces a new handshake.
    pub fn client_id(&self) -> Option<String> {
        self.inner.shared.client_id()
    }

    /// Watches the established session: the client id once the session is usable
    /// (after a re-handshake: once every subscription has been re-subscribed), `None`
    /// while there is none. Lets tests wait for a re-handshake without polling.
    pub fn watch_client_id(&self) -> watch::Receiver<Option<String>> {
        self.inner.shared.watch()
    }

    /// The transport this client uses after the handshake.
    pub fn transport(&self) -> Transport {
        self.inner.shared.cfg.transport
    }

    /// Subscribes to a channel name or pattern (`/foo`, `/foo/*`, `/foo/**`). Resolves
    /// once the server has confirmed the subscription; a refusal is
    /// [`ClientError::Bayeux`] with the server's error string.
    ///
    /// Several subscriptions to the same pattern share one server-side subscription;
    /// each receives its own copy of every matching message.
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, ClientError> {
        let pattern = parse_pattern(pattern)?;
        let shared = &self.inner.shared;
        let added = shared.subscribe(&pattern).await?;
        Ok(Subscription::new(shared.clone(), pattern, added))
    }

    /// Publishes `data` to `channel` within this session and returns the server's reply;
    /// a refusal is [`ClientError::Bayeux`]. For many publishes, a
    /// [`Publisher`](crate::Publisher) batches them (see [`Client::publisher`]).
    pub async fn publish(&self, channel: &str, data: Value) -> Result<Message, ClientError> {
        self.inner.shared.publish(channel, data).await
    }

    /// Sends messages exactly as given, in one request on this session's transport, and
    /// returns what came back (for tests that need exact control of the wire).
    ///
    /// Over HTTP this is the whole response array, deliveries included (these are also
    /// dispatched to subscriptions). Over WebSocket it is the reply to each message that
    /// has an `id`, in order; messages without `id` are sent without waiting. Use
    /// [`Client::next_message_id`] (or ids that are not base-36 numbers) so a raw
    /// message's id cannot collide with one the client generated.
    pub async fn send_raw(&self, msgs: Vec<Message>) -> Result<Vec<Message>, ClientError> {
        let shared = &self.inner.shared;
        shared.send(&msgs, shared.cfg.request_timeout).await
    }

    /// A fresh message id from this client's counter.
    pub fn next_message_id(&self) -> String {
        self.inner.shared.ids.next()
    }

    /// Configures a [`Publisher`](crate::Publisher) that publishes within this session
    /// (with its `clientId`, on its transport).
    pub fn publisher(&self) -> PublisherBuilder {
        PublisherBuilder::for_session(self.inner.shared.clone())
    }

    /// Sends `/meta/disconnect` and closes the client: the loop stops, the WebSocket is
    /// closed and every subscription stream ends. The client is closed even when the
    /// request fails; that error is returned. A second call does nothing.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.inner.shared.disconnect().await
    }

    /// Whether the client has been closed (by [`Client::disconnect`] or by the server's
    /// `reconnect:"none"` advice).
    pub fn is_closed(&self) -> bool {
        self.inner.shared.root.is_cancelled()
    }
}
