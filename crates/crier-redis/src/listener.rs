//! The node's background tasks: the pub/sub listener (live messages, control messages from
//! other nodes, pressure announcements, reconnects and lag), the runtime-lag ticker (which
//! also repeats this node's pressure announcements), the periodic store of delivery
//! positions, and the liveness probe of the pub/sub connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crier_protocol::{ChannelPattern, ClientId};
use fred::prelude::*;
use fred::types::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::backend::Shared;
use crate::codec::decode_payload;
use crate::metrics::RedisMetrics;
use crate::pressure::{Announcement, Gauge, HOLD, REPEAT};
use crate::values::text;

/// How often the runtime's lag is measured (see `pressure`).
const LAG_TICK: Duration = Duration::from_millis(50);
/// Longest the listener waits to announce a change itself; the lag ticker says the current
/// state on its next tick anyway.
const ANNOUNCE_INLINE: Duration = Duration::from_millis(250);

pub(crate) fn start(shared: &Arc<Shared>) {
    let mut messages = shared.subscriber.message_rx();
    let mut reconnects = shared.subscriber.reconnect_rx();
    let mut client_reconnects = shared.client.reconnect_rx();
    let this = shared.clone();
    let watch_backlog = shared.config.backpressure_backlog > 0;
    shared.tasks.spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = this.shutdown.cancelled() => return,
                m = messages.recv() => match m {
                    Ok(m) => {
                        this.on_message(m);
                        // What is left is this node's backlog (the buffer's lock, once per
                        // message; the fan-out of the message just handled costs far more).
                        // The listener announces a change itself: a task it woke could wait
                        // behind it on this worker for as long as it keeps finding messages,
                        // which is exactly while it is behind. Bounded, and skipped if the
                        // ticker is announcing: it says the current state on its next tick.
                        if watch_backlog && this.observe(|g| g.backlog(messages.len())) {
                            let _ = tokio::time::timeout(ANNOUNCE_INLINE, this.announce_pressure(false)).await;
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Messages were dropped between Redis and the fan-out: the logs have them.
                        RedisMetrics::inc(&this.metrics.pubsub_lagged);
                        tracing::warn!(skipped = n, "pub/sub fan-out fell behind; re-reading logs");
                        this.start_recover(false);
                    }
                    Err(RecvError::Closed) => return,
                },
                r = reconnects.recv() => match r {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        tracing::info!("redis pub/sub reconnected; resubscribing and re-reading logs");
                        this.start_recover(true);
                    }
                    Err(RecvError::Closed) => return,
                },
                // The command connection may come back first (after a restart or failover):
                // restore what Redis lost before clients ask for it.
                r = client_reconnects.recv() => match r {
                    Ok(_) | Err(RecvError::Lagged(_)) => this.start_recover(false),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });

    // The runtime's lag: how late this timer fires. It also repeats the node's announcement
    // while it is pressured, and retracts it at shutdown.
    let this = shared.clone();
    shared.tasks.spawn(async move {
        let mut tick = tokio::time::interval(LAG_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut before = Duration::ZERO;
        loop {
            tokio::select! {
                _ = this.shutdown.cancelled() => {
                    // Publishes here go ahead; the others hear `off` (announcements made
                    // after the cancel say `off` too, see `announce_pressure`).
                    this.observe(Gauge::release);
                    let _ = tokio::time::timeout(Duration::from_secs(1), this.announce_pressure(true)).await;
                    return;
                }
                due = tick.tick() => {
                    // The lesser of the last two: one late tick is a hiccup (a VM's stolen
                    // time), two in a row a saturated runtime.
                    let late = due.elapsed();
                    let lag = late.min(before);
                    before = late;
                    this.observe(|g| g.lag(lag));
                    // Every tick: repeats `on` while pressured, and says a change the
                    // listener could not.
                    this.announce_pressure(true).await;
                }
            }
        }
    });

    let this = shared.clone();
    shared.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(this.config.cursor_flush_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = this.shutdown.cancelled() => return,
                _ = tick.tick() => this.flush().await,
            }
        }
    });

    // Probe the pub/sub connection: a PING that gets no answer trips fred's unresponsive
    // check, which replaces the connection (and the reconnect handler above recovers).
    let this = shared.clone();
    shared.tasks.spawn(async move {
        let every = Duration::from_secs(this.config.ping_interval_secs);
        loop {
            tokio::select! {
                _ = this.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {
                    if this.subscriber.is_connected()
                        && let Err(e) = this.subscriber.ping::<Value>(None).await
                    {
                        tracing::warn!(error = %e, "redis pub/sub liveness probe failed");
                    }
                }
            }
        }
    });

    // Probe the command connection too. fred's unresponsive check measures from the last
    // write, and commands from many tasks (marks, connects, publishes) keep writing, so a
    // connection that answers nothing at all (a network path gone silent, both ends still
    // open) would never be replaced: every command would time out until the kernel gave up
    // on it, a quarter of an hour later. Two PINGs in a row unanswered for three probe
    // intervals each (a Redis that is only slow answers within that) replace it; its
    // reconnect handler above then recovers the sessions. Not on Redis Cluster: there
    // fred's reconnect keeps every connection without a read error, so it would mend
    // nothing (a silent shard connection is left to fred's own check and the kernel).
    if !shared.client.is_clustered() {
        let this = shared.clone();
        shared.tasks.spawn(async move {
            let every = Duration::from_secs(this.config.ping_interval_secs);
            let probe = Options { timeout: Some(every * 3), max_attempts: Some(1), ..Options::default() };
            let mut unanswered = 0;
            loop {
                tokio::select! {
                    _ = this.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {
                        if !this.client.is_connected() {
                            unanswered = 0;
                            continue;
                        }
                        let answer = this.client.with_options(&probe).ping::<Value>(None).await;
                        match answer {
                            Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => unanswered += 1,
                            _ => unanswered = 0,
                        }
                        if unanswered >= 2 && !this.shutdown.is_cancelled() {
                            unanswered = 0;
                            RedisMetrics::inc(&this.metrics.silent_reconnects);
                            tracing::warn!("redis command connection answers nothing; reconnecting");
                            if let Err(e) = this.client.force_reconnection().await {
                                tracing::warn!(error = %e, "reconnecting to redis failed");
                            }
                        }
                    }
                }
            }
        });
    }
}

