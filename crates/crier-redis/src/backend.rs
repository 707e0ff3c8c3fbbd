//! [`RedisBackend`]: the engine's [`Backend`] on Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use crier_engine::{
    Backend, BackendError, ChannelsPage, Claim, Delivery, DeliverySink, Identity, Millis, NodeStats, Presence,
    PresenceChange, RetryKey, SWEEP_BATCH, SessionGuard, SessionLocks, Touched,
};
use crier_protocol::{ChannelName, ChannelPattern, ClientId};
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Value;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::{self, Offset, ZERO, format_offset, lost_before, parse_offset};
use crate::config::RedisConfig;
use crate::error::{RedisError, redact, unavailable};
use crate::keys::Keys;
use crate::local::Local;
use crate::metrics::RedisMetrics;
use crate::positions::{Attaching, Joining};
use crate::pressure::{Gauge, Pressured};
use crate::scripts::Scripts;
use crate::values::{array, entry, int, pairs, text};
use futures::StreamExt;

/// Sessions, subscriptions, cursors and logs in Redis; live fan-out over sharded pub/sub.
/// See `docs/adr/0001-redis-backend.md` for the design.
pub struct RedisBackend {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) subscriber: SubscriberClient,
    pub(crate) keys: Keys,
    pub(crate) node: String,
    pub(crate) config: RedisConfig,
    pub(crate) retention_ms: u64,
    pub(crate) local: Mutex<Local>,
    pub(crate) sink: OnceLock<Arc<dyn DeliverySink>>,
    /// Per name: whether this node's subscriber holds its channel. The async lock orders
    /// SSUBSCRIBE and SUNSUBSCRIBE of one name.
    name_locks: Mutex<HashMap<ChannelPattern, Arc<tokio::sync::Mutex<bool>>>>,
    pub(crate) scripts: Scripts,
    /// Redis is one server (not Redis Cluster): a script may touch any key. Cleared for good
    /// when the server refuses that (a cluster-mode server behind a `redis://` URL).
    one_server: AtomicBool,
    pub(crate) metrics: RedisMetrics,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// When this node started, as ms (for sessions it restores).
    started_ms: AtomicU64,
    /// The data set's epoch as this node last saw it (see `Keys::epoch`).
    epoch: Mutex<String>,
    /// Serialises recoveries, so concurrent triggers run one after another.
    recovering: tokio::sync::Mutex<()>,
    /// Serialises writes of the node's marks (the periodic one and the one at shutdown).
    pub(crate) mark_writes: tokio::sync::Mutex<()>,
    /// Per session: orders what this node does for it (attach, subscribe, unsubscribe,
    /// sync, close), so a stale control message or a concurrent change cannot interleave.
    session_locks: SessionLocks,
    /// Read by each control message's task before it acts; written only by tests, to hold
    /// control messages back (a node that has not heard of a move yet).
    pub(crate) control_gate: Arc<tokio::sync::RwLock<()>>,
    /// Nodes heard to be pressured (see `pressure`); this node's own state is
    /// `self_pressured`, kept apart (its own announcements come back through its backlog).
    pub(crate) pressure: Mutex<Pressured>,
    pub(crate) self_pressured: AtomicBool,
    /// For the publish path: false only when no node is known to be pressured (changed
    /// under `pressure`'s lock).
    pub(crate) pressure_any: AtomicBool,
    /// Woken when some node's pressure ends: waiting publishes look again.
    pub(crate) pressure_changed: tokio::sync::Notify,
    /// This node's signs of falling behind (see `pressure`).
    pub(crate) gauge: Mutex<Gauge>,
    /// Orders this node's announcements; holds when it last said it is pressured.
    pub(crate) announcing: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What a recovery re-reads: each attached session's names and where they got to, taken
/// in one step before any later live message is applied.
pub(crate) type Snapshot = Vec<(ClientId, Vec<(ChannelPattern, Offset)>)>;

impl RedisBackend {
    /// Connects to Redis and starts the node's listener, flusher and liveness probe.
    /// `session_lifetime` bounds how long logs must keep messages.
    pub async fn connect(config: RedisConfig, session_lifetime: Duration) -> Result<Self, RedisError> {
        config.validate().map_err(RedisError::Config)?;
        let url = config.url.trim().to_owned();
        let fred_config = Config::from_url(&url).map_err(|e| RedisError::Config(format!("redis.url: {e}")))?;
        let one_server = !fred_config.server.is_clustered();
        let timeout = Duration::from_millis(config.command_timeout_ms);
        let ping = Duration::from_secs(config.ping_interval_secs);
        let mut builder = Builder::from_config(fred_config);
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = timeout;
                p.broadcast_channel_capacity = config.pubsub_buffer;
            })
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
                // A connection that answers nothing for three probe intervals is replaced.
                c.unresponsive.max_timeout = Some(ping * 3);
                c.unresponsive.interval = (ping / 2).max(Duration::from_millis(100));
            })
            // Never give up: a node without Redis is not ready, and comes back with it.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let connect_err = |e: fred::error::Error| RedisError::Connect { url: redact(&url), message: e.to_string() };
        let client = builder.build().map_err(connect_err)?;
        let subscriber = builder.build_subscriber_client().map_err(connect_err)?;
        let init = async {
            client.init().await?;
            subscriber.init().await?;
            Ok::<_, fred::error::Error>(())
        };
        match tokio::time::timeout(timeout, init).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(connect_err(e)),
            Err(_) => {
                return Err(RedisError::Connect {
                    url: redact(&url),
                    message: format!("no answer within {timeout:?}"),
                });
            }
        }
        // Logs must outlive every session that may still read them.
        let floor = session_lifetime.as_millis() as u64 + 10_000;
        let retention_ms = (config.log_retention_secs * 1000).max(floor);
        let node = format!("{:016x}", rand::random::<u64>());
        let gauge = Gauge::new(config.backpressure_backlog, Duration::from_millis(config.backpressure_lag_ms));
        let shared = Arc::new(Shared {
            keys: Keys::new(&config.prefix),
            local: Mutex::new(Local::new(config.log_max_len as usize * 2 + 1024)),
            config,
            client,
            subscriber,
            node,
            retention_ms,
            sink: OnceLock::new(),
            name_locks: Mutex::new(HashMap::new()),
            scripts: Scripts::new(),
            one_server: AtomicBool::new(one_server),
            metrics: RedisMetrics::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started_ms: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            ),
            epoch: Mutex::new(String::new()),
            recovering: tokio::sync::Mutex::new(()),
            mark_writes: tokio::sync::Mutex::new(()),
            session_locks: SessionLocks::default(),
            control_gate: Arc::new(tokio::sync::RwLock::new(())),
            pressure: Mutex::new(Pressured::default()),
            self_pressured: AtomicBool::new(false),
            pressure_any: AtomicBool::new(false),
            pressure_changed: tokio::sync::Notify::new(),
            gauge: Mutex::new(gauge),
            announcing: tokio::sync::Mutex::new(None),
        });
        shared.data_lost().await.map_err(|e| RedisError::Connect { url: redact(&url), message: e.to_string() })?;
        // Loaded up front so the first calls need no NOSCRIPT round trip (after a Redis
        // restart, `evalsha_with_reload` loads them again).
        for script in shared.scripts.all() {
            script.load(&shared.client).await.map_err(connect_err)?;
        }
        // Start listening before subscribing, so nothing sent to this node is missed.
        crate::listener::start(&shared);
        shared.subscriber.ssubscribe(shared.keys.node(&shared.node)).await.map_err(connect_err)?;
        shared.subscriber.ssubscribe(shared.keys.pressure()).await.map_err(connect_err)?;
        tracing::info!(node = %shared.node, url = %redact(&url), "redis backend connected");
        Ok(RedisBackend { shared })
    }

    /// This node's id in the cluster.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// Holds back this node's handling of control messages from other nodes until the
    /// guard drops (tests: a node that has not heard of a move yet).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn hold_control_messages(&self) -> ControlHold {
        ControlHold(self.shared.control_gate.clone().write_owned().await)
    }
}

