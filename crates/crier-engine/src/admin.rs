//! The server API's operations, cluster-wide through the backend. `crier-server` maps them
//! to HTTP; this module validates the inputs (raw strings from the request) and reports bad
//! ones as [`ApiError::Invalid`] with a reason.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crier_protocol::{ChannelKind, ChannelName, ChannelPattern, ClientId, Message};
use serde_json::{Map, Value};

use crate::backend::{BackendError, Claim, Millis};
use crate::delivery::Delivery;
use crate::engine::{Engine, Inner};
use crate::events::Event;
use crate::metrics::Metrics;
use crate::retry::RetryKey;
use crate::users::{NodeStats, Presence, is_reserved, user_name};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the text says why (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The backend failed (HTTP 503).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn invalid(s: impl Into<String>) -> ApiError {
    ApiError::Invalid(s.into())
}

/// Which sessions an operation applies to: the union of the sessions named, the sessions
/// of the users named, and the sessions subscribed to the channels named.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Client ids.
    pub client_ids: Vec<String>,
    /// User ids.
    pub users: Vec<String>,
    /// Channel names: their current subscribers.
    pub subscribers_of: Vec<String>,
    /// Refuse (as invalid) a selection of more sessions than this, before acting on any.
    pub limit: Option<usize>,
}

/// A session as the API reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct SessionInfo {
    /// The client id.
    pub client_id: String,
    /// The user bound to it, if any.
    pub user: Option<String>,
    /// Its subscriptions (names and patterns), sorted.
    pub subscriptions: Vec<String>,
}

/// The sessions and users subscribed to a channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct ChannelInfo {
    /// The channel.
    pub channel: String,
    /// Client ids of the sessions a publish to it reaches (through any matching name).
    pub sessions: Vec<String>,
    /// The distinct users among them.
    pub users: Vec<String>,
}

/// Cluster-wide figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct ClusterStats {
    /// The live nodes' own figures.
    pub nodes: Vec<NodeStats>,
    /// Live sessions in the cluster.
    pub sessions: u64,
    /// Subscriptions (session × name) in the cluster.
    pub subscriptions: u64,
    /// Names (channels and patterns) with at least one subscriber.
    pub channels: u64,
    /// Users with at least one session.
    pub online_users: u64,
    /// Publishes per second, summed over nodes.
    pub published_per_sec: f64,
    /// Deliveries per second, summed over nodes.
    pub delivered_per_sec: f64,
}

/// A message built by the API (not by a client): valid channel, `data`, optional `ext`.
fn api_message(channel: &ChannelName, data: Value, ext: Option<Value>, id: &str) -> Message {
    let mut m = Map::new();
    m.insert("channel".to_owned(), Value::String(channel.as_str().to_owned()));
    m.insert("data".to_owned(), data);
    m.insert("id".to_owned(), Value::String(id.to_owned()));
    if let Some(ext) = ext {
        m.insert("ext".to_owned(), ext);
    }
    Message(m)
}

/// A channel the API may publish to: a valid name (no wildcards), not `/meta` or `/service`.
fn publish_channel(inner: &Inner, s: &str) -> Result<ChannelName, ApiError> {
    let c = ChannelName::parse(s)
        .ok()
        .filter(|_| inner.config.channel_allowed(s))
        .ok_or_else(|| invalid(format!("invalid channel name: {s:?}")))?;
    if c.kind() != ChannelKind::Broadcast {
        return Err(invalid(format!("cannot publish to {s}: /meta and /service channels are not for broadcasting")));
    }
    Ok(c)
}

/// A name or pattern the API may subscribe sessions to.
fn subscribe_pattern(inner: &Inner, s: &str) -> Result<ChannelPattern, ApiError> {
    let p = ChannelPattern::parse(s)
        .ok()
        .filter(|_| inner.config.channel_allowed(s))
        .ok_or_else(|| invalid(format!("invalid channel or pattern: {s:?}")))?;
    if p.kind() != ChannelKind::Broadcast {
        return Err(invalid(format!("cannot subscribe sessions to {s}: not a broadcast channel")));
    }
    Ok(p)
}