impl Shared {
    fn on_message(self: &Arc<Self>, m: fred::types::Message) {
        let Some(payload) = text(&m.value) else {
            RedisMetrics::inc(&self.metrics.malformed);
            return;
        };
        if let Some(name) = self.keys.name_of(&m.channel) {
            RedisMetrics::inc(&self.metrics.pubsub_messages);
            let Some(d) = ChannelPattern::parse(name).ok().and_then(|n| decode_payload(&n, &payload)) else {
                RedisMetrics::inc(&self.metrics.malformed);
                return;
            };
            let (recipients, dropped) = self.local.lock().on_live(&d);
            RedisMetrics::add(&self.metrics.pending_dropped, dropped);
            if !recipients.is_empty()
                && let Some(sink) = self.sink()
            {
                sink.deliver(&recipients, &d);
            }
        } else if *m.channel == *self.keys.pressure() {
            match Announcement::parse(&payload) {
                // This node's own state is kept apart (`observe`): its announcements
                // come back late, through the backlog they are about.
                Some(Announcement::On { node, .. } | Announcement::Off { node }) if node == self.node => {}
                Some(a) => self.heard(a),
                None => RedisMetrics::inc(&self.metrics.malformed),
            }
        } else if *m.channel == *self.keys.node(&self.node) {
            let parsed = payload.split_once(' ').and_then(|(verb, id)| Some((verb, ClientId::parse(id)?)));
            let Some((verb, id)) = parsed else {
                RedisMetrics::inc(&self.metrics.malformed);
                return;
            };
            let this = self.clone();
            let verb = verb.to_owned();
            // Counted once handled (tests wait for it).
            self.tasks.spawn(async move {
                this.on_control(&verb, id).await;
                RedisMetrics::inc(&this.metrics.control_messages);
            });
        }
    }

