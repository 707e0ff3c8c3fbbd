//! The state one client shares between its public handle, its background loop, its
//! subscriptions and its session publishers, and the requests that use that state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crier_protocol::{Advice, ChannelName, ChannelPattern, ConnectionType, Message, Reconnect, meta};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Transport};
use crate::dispatch::Registry;
use crate::error::ClientError;
use crate::ids::IdGen;
use crate::transport::http::HttpTransport;
use crate::transport::{Link, Route};
use crate::wire::{self, check_reply, find_reply, read_advice};

/// Faye's default connect hold time, used until the server has advised one.
const DEFAULT_SERVER_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug)]
struct State {
    client_id: Option<String>,
    advice: Advice,
}

/// One client's shared state. Owned by `Arc`; the public [`Client`](crate::Client)
/// handle owns the background task, so this value never owns a task itself.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) link: Link,
    pub(crate) ids: IdGen,
    state: Mutex<State>,
    /// The client id once a session is fully usable (handshaken and, after a
    /// re-handshake, re-subscribed); `None` while there is none.
    established: watch::Sender<Option<String>>,
    pub(crate) registry: Arc<Registry>,
    /// Set once the first handshake succeeded; before that, requests fail fast with
    /// [`ClientError::NotConnected`] instead of waiting for a session that is not coming.
    started: AtomicBool,
    /// Serialises subscribe/unsubscribe exchanges so that the server's view of this
    /// client's subscriptions always ends up equal to the local registry, even when a
    /// subscription is dropped and re-created concurrently.
    membership: tokio::sync::Mutex<()>,
    unsub_tx: mpsc::UnboundedSender<ChannelPattern>,
    /// Cancelled when the client is closed; ends the WebSocket and the background task.
    pub(crate) root: CancellationToken,
    /// Cancelled first on disconnect, so the loop does not re-handshake meanwhile.
    pub(crate) loop_cancel: CancellationToken,
}

