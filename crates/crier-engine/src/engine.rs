//! The engine: routes each message of a batch to its handler, runs the extensions pipeline,
//! owns the sessions attached to this node and the background sweep for expired sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crier_protocol::{BayeuxError, ClientId, Message, meta};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backend::{Backend, Touched};
use crate::backlog::Backlogs;
use crate::clock::Clock;
use crate::config::EngineConfig;
use crate::context::RequestContext;
use crate::delivery::Outgoing;
use crate::events::Event;
use crate::extension::{Extension, Pipeline, Verdict};
use crate::held::{HeldConnect, SocketReplies};
use crate::hub::Hub;
use crate::meta::connect::{Connected, Held};
use crate::metrics::Metrics;
use crate::pump::Pump;
use crate::session::Session;
use crate::turn::{Passed, Turn};

/// Sweeps one interval may run back to back while each finds a full batch of expired
/// sessions ([`crate::backend::SWEEP_BATCH`]): up to 20,000 a node per interval.
const SWEEP_ROUNDS: usize = 20;

/// Messages of one batch handled at once (started and not yet answered). With a
/// WebSocket's frames in flight (32), it bounds one socket's publishes in flight.
const BATCH_IN_FLIGHT: usize = 32;

/// Builds an [`Engine`].
pub struct EngineBuilder {
    config: EngineConfig,
    backend: Arc<dyn Backend>,
    extensions: Vec<Arc<dyn Extension>>,
}

impl EngineBuilder {
    /// Adds an extension; extensions run in the order they were added.
    pub fn extension(mut self, e: Arc<dyn Extension>) -> Self {
        self.extensions.push(e);
        self
    }

    /// Starts the engine (its sweep task runs on the current tokio runtime).
    pub fn build(self) -> Engine {
        let metrics = Arc::new(Metrics::default());
        let backlogs = Arc::new(Backlogs::new(self.config.publish_wait(), self.config.max_queue, metrics.clone()));
        let hub = Arc::new(Hub::new(self.config.max_queue, self.config.overflow, metrics.clone(), backlogs));
        self.backend.bind(hub.clone());
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            config: self.config,
            backend: self.backend,
            hub,
            pipeline: Pipeline::new(self.extensions),
            clock: Clock::new(),
            metrics,
            events,
            // A random start makes ids from different nodes of a cluster distinct in practice
            // (ranges of 2^63 / publishes-per-node-lifetime), with no coordination.
            seq: AtomicU64::new(rand::random::<u64>() >> 1),
            shutdown: CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            tasks: TaskTracker::new(),
            session_locks: crate::session_locks::SessionLocks::default(),
            counted: parking_lot::Mutex::new(None),
        });
        let sweeper = inner.clone();
        inner.tasks.spawn(async move { sweeper.sweep_loop().await });
        inner.tasks.spawn(inner.clone().heartbeat_loop());
        if inner.config.event_channels {
            let rx = inner.events.subscribe();
            inner.tasks.spawn(inner.clone().event_channel_loop(rx));
        }
        Engine { inner }
    }
}

/// The Bayeux engine. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) pipeline: Pipeline,
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) seq: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    /// Mirrors `shutdown` for the delivery path (`is_cancelled` takes the token's mutex,
    /// which every socket would share).
    draining: std::sync::atomic::AtomicBool,
    pub(crate) tasks: TaskTracker,
    /// Serialises a session's subscribes and unsubscribes on this node (the limit check).
    pub(crate) session_locks: crate::session_locks::SessionLocks,
    /// The cluster-stats API's channel and subscription counts, and when they were taken:
    /// reused for a stats interval (counting reads every channel).
    pub(crate) counted: parking_lot::Mutex<Option<crate::admin::Counted>>,
}

impl Engine {
    /// Starts building an engine on `backend`.
    pub fn builder(config: EngineConfig, backend: Arc<dyn Backend>) -> EngineBuilder {
        EngineBuilder { config, backend, extensions: Vec::new() }
    }