    /// Feeds the node's gauge; if its state changed, this node's own publishes wait (or go
    /// ahead) at once, and the caller should announce it. The state is stored under the
    /// gauge's lock, so the listener and the ticker cannot store their changes in the
    /// opposite order from the gauge's.
    fn observe(&self, f: impl FnOnce(&mut Gauge) -> Option<bool>) -> bool {
        let on = {
            let mut gauge = self.gauge.lock();
            let Some(on) = f(&mut gauge) else { return false };
            // Shutting down: the node does not start asking again (the listener may handle
            // one more message after the ticker released it).
            if on && self.shutdown.is_cancelled() {
                return false;
            }
            let _p = self.pressure.lock();
            self.self_pressured.store(on, Ordering::Release);
            if on {
                self.pressure_any.store(true, Ordering::Release);
            }
            on
        };
        if on {
            RedisMetrics::inc(&self.metrics.pressure_episodes);
            tracing::warn!(
                backlog_limit = self.config.backpressure_backlog,
                lag_limit_ms = self.config.backpressure_lag_ms,
                "this node is behind; asking publishers on every node to wait"
            );
        } else {
            tracing::info!("this node caught up; publishers go ahead");
        }
        self.pressure_changed.notify_waiters();
        true
    }

    /// Another node's announcement.
    fn heard(&self, a: Announcement) {
        let ends = matches!(a, Announcement::Off { .. });
        {
            let mut p = self.pressure.lock();
            p.apply(a, std::time::Instant::now());
            if !ends {
                self.pressure_any.store(true, Ordering::Release);
            }
        }
        if ends {
            self.pressure_changed.notify_waiters();
        }
    }

    /// Says this node's current state to the other nodes: `on` if it is pressured and did
    /// not say so within [`REPEAT`], `off` if it said `on` before (and `off` once the node
    /// shuts down). One at a time, each reading the state when it goes out, so the last one
    /// heard is the current state. `wait`: wait for one in progress; else leave it to that.
    async fn announce_pressure(&self, wait: bool) {
        let mut said = match self.announcing.try_lock() {
            Ok(said) => said,
            Err(_) if wait => self.announcing.lock().await,
            Err(_) => return,
        };
        let on = self.self_pressured.load(Ordering::Acquire) && !self.shutdown.is_cancelled();
        if on && said.is_some_and(|t| t.elapsed() < REPEAT) || !on && said.is_none() {
            return;
        }
        let node = self.node.clone();
        let a = if on { Announcement::On { node, hold: HOLD } } else { Announcement::Off { node } };
        // An `on` counts as said before it goes out: if this is cut short (the listener's
        // bound) it may still reach the others, who then need the `off`. An `off` counts
        // only once it went out, so a failed one is sent again.
        if on {
            *said = Some(tokio::time::Instant::now());
        }
        match self.client.spublish::<Value, _, _>(self.keys.pressure(), a.encode()).await {
            Ok(_) if !on => *said = None,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "announcing this node's pressure failed"),
        }
    }

    /// `close`: the session was destroyed or attached elsewhere; `sync`: its subscriptions
    /// changed through another node.
    async fn on_control(self: &Arc<Self>, verb: &str, id: ClientId) {
        let _open = self.control_gate.read().await;
        match verb {
            "close" => {
                // A session that hopped away and straight back is ours again: the stale
                // message must not close it.
                if let Err(e) = self.close_unless_ours(&id).await {
                    tracing::debug!(client_id = %id, error = %e, "handling a close failed");
                }
            }
            "sync" => {
                if let Err(e) = self.sync(&id).await {
                    tracing::warn!(client_id = %id, error = %e, "syncing subscriptions failed");
                }
            }
            _ => {}
        }
    }

    /// Starts a recovery: here and now (in the listener, before any later message is
    /// applied) every session starts bridging from where it got to; the rest runs as a task.
    fn start_recover(self: &Arc<Self>, resubscribe: bool) {
        let snapshot = self.local.lock().begin_bridge_all();
        let this = self.clone();
        self.tasks.spawn(async move {
            if resubscribe {
                // Every channel this node needs, plus its control channel.
                let mut channels: Vec<String> =
                    this.local.lock().names().iter().map(|n| this.keys.channel(n)).collect();
                channels.push(this.keys.node(&this.node));
                channels.push(this.keys.pressure());
                for ch in channels {
                    if let Err(e) = this.subscriber.ssubscribe(ch).await {
                        tracing::warn!(error = %e, "resubscribing after reconnect failed");
                    }
                }
            }
            this.recover(snapshot, false).await;
        });
    }
}
