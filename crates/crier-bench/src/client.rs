//! The Bayeux driver: one task per client, each owning its socket or HTTP loop.
//!
//! A client handshakes, makes its first connect with `advice.timeout: 0` (so Faye, which
//! would otherwise hold it, answers at once), subscribes if it is a subscriber, and then
//! keeps one `/meta/connect` outstanding for as long as the run lasts, as Faye's client
//! does. Over WebSocket the handshake goes over the socket too, so each client costs one
//! TCP connection. Deliveries are recognised by having `data` and no `successful`.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use reqwest::header::CONTENT_TYPE;
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use crate::stats::{SeqSet, Shared, now_us};
use crate::target::{Target, Ws, open_ws};
use crate::wire::{self, BenchData, Incoming, Publish};

/// How long a setup step (connect, handshake, subscribe) may take.
const SETUP_STEP: Duration = Duration::from_secs(30);
/// Client-side limit on a long-poll (servers hold it for their timeout, 25 s by default).
const POLL_TIMEOUT: Duration = Duration::from_secs(90);
/// Pause before retrying after a failed connect.
const RETRY: Duration = Duration::from_secs(1);
/// Time allowed for the goodbye (`/meta/disconnect` and the close frame).
const GOODBYE: Duration = Duration::from_secs(2);

/// What every client task shares with the run.
pub(crate) struct Ctx {
    pub(crate) shared: Shared,
    /// Ends every client's loop.
    pub(crate) stop: CancellationToken,
    /// Publishers start when this is cancelled; `start` holds the instant.
    pub(crate) go: CancellationToken,
    pub(crate) start: OnceLock<Instant>,
    /// Clients connected now.
    pub(crate) alive: AtomicU64,
    /// Limits how many clients set up at once.
    pub(crate) ramp: Arc<Semaphore>,
}

impl Ctx {
    pub(crate) fn new(ramp: usize) -> Self {
        Ctx {
            shared: Shared::new(),
            stop: CancellationToken::new(),
            go: CancellationToken::new(),
            start: OnceLock::new(),
            alive: AtomicU64::new(0),
            ramp: Arc::new(Semaphore::new(ramp)),
        }
    }

    async fn ramp_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.ramp.clone().acquire_owned().await.ok()
    }
}

/// A subscriber's (or idle client's) task description.
pub(crate) struct SubSpec {
    pub(crate) index: usize,
    pub(crate) target: Arc<Target>,
    pub(crate) source: Option<IpAddr>,
    /// `None`: an idle client that only stays connected.
    pub(crate) subscription: Option<String>,
    pub(crate) publishers: usize,
}

/// What a subscriber received.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) ready: bool,
    /// Still connected when the run stopped it.
    pub(crate) connected_at_end: bool,
    /// Sequence numbers received, per publisher.
    pub(crate) per_pub: Vec<SeqSet>,
    pub(crate) duplicates: u64,
    /// Deliveries that were not the bench's (or named an unknown publisher).
    pub(crate) foreign: u64,
    /// When the last new delivery arrived (µs since the epoch).
    pub(crate) last_us: u64,
}

impl Tally {
    fn new(publishers: usize) -> Self {
        Tally { per_pub: vec![SeqSet::default(); publishers], ..Tally::default() }
    }

    /// Records one delivery; a new one adds its latency to `lat`.
    fn record(&mut self, data: &RawValue, rx_us: u64, lat: &mut Vec<u64>) {
        match BenchData::read(data) {
            Some(d) if d.p < self.per_pub.len() => {
                if self.per_pub[d.p].insert(d.s) {
                    lat.push(rx_us.saturating_sub(d.t));
                    self.last_us = rx_us;
                } else {
                    self.duplicates += 1;
                }
            }
            _ => self.foreign += 1,
        }
    }