    /// Handles one batch (an HTTP body or a WebSocket frame) and returns the reply array:
    /// every reply, and for a long-poll connect the messages delivered with it.
    ///
    /// A `/meta/connect` may be held (up to the timeout) until messages arrive, so the
    /// future may take that long. Messages other than connects are handled first, in order,
    /// so that a connect batched with a subscribe and a publish returns what they caused.
    pub fn process<'a>(
        &'a self,
        batch: Vec<Message>,
        ctx: &'a RequestContext,
    ) -> impl Future<Output = Vec<Outgoing>> + Send + 'a {
        // Not an async fn around the call: that would keep the arguments in a second
        // future, and a held long-poll keeps this one.
        self.process_in_turn(batch, ctx, Turn::none())
    }

    /// [`Engine::process`] for a batch that must take effect after the client's batches
    /// before it and before the ones after it: `turn` passes once this batch's messages
    /// are in order (see [`Turn`]). Within the batch the same rule holds: each message
    /// starts once the one before it passed its turn, so a batch of publishes waits for
    /// one backend round trip, not one per publish. The replies keep the batch's order.
    pub async fn process_in_turn(&self, batch: Vec<Message>, ctx: &RequestContext, mut turn: Turn) -> Vec<Outgoing> {
        let batched = batch.len() > 1;
        let has_connect = batch.iter().any(|m| m.channel() == Some(meta::CONNECT));
        if !has_connect {
            if batched {
                // Boxed (batches are rare next to single messages): a held long-poll keeps
                // this future.
                return Box::pin(self.handle_in_turn(batch, ctx, turn)).await;
            }
            let Some(m) = batch.into_iter().next() else { return Vec::new() };
            return self.inner.handle(m, ctx, false, &mut turn).await;
        }
        let (connects, others): (Vec<Message>, Vec<Message>) =
            batch.into_iter().partition(|m| m.channel() == Some(meta::CONNECT));
        // A connect returns what the batch's other messages caused: they finish first. The
        // turn passes with theirs: the connect itself is not ordered with later batches
        // (a lone one runs beside them).
        let mut out = if others.is_empty() {
            turn.pass();
            Vec::with_capacity(connects.len())
        } else {
            Box::pin(self.handle_in_turn(others, ctx, std::mem::take(&mut turn))).await
        };
        for m in connects {
            out.extend(self.inner.handle(m, ctx, batched, &mut turn).await);
        }
        out
    }

    /// Handles `batch` (no connects, part of a batch of several messages) message after
    /// message, each starting once the one before passed its turn, at most
    /// [`BATCH_IN_FLIGHT`] at a time; the last one holds `turn`. The replies come in the
    /// batch's order.
    async fn handle_in_turn(&self, batch: Vec<Message>, ctx: &RequestContext, turn: Turn) -> Vec<Outgoing> {
        let last = batch.len().saturating_sub(1);
        let mut turn = Some(turn);
        let mut before: Option<Passed> = None;
        // Made as they are started (`buffered` asks for the next only when it has room), so
        // a batch of `limits.max_batch` messages does not hold as many futures at once.
        let running = futures::stream::iter(batch.into_iter().enumerate())
            .map(|(i, m)| {
                let (mut mine, passed) = if i == last {
                    (turn.take().unwrap_or_default(), None)
                } else {
                    let (t, p) = Turn::pair();
                    (t, Some(p))
                };
                let wait = std::mem::replace(&mut before, passed);
                async move {
                    if let Some(wait) = wait {
                        wait.await;
                    }
                    self.inner.handle(m, ctx, true, &mut mine).await
                }
            })
            .buffered(BATCH_IN_FLIGHT);
        let mut out = Vec::with_capacity(last + 1);
        futures::pin_mut!(running);
        while let Some(replies) = running.next().await {
            out.extend(replies);
        }
        out
    }

    /// [`Engine::process`] for a socket: a lone `/meta/connect` that is to be held comes
    /// back as a [`HeldConnect`] instead of being held inside this future, so what a socket
    /// keeps for its whole hold is that data (and a small [`HeldConnect::interrupted`] future).
    /// `turn` as in [`Engine::process_in_turn`].
    pub async fn process_socket(&self, mut batch: Vec<Message>, ctx: &RequestContext, turn: Turn) -> SocketReplies {
        if batch.len() == 1 && batch[0].channel() == Some(meta::CONNECT) {
            let m = batch.remove(0);
            return match self.inner.handle_with(m, ctx, false, true, &mut Turn::none()).await {
                Handled::Replies(r) => SocketReplies::Now(r),
                Handled::Held(held, identity) => {
                    SocketReplies::Held(Box::new(HeldConnect { inner: self.inner.clone(), held, identity }))
                }
            };
        }
        SocketReplies::Now(self.process_in_turn(batch, ctx, turn).await)
    }

    /// A pump that delivers a session's messages to a socket (WebSocket or EventSource), or
    /// `None` if no such session exists. No state is created for an unknown id.
    pub async fn pump(&self, client_id: &str, ctx: &RequestContext) -> Option<Pump> {
        let id = ClientId::parse(client_id)?;
        // A copy already here may be stale (a socket opened on a node that missed a move must
        // not drain it), so it is checked; one attached now is current. If the backend cannot
        // say, the copy serves (as before this check); the socket's connect reports the failure.
        let session = match self.inner.hub.get(&id) {
            Some(here) => match self.inner.current(here.clone()).await {
                Ok(Some((current, _))) => current,
                Ok(None) => return None,
                Err(_) => here,
            },
            None => self.inner.session(&id).await.ok()??,
        };
        Some(Pump::new(self.inner.clone(), session, ctx.clone()))
    }

    /// Monitoring events (handshake, subscribe, unsubscribe, publish, disconnect).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The engine's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Number of sessions attached to this node.
    pub fn attached_sessions(&self) -> usize {
        self.inner.hub.len()
    }

    /// Starts draining: held connects return at once (with `retry` advice, so clients
    /// reconnect, to another node behind a load balancer), new connects are not held, and
    /// pumps stop.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.shutdown.cancel();
        self.inner.hub.close_all();
    }

    /// Whether [`Engine::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Drains, then waits for the engine's background tasks to finish and lets the backend
    /// stop its own (storing delivery positions it still holds).
    pub async fn close(&self) {
        self.drain();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.backend.close().await;
    }

    /// Whether the backend can serve requests (`/readyz`).
    pub async fn backend_ready(&self) -> bool {
        self.inner.backend.ready().await
    }

    /// The backend's and the extensions' counters and gauges, for `/metrics`.
    pub fn backend_metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        let mut v = self.inner.backend.metrics();
        v.extend(self.inner.pipeline.metrics());
        v
    }

    /// Runs one expiry sweep now (the background task runs it periodically).
    pub async fn sweep(&self) -> usize {
        self.inner.sweep().await
    }
}