/// See [`RedisBackend::hold_control_messages`].
#[cfg(any(test, feature = "test-util"))]
pub struct ControlHold(#[expect(dead_code, reason = "held for its drop")] tokio::sync::OwnedRwLockWriteGuard<()>);

impl Shared {
    pub(crate) fn sink(&self) -> Option<&Arc<dyn DeliverySink>> {
        self.sink.get()
    }

    pub(crate) async fn lock_session(&self, id: &ClientId) -> SessionGuard<'_> {
        self.session_locks.lock(id).await
    }

    fn name_lock(&self, name: &ChannelPattern) -> Arc<tokio::sync::Mutex<bool>> {
        self.name_locks.lock().entry(name.clone()).or_default().clone()
    }

    /// Makes sure this node's subscriber holds the name's channel.
    async fn ensure_channel(&self, name: &ChannelPattern) -> Result<(), BackendError> {
        let lock = self.name_lock(name);
        let mut held = lock.lock().await;
        if !*held {
            self.subscriber.ssubscribe(self.keys.channel(name)).await.map_err(|e| self.fail(e))?;
            *held = true;
        }
        Ok(())
    }

    /// Drops the channels of names no attached session needs (checked again under the
    /// name's lock, so a session that just started needing it keeps it).
    pub(crate) fn release_channels(self: &Arc<Self>, names: Vec<ChannelPattern>) {
        if names.is_empty() {
            return;
        }
        let this = self.clone();
        self.tasks.spawn(async move {
            for name in names {
                let lock = this.name_lock(&name);
                let mut held = lock.lock().await;
                if *held && !this.local.lock().wants(&name) {
                    match this.subscriber.sunsubscribe(this.keys.channel(&name)).await {
                        Ok(()) => *held = false,
                        Err(e) => tracing::debug!(name = %name.as_str(), error = %e, "sunsubscribe failed"),
                    }
                }
                drop(held);
                drop(lock);
                let mut locks = this.name_locks.lock();
                if locks.get(&name).is_some_and(|l| Arc::strong_count(l) == 1 && l.try_lock().is_ok_and(|h| !*h)) {
                    locks.remove(&name);
                }
            }
        });
    }

    /// Logs `delivery` (published to `channel`) under one subscription name and sends it
    /// live on the name's pub/sub channel; nothing if the name has no member.
    /// `json` is the delivery's encoding as a shared Redis string, made once per publish:
    /// each name's call holds a reference, not a copy (a message matches up to depth + 2
    /// names, a broadcast many more). With `retry` (a retry key of the name's tag and the
    /// window in ms; the exact channel's call on Redis Cluster), see [`Scripts::publish`].
    pub(crate) async fn publish_one(
        &self,
        name: &ChannelPattern,
        channel: &ChannelName,
        delivery: &Delivery,
        json: &fred::bytes_utils::Str,
        retry: Option<&(String, u64)>,
    ) -> Result<Answer, BackendError> {
        let mut args = self.publish_args(channel, delivery, json, 2);
        args.push(Value::from(self.keys.channel(name)));
        let mut keys = vec![self.keys.members(name), self.keys.log(name)];
        if let Some((key, window_ms)) = retry {
            keys.push(key.clone());
            args.push(Value::from(window_ms.to_string()));
        }
        let answer: Value =
            self.scripts.publish.evalsha_with_reload(&self.client, keys, args).await.map_err(|e| self.fail(e))?;
        Ok(Answer::of(&answer))
    }

    /// The arguments PUBLISH and PUBLISH_MANY share (max_len, retention_ms, message id,
    /// channel, json), with room for `more` arguments after them.
    fn publish_args(
        &self,
        channel: &ChannelName,
        delivery: &Delivery,
        json: &fred::bytes_utils::Str,
        more: usize,
    ) -> Vec<Value> {
        let mut args = Vec::with_capacity(5 + more);
        args.extend([
            Value::from(self.config.log_max_len.to_string()),
            Value::from(self.retention_ms.to_string()),
            Value::from(delivery.seq.to_string()),
            Value::from(channel.as_str()),
            Value::String(json.clone()),
        ]);
        args
    }

    /// Publishes to every name in one script call ([`Scripts::publish_many`]); only on one
    /// server, where keys of different hash tags may be touched together. `None`: the
    /// server refused keys of several slots (it runs in cluster mode though the URL named
    /// one server); nothing was published, and from now on each name gets its own call.
    /// `Some(false)`: `retry`'s key was set (see [`Shared::publish_one`]); nothing was
    /// published.
    pub(crate) async fn publish_many(
        &self,
        names: &[ChannelPattern],
        channel: &ChannelName,
        delivery: &Delivery,
        json: &fred::bytes_utils::Str,
        retry: Option<&(String, u64)>,
    ) -> Result<Option<bool>, BackendError> {
        let mut args = self.publish_args(channel, delivery, json, names.len() + 1);
        let mut keys = Vec::with_capacity(names.len() * 2 + 1);
        for name in names {
            keys.push(self.keys.members(name));
            keys.push(self.keys.log(name));
            args.push(Value::from(self.keys.channel(name)));
        }
        if let Some((key, window_ms)) = retry {
            keys.push(key.clone());
            args.push(Value::from(window_ms.to_string()));
        }
        match self.scripts.publish_many.evalsha_with_reload::<Value, _, _>(&self.client, keys, args).await {
            Ok(answer) => Ok(Some(Answer::of(&answer) != Answer::Repeat)),
            // Redis checks the keys' slots before running anything.
            Err(e) if e.details().contains("CROSSSLOT") => {
                if self.one_server.swap(false, AtomicOrdering::AcqRel) {
                    tracing::warn!(
                        "Redis runs in cluster mode behind a redis:// URL: publishing with one call per channel name \
                         (use redis-cluster:// for a cluster of several shards)"
                    );
                }
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Publishes `delivery` to every name matching `channel` (see [`Backend::publish`]);
    /// with `retry`, only if its key is not set (see [`Backend::publish_once`]).
    async fn publish_names(
        &self,
        channel: &ChannelName,
        delivery: &Delivery,
        retry: Option<&(String, u64)>,
    ) -> Result<bool, BackendError> {
        let json = fred::bytes_utils::Str::from(delivery.json.as_ref());
        let names = channel.expand();
        if self.one_server.load(AtomicOrdering::Acquire)
            && let Some(fresh) = self.publish_many(&names, channel, delivery, &json, retry).await?
        {
            // One script call for every matching name.
            return Ok(fresh);
        }
        // Redis Cluster: one script call per matching name (at most depth + 2), each on its
        // name's slot, all in flight at once. Either way the cost does not depend on how
        // many sessions subscribe. A retry key sits on the exact channel's slot: that
        // name's call checks and sets it first (`p`), the others follow unless it was done
        // (`d`), and then it is marked done. A node that stops in between leaves `p`, and
        // the client's retry publishes to the other names again: at least once, never lost.
        let mut rest = names;
        if let Some(retry) = retry {
            let exact = ChannelPattern::from(channel.clone());
            rest.retain(|n| *n != exact);
            if self.publish_one(&exact, channel, delivery, &json, Some(retry)).await? == Answer::Repeat {
                return Ok(false);
            }
        }
        let calls = rest.into_iter().map(|name| {
            let json = &json;
            async move { self.publish_one(&name, channel, delivery, json, None).await }
        });
        futures::future::try_join_all(calls).await?;
        if let Some((key, _)) = retry
            && let Err(e) = self.mark_done(key).await
        {
            // The retry of an acknowledged publish would then reach the other names
            // twice; nothing is lost.
            tracing::debug!(error = %e, "could not mark a publish done");
        }
        Ok(true)
    }

    /// Marks a retry key or a claim done (`d`), if it still exists; KEEPTTL: it still goes
    /// when the window ends.
    async fn mark_done(&self, key: &str) -> Result<(), BackendError> {
        let _: Value = self
            .client
            .set(key, "d", Some(Expiration::KEEPTTL), Some(SetOptions::XX), false)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Waits while some node's fan-out is behind (see `pressure`), at most
    /// `redis.backpressure_max_wait_ms`; then the publish goes ahead either way.
    pub(crate) async fn admit(&self) {
        let max = self.config.backpressure_max_wait_ms;
        if max == 0 || !self.pressure_any.load(AtomicOrdering::Acquire) {
            return;
        }
        let start = tokio::time::Instant::now();
        let until = start + Duration::from_millis(max);
        let mut waited = false;
        loop {
            let changed = self.pressure_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = tokio::time::Instant::now();
            let next = {
                let mut p = self.pressure.lock();
                let others = p.next_expiry(now.into_std());
                if others.is_none() && !self.self_pressured.load(AtomicOrdering::Acquire) {
                    self.pressure_any.store(false, AtomicOrdering::Release);
                    None
                } else {
                    Some(others.map_or(until, |t| tokio::time::Instant::from_std(t).min(until)))
                }
            };
            let Some(look_again) = next else { break };
            if now >= until {
                RedisMetrics::inc(&self.metrics.publish_wait_timeouts);
                break;
            }
            waited = true;
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(look_again) => {}
            }
        }
        if waited {
            RedisMetrics::inc(&self.metrics.publish_waits);
            RedisMetrics::add(&self.metrics.publish_wait_ms, start.elapsed().as_millis() as u64);
        }
    }

    /// Moves the session's last-seen time in the expiry index to `now`. XX: never re-creates
    /// the entry of a session destroyed meanwhile; GT: a late call cannot move it back.
    pub(crate) async fn seen(&self, id: &ClientId, now: Millis) -> Result<Value, fred::error::Error> {
        self.client
            .zadd::<Value, _, _>(
                self.keys.index(),
                Some(SetOptions::XX),
                Some(fred::types::sorted_sets::Ordering::GreaterThan),
                false,
                false,
                (now as f64, id.as_str()),
            )
            .await
    }

    pub(crate) fn fail(&self, e: fred::error::Error) -> BackendError {
        RedisMetrics::inc(&self.metrics.command_errors);
        unavailable(e)
    }

    /// Reads the session's logs from its cursors and queues what it has not had, merged with
    /// live messages that arrive meanwhile. `names`: names to add at these start offsets;
    /// `all`: re-read every name of the session from where it got to; `create`: the session
    /// may be new here (an attach), else a session no longer here is left alone.
    pub(crate) async fn bridge(
        self: &Arc<Self>,
        id: &ClientId,
        names: &[(ChannelPattern, Offset)],
        all: bool,
        create: bool,
    ) -> Result<(), BackendError> {
        let Some(to_read) = self.local.lock().begin_bridge(id, names, all, create) else { return Ok(()) };
        self.finish_bridge(id.clone(), to_read).await
    }

    /// Reads and applies a started bridge. It runs as a task of its own: a caller that goes
    /// away (a closed request) must not leave the session waiting for the bridge forever.
    pub(crate) async fn finish_bridge(
        self: &Arc<Self>,
        id: ClientId,
        to_read: Vec<(ChannelPattern, Offset)>,
    ) -> Result<(), BackendError> {
        let this = self.clone();
        let task = self.tasks.spawn(async move {
            let (entries, result) = match this.read_logs(&to_read).await {
                Ok(e) => (e, Ok(())),
                Err(e) => {
                    tracing::warn!(client_id = %id, error = %e, "reading logs for a session failed");
                    (Vec::new(), Err(e))
                }
            };
            RedisMetrics::add(&this.metrics.bridged, entries.len() as u64);
            {
                // Handed to the session before the lock is let go: once the bridge ends, the
                // listener delivers live messages straight away, and one that comes next must
                // not reach the queue ahead of what the logs (and the messages held back
                // while bridging) gave. Seen in CI: 34 delivered before 30 to 33 to a session
                // moving between nodes. (The sink only pushes onto in-memory queues.)
                let mut local = this.local.lock();
                let out = local.end_bridge(&id, entries);
                if let Some(sink) = this.sink() {
                    for d in &out {
                        sink.deliver(std::slice::from_ref(&id), d);
                    }
                }
            }
            RedisMetrics::inc(&this.metrics.bridges);
            result
        });
        task.await.unwrap_or_else(|e| Err(BackendError::unavailable(format!("bridge task ended: {e}"))))
    }

    /// Subscribes the names' channels, then reads each log after its offset. Entries are
    /// read from the offset itself: if that entry is gone, the log was trimmed at the
    /// session's position, and messages were lost if the first entry left does not follow
    /// it (`codec::lost_before`), which is counted.
    async fn read_logs(&self, to_read: &[(ChannelPattern, Offset)]) -> Result<Vec<Arc<Delivery>>, BackendError> {
        futures::future::try_join_all(to_read.iter().map(|(n, _)| self.ensure_channel(n))).await?;
        let count = self.config.log_max_len * 2 + 100;
        let reads = to_read.iter().map(|(name, from)| async move {
            let v: Value = self
                .client
                .xrange(self.keys.log(name), format_offset(*from), "+", Some(count))
                .await
                .map_err(|e| self.fail(e))?;
            Ok::<_, BackendError>((name, *from, array(v).unwrap_or_default()))
        });
        let mut out = Vec::new();
        for (name, from, items) in futures::future::try_join_all(reads).await? {
            let mut first = true;
            for item in items {
                let Some((id, fields)) = entry(item) else { continue };
                let Some(offset) = parse_offset(&id) else { continue };
                if first && from != ZERO && offset != from && lost_before(&fields, from) {
                    RedisMetrics::inc(&self.metrics.log_gaps);
                    tracing::warn!(name = %name.as_str(), "log trimmed past a session's position: messages lost");
                }
                first = false;
                if offset <= from {
                    continue;
                }
                let field = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
                if let (Some(pid), Some(ch), Some(json)) = (field("p"), field("c"), field("m"))
                    && let Some(d) = codec::delivery(name, offset, pid, ch, json)
                {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Re-reads a session's subscriptions from Redis and adopts the difference: new names
    /// are bridged from their stored cursors, removed ones dropped. Another node changed them.
    pub(crate) async fn sync(self: &Arc<Self>, id: &ClientId) -> Result<(), BackendError> {
        let _session = self.lock_session(id).await;
        if !self.local.lock().contains(id) {
            return Ok(());
        }
        let v: Value = self.client.hgetall(self.keys.subs(id)).await.map_err(|e| self.fail(e))?;
        let stored: HashMap<ChannelPattern, Offset> = pairs(v)
            .into_iter()
            .filter_map(|(n, c)| Some((ChannelPattern::parse(&n).ok()?, parse_offset(&c).unwrap_or(ZERO))))
            .collect();
        let current: Vec<ChannelPattern> = self.local.lock().subscriptions(id).into_iter().map(|(n, _)| n).collect();
        let removed: Vec<ChannelPattern> = current.iter().filter(|n| !stored.contains_key(*n)).cloned().collect();
        let added: Vec<(ChannelPattern, Offset)> = stored.into_iter().filter(|(n, _)| !current.contains(n)).collect();
        if !removed.is_empty() {
            let unused = self.local.lock().remove_names(id, &removed);
            self.release_channels(unused);
        }
        if !added.is_empty() {
            self.bridge(id, &added, false, false).await?;
        }
        Ok(())
    }

    /// Tells another node something about a session it holds (`close` or `sync`).
    pub(crate) fn notify(self: &Arc<Self>, node: String, verb: &'static str, id: &ClientId) {
        if node.is_empty() || node == self.node {
            return;
        }
        let this = self.clone();
        let payload = format!("{verb} {}", id.as_str());
        self.tasks.spawn(async move {
            let channel = this.keys.node(&node);
            if let Err(e) = this.client.spublish::<Value, _, _>(channel, payload).await {
                tracing::warn!(node = %node, error = %e, "control message to node failed");
                this.fail(e);
            }
        });
    }

    /// Whether Redis lost its data since this node last looked: the epoch key is gone or
    /// was replaced. Sets one if missing (first caller wins) and adopts the current one.
    pub(crate) async fn data_lost(&self) -> Result<bool, BackendError> {
        let candidate = format!("{:016x}", rand::random::<u64>());
        let _: Value = self
            .client
            .set(self.keys.epoch(), candidate, None, Some(SetOptions::NX), false)
            .await
            .map_err(|e| self.fail(e))?;
        let current: Option<String> = self.client.get(self.keys.epoch()).await.map_err(|e| self.fail(e))?;
        let current = current.unwrap_or_default();
        let mut seen = self.epoch.lock();
        let lost = !seen.is_empty() && *seen != current;
        *seen = current;
        Ok(lost)
    }

    /// After a connection to Redis came back (or the fan-out fell behind). `snapshot` was
    /// taken (and the sessions set bridging) before any later live message was applied.
    /// For each session: if Redis lost its data, write the session back; otherwise repair
    /// what control messages lost while pub/sub was down may have missed (the session was
    /// destroyed or moved, or its subscriptions changed); then re-read its logs.
    pub(crate) async fn recover(self: &Arc<Self>, snapshot: Snapshot, known_lost: bool) {
        let _one_at_a_time = self.recovering.lock().await;
        RedisMetrics::inc(&self.metrics.recoveries);
        let lost = match self.data_lost().await {
            Ok(lost) => lost || known_lost,
            Err(e) => {
                tracing::warn!(error = %e, "checking the redis epoch failed");
                known_lost
            }
        };
        if lost {
            // The marks went with the data.
            self.local.lock().marks.failed();
        }
        let now = self.started_ms.load(AtomicOrdering::Relaxed);
        let work = snapshot.into_iter().map(|(id, to_read)| async move {
            let _session = self.lock_session(&id).await;
            if lost {
                if let Err(e) = self.restore(&id, now).await {
                    tracing::warn!(client_id = %id, error = %e, "restoring session in redis failed");
                }
            } else {
                let owner: Result<Option<String>, _> = self.client.hget(self.keys.session(&id), "node").await;
                if let Ok(owner) = owner
                    && owner.as_deref() != Some(self.node.as_str())
                {
                    // Destroyed, or attached elsewhere, while this node could not hear it.
                    drop(self.local.lock().end_bridge(&id, Vec::new()));
                    self.close_local(&id).await;
                    return;
                }
            }
            if let Err(e) = self.finish_bridge(id.clone(), to_read).await {
                tracing::warn!(client_id = %id, error = %e, "re-reading logs after reconnect failed");
            }
        });
        futures::stream::iter(work).buffer_unordered(16).collect::<Vec<()>>().await;
        if !lost {
            // Subscriptions changed through other nodes while pub/sub was down.
            let ids = self.local.lock().sessions();
            for id in ids {
                if let Err(e) = self.sync(&id).await {
                    tracing::debug!(client_id = %id, error = %e, "syncing subscriptions after reconnect failed");
                }
            }
        }
    }

    /// Forgets a session on this node unless Redis names this node as its node (asked under
    /// the session's lock, so an attach here cannot slip in between). Returns the node Redis
    /// names (`None`: the session is gone).
    pub(crate) async fn close_unless_ours(self: &Arc<Self>, id: &ClientId) -> Result<Option<String>, BackendError> {
        let _session = self.lock_session(id).await;
        let owner: Option<String> = self.client.hget(self.keys.session(id), "node").await.map_err(|e| self.fail(e))?;
        if owner.as_deref() != Some(self.node.as_str()) {
            self.close_local(id).await;
        }
        Ok(owner)
    }

    /// Forgets a session on this node (its lock must be held): stores what it was sent and
    /// ends its held connect or socket. Only a session this node holds: a copy the engine
    /// has only begun to attach (its attach waits for the lock) is not the one meant, and
    /// closing it would leave that attach registering a session with no copy to deliver to.
    pub(crate) async fn close_local(self: &Arc<Self>, id: &ClientId) {
        let removed = self.local.lock().remove_session(id, false);
        let Some(crate::local::Removed { unstored, unused }) = removed else { return };
        self.release_channels(unused);
        if !unstored.is_empty()
            && let Err(e) = self.store_cursors(id, unstored).await
        {
            tracing::debug!(client_id = %id, error = %e, "storing delivery positions failed");
        }
        if let Some(sink) = self.sink() {
            sink.close(id);
        }
    }

    /// Adds the session to the name's members; returns the log's end (`ms-seq`), where a new
    /// subscription's cursor starts.
    async fn join(&self, id: &ClientId, name: &ChannelPattern) -> Result<String, BackendError> {
        let last: Value = self
            .scripts
            .join
            .evalsha_with_reload(&self.client, vec![self.keys.members(name), self.keys.log(name)], vec![id.as_str()])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(text(&last).unwrap_or_else(|| "0-0".to_owned()))
    }

    async fn restore(&self, id: &ClientId, now: u64) -> Result<(), BackendError> {
        let subs = self.local.lock().subscriptions(id);
        let identity = self.local.lock().identity(id).unwrap_or_default();
        let mut args = vec![self.node.clone(), now.to_string(), identity];
        for (n, o) in &subs {
            args.push(n.as_str().to_owned());
            args.push(format_offset(*o));
        }
        let restored: Value = self
            .scripts
            .restore
            .evalsha_with_reload(&self.client, vec![self.keys.session(id), self.keys.subs(id)], args)
            .await
            .map_err(|e| self.fail(e))?;
        if int(&restored) == Some(1) {
            RedisMetrics::inc(&self.metrics.sessions_restored);
            let _: Value = self
                .client
                .zadd(self.keys.index(), Some(SetOptions::NX), None, false, false, (now as f64, id.as_str()))
                .await
                .map_err(|e| self.fail(e))?;
            for (n, _) in &subs {
                self.join(id, n).await?;
                self.register_name(n).await?;
            }
            // The user index went with the data: the session counts for its user again.
            let user = self.local.lock().identity(id).and_then(|j| serde_json::from_str::<Identity>(&j).ok());
            if let Some(user) = user.and_then(|i| i.user) {
                self.presence_op("join", &user, id, now).await?;
            }
        }
        Ok(())
    }

    /// Lists a name for `Backend::channels` (reserved names never are).
    async fn register_name(&self, name: &ChannelPattern) -> Result<(), BackendError> {
        if crier_engine::is_reserved(name) {
            return Ok(());
        }
        let _: Value = self.client.sadd(self.keys.names(), name.as_str()).await.map_err(|e| self.fail(e))?;
        Ok(())
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn bind(&self, sink: Arc<dyn DeliverySink>) {
        let _ = self.shared.sink.set(sink);
    }

    async fn create_session(&self, id: &ClientId, now: Millis) -> Result<(), BackendError> {
        let s = &self.shared;
        s.started_ms.fetch_max(now, AtomicOrdering::Relaxed);
        let info: Result<Value, _> =
            s.client.hset(s.keys.session(id), vec![("node", s.node.clone()), ("created", now.to_string())]).await;
        info.map_err(|e| s.fail(e))?;
        let _: Value = s
            .client
            .zadd(s.keys.index(), None, None, false, false, (now as f64, id.as_str()))
            .await
            .map_err(|e| s.fail(e))?;
        Ok(())
    }

    async fn set_identity(&self, id: &ClientId, identity: &Identity) -> Result<(), BackendError> {
        let s = &self.shared;
        let json = serde_json::to_string(identity).map_err(|e| BackendError::unavailable(format!("identity: {e}")))?;
        let _: Value = s
            .scripts
            .identify
            .evalsha_with_reload(&s.client, vec![s.keys.session(id)], vec![json.clone()])
            .await
            .map_err(|e| s.fail(e))?;
        s.local.lock().set_identity(id, json);
        Ok(())
    }

    async fn identity(&self, id: &ClientId) -> Result<Option<Identity>, BackendError> {
        let s = &self.shared;
        let json: Option<String> = s.client.hget(s.keys.session(id), "identity").await.map_err(|e| s.fail(e))?;
        // A malformed value (not written by Crier) is no identity.
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    async fn session_exists(&self, id: &ClientId) -> Result<bool, BackendError> {
        let s = &self.shared;
        let n: i64 = s.client.exists(s.keys.session(id)).await.map_err(|e| s.fail(e))?;
        Ok(n > 0)
    }

    async fn touch(&self, id: &ClientId, now: Millis) -> Result<Touched, BackendError> {
        let s = &self.shared;
        s.started_ms.fetch_max(now, AtomicOrdering::Relaxed);
        // Every session's hash names its node from creation on, so no node means no session.
        let owner = async { s.client.hget::<Option<String>, _, _>(s.keys.session(id), "node").await };
        let (owner, _) = futures::future::try_join(owner, s.seen(id, now)).await.map_err(|e| s.fail(e))?;
        match owner {
            Some(node) if node == s.node => return Ok(Touched::Here),
            // Taken by another node whose `close` this node has not handled yet (its listener
            // or the close's task is behind, typically under load): this node's queue for it
            // is stale, and draining it would repeat what that node delivered. Handled as
            // that `close` would be (not as a detach: Redis does not name this node, so
            // there is nothing to disown, and disowning would clear the `since` of the
            // attach that follows, costing the next move the marks).
            Some(_) => {
                return Ok(match s.close_unless_ours(id).await? {
                    // Attached here again meanwhile (by another request for it).
                    Some(node) if node == s.node => Touched::Here,
                    Some(_) => {
                        RedisMetrics::inc(&s.metrics.moved_unheard);
                        Touched::Elsewhere
                    }
                    None => Touched::Gone,
                });
            }
            None => {}
        }
        // Held here but unknown to Redis: destroyed through another node (its `close` is on
        // the way), or Redis lost its data and the reconnect's recovery has not run yet. Only
        // the second is restored; a destroyed session must stay destroyed.
        if s.local.lock().contains(id) && s.data_lost().await? {
            tracing::warn!("redis lost its data; restoring the sessions this node holds");
            let snapshot = s.local.lock().begin_bridge_all();
            // The new epoch was adopted above, so `recover` is told the data was lost.
            s.recover(snapshot, true).await;
            let n: i64 = s.client.exists(s.keys.session(id)).await.map_err(|e| s.fail(e))?;
            return Ok(if n > 0 { Touched::Here } else { Touched::Gone });
        }
        Ok(Touched::Gone)
    }

    async fn mark_streaming(&self, id: &ClientId, ttl: Duration) -> Result<(), BackendError> {
        let s = &self.shared;
        let ttl_ms = ttl.as_millis().max(1).to_string();
        let _: Value = s
            .scripts
            .stream_mark
            .evalsha_with_reload(&s.client, vec![s.keys.session(id), s.keys.stream(id)], vec![s.node.as_str(), &ttl_ms])
            .await
            .map_err(|e| s.fail(e))?;
        Ok(())
    }

    async fn streaming_elsewhere(&self, id: &ClientId, now: Millis) -> Result<bool, BackendError> {
        let s = &self.shared;
        let owner = async { s.client.hget::<Option<String>, _, _>(s.keys.session(id), "node").await };
        let streaming = async { s.client.get::<Option<String>, _>(s.keys.stream(id)).await };
        let (owner, streaming) = futures::future::try_join(owner, streaming).await.map_err(|e| s.fail(e))?;
        // The stream must be on the node the session is attached to: a mark left by a stream
        // on a node the session has since left says nothing about where it is delivered.
        let elsewhere = matches!((&owner, &streaming), (Some(o), Some(st)) if o == st && *o != s.node);
        if elsewhere {
            s.seen(id, now).await.map_err(|e| s.fail(e))?;
        }
        Ok(elsewhere)
    }

    async fn destroy_session(&self, id: &ClientId) -> Result<Option<Vec<ChannelPattern>>, BackendError> {
        let s = &self.shared;
        let v: Value = s
            .scripts
            .destroy
            .evalsha_with_reload(&s.client, vec![s.keys.session(id), s.keys.subs(id)], Vec::<String>::new())
            .await
            .map_err(|e| s.fail(e))?;
        // The index entry goes in any case, so a half-destroyed session is not swept forever.
        // Once DESTROY ran this call owns the session's end: a failure of the cleanup below
        // is logged, not returned, or the events and the presence update would be lost.
        if let Err(e) = s.client.zrem::<Value, _, _>(s.keys.index(), id.as_str()).await {
            tracing::warn!(client_id = %id, error = %e, "removing a destroyed session from the index failed");
        }
        let Some(parts) = array(v) else { return Ok(None) };
        let mut parts = parts.into_iter();
        let node = parts.next().as_ref().and_then(text).unwrap_or_default();
        let mut names: Vec<ChannelPattern> = parts
            .next()
            .and_then(array)
            .unwrap_or_default()
            .iter()
            .filter_map(text)
            .filter_map(|n| ChannelPattern::parse(&n).ok())
            .collect();
        names.sort();
        let left = futures::future::try_join_all(
            names.iter().map(|n| async move { s.client.srem::<Value, _, _>(s.keys.members(n), id.as_str()).await }),
        )
        .await;
        if let Err(e) = left {
            // A stale member costs a log entry per publish until its name is next cleaned.
            tracing::warn!(client_id = %id, error = %e, "removing a destroyed session from its names failed");
        }
        let removed = s.local.lock().remove_session(id, false);
        if let Some(r) = removed {
            let unused = r.unused;
            s.release_channels(unused);
        }
        s.notify(node, "close", id);
        Ok(Some(names))
    }

    async fn expired_sessions(&self, cutoff: Millis) -> Result<Vec<ClientId>, BackendError> {
        let s = &self.shared;
        let v: Value = s
            .client
            .zrangebyscore(s.keys.index(), "-inf", format!("({cutoff}"), false, Some((0, SWEEP_BATCH as i64)))
            .await
            .map_err(|e| s.fail(e))?;
        Ok(array(v).unwrap_or_default().iter().filter_map(text).filter_map(|t| ClientId::parse(&t)).collect())
    }

    async fn subscribe(&self, id: &ClientId, pattern: &ChannelPattern) -> Result<bool, BackendError> {
        let s = &self.shared;
        let _session = s.lock_session(id).await;
        // Until the session is registered here under the name, the name's mark may not
        // pass the subscription's start; if this fails half-way, the marks stop covering
        // the session.
        let joining = Joining::begin(s, id, pattern);
        let cursor = s.join(id, pattern).await?;
        let v: Value = s
            .scripts
            .subscribe
            .evalsha_with_reload(
                &s.client,
                vec![s.keys.session(id), s.keys.subs(id)],
                vec![pattern.as_str(), &cursor, &s.node],
            )
            .await
            .map_err(|e| s.fail(e))?;
        let Some(parts) = array(v) else {
            // The session ended meanwhile: undo the membership.
            let _: Value = s.client.srem(s.keys.members(pattern), id.as_str()).await.map_err(|e| s.fail(e))?;
            return Ok(false);
        };
        // Again, after the name is recorded: an unsubscribe through another node between the
        // two steps above may have removed the member but not (yet) the name.
        let _: Value = s.client.sadd(s.keys.members(pattern), id.as_str()).await.map_err(|e| s.fail(e))?;
        let new = parts.first().and_then(int) == Some(1);
        if new {
            // For the channel listing; pruned lazily there (see `Shared::channels`).
            s.register_name(pattern).await?;
        }
        let node = parts.get(1).and_then(text).unwrap_or_default();
        if node == s.node {
            // Held here (or being attached here): listen to the name and catch up from the
            // cursor before the ack, so a publish through any node after it is delivered.
            let start = parse_offset(&cursor).unwrap_or(ZERO);
            s.bridge(id, &[(pattern.clone(), start)], false, true).await?;
        } else {
            s.notify(node, "sync", id);
        }
        joining.done();
        Ok(new)
    }

    async fn unsubscribe(&self, id: &ClientId, pattern: &ChannelPattern) -> Result<bool, BackendError> {
        let s = &self.shared;
        let _session = s.lock_session(id).await;
        // Member first, name second: with subscribe's order (member, name, member) a race
        // between them can leave an extra member (harmless), never a name without a member.
        let _: Value = s.client.srem(s.keys.members(pattern), id.as_str()).await.map_err(|e| s.fail(e))?;
        let v: Value = s
            .scripts
            .unsubscribe
            .evalsha_with_reload(&s.client, vec![s.keys.session(id), s.keys.subs(id)], vec![pattern.as_str()])
            .await
            .map_err(|e| s.fail(e))?;
        let parts = array(v).unwrap_or_default();
        let removed = parts.first().and_then(int) == Some(1);
        let node = parts.get(1).and_then(text).unwrap_or_default();
        let unused = s.local.lock().remove_names(id, std::slice::from_ref(pattern));
        s.release_channels(unused);
        s.notify(node, "sync", id);
        Ok(removed)
    }

    async fn subscriptions(&self, id: &ClientId) -> Result<Vec<ChannelPattern>, BackendError> {
        let s = &self.shared;
        let names: Vec<String> = s.client.hkeys(s.keys.subs(id)).await.map_err(|e| s.fail(e))?;
        let mut v: Vec<ChannelPattern> = names.iter().filter_map(|n| ChannelPattern::parse(n).ok()).collect();
        v.sort();
        Ok(v)
    }

    async fn publish(&self, channel: &ChannelName, delivery: Arc<Delivery>) -> Result<(), BackendError> {
        self.shared.publish_names(channel, &delivery, None).await.map(|_| ())
    }

    // On one server a publish is one script call, written to the command connection on
    // the first poll (fred queues it at once; commands leave and run in the order queued).
    // On Redis Cluster a publish with a retry key makes its calls in steps (the exact
    // channel's first), so the next publish waits for the answer.
    fn publish_sends_at_once(&self) -> bool {
        self.shared.one_server.load(AtomicOrdering::Acquire)
    }

    async fn publish_once(
        &self,
        channel: &ChannelName,
        delivery: Arc<Delivery>,
        key: &RetryKey,
        window: Duration,
        _now: Millis,
    ) -> Result<bool, BackendError> {
        let s = &self.shared;
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        s.publish_names(channel, &delivery, Some(&(s.keys.retry(channel, key), window_ms))).await
    }

    async fn claim(&self, key: &RetryKey, window: Duration, _now: Millis) -> Result<Claim, BackendError> {
        let s = &self.shared;
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        let seen: Option<String> = s
            .client
            .set(s.keys.claim(key), "p", Some(Expiration::PX(window_ms)), Some(SetOptions::NX), true)
            .await
            .map_err(|e| s.fail(e))?;
        Ok(match seen.as_deref() {
            None => Claim::New,
            Some("p") => Claim::Unfinished,
            Some(_) => Claim::Done,
        })
    }

    async fn finish(&self, key: &RetryKey) -> Result<(), BackendError> {
        self.shared.mark_done(&self.shared.keys.claim(key)).await
    }

    async fn publish_to(&self, targets: &[(ChannelPattern, Arc<Delivery>)]) -> Result<(), BackendError> {
        self.shared.publish_to(targets).await
    }

    async fn admit(&self) {
        self.shared.admit().await;
    }

    async fn subscribers(&self, channel: &ChannelName) -> Result<Vec<ClientId>, BackendError> {
        self.shared.subscribers(channel).await
    }

    async fn channels(&self) -> Result<Vec<(ChannelPattern, u64)>, BackendError> {
        self.shared.channels().await
    }

    async fn channels_page(&self, prefix: &str, cursor: u64, limit: usize) -> Result<ChannelsPage, BackendError> {
        self.shared.channels_page(prefix, cursor, limit).await
    }

    async fn session_count(&self) -> Result<u64, BackendError> {
        self.shared.session_count().await
    }

    async fn user_joined(
        &self,
        user: &str,
        id: &ClientId,
        now: Millis,
    ) -> Result<Option<PresenceChange>, BackendError> {
        self.shared.presence_op("join", user, id, now).await
    }

    async fn user_left(&self, user: &str, id: &ClientId, now: Millis) -> Result<Option<PresenceChange>, BackendError> {
        self.shared.presence_op("leave", user, id, now).await
    }

    async fn set_away(
        &self,
        user: &str,
        id: &ClientId,
        away: bool,
        now: Millis,
    ) -> Result<Option<PresenceChange>, BackendError> {
        self.shared.presence_op(if away { "away" } else { "back" }, user, id, now).await
    }

    async fn user_sessions(&self, user: &str) -> Result<Vec<ClientId>, BackendError> {
        self.shared.user_sessions(user).await
    }

    async fn presence(&self, users: &[String], now: Millis) -> Result<Vec<Presence>, BackendError> {
        self.shared.presence(users, now).await
    }

    async fn online_users(&self) -> Result<u64, BackendError> {
        self.shared.online_users().await
    }

    async fn online_user_sample(&self, n: usize) -> Result<Vec<String>, BackendError> {
        self.shared.online_user_sample(n).await
    }

    async fn heartbeat(&self, stats: &NodeStats) -> Result<(), BackendError> {
        // Kept for a minute: `nodes` filters by age, the TTL only cleans up.
        self.shared.heartbeat(stats, 60_000).await
    }

    async fn nodes(&self, since: Millis) -> Result<Vec<NodeStats>, BackendError> {
        self.shared.nodes(since).await
    }

    fn node_id(&self) -> String {
        self.shared.node.clone()
    }

    async fn attach(&self, id: &ClientId) -> Result<(), BackendError> {
        let s = &self.shared;
        let _session = s.lock_session(id).await;
        // Until the session is registered here, this node's marks must not cover it.
        let mut attaching = Attaching::begin(s, id);
        let since = attaching.since.to_string();
        // The node it leaves, and that node's marks for its names, read before the attach:
        // they count the session only while Redis still names that node (see `marks`).
        let leaving = s.peek_marks(id).await;
        attaching.leaving(&leaving.node);
        let (expected_node, expected_since) = (leaving.node.as_str(), leaving.since.as_str());
        let v: Value = s
            .scripts
            .attach
            .evalsha_with_reload(
                &s.client,
                vec![s.keys.session(id), s.keys.subs(id)],
                vec![s.node.as_str(), &since, expected_node, expected_since],
            )
            .await
            .map_err(|e| s.fail(e))?;
        let Some(parts) = array(v) else { return Ok(()) };
        let mut parts = parts.into_iter();
        let prev = parts.next().as_ref().and_then(text).unwrap_or_default();
        let mut names: Vec<(ChannelPattern, Offset)> = parts
            .next()
            .map(pairs)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, c)| Some((ChannelPattern::parse(&n).ok()?, parse_offset(&c).unwrap_or(ZERO))))
            .collect();
        let identity = parts.next().as_ref().and_then(text).filter(|j| !j.is_empty());
        let unchanged = parts.next().as_ref().and_then(int) == Some(1);
        // What the node it left sent is in its marks (its own stores may be older).
        let raised = if unchanged { leaving.raise(&mut names) } else { Vec::new() };
        if !raised.is_empty() {
            RedisMetrics::inc(&s.metrics.marks_applied);
        }
        // The node it left stops delivering it; what it queued but never sent is re-read here.
        s.notify(prev, "close", id);
        RedisMetrics::inc(&s.metrics.attaches);
        s.bridge(id, &names, false, true).await?;
        attaching.registered();
        // The raised starts are the session's own positions from now on: stored with the
        // next flush, so they outlive this node's marks.
        if !raised.is_empty() {
            s.local.lock().unstore(id, &raised);
        }
        if let Some(json) = identity {
            s.local.lock().set_identity(id, json);
        }
        Ok(())
    }

    fn detach(&self, id: &ClientId) {
        let s = &self.shared;
        // The session stays attached here as far as Redis knows: the marks stop covering it.
        let removed = s.local.lock().remove_session(id, true);
        let Some(crate::local::Removed { unstored, unused }) = removed else { return };
        s.release_channels(unused);
        if !unstored.is_empty() {
            let this = s.clone();
            let id = id.clone();
            s.tasks.spawn(async move {
                if let Err(e) = this.store_cursors(&id, unstored).await {
                    tracing::debug!(client_id = %id, error = %e, "storing delivery positions of a detached session failed");
                }
            });
        }
    }

    async fn sent(&self, id: &ClientId, items: &[Arc<Delivery>]) -> Result<(), BackendError> {
        let s = &self.shared;
        let changed = s.local.lock().record_sent(id, items);
        if changed {
            let cursors = s.local.lock().take_unstored(id);
            if let Err(e) = s.store_cursors(id, cursors.clone()).await {
                s.local.lock().unstore(id, &cursors);
                return Err(e);
            }
        }
        Ok(())
    }

    fn sent_soon(&self, id: &ClientId, items: &[Arc<Delivery>]) {
        // Stored with the next flush (marks, and the session's own cursors when it leaves).
        self.shared.local.lock().record_sent(id, items);
    }

    async fn ready(&self) -> bool {
        let s = &self.shared;
        let ping = tokio::time::timeout(Duration::from_secs(1), s.client.ping::<Value>(None)).await;
        matches!(ping, Ok(Ok(_))) && s.subscriber.is_connected()
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        let attached = self.shared.local.lock().len() as i64;
        let mut v = self.shared.metrics.snapshot();
        v.push(("crier_redis_sessions_attached", "Sessions whose messages this node delivers.", attached));
        let s = &self.shared;
        v.push((
            "crier_redis_pressured",
            "1 while this node's fan-out is behind and it asks publishers to wait.",
            i64::from(s.self_pressured.load(AtomicOrdering::Acquire)),
        ));
        let others = s.pressure.lock().count(std::time::Instant::now()) as i64;
        v.push(("crier_redis_pressured_nodes", "Other nodes known to be asking publishers to wait.", others));
        v
    }

    async fn close(&self) {
        let s = &self.shared;
        s.shutdown.cancel();
        s.tasks.close();
        // Each with its own bound: a slow flush must not leave sessions without their own
        // positions (marks are only a lower bound).
        let _ = tokio::time::timeout(Duration::from_secs(5), s.flush()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.store_all()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), s.tasks.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), s.subscriber.quit()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), s.client.quit()).await;
    }
}

/// What a publish script with a retry key answered (see `Scripts::publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Published (or no subscribers).
    Published,
    /// A repeat of a publish that was done: nothing published.
    Repeat,
    /// This name had it; the node that published it stopped before the other names.
    HadIt,
}

impl Answer {
    fn of(answer: &Value) -> Answer {
        match answer {
            Value::Integer(-1) => Answer::Repeat,
            Value::Integer(-2) => Answer::HadIt,
            _ => Answer::Published,
        }
    }
}