/// Checks an idempotency key's length.
fn checked_idempotency_key(k: Option<&str>) -> Result<Option<&str>, ApiError> {
    match k {
        Some(k) if k.is_empty() || k.chars().count() > MAX_IDEMPOTENCY_KEY_LEN => {
            Err(invalid(format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters")))
        }
        k => Ok(k),
    }
}

/// What [`Inner::claim_call`] decided.
enum Call {
    /// Go ahead: the message id, and the retry key to finish.
    Go(String, Option<RetryKey>),
    /// A repeat of a call that was done, with its id: do nothing.
    Repeat(String),
}

/// The id of an API message published with an idempotency key: the same on every retry.
fn keyed_id(key: &RetryKey) -> String {
    format!("api-{}", &key.hex()[..16])
}

/// Longest idempotency key the API's publish takes, in characters (as JSON Schema's
/// `maxLength` counts).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// The cluster-stats API's channel and subscription counts, taken at `at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    at: Millis,
    channels: u64,
    subscriptions: u64,
}

/// The most names a page of [`Engine::api_channels`] asks for.
pub const MAX_CHANNELS_PAGE: usize = 10_000;

/// The longest prefix [`Engine::api_channels`] takes, in characters (as JSON Schema's
/// `maxLength` counts).
pub const MAX_PREFIX_LEN: usize = 1024;

/// The largest cursor [`Engine::api_channels`] takes: JSON's exact integers (a listing's
/// cursors stay far below it).
pub const MAX_CURSOR: u64 = (1 << 53) - 1;

fn client_id(s: &str) -> Result<ClientId, ApiError> {
    ClientId::parse(s).ok_or_else(|| invalid(format!("not a client id: {s:?}")))
}

fn user_id(s: &str) -> Result<String, ApiError> {
    user_name(s)
        .map(|_| s.to_owned())
        .ok_or_else(|| invalid(format!("invalid user id {s:?}: must be 1 to {} bytes", crate::users::MAX_USER_LEN)))
}

impl Engine {
    /// Publishes one message to a channel, as a client's publish would (outgoing
    /// extensions still apply on delivery). Returns the message id.
    ///
    /// With an `idempotency_key`, a publish to the same channel with the same key within
    /// `engine.publish_retry_window_secs` is not published again (the app retried a call
    /// whose answer it missed); both calls return the same id, made from the key.
    pub async fn api_publish(
        &self,
        channel: &str,
        data: Value,
        ext: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<String, ApiError> {
        let inner = &self.inner;
        let channel = publish_channel(inner, channel)?;
        let once = checked_idempotency_key(idempotency_key)?
            .zip(inner.config.publish_retry_window())
            .map(|(k, window)| (RetryKey::api(k, &channel), window));
        let id = match &once {
            Some((key, _)) => keyed_id(key),
            None => inner.api_message_id(),
        };
        inner.admit().await;
        let now = inner.clock.now();
        let d = Delivery::new(inner.next_seq(), channel.clone(), api_message(&channel, data, ext, &id), now);
        match &once {
            Some((key, window)) => {
                if !inner.backend.publish_once(&channel, d.clone(), key, *window, now).await? {
                    Metrics::inc(&inner.metrics.publish_retries);
                    return Ok(id);
                }
            }
            None => inner.backend.publish(&channel, d.clone()).await?,
        }
        inner.metrics.published.fetch_add(1, Ordering::Relaxed);
        inner.emit(Event::Publish(None, channel, d));
        Ok(id)
    }

    /// Publishes one message to several channels. With `dedupe`, a session subscribed to
    /// several of them (or through several matching names) receives it once, on the first
    /// of the channels (in the order given) that reaches it; without, once per channel.
    ///
    /// With an `idempotency_key`, a broadcast with the same key within
    /// `engine.publish_retry_window_secs` is not made again; both calls return the same id.
    pub async fn api_broadcast(
        &self,
        channels: &[String],
        data: Value,
        ext: Option<Value>,
        dedupe: bool,
        idempotency_key: Option<&str>,
    ) -> Result<String, ApiError> {
        let inner = &self.inner;
        if channels.is_empty() {
            return Err(invalid("channels must not be empty"));
        }
        let parsed: Vec<ChannelName> = channels.iter().map(|c| publish_channel(inner, c)).collect::<Result<_, _>>()?;
        let idempotency_key = checked_idempotency_key(idempotency_key)?;
        // Once for the whole broadcast, however many channels it goes to. Before the claim:
        // a call dropped while it waits (the app gave up) must not leave its key claimed.
        inner.admit().await;
        let (id, key) = match inner.claim_call(idempotency_key, "broadcast").await? {
            Call::Go(id, key) => (id, key),
            Call::Repeat(id) => return Ok(id),
        };
        let now = inner.clock.now();
        // With dedupe, every channel's delivery shares one seq: a session reached through
        // several names takes the first (see `Backend::publish_to`).
        let shared_seq = dedupe.then(|| inner.next_seq());
        let deliveries: Vec<_> = parsed
            .iter()
            .map(|c| {
                let seq = shared_seq.unwrap_or_else(|| inner.next_seq());
                Delivery::new(seq, c.clone(), api_message(c, data.clone(), ext.clone(), &id), now)
            })
            .collect();
        if dedupe {
            let mut seen: BTreeSet<ChannelPattern> = BTreeSet::new();
            let mut targets = Vec::new();
            for (c, d) in parsed.iter().zip(&deliveries) {
                for name in c.expand() {
                    if seen.insert(name.clone()) {
                        targets.push((name, d.clone()));
                    }
                }
            }
            inner.backend.publish_to(&targets).await?;
        } else {
            for (c, d) in parsed.iter().zip(&deliveries) {
                inner.backend.publish(c, d.clone()).await?;
            }
        }
        inner.finish_call(key.as_ref()).await;
        inner.metrics.published.fetch_add(parsed.len() as u64, Ordering::Relaxed);
        for (c, d) in parsed.into_iter().zip(deliveries) {
            inner.emit(Event::Publish(None, c, d));
        }
        Ok(id)
    }

    /// Sends a message on `channel` to every session of the users named, on any node,
    /// whatever they subscribe to (a Faye client hands it to its subscription to `channel`).
    /// A session of two of the users receives it once. With an `idempotency_key`, as
    /// [`Engine::api_broadcast`].
    pub async fn api_send_to_users(
        &self,
        users: &[String],
        channel: &str,
        data: Value,
        ext: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<String, ApiError> {
        let inner = &self.inner;
        if users.is_empty() {
            return Err(invalid("users must not be empty"));
        }
        let channel = publish_channel(inner, channel)?;
        let mut names = Vec::with_capacity(users.len());
        for u in users {
            user_id(u)?;
            names.extend(user_name(u));
        }
        names.sort();
        names.dedup();
        let idempotency_key = checked_idempotency_key(idempotency_key)?;
        // Before the claim, as in `api_broadcast`.
        inner.admit().await;
        let (id, key) = match inner.claim_call(idempotency_key, "send").await? {
            Call::Go(id, key) => (id, key),
            Call::Repeat(id) => return Ok(id),
        };
        let d =
            Delivery::new(inner.next_seq(), channel.clone(), api_message(&channel, data, ext, &id), inner.clock.now());
        let targets: Vec<_> = names.into_iter().map(|n| (n, d.clone())).collect();
        inner.backend.publish_to(&targets).await?;
        inner.finish_call(key.as_ref()).await;
        inner.metrics.published.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// The sessions a selector names that exist, each once, sorted.
    pub async fn api_select(&self, sel: &Selector) -> Result<Vec<ClientId>, ApiError> {
        let inner = &self.inner;
        if sel.client_ids.is_empty() && sel.users.is_empty() && sel.subscribers_of.is_empty() {
            return Err(invalid("select sessions with client_ids, users or subscribers_of"));
        }
        let mut out = BTreeSet::new();
        for c in &sel.client_ids {
            let id = client_id(c)?;
            if inner.backend.session_exists(&id).await? {
                out.insert(id);
            }
        }
        for u in &sel.users {
            let u = user_id(u)?;
            inner.heal_user(&u).await?;
            out.extend(inner.backend.user_sessions(&u).await?);
        }
        for c in &sel.subscribers_of {
            let name = ChannelName::parse(c).map_err(|_| invalid(format!("invalid channel name: {c:?}")))?;
            out.extend(inner.backend.subscribers(&name).await?);
        }
        if let Some(limit) = sel.limit
            && out.len() > limit
        {
            return Err(invalid(format!(
                "the selection matches {} sessions, more than the limit of {limit}",
                out.len()
            )));
        }
        Ok(out.into_iter().collect())
    }

    /// Subscribes (or unsubscribes) the selected sessions to the channels, cluster-wide:
    /// when this returns, publishes through any node follow the new subscriptions.
    /// Returns `(sessions selected, subscriptions changed)`. The per-session subscription
    /// limit does not apply (the API is trusted).
    pub async fn api_subscribe(
        &self,
        sel: &Selector,
        channels: &[String],
        subscribe: bool,
    ) -> Result<(usize, usize), ApiError> {
        let inner = &self.inner;
        if channels.is_empty() {
            return Err(invalid("channels must not be empty"));
        }
        let patterns: Vec<ChannelPattern> =
            channels.iter().map(|c| subscribe_pattern(inner, c)).collect::<Result<_, _>>()?;
        let sessions = self.api_select(sel).await?;
        let mut changed = 0;
        for id in &sessions {
            for p in &patterns {
                let done = if subscribe {
                    inner.backend.subscribe(id, p).await?
                } else {
                    inner.backend.unsubscribe(id, p).await?
                };
                if !done {
                    continue;
                }
                changed += 1;
                if subscribe {
                    inner.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
                    inner.emit(Event::Subscribe(id.clone(), p.clone()));
                } else {
                    inner.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    inner.emit(Event::Unsubscribe(id.clone(), p.clone()));
                }
            }
        }
        Ok((sessions.len(), changed))
    }

    /// One session: its user and subscriptions; `None` if it does not exist.
    pub async fn api_session(&self, client_id_str: &str) -> Result<Option<SessionInfo>, ApiError> {
        let id = client_id(client_id_str)?;
        if !self.inner.backend.session_exists(&id).await? {
            return Ok(None);
        }
        Ok(Some(self.inner.session_info(&id).await?))
    }

    /// The sessions of a user, each with its subscriptions.
    pub async fn api_user_sessions(&self, user: &str) -> Result<Vec<SessionInfo>, ApiError> {
        let user = user_id(user)?;
        self.inner.heal_user(&user).await?;
        let mut out = Vec::new();
        for id in self.inner.backend.user_sessions(&user).await? {
            out.push(self.inner.session_info(&id).await?);
        }
        Ok(out)
    }

    /// The sessions (and their users) a publish to `channel` reaches; more than `limit`
    /// sessions is refused as invalid (the users cost one backend read per session).
    pub async fn api_channel(&self, channel: &str, limit: Option<usize>) -> Result<ChannelInfo, ApiError> {
        let inner = &self.inner;
        let name = ChannelName::parse(channel).map_err(|_| invalid(format!("invalid channel name: {channel:?}")))?;
        if name.kind() == ChannelKind::Meta {
            return Err(invalid(format!("{channel} is a /meta channel")));
        }
        let sessions = inner.backend.subscribers(&name).await?;
        if let Some(limit) = limit
            && sessions.len() > limit
        {
            return Err(invalid(format!(
                "{channel} has {} subscribers, more than the limit of {limit}",
                sessions.len()
            )));
        }
        let mut users = BTreeSet::new();
        for id in &sessions {
            if let Some(u) = inner.backend.identity(id).await?.and_then(|i| i.user) {
                users.insert(u);
            }
        }
        Ok(ChannelInfo {
            channel: channel.to_owned(),
            sessions: sessions.iter().map(|s| s.as_str().to_owned()).collect(),
            users: users.into_iter().collect(),
        })
    }

    /// A page of the client-visible names with subscribers, with their numbers of sessions:
    /// those starting with `prefix`, from `cursor` (0 at first) on, about `limit` (1 to
    /// [`MAX_CHANNELS_PAGE`]). Returns the page and the next page's cursor (`None` after
    /// the last). A page may hold fewer than `limit`, even none, before the last.
    pub async fn api_channels(
        &self,
        prefix: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<(String, u64)>, Option<u64>), ApiError> {
        if !(1..=MAX_CHANNELS_PAGE).contains(&limit) {
            return Err(invalid(format!("limit must be 1 to {MAX_CHANNELS_PAGE}")));
        }
        if prefix.chars().count() > MAX_PREFIX_LEN {
            return Err(invalid(format!("prefix is at most {MAX_PREFIX_LEN} characters")));
        }
        if cursor > MAX_CURSOR {
            return Err(invalid(format!("cursor is at most {MAX_CURSOR}")));
        }
        let page = self.inner.backend.channels_page(prefix, cursor, limit).await?;
        let channels =
            page.channels.into_iter().filter(|(p, _)| !is_reserved(p)).map(|(p, n)| (p.as_str().to_owned(), n));
        Ok((channels.collect(), page.next))
    }

    /// The presence of each user named, in order.
    pub async fn api_presence(&self, users: &[String]) -> Result<Vec<Presence>, ApiError> {
        for u in users {
            user_id(u)?;
        }
        for u in users {
            self.inner.heal_user(u).await?;
        }
        Ok(self.inner.backend.presence(users, self.inner.clock.now()).await?)
    }

    /// Number of users with at least one session.
    pub async fn api_online_users(&self) -> Result<u64, ApiError> {
        Ok(self.inner.backend.online_users().await?)
    }

    /// Ends the selected sessions everywhere: a held connect returns, a socket closes, and
    /// the next connect gets `401` with `reconnect: handshake` advice. Returns how many ended.
    pub async fn api_disconnect(&self, sel: &Selector) -> Result<usize, ApiError> {
        let sessions = self.api_select(sel).await?;
        let mut n = 0;
        for id in sessions {
            if self.inner.destroy(&id).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Figures for the whole cluster, from the backend and the nodes' heartbeats.
    pub async fn api_stats(&self) -> Result<ClusterStats, ApiError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let interval = inner.config.stats_interval().as_millis() as u64;
        let nodes = inner.backend.nodes(now.saturating_sub(3 * interval)).await?;
        let fresh = *inner.counted.lock();
        let counted = match fresh.filter(|c| now.saturating_sub(c.at) < interval) {
            Some(c) => c,
            None => {
                // One read per channel (Redis: a SCARD each): at most once per interval on
                // this node, however often the API is asked.
                let channels = inner.backend.channels().await?;
                let channels: Vec<_> = channels.into_iter().filter(|(p, _)| !is_reserved(p)).collect();
                let c = Counted {
                    at: now,
                    channels: channels.len() as u64,
                    subscriptions: channels.iter().map(|(_, n)| n).sum(),
                };
                *inner.counted.lock() = Some(c);
                c
            }
        };
        Ok(ClusterStats {
            sessions: inner.backend.session_count().await?,
            subscriptions: counted.subscriptions,
            channels: counted.channels,
            online_users: inner.backend.online_users().await?,
            published_per_sec: nodes.iter().map(|n| n.published_per_sec).sum(),
            delivered_per_sec: nodes.iter().map(|n| n.delivered_per_sec).sum(),
            nodes,
        })
    }
}

impl Inner {
    /// Takes out of a user's presence the sessions that no longer exist: a disconnect whose
    /// presence update failed, was cut short (a dropped request) or died with its node
    /// leaves one behind. Runs before presence is reported and, for a sample of online
    /// users, on every sweep.
    pub(crate) async fn heal_user(&self, user: &str) -> Result<(), BackendError> {
        for id in self.backend.user_sessions(user).await? {
            if self.backend.session_exists(&id).await? {
                continue;
            }
            tracing::debug!(client_id = %id, "pruning an ended session from its user's presence");
            if let Some(change) = self.backend.user_left(user, &id, self.clock.now()).await? {
                self.emit(Event::Presence(change));
            }
        }
        Ok(())
    }

    /// Whether an API call that publishes in several steps goes ahead, with its message id
    /// and, if it has an idempotency key (already checked) and the window is on, its retry
    /// key.
    async fn claim_call(&self, idempotency_key: Option<&str>, call: &str) -> Result<Call, ApiError> {
        let (Some(k), Some(window)) = (idempotency_key, self.config.publish_retry_window()) else {
            return Ok(Call::Go(self.api_message_id(), None));
        };
        let key = RetryKey::api_call(k, call);
        Ok(match self.backend.claim(&key, window, self.clock.now()).await? {
            Claim::Done => {
                Metrics::inc(&self.metrics.publish_retries);
                Call::Repeat(keyed_id(&key))
            }
            Claim::New | Claim::Unfinished => Call::Go(keyed_id(&key), Some(key)),
        })
    }

    /// Marks a claimed call done. If that fails, a retry repeats the call (some recipients
    /// get it twice), so it is logged, not returned.
    async fn finish_call(&self, key: Option<&RetryKey>) {
        if let Some(key) = key
            && let Err(e) = self.backend.finish(key).await
        {
            tracing::warn!(error = %e, "could not mark an API call with an idempotency key done");
        }
    }

    /// An id for an API publish, returned to the caller for its logs (deliveries carry no
    /// `id`); unique in practice cluster-wide, as `seq` starts at random on each node.
    fn api_message_id(&self) -> String {
        format!("api-{:x}", self.next_seq())
    }

    async fn session_info(&self, id: &ClientId) -> Result<SessionInfo, BackendError> {
        let user = self.backend.identity(id).await?.and_then(|i| i.user);
        let subscriptions = self
            .backend
            .subscriptions(id)
            .await?
            .into_iter()
            .filter(|p| !is_reserved(p))
            .map(|p| p.as_str().to_owned());
        Ok(SessionInfo { client_id: id.as_str().to_owned(), user, subscriptions: subscriptions.collect() })
    }

    /// This node's figures now, with rates over the time since `prev`.
    pub(crate) fn node_stats(&self, started_ms: u64, prev: Option<&NodeStats>) -> NodeStats {
        let now = self.clock.now();
        let published_total = self.metrics.published.load(Ordering::Relaxed);
        let delivered_total = self.metrics.delivered.load(Ordering::Relaxed);
        let rate = |total: u64, before: Option<u64>, since: Option<u64>| match (before, since) {
            (Some(b), Some(t)) if now > t => total.saturating_sub(b) as f64 * 1000.0 / (now - t) as f64,
            _ => 0.0,
        };
        NodeStats {
            node: self.backend.node_id(),
            started_ms,
            updated_ms: now,
            sessions_attached: self.hub.len() as u64,
            published_total,
            delivered_total,
            published_per_sec: rate(published_total, prev.map(|p| p.published_total), prev.map(|p| p.updated_ms)),
            delivered_per_sec: rate(delivered_total, prev.map(|p| p.delivered_total), prev.map(|p| p.updated_ms)),
        }
    }

    /// Sends this node's figures every stats interval.
    pub(crate) async fn heartbeat_loop(self: Arc<Self>) {
        let started = self.clock.now();
        let mut prev: Option<NodeStats> = None;
        let mut tick = tokio::time::interval(self.config.stats_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let stats = self.node_stats(started, prev.as_ref());
            if let Err(e) = self.backend.heartbeat(&stats).await {
                tracing::debug!(error = %e, "heartbeat failed");
            }
            prev = Some(stats);
        }
    }

    /// Publishes every event on `/meta/crier/events/<kind>` (see `EngineConfig::event_channels`).
    pub(crate) async fn event_channel_loop(self: Arc<Self>, mut rx: tokio::sync::broadcast::Receiver<Event>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut names: HashMap<&'static str, (ChannelName, Vec<ChannelPattern>)> = HashMap::new();
        loop {
            let event = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                e = rx.recv() => match e {
                    Ok(e) => e,
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event channel publisher fell behind; events dropped");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                },
            };
            let kind = event.kind();
            let Some((channel, targets)) = names.get(kind).cloned().or_else(|| {
                let c = ChannelName::parse(&format!("{}{kind}", crate::users::EVENTS_PREFIX)).ok()?;
                // Never `/**`: a remote client may hold it, and events are for the server side.
                let t: Vec<_> = c.expand().into_iter().filter(|p| p.as_str() != "/**").collect();
                names.insert(kind, (c.clone(), t.clone()));
                Some((c, t))
            }) else {
                continue;
            };
            let mut m = Map::new();
            m.insert("channel".to_owned(), Value::String(channel.as_str().to_owned()));
            m.insert("data".to_owned(), event.to_json());
            let d = Delivery::new(self.next_seq(), channel, Message(m), self.clock.now());
            let targets: Vec<_> = targets.into_iter().map(|n| (n, d.clone())).collect();
            if let Err(e) = self.backend.publish_to(&targets).await {
                tracing::debug!(error = %e, "publishing an event failed");
            }
        }
    }
}