/// What handling one message came to.
pub(crate) enum Handled {
    Replies(Vec<Outgoing>),
    /// A detached connect, with the identity its outgoing extensions will see.
    Held(Held, Option<Arc<crate::context::Identity>>),
}

impl Inner {
    /// Handles one message: incoming extensions, the handler, outgoing extensions.
    async fn handle(&self, m: Message, ctx: &RequestContext, batched: bool, turn: &mut Turn) -> Vec<Outgoing> {
        match self.handle_with(m, ctx, batched, false, turn).await {
            Handled::Replies(r) => r,
            // Not asked for; answered here all the same.
            Handled::Held(h, identity) => self.finish_connect(&h, identity, ctx).await,
        }
    }

    /// [`Inner::handle`], where a socket's connect that is to be held may come back as data
    /// (`detach`), with the identity its outgoing extensions will see. A publish may pass
    /// `turn` before it is answered (see [`Turn`]); anything else holds it to the end.
    pub(crate) async fn handle_with(
        &self,
        mut m: Message,
        ctx: &RequestContext,
        batched: bool,
        detach: bool,
        turn: &mut Turn,
    ) -> Handled {
        let with_identity;
        let ctx = if self.pipeline.wants_identity() && m.channel() != Some(meta::HANDSHAKE) {
            with_identity = RequestContext { identity: self.identity_of(&m).await, ..ctx.clone() };
            &with_identity
        } else {
            ctx
        };
        if self.pipeline.incoming(&mut m, ctx).await == Verdict::Drop {
            return Handled::Replies(Vec::new());
        }
        let channel = m.channel().unwrap_or("").to_owned();
        let replies: Vec<Outgoing> = if channel == "/meta" || channel.starts_with("/meta/") {
            match channel.as_str() {
                meta::HANDSHAKE => {
                    let span = tracing::info_span!("handshake", client_id = tracing::field::Empty);
                    let r = self.handshake(&m, ctx).instrument(span.clone()).await;
                    if let Some(id) = r.client_id() {
                        span.record("client_id", id);
                    }
                    vec![Outgoing::Message(r)]
                }
                meta::CONNECT => match self.connect(m, ctx, batched, detach).await {
                    Connected::Replies(r) => r,
                    Connected::Held(h) => return Handled::Held(h, ctx.identity.clone()),
                },
                meta::SUBSCRIBE => vec![Outgoing::Message(self.subscribe(&m, ctx, true).await)],
                meta::UNSUBSCRIBE => vec![Outgoing::Message(self.subscribe(&m, ctx, false).await)],
                meta::DISCONNECT => vec![Outgoing::Message(self.disconnect(&m).await)],
                // Exact matching only: `/meta/subscribe/x` is not `/meta/subscribe` (CVE-2020-11020).
                _ => {
                    let mut r = m.response();
                    r.fail(BayeuxError::forbidden(&channel));
                    vec![Outgoing::Message(r)]
                }
            }
        } else {
            let span = tracing::info_span!("publish", channel = channel.as_str(), client_id = m.client_id());
            // Boxed: the largest handler's future, and every held long-poll's `process`
            // future would otherwise be as large as it (one allocation per publish).
            vec![Outgoing::Message(Box::pin(self.publish(m, ctx, turn)).instrument(span).await)]
        };
        Handled::Replies(self.outgoing_replies(replies, ctx).await)
    }