    /// Records the deliveries of one batch and publishes the counts.
    fn record_batch(&mut self, batch: &[Incoming<'_>], index: usize, shared: &Shared) {
        let rx_us = now_us();
        let mut lat = Vec::new();
        for m in batch {
            if let (false, Some(data)) = (m.is_reply(), m.data) {
                self.record(data, rx_us, &mut lat);
            }
        }
        if !lat.is_empty() {
            shared.delivered.fetch_add(lat.len() as u64, Ordering::Relaxed);
            shared.latency.record_all(index, &lat);
        }
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket sessions

/// One Bayeux session over one WebSocket.
struct WsPeer {
    ws: Ws,
    /// The client id, JSON-quoted.
    cid: String,
    next_id: u64,
    /// When to send the next `/meta/connect`; `None` while one is outstanding.
    connect_at: Option<Instant>,
}

enum Event {
    Text(String),
    Wake,
    Stopped,
    Closed(String),
}

impl WsPeer {
    /// Connects, handshakes, makes the first connect and subscribes (if asked).
    async fn open(target: &Target, source: Option<IpAddr>, subscription: Option<&str>) -> anyhow::Result<Self> {
        let mut ws = open_ws(target, source, SETUP_STEP).await?;
        let steps = async {
            ws.send(WsMessage::text(wire::handshake(1, &["websocket", "long-polling"]))).await?;
            let mut cid = None;
            while cid.is_none() {
                let text = recv_text(&mut ws).await?;
                for m in wire::parse_batch(&text)? {
                    if m.channel.as_deref() == Some("/meta/handshake") {
                        anyhow::ensure!(m.successful == Some(true), m.failure());
                        cid = Some(m.client_id.context("handshake reply without clientId")?);
                    }
                }
            }
            let cid = serde_json::to_string(&cid)?;
            ws.send(WsMessage::text(wire::connect(&cid, "websocket", 2, true))).await?;
            if let Some(s) = subscription {
                ws.send(WsMessage::text(wire::subscribe(&cid, s, 3))).await?;
            }
            let (mut connected, mut subscribed) = (false, subscription.is_none());
            while !(connected && subscribed) {
                let text = recv_text(&mut ws).await?;
                for m in wire::parse_batch(&text)? {
                    match m.channel.as_deref() {
                        Some("/meta/connect") => {
                            anyhow::ensure!(m.successful == Some(true), m.failure());
                            connected = true;
                        }
                        Some("/meta/subscribe") => {
                            anyhow::ensure!(m.successful == Some(true), m.failure());
                            subscribed = true;
                        }
                        _ => {}
                    }
                }
            }
            anyhow::Ok(cid)
        };
        let cid = tokio::time::timeout(SETUP_STEP, steps).await.context("setup timed out")??;
        Ok(WsPeer { ws, cid, next_id: 4, connect_at: Some(Instant::now()) })
    }

    /// Waits for a frame, `wake`, `extra`, the next connect's time (then sends it) or stop.
    async fn next_event(
        &mut self,
        wake: Option<Instant>,
        extra: impl Future<Output = ()>,
        stop: &CancellationToken,
    ) -> Event {
        let timer = match (self.connect_at, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => Event::Stopped,
            msg = self.ws.next() => match msg {
                Some(Ok(WsMessage::Text(t))) => Event::Text(t.as_str().to_owned()),
                Some(Ok(WsMessage::Binary(b))) => Event::Text(String::from_utf8_lossy(&b).into_owned()),
                Some(Ok(WsMessage::Close(c))) => Event::Closed(format!("closed by the server: {c:?}")),
                Some(Ok(_)) => Event::Wake,
                Some(Err(e)) => Event::Closed(e.to_string()),
                None => Event::Closed("connection ended".into()),
            },
            _ = extra => Event::Wake,
            _ = sleep_opt(timer) => {
                if self.connect_at.is_some_and(|t| t <= Instant::now()) {
                    self.connect_at = None;
                    let id = self.id();
                    if let Err(e) = self.ws.send(WsMessage::text(wire::connect(&self.cid, "websocket", id, false))).await {
                        return Event::Closed(e.to_string());
                    }
                }
                Event::Wake
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Follows a meta reply. An error means the session is gone.
    fn on_meta(&mut self, m: &Incoming<'_>, shared: &Shared) -> Result<(), String> {
        if m.channel.as_deref() != Some("/meta/connect") {
            return Ok(());
        }
        if m.successful == Some(true) {
            let interval = m.advice.as_ref().and_then(|a| a.interval).unwrap_or(0.0).clamp(0.0, 60_000.0);
            self.connect_at = Some(Instant::now() + Duration::from_secs_f64(interval / 1000.0));
            return Ok(());
        }
        shared.errors.add("connect", m.failure());
        if m.wants_handshake() {
            return Err(m.failure());
        }
        self.connect_at = Some(Instant::now() + RETRY);
        Ok(())
    }

    /// `/meta/disconnect` and a close frame, best effort and bounded.
    async fn goodbye(mut self) {
        let id = self.id();
        let bye = async {
            let _ = self.ws.send(WsMessage::text(wire::disconnect(&self.cid, id))).await;
            let _ = self.ws.close(None).await;
        };
        let _ = tokio::time::timeout(GOODBYE, bye).await;
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The next text frame (pings are answered by tungstenite while reading).
async fn recv_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(WsMessage::Binary(b))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(WsMessage::Close(c))) => bail!("closed by the server: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Opens a WebSocket session within the ramp-up allowance (subscribed to `subscription` if
/// given) and reports readiness; `None` (already reported, error recorded) if it failed or
/// the run stopped meanwhile.
async fn open_session(
    ctx: &Ctx,
    target: &Target,
    source: Option<IpAddr>,
    subscription: Option<&str>,
    index: usize,
    ready: mpsc::Sender<(usize, bool)>,
) -> Option<WsPeer> {
    let permit = ctx.ramp_permit().await;
    let opened = tokio::select! {
        r = WsPeer::open(target, source, subscription) => r,
        _ = ctx.stop.cancelled() => Err(anyhow!("stopped during setup")),
    };
    drop(permit);
    let ok = opened.is_ok();
    if let Err(e) = &opened {
        ctx.shared.errors.add("setup", format!("{e:#}"));
    }
    let _ = ready.send((index, ok)).await;
    opened.ok()
}

/// A WebSocket subscriber or idle client: set up, report readiness, receive until stopped.
pub(crate) async fn ws_subscriber(ctx: Arc<Ctx>, spec: SubSpec, ready: mpsc::Sender<(usize, bool)>) -> Tally {
    let mut tally = Tally::new(spec.publishers);
    let Some(mut peer) =
        open_session(&ctx, &spec.target, spec.source, spec.subscription.as_deref(), spec.index, ready).await
    else {
        return tally;
    };
    tally.ready = true;
    ctx.alive.fetch_add(1, Ordering::Relaxed);
    loop {
        match peer.next_event(None, std::future::pending(), &ctx.stop).await {
            Event::Stopped => {
                tally.connected_at_end = true;
                break;
            }
            Event::Closed(e) => {
                ctx.shared.errors.add("socket", e);
                break;
            }
            Event::Wake => {}
            Event::Text(text) => match wire::parse_batch(&text) {
                Ok(batch) => {
                    tally.record_batch(&batch, spec.index, &ctx.shared);
                    let lost = batch.iter().filter(|m| m.is_meta()).find_map(|m| peer.on_meta(m, &ctx.shared).err());
                    if let Some(e) = lost {
                        ctx.shared.errors.add("session", e);
                        break;
                    }
                }
                Err(e) => ctx.shared.errors.add("protocol", e),
            },
        }
    }
    ctx.alive.fetch_sub(1, Ordering::Relaxed);
    if tally.connected_at_end {
        peer.goodbye().await;
    }
    tally
}

// ---------------------------------------------------------------------------------------
// Long-polling sessions

async fn post(http: &reqwest::Client, target: &Target, body: String, timeout: Duration) -> anyhow::Result<String> {
    let response = http
        .post(&target.http)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(timeout)
        .send()
        .await?
        .error_for_status()?;
    Ok(response.text().await?)
}

/// Handshake, subscribe, first connect over HTTP; returns the JSON-quoted client id.
async fn lp_open(
    http: &reqwest::Client,
    target: &Target,
    subscription: Option<&str>,
    tally: &mut Tally,
    index: usize,
    shared: &Shared,
) -> anyhow::Result<String> {
    let text = post(http, target, wire::handshake(1, &["long-polling"]), SETUP_STEP).await?;
    let batch = wire::parse_batch(&text)?;
    let m = batch.iter().find(|m| m.channel.as_deref() == Some("/meta/handshake")).context("no handshake reply")?;
    anyhow::ensure!(m.successful == Some(true), m.failure());
    let cid = serde_json::to_string(m.client_id.as_deref().context("handshake reply without clientId")?)?;
    if let Some(s) = subscription {
        let text = post(http, target, wire::subscribe(&cid, s, 2), SETUP_STEP).await?;
        let batch = wire::parse_batch(&text)?;
        let m = batch.iter().find(|m| m.channel.as_deref() == Some("/meta/subscribe")).context("no subscribe reply")?;
        anyhow::ensure!(m.successful == Some(true), m.failure());
    }
    let text = post(http, target, wire::connect(&cid, "long-polling", 3, true), SETUP_STEP).await?;
    let batch = wire::parse_batch(&text)?;
    tally.record_batch(&batch, index, shared);
    let m = batch.iter().find(|m| m.channel.as_deref() == Some("/meta/connect")).context("no connect reply")?;
    anyhow::ensure!(m.successful == Some(true), m.failure());
    Ok(cid)
}

/// A long-polling subscriber or idle client.
pub(crate) async fn lp_subscriber(
    ctx: Arc<Ctx>,
    spec: SubSpec,
    http: reqwest::Client,
    ready: mpsc::Sender<(usize, bool)>,
) -> Tally {
    let mut tally = Tally::new(spec.publishers);
    let permit = ctx.ramp_permit().await;
    let opened = tokio::select! {
        r = lp_open(&http, &spec.target, spec.subscription.as_deref(), &mut tally, spec.index, &ctx.shared) => r,
        _ = ctx.stop.cancelled() => Err(anyhow!("stopped during setup")),
    };
    drop(permit);
    let cid = match opened {
        Ok(c) => c,
        Err(e) => {
            ctx.shared.errors.add("setup", format!("{e:#}"));
            let _ = ready.send((spec.index, false)).await;
            return tally;
        }
    };
    tally.ready = true;
    ctx.alive.fetch_add(1, Ordering::Relaxed);
    let _ = ready.send((spec.index, true)).await;
    drop(ready);
    let mut id = 3;
    loop {
        id += 1;
        let body = wire::connect(&cid, "long-polling", id, false);
        let result = tokio::select! {
            _ = ctx.stop.cancelled() => { tally.connected_at_end = true; break; }
            r = post(&http, &spec.target, body, POLL_TIMEOUT) => r,
        };
        let mut pause = None;
        match result {
            Ok(text) => match wire::parse_batch(&text) {
                Ok(batch) => {
                    tally.record_batch(&batch, spec.index, &ctx.shared);
                    for m in batch.iter().filter(|m| m.channel.as_deref() == Some("/meta/connect")) {
                        if m.successful != Some(true) {
                            ctx.shared.errors.add("connect", m.failure());
                            if m.wants_handshake() {
                                ctx.alive.fetch_sub(1, Ordering::Relaxed);
                                return tally;
                            }
                            pause = Some(RETRY);
                        } else if let Some(ms) = m.advice.as_ref().and_then(|a| a.interval).filter(|ms| *ms > 0.0) {
                            pause = Some(Duration::from_secs_f64(ms.min(60_000.0) / 1000.0));
                        }
                    }
                }
                Err(e) => {
                    ctx.shared.errors.add("protocol", e);
                    pause = Some(RETRY);
                }
            },
            Err(e) => {
                ctx.shared.errors.add("http", format!("{e:#}"));
                pause = Some(RETRY);
            }
        }
        if let Some(p) = pause {
            tokio::select! {
                _ = ctx.stop.cancelled() => { tally.connected_at_end = true; break; }
                _ = tokio::time::sleep(p) => {}
            }
        }
    }
    ctx.alive.fetch_sub(1, Ordering::Relaxed);
    let _ = post(&http, &spec.target, wire::disconnect(&cid, id + 1), GOODBYE).await;
    tally
}

// ---------------------------------------------------------------------------------------
// Publishers

/// A publisher's task description.
pub(crate) struct PubSpec {
    pub(crate) index: usize,
    pub(crate) target: Arc<Target>,
    pub(crate) source: Option<IpAddr>,
    pub(crate) channel: String,
    /// Messages per second for this publisher; 0: as fast as acknowledgements allow.
    pub(crate) rate: f64,
    /// When this publisher's first message is due, after the common start.
    pub(crate) offset: Duration,
    pub(crate) inflight: usize,
    pub(crate) max_messages: u64,
    pub(crate) duration: Duration,
    pub(crate) drain: Duration,
    pub(crate) padding: Arc<str>,
}

/// What a publisher sent and had acknowledged.
#[derive(Debug, Default)]
pub(crate) struct PubTally {
    pub(crate) ready: bool,
    pub(crate) sent: u64,
    /// Sequence numbers acknowledged with `successful: true`.
    pub(crate) acked: SeqSet,
    /// Sequence numbers answered at all.
    answered: SeqSet,
    pub(crate) failed: u64,
    /// When the last acknowledgement arrived (µs since the epoch).
    pub(crate) last_ack_us: u64,
}

impl PubTally {
    pub(crate) fn unanswered(&self) -> u64 {
        self.sent.saturating_sub(self.answered.len())
    }

    fn inflight(&self) -> usize {
        self.unanswered() as usize
    }

    /// Records a publish reply; false if it was not one we are waiting for.
    fn on_reply(&mut self, seq: u64, ok: bool, detail: impl FnOnce() -> String, shared: &Shared) -> bool {
        if seq >= self.sent || !self.answered.insert(seq) {
            return false;
        }
        self.last_ack_us = now_us();
        if ok {
            self.acked.insert(seq);
        } else {
            self.failed += 1;
            shared.errors.add("publish", detail());
        }
        true
    }
}

/// Decides how many messages a publisher may send now, and when to look again.
struct Pacer {
    start: Instant,
    end: Instant,
    rate: f64,
    window: usize,
    max: u64,
}

impl Pacer {
    fn new(start: Instant, spec: &PubSpec) -> Self {
        Pacer {
            start: start + spec.offset,
            end: start + spec.duration,
            rate: spec.rate,
            window: spec.inflight,
            max: spec.max_messages,
        }
    }

    fn finished(&self, now: Instant, sent: u64) -> bool {
        now >= self.end || sent >= self.max
    }

    /// Messages to send now.
    fn allowance(&self, now: Instant, sent: u64, inflight: usize) -> u64 {
        if self.finished(now, sent) {
            return 0;
        }
        let room = self.window.saturating_sub(inflight) as u64;
        let due = if self.rate > 0.0 {
            if now < self.start {
                return 0;
            }
            let due = ((now - self.start).as_secs_f64() * self.rate).floor() as u64 + 1;
            due.saturating_sub(sent)
        } else {
            u64::MAX
        };
        room.min(due).min(self.max - sent)
    }

    /// When to look again without any reply arriving.
    fn next_wake(&self, sent: u64, inflight: usize) -> Instant {
        if self.rate > 0.0 && inflight < self.window {
            let at = self.start + Duration::from_secs_f64(sent as f64 / self.rate);
            at.min(self.end)
        } else {
            self.end
        }
    }
}

enum PubPhase {
    Waiting,
    Publishing(Pacer),
    Draining(Instant),
}

/// A WebSocket publisher: a session that publishes with acknowledgements.
pub(crate) async fn ws_publisher(ctx: Arc<Ctx>, spec: PubSpec, ready: mpsc::Sender<(usize, bool)>) -> PubTally {
    let mut tally = PubTally::default();
    let Some(mut peer) = open_session(&ctx, &spec.target, spec.source, None, spec.index, ready).await else {
        return tally;
    };
    tally.ready = true;
    let publish = OwnedPublish {
        client_id: Some(peer.cid.clone()),
        channel: spec.channel.clone(),
        publisher: spec.index,
        padding: spec.padding.clone(),
    };
    let mut phase = PubPhase::Waiting;
    loop {
        let now = Instant::now();
        // Move through the phases and send what is due.
        if let PubPhase::Waiting = phase {
            if ctx.go.is_cancelled() {
                phase = PubPhase::Publishing(Pacer::new(*ctx.start.get_or_init(Instant::now), &spec));
            }
        }
        if let PubPhase::Publishing(p) = &phase {
            let n = p.allowance(now, tally.sent, tally.inflight());
            if n > 0 {
                if let Err(e) = send_publishes(&mut peer.ws, &publish, &mut tally, n).await {
                    ctx.shared.errors.add("socket", e);
                    break;
                }
            }
            if p.finished(Instant::now(), tally.sent) {
                phase = PubPhase::Draining(Instant::now() + spec.drain);
            }
        }
        if let PubPhase::Draining(deadline) = phase {
            if tally.inflight() == 0 || Instant::now() >= deadline {
                break;
            }
        }
        let wake = match &phase {
            PubPhase::Waiting => None,
            PubPhase::Publishing(p) => Some(p.next_wake(tally.sent, tally.inflight())),
            PubPhase::Draining(d) => Some(*d),
        };
        let go = async {
            if matches!(phase, PubPhase::Waiting) {
                ctx.go.cancelled().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        match peer.next_event(wake, go, &ctx.stop).await {
            Event::Stopped => break,
            Event::Closed(e) => {
                ctx.shared.errors.add("socket", e);
                break;
            }
            Event::Wake => {}
            Event::Text(text) => match wire::parse_batch(&text) {
                Ok(batch) => {
                    for m in &batch {
                        if m.is_meta() {
                            if let Err(e) = peer.on_meta(m, &ctx.shared) {
                                ctx.shared.errors.add("session", e);
                                return tally;
                            }
                        } else if let (Some(ok), Some(seq)) = (m.successful, m.id()) {
                            tally.on_reply(seq, ok, || m.failure(), &ctx.shared);
                        }
                    }
                }
                Err(e) => ctx.shared.errors.add("protocol", e),
            },
        }
    }
    peer.goodbye().await;
    tally
}

/// A publish template that owns its strings.
struct OwnedPublish {
    client_id: Option<String>,
    channel: String,
    publisher: usize,
    padding: Arc<str>,
}

impl OwnedPublish {
    fn message(&self, seq: u64) -> String {
        Publish {
            client_id: self.client_id.as_deref(),
            channel: &self.channel,
            publisher: self.publisher,
            padding: &self.padding,
        }
        .message(seq, now_us())
    }
}

/// Sends `n` publishes, one message per frame, flushed together.
async fn send_publishes(ws: &mut Ws, publish: &OwnedPublish, tally: &mut PubTally, n: u64) -> Result<(), String> {
    for _ in 0..n {
        let seq = tally.sent;
        let frame = format!("[{}]", publish.message(seq));
        ws.feed(WsMessage::text(frame)).await.map_err(|e| e.to_string())?;
        tally.sent += 1;
    }
    ws.flush().await.map_err(|e| e.to_string())
}

/// A session-less HTTP publisher (one POST per message, up to `inflight` at once).
pub(crate) async fn http_publisher(
    ctx: Arc<Ctx>,
    spec: PubSpec,
    http: reqwest::Client,
    ready: mpsc::Sender<(usize, bool)>,
) -> PubTally {
    let mut tally = PubTally { ready: true, ..PubTally::default() };
    let _ = ready.send((spec.index, true)).await;
    drop(ready);
    tokio::select! {
        _ = ctx.go.cancelled() => {}
        _ = ctx.stop.cancelled() => return tally,
    }
    let pacer = Pacer::new(*ctx.start.get_or_init(Instant::now), &spec);
    let publish = OwnedPublish {
        client_id: None,
        channel: spec.channel.clone(),
        publisher: spec.index,
        padding: spec.padding.clone(),
    };
    let mut pending = FuturesUnordered::new();
    let mut deadline = None;
    loop {
        let now = Instant::now();
        for _ in 0..pacer.allowance(now, tally.sent, tally.inflight()) {
            let seq = tally.sent;
            let body = format!("[{}]", publish.message(seq));
            let (http, target) = (&http, &spec.target);
            pending.push(async move { (seq, post(http, target, body, SETUP_STEP).await) });
            tally.sent += 1;
        }
        if pacer.finished(Instant::now(), tally.sent) {
            let d = *deadline.get_or_insert(Instant::now() + spec.drain);
            if pending.is_empty() || Instant::now() >= d {
                break;
            }
        }
        let wake = deadline.unwrap_or_else(|| pacer.next_wake(tally.sent, tally.inflight()));
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            Some((seq, r)) = pending.next(), if !pending.is_empty() => match r {
                Ok(text) => match wire::parse_batch(&text) {
                    Ok(batch) => {
                        let reply = batch.iter().find(|m| m.id() == Some(seq) && m.successful.is_some());
                        let ok = reply.is_some_and(|m| m.successful == Some(true));
                        let detail = || reply.map_or_else(|| format!("no reply to publish {seq}: {text}"), Incoming::failure);
                        tally.on_reply(seq, ok, detail, &ctx.shared);
                    }
                    Err(e) => {
                        tally.on_reply(seq, false, || format!("publish {seq}: bad reply: {e}"), &ctx.shared);
                    }
                },
                Err(e) => {
                    tally.on_reply(seq, false, || format!("publish {seq}: {e:#}"), &ctx.shared);
                }
            },
            _ = sleep_until(wake) => {}
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_publisher_starts_at_its_offset() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let p = Pacer { start: t0 + ms(50), end: t0 + ms(1000), rate: 10.0, window: 16, max: u64::MAX };
        assert_eq!(p.allowance(t0, 0, 0), 0, "nothing before the offset");
        assert_eq!(p.next_wake(0, 0), t0 + ms(50));
        assert_eq!(p.allowance(t0 + ms(50), 0, 0), 1);
        assert_eq!(p.allowance(t0 + ms(149), 1, 0), 0);
        assert_eq!(p.allowance(t0 + ms(150), 1, 0), 1, "then every 1/rate seconds");
        assert_eq!(p.allowance(t0 + ms(1000), 9, 0), 0, "the common end");
    }
}