impl Shared {
    /// Builds the shared state and the receiving end of the drop-unsubscribe queue,
    /// which the background task consumes.
    pub(crate) fn new(cfg: Config, http: reqwest::Client) -> (Arc<Self>, mpsc::UnboundedReceiver<ChannelPattern>) {
        let root = CancellationToken::new();
        let registry = Arc::new(Registry::new(cfg.subscription_capacity));
        let ws_url = (cfg.transport == Transport::WebSocket).then(|| cfg.ws_url.clone());
        let link = Link::new(HttpTransport::new(http, cfg.url.clone()), ws_url, Some(registry.clone()), root.clone());
        let (unsub_tx, unsub_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            link,
            ids: IdGen::default(),
            state: Mutex::new(State { client_id: None, advice: Advice::retry(0, DEFAULT_SERVER_TIMEOUT_MS) }),
            established: watch::channel(None).0,
            registry,
            started: AtomicBool::new(false),
            membership: tokio::sync::Mutex::new(()),
            unsub_tx,
            loop_cancel: root.child_token(),
            root,
            cfg,
        };
        (Arc::new(shared), unsub_rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Critical sections are plain field assignments; poisoning leaves no torn state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn client_id(&self) -> Option<String> {
        self.lock().client_id.clone()
    }

    pub(crate) fn advice(&self) -> Advice {
        self.lock().advice.clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Option<String>> {
        self.established.subscribe()
    }

    /// How long a `/meta/connect` may take: the server's advised hold time plus margin.
    pub(crate) fn connect_timeout(&self) -> Duration {
        let ms = self.lock().advice.timeout.unwrap_or(DEFAULT_SERVER_TIMEOUT_MS);
        Duration::from_millis(ms) + self.cfg.connect_margin
    }

    /// Runs `fut`, giving up with [`ClientError::Closed`] when the client is closed.
    pub(crate) async fn guarded<T>(&self, fut: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
        tokio::select! {
            r = fut => r,
            () = self.root.cancelled() => Err(ClientError::Closed),
        }
    }

    /// Sends a batch on the session's transport.
    pub(crate) async fn send(&self, msgs: &[Message], timeout: Duration) -> Result<Vec<Message>, ClientError> {
        self.guarded(self.link.request(msgs, timeout, Route::Preferred)).await
    }

    /// Handshakes and stores the new client id. With the WebSocket transport the socket
    /// is opened (or kept) before returning, so a server without WebSocket fails here.
    pub(crate) async fn handshake(&self) -> Result<(), ClientError> {
        let ws = self.cfg.transport == Transport::WebSocket;
        let types: &[ConnectionType] =
            if ws { &[ConnectionType::WebSocket, ConnectionType::LongPolling] } else { &[ConnectionType::LongPolling] };
        let id = self.ids.next();
        let msg = wire::handshake(&id, types, self.cfg.ext.as_ref());
        let route = if ws && self.cfg.handshake_over_websocket { Route::Preferred } else { Route::Http };
        let timeout = self.cfg.request_timeout;
        let replies = self.guarded(self.link.request(&[msg], timeout, route)).await?;
        let reply = find_reply(&replies, &id);
        let update = reply.and_then(read_advice);
        let reply = check_reply(reply, meta::HANDSHAKE);
        {
            let mut st = self.lock();
            if reply.is_ok() {
                // A new session starts from "retry"; stale "handshake" advice from the
                // failure that led here must not end this session at its first connect.
                st.advice.reconnect = Reconnect::Retry;
            }
            if let Some(u) = update {
                u.apply(&mut st.advice);
            }
        }
        let reply = reply?;
        let client_id = reply
            .client_id()
            .ok_or_else(|| ClientError::Protocol("handshake reply without clientId".into()))?
            .to_owned();
        if ws && !supports(&reply, ConnectionType::WebSocket) {
            return Err(ClientError::Protocol("server does not offer the websocket connection type".into()));
        }
        tracing::debug!(%client_id, "handshake successful");
        self.lock().client_id = Some(client_id);
        if ws {
            self.guarded(self.link.open(timeout)).await?;
        }
        Ok(())
    }

    /// Marks the session usable: wakes requests waiting for a client id.
    pub(crate) fn establish(&self) {
        self.started.store(true, Ordering::Release);
        let id = self.client_id();
        self.established.send_replace(id);
    }

    /// Forgets the session after the server advised a new handshake.
    pub(crate) fn lose_session(&self) {
        self.lock().client_id = None;
        self.established.send_replace(None);
    }

    /// Sends one `/meta/connect` and returns its reply (successful or not), after
    /// merging its advice. Long-poll deliveries in the response are dispatched on the way.
    pub(crate) async fn connect_once(&self) -> Result<Message, ClientError> {
        let client_id = self.client_id().ok_or(ClientError::Closed)?;
        let id = self.ids.next();
        let msg = wire::connect(&id, &client_id, self.cfg.transport.connection_type());
        let replies = self.send(&[msg], self.connect_timeout()).await?;
        let reply = find_reply(&replies, &id)
            .cloned()
            .ok_or_else(|| ClientError::Protocol("no reply to /meta/connect".into()))?;
        if let Some(u) = read_advice(&reply) {
            u.apply(&mut self.lock().advice);
        }
        Ok(reply)
    }

    /// Waits (up to the request time-out) until a session is established; returns its id.
    pub(crate) async fn wait_established(&self) -> Result<String, ClientError> {
        if !self.started.load(Ordering::Acquire) {
            return Err(if self.root.is_cancelled() { ClientError::Closed } else { ClientError::NotConnected });
        }
        let mut rx = self.established.subscribe();
        let timeout = self.cfg.request_timeout;
        let wait = async {
            match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
                Ok(Ok(id)) => id.clone().ok_or(ClientError::Closed),
                Ok(Err(_)) => Err(ClientError::Closed),
                Err(_) => Err(ClientError::Timeout(timeout)),
            }
        };
        self.guarded(wait).await
    }

    /// Subscribes `pattern` on the server and registers it locally; the local entry is
    /// added first so that no delivery racing the reply is lost.
    pub(crate) async fn subscribe(&self, pattern: &ChannelPattern) -> Result<crate::dispatch::Added, ClientError> {
        let deadline = Instant::now() + self.cfg.request_timeout;
        loop {
            let client_id = self.wait_established().await?;
            let _m = self.guarded(async { Ok(self.membership.lock().await) }).await?;
            // A re-handshake may have happened while we waited for the lock.
            if self.client_id().as_deref() != Some(client_id.as_str()) {
                if Instant::now() >= deadline {
                    return Err(ClientError::Timeout(self.cfg.request_timeout));
                }
                continue;
            }
            let added = self.registry.add(pattern.clone()).ok_or(ClientError::Closed)?;
            let result = self.membership_request(meta::SUBSCRIBE, &client_id, pattern).await;
            return match result {
                Ok(()) => Ok(added),
                Err(e) => {
                    self.registry.remove(added.key);
                    Err(e)
                }
            };
        }
    }

    async fn membership_request(
        &self,
        channel: &str,
        client_id: &str,
        pattern: &ChannelPattern,
    ) -> Result<(), ClientError> {
        let id = self.ids.next();
        let msg = wire::membership(channel, &id, client_id, pattern.as_str());
        let replies = self.send(&[msg], self.cfg.request_timeout).await?;
        check_reply(find_reply(&replies, &id), channel)?;
        tracing::debug!(channel, %pattern, "membership changed");
        Ok(())
    }

    /// Explicit unsubscribe: removes the local entry at once and, if it was the last
    /// one for its pattern, unsubscribes on the server and reports the outcome.
    pub(crate) async fn unsubscribe(&self, key: u64) -> Result<(), ClientError> {
        match self.registry.remove(key) {
            Some(pattern) => self.unsubscribe_unused(&pattern).await,
            None => Ok(()),
        }
    }

    /// Drop-time unsubscribe: removes the local entry at once (deliveries stop) and
    /// queues the server-side unsubscribe for the background task.
    pub(crate) fn release(&self, key: u64) {
        if let Some(pattern) = self.registry.remove(key) {
            if !self.root.is_cancelled() {
                let _ = self.unsub_tx.send(pattern);
            }
        }
    }

    /// Handles one queued drop-time unsubscribe.
    pub(crate) async fn unsubscribe_dropped(&self, pattern: ChannelPattern) {
        // Once disconnecting, the server drops every subscription with the session.
        if self.loop_cancel.is_cancelled() {
            return;
        }
        if let Err(e) = self.unsubscribe_unused(&pattern).await {
            if self.loop_cancel.is_cancelled() {
                tracing::debug!(%pattern, error = %e, "unsubscribe raced the disconnect");
            } else {
                tracing::warn!(%pattern, error = %e, "unsubscribe of a dropped subscription failed");
            }
        }
    }

    /// Unsubscribes `pattern` on the server unless a local subscription uses it again
    /// (checked under the membership lock, so a concurrent re-subscribe wins).
    async fn unsubscribe_unused(&self, pattern: &ChannelPattern) -> Result<(), ClientError> {
        let _m = self.guarded(async { Ok(self.membership.lock().await) }).await?;
        if self.registry.has_pattern(pattern) {
            return Ok(());
        }
        match self.client_id() {
            Some(client_id) => self.membership_request(meta::UNSUBSCRIBE, &client_id, pattern).await,
            // No session: the next handshake simply will not re-subscribe it.
            None => Ok(()),
        }
    }

    /// After a new handshake, subscribes every pattern in use again, in one batch.
    pub(crate) async fn resubscribe_all(&self) {
        let _m = self.membership.lock().await;
        let patterns = self.registry.patterns();
        let Some(client_id) = self.client_id() else { return };
        if patterns.is_empty() {
            return;
        }
        let ids: Vec<String> = patterns.iter().map(|_| self.ids.next()).collect();
        let msgs: Vec<Message> = patterns
            .iter()
            .zip(&ids)
            .map(|(p, id)| wire::membership(meta::SUBSCRIBE, id, &client_id, p.as_str()))
            .collect();
        match self.send(&msgs, self.cfg.request_timeout).await {
            Ok(replies) => {
                for (p, id) in patterns.iter().zip(&ids) {
                    if let Err(e) = check_reply(find_reply(&replies, id), meta::SUBSCRIBE) {
                        tracing::warn!(pattern = %p, error = %e, "re-subscribe failed");
                    }
                }
                tracing::debug!(count = patterns.len(), "re-subscribed after handshake");
            }
            Err(e) => tracing::warn!(error = %e, "re-subscribe failed"),
        }
    }

    /// Publishes within the session and returns the server's reply.
    pub(crate) async fn publish(&self, channel: &str, data: Value) -> Result<Message, ClientError> {
        let name = parse_name(channel)?;
        let client_id = self.wait_established().await?;
        let id = self.ids.next();
        let msg = wire::publish(&id, name.as_str(), data, Some(&client_id));
        let replies = self.send(&[msg], self.cfg.request_timeout).await?;
        check_reply(find_reply(&replies, &id), "publish")
    }

    /// Sends `/meta/disconnect` (if there is a session) and closes the client.
    pub(crate) async fn disconnect(&self) -> Result<(), ClientError> {
        if self.root.is_cancelled() {
            return Ok(());
        }
        self.loop_cancel.cancel();
        let result = match self.client_id() {
            Some(client_id) => {
                let id = self.ids.next();
                let msg = wire::disconnect(&id, &client_id);
                match self.send(&[msg], self.cfg.request_timeout).await {
                    Ok(replies) => check_reply(find_reply(&replies, &id), meta::DISCONNECT).map(drop),
                    Err(e) => Err(e),
                }
            }
            None => Ok(()),
        };
        self.shutdown();
        result
    }

    /// Closes the client: stops the loop and the socket, ends every subscription stream.
    pub(crate) fn shutdown(&self) {
        self.root.cancel();
        self.registry.close();
        self.lock().client_id = None;
        self.established.send_replace(None);
    }
}

/// Whether a handshake reply lists `ct` among the server's connection types.
fn supports(reply: &Message, ct: ConnectionType) -> bool {
    reply
        .supported_connection_types()
        .and_then(Value::as_array)
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some(ct.as_str())))
}

/// Parses a channel one may publish to.
pub(crate) fn parse_name(channel: &str) -> Result<ChannelName, ClientError> {
    ChannelName::parse(channel).map_err(|reason| ClientError::InvalidChannel { channel: channel.to_owned(), reason })
}

/// Parses a subscription pattern.
pub(crate) fn parse_pattern(pattern: &str) -> Result<ChannelPattern, ClientError> {
    ChannelPattern::parse(pattern).map_err(|reason| ClientError::InvalidChannel { channel: pattern.to_owned(), reason })
}