    /// Waits out a detached connect and answers it through the outgoing extensions.
    pub(crate) async fn finish_connect(
        &self,
        h: &Held,
        identity: Option<Arc<crate::context::Identity>>,
        ctx: &RequestContext,
    ) -> Vec<Outgoing> {
        self.wait_held(h).await;
        // Boxed: runs once per answer, and inline it would enlarge the waiting state.
        Box::pin(self.answer_connect(h, identity, ctx)).await
    }

    pub(crate) async fn answer_connect(
        &self,
        h: &Held,
        identity: Option<Arc<crate::context::Identity>>,
        ctx: &RequestContext,
    ) -> Vec<Outgoing> {
        let replies = self.answer_held(h).await;
        let ctx = RequestContext { identity, ..ctx.clone() };
        self.outgoing_replies(replies, &ctx).await
    }

    /// Runs the outgoing extensions over replies (and counts the failed ones).
    async fn outgoing_replies(&self, replies: Vec<Outgoing>, ctx: &RequestContext) -> Vec<Outgoing> {
        let mut out = Vec::with_capacity(replies.len());
        for item in replies {
            match item {
                Outgoing::Message(mut r) => {
                    if r.successful() == Some(false) {
                        Metrics::inc(&self.metrics.errors);
                    }
                    if self.pipeline.outgoing(&mut r, ctx).await == Verdict::Pass {
                        out.push(Outgoing::Message(r));
                    }
                }
                Outgoing::Delivery(d) => {
                    if let Some(o) = self.outgoing_delivery(d, ctx).await {
                        out.push(o);
                    }
                }
            }
        }
        out
    }

    /// Runs outgoing extensions on a delivery for one recipient. Without outgoing
    /// extensions the shared encoding is used as is.
    pub(crate) async fn outgoing_delivery(
        &self,
        d: Arc<crate::delivery::Delivery>,
        ctx: &RequestContext,
    ) -> Option<Outgoing> {
        if !self.pipeline.has_outgoing() {
            return Some(Outgoing::Delivery(d));
        }
        let mut m = d.message.clone();
        (self.pipeline.outgoing(&mut m, ctx).await == Verdict::Pass).then_some(Outgoing::Message(m))
    }

    /// The session attached here, attaching it if the backend knows it (a session created
    /// on another node, or before this node restarted): the backend then queues what the
    /// session missed elsewhere before this returns. `Ok(None)`: unknown session.
    pub(crate) async fn session(&self, id: &ClientId) -> Result<Option<Arc<Session>>, crate::BackendError> {
        if let Some(s) = self.hub.get(id) {
            return Ok(Some(s));
        }
        if !self.backend.session_exists(id).await? {
            return Ok(None);
        }
        let s = self.attach(id).await?;
        // Its first connect was answered on the node that handshook it; answering every
        // node's "first" connect at once would make long-pollers behind a round-robin
        // balancer spin instead of waiting.
        s.mark_connected();
        Ok(Some(s))
    }

    /// Attaches a session to this node (the hub first, so what the backend bridges finds it).
    /// If the backend fails, or the request goes away meanwhile (its client closed the
    /// connection), the session leaves the hub again: left there without the backend's
    /// half, later requests here would find it and never attach it.
    pub(crate) async fn attach(&self, id: &ClientId) -> Result<Arc<Session>, crate::BackendError> {
        struct Undo<'a> {
            inner: &'a Inner,
            id: &'a ClientId,
            armed: bool,
        }
        impl Drop for Undo<'_> {
            fn drop(&mut self) {
                if self.armed {
                    self.inner.detach(self.id);
                }
            }
        }
        let s = self.hub.attach(id);
        let mut undo = Undo { inner: self, id, armed: true };
        self.backend.attach(id).await?;
        undo.armed = false;
        Ok(s)
    }

    /// Refreshes an attached session's liveness before it delivers, and makes sure it is
    /// this node's to deliver: `Ok(None)` if it no longer exists; the session attached
    /// afresh (and `true`) if another node took it and this node had not heard yet, since
    /// what is queued here may have gone out there. Attaching it again resumes from what
    /// that node recorded as sent, and tells that node to let go.
    pub(crate) async fn current(
        &self,
        mut session: Arc<Session>,
    ) -> Result<Option<(Arc<Session>, bool)>, crate::BackendError> {
        let mut moved = false;
        // The fresh copy is checked too: the session may have been destroyed (its attach
        // then registers nothing, and the copy would wait here for messages forever) or
        // taken again meanwhile. Bounded: a session pulled back and forth this fast goes on
        // with the copy it has.
        for _ in 0..3 {
            match self.backend.touch(&session.id, self.clock.now()).await? {
                Touched::Here if !session.is_closed() => return Ok(Some((session, moved))),
                // `Here` for a closed copy: another request here found it stale and attached
                // the session afresh. `Elsewhere`: the backend let go of it (not a detach:
                // this node is not its node).
                Touched::Here | Touched::Elsewhere => {
                    self.hub.remove_copy(&session);
                    let Some(fresh) = self.session(&session.id).await? else { return Ok(None) };
                    (session, moved) = (fresh, true);
                }
                Touched::Gone => {
                    self.detach(&session.id);
                    return Ok(None);
                }
            }
        }
        Ok(Some((session, moved)))
    }

    /// Drops a session from this node only (it lives on in the backend).
    pub(crate) fn detach(&self, id: &ClientId) {
        self.hub.remove(id);
        self.backend.detach(id);
    }

    /// The known session named by a message's `clientId`, without attaching it here:
    /// subscribe, unsubscribe and disconnect may reach any node, and must not move the
    /// session away from the node that holds its connect.
    pub(crate) async fn client_of(&self, m: &Message) -> Result<Option<ClientId>, BayeuxError> {
        let Some(id) = m.client_id().and_then(ClientId::parse) else { return Ok(None) };
        if self.hub.get(&id).is_some() {
            return Ok(Some(id));
        }
        match self.backend.session_exists(&id).await {
            Ok(true) => Ok(Some(id)),
            Ok(false) => Ok(None),
            Err(e) => Err(self.backend_failure(&e)),
        }
    }

    /// The identity of the session a message names (cached on the attached session; read
    /// from the backend for sessions attached elsewhere). `None` if unknown or anonymous.
    pub(crate) async fn identity_of(&self, m: &Message) -> Option<Arc<crate::context::Identity>> {
        let id = m.client_id().and_then(ClientId::parse)?;
        let local = self.hub.get(&id);
        if let Some(s) = &local
            && let Some(i) = s.identity.lock().clone()
        {
            return Some(i);
        }
        let found = match self.backend.identity(&id).await {
            Ok(i) => i.map(Arc::new),
            Err(e) => {
                Metrics::inc(&self.metrics.backend_errors);
                tracing::warn!(client_id = %id, error = %e, "reading a session's identity failed");
                None
            }
        };
        if let (Some(s), Some(i)) = (&local, &found) {
            *s.identity.lock() = Some(i.clone());
        }
        found
    }

    pub(crate) fn backend_failure(&self, e: &crate::BackendError) -> BayeuxError {
        Metrics::inc(&self.metrics.backend_errors);
        crate::meta::backend_error(e)
    }

    pub(crate) fn emit(&self, e: Event) {
        // No receivers is fine: events are for whoever listens.
        let _ = self.events.send(e);
    }

    /// Waits, before a publish of a client or of the HTTP API, while this node has fallen
    /// behind on a socket's session ([`Backlogs`]) and while the backend asks publishers to
    /// wait ([`Backend::admit`]). Each wait is bounded by its own setting.
    pub(crate) async fn admit(&self) {
        if let Some(w) = self.hub.backlogs().wait().await {
            Metrics::inc(&self.metrics.publish_waits);
            let ms = u64::try_from(w.time.as_millis()).unwrap_or(u64::MAX);
            self.metrics.publish_wait_ms.fetch_add(ms, Ordering::Relaxed);
            if w.gave_up {
                Metrics::inc(&self.metrics.publish_wait_timeouts);
            }
        }
        self.backend.admit().await;
    }

    /// Whether the engine is draining (lock-free).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Records publish-to-client latency for deliveries about to be sent.
    pub(crate) fn observe_latency(&self, items: &[Arc<crate::delivery::Delivery>]) {
        let now = self.clock.now();
        for d in items {
            self.metrics.delivery_latency.observe_ms(now.saturating_sub(d.published_ms));
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Destroys a session everywhere; fires the unsubscribe and disconnect events once, and
    /// takes the session out of its user's presence.
    pub(crate) async fn destroy(&self, id: &ClientId) -> Result<bool, crate::BackendError> {
        let removed = self.backend.destroy_session(id).await?;
        self.detach(id);
        let Some(subs) = removed else { return Ok(false) };
        self.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
        let mut user = None;
        let mut counted = 0;
        for p in subs {
            if crate::users::is_reserved(&p) {
                user = user.or_else(|| crate::users::user_of_name(&p));
                continue;
            }
            counted += 1;
            self.emit(Event::Unsubscribe(id.clone(), p));
        }
        self.metrics.subscriptions.fetch_sub(counted, Ordering::Relaxed);
        if let Some(user) = user {
            match self.backend.user_left(&user, id, self.clock.now()).await {
                Ok(Some(change)) => self.emit(Event::Presence(change)),
                Ok(None) => {}
                Err(e) => {
                    Metrics::inc(&self.metrics.backend_errors);
                    tracing::warn!(client_id = %id, error = %e, "updating presence of a destroyed session failed");
                }
            }
        }
        self.emit(Event::Disconnect(id.clone()));
        Ok(true)
    }

    /// Sweeps expired sessions; returns how many this node destroyed. A full batch means
    /// more are waiting (a flood of abandoned handshakes): it sweeps again at once rather
    /// than a batch per interval, within bounds.
    async fn sweep(&self) -> usize {
        let mut destroyed = 0;
        for _ in 0..SWEEP_ROUNDS {
            let (found, n) = self.sweep_once().await;
            destroyed += n;
            if found < crate::backend::SWEEP_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        destroyed
    }

    /// One sweep: how many expired sessions the backend returned, and how many of them
    /// this node destroyed (another node may have taken some).
    async fn sweep_once(&self) -> (usize, usize) {
        let cutoff = self.clock.now().saturating_sub(self.config.session_lifetime().as_millis() as u64);
        let expired = match self.backend.expired_sessions(cutoff).await {
            Ok(v) => v,
            Err(e) => {
                Metrics::inc(&self.metrics.backend_errors);
                tracing::warn!(error = %e, "session sweep failed");
                return (0, 0);
            }
        };
        let found = expired.len();
        // Ghost sessions in users' presence (see `heal_user`), a bounded sample per sweep.
        match self.backend.online_user_sample(100).await {
            Ok(users) => {
                for u in users {
                    if let Err(e) = self.heal_user(&u).await {
                        tracing::debug!(error = %e, "presence pruning failed");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence sample failed"),
        }
        let mut n = 0;
        for id in expired {
            match self.destroy(&id).await {
                Ok(true) => {
                    n += 1;
                    Metrics::inc(&self.metrics.sessions_expired);
                    tracing::debug!(client_id = %id, "session expired");
                }
                Ok(false) => {}
                Err(e) => {
                    Metrics::inc(&self.metrics.backend_errors);
                    tracing::warn!(client_id = %id, error = %e, "destroying expired session failed");
                }
            }
        }
        (found, n)
    }

    async fn sweep_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.sweep_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => { self.sweep().await; }
            }
        }
    }
}
