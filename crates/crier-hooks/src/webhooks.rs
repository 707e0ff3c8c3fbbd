//! Event webhooks: a collector task takes the engine's monitoring events off its broadcast
//! channel at once (never waiting on HTTP, so a slow or dead app cannot hold up Bayeux
//! traffic or make the channel lag), encodes each once and queues it for every URL; one
//! sender task per URL delivers batches ([`crate::sender`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crier_engine::{Event, Extension};
use reqwest::header::HeaderMap;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::HooksError;
use crate::config::{EventKind, EventsConfig, check_url, header_map};
use crate::metrics::{WebhookMetrics, WebhookMetricsReporter, add};
use crate::payload::{encode, kind_of};
use crate::queue::Queue;
use crate::sender::{Deadline, Sender};

/// Most events taken off the broadcast channel after shutdown began: what the engine emitted
/// while draining, without chasing a producer that never stops.
const SHUTDOWN_DRAIN_MAX: usize = 4096;

/// Configured event webhooks, ready to start.
pub struct EventWebhooks {
    config: EventsConfig,
    urls: Vec<reqwest::Url>,
    headers: HeaderMap,
    http: reqwest::Client,
    metrics: Arc<WebhookMetrics>,
}

impl EventWebhooks {
    /// Checks the settings (errors name the key) and shares `http` between the URLs.
    pub fn new(config: &EventsConfig, http: reqwest::Client) -> Result<Self, HooksError> {
        crate::HooksConfig { events: config.clone(), ..Default::default() }.validate()?;
        let urls = config
            .urls
            .iter()
            .enumerate()
            .map(|(i, u)| check_url(&format!("hooks.events.urls[{i}]"), u))
            .collect::<Result<Vec<_>, _>>()?;
        let headers = header_map("hooks.events.headers", &config.headers)?;
        Ok(EventWebhooks { config: config.clone(), urls, headers, http, metrics: Arc::new(WebhookMetrics::default()) })
    }

    /// The counters (events sent, batches sent and failed, retries, drops, queued).
    pub fn metrics(&self) -> Arc<WebhookMetrics> {
        self.metrics.clone()
    }

    /// An extension that reports [`EventWebhooks::metrics`] on `/metrics`; install it when
    /// building the engine (the webhooks themselves need the built engine's events).
    pub fn metrics_extension(&self) -> Arc<dyn Extension> {
        Arc::new(WebhookMetricsReporter(self.metrics.clone()))
    }

    /// Starts the collector and one sender per URL in `tracker`. They run until `shutdown`
    /// is cancelled (or the engine is gone); then what is queued is sent for at most
    /// `shutdown_flush_ms` and the rest dropped, so `tracker.wait()` is bounded. Payloads
    /// name the node `config.node`, or `default_node` when that is empty.
    pub fn spawn(
        self,
        events: broadcast::Receiver<Event>,
        default_node: &str,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let c = &self.config;
        let node = if c.node.is_empty() { default_node.to_owned() } else { c.node.clone() };
        let deadline = Deadline::new(shutdown, Duration::from_millis(c.shutdown_flush_ms));
        let mut queues = Vec::with_capacity(self.urls.len());
        for url in self.urls {
            let queue = Arc::new(Queue::new(c.queue_max, self.metrics.clone()));
            queues.push(queue.clone());
            let sender = Sender {
                http: self.http.clone(),
                url,
                headers: self.headers.clone(),
                node: node.clone(),
                timeout: Duration::from_millis(c.timeout_ms),
                batch_max: c.batch_max,
                flush: Duration::from_millis(c.flush_ms),
                retries: c.retries,
                backoff: Duration::from_millis(c.backoff_ms),
                backoff_max: Duration::from_millis(c.backoff_max_ms),
                queue,
                metrics: self.metrics.clone(),
                deadline: deadline.clone(),
            };
            tracker.spawn(sender.run());
        }
        let collector = Collector {
            kinds: c.kinds.iter().copied().collect(),
            batch_max: c.batch_max,
            queues,
            metrics: self.metrics,
            // Event ids are `<boot>-<seq>`: unique across restarts of a node without any
            // stored state.
            boot: format!("{:016x}", rand::random::<u64>()),
            seq: 0,
        };
        tracker.spawn(collector.run(events, deadline));
    }
}

/// Takes events off the broadcast channel and queues them for each URL.
struct Collector {
    kinds: HashSet<EventKind>,
    batch_max: usize,
    queues: Vec<Arc<Queue>>,
    metrics: Arc<WebhookMetrics>,
    boot: String,
    seq: u64,
}

impl Collector {
    async fn run(mut self, mut events: broadcast::Receiver<Event>, deadline: Deadline) {
        loop {
            tokio::select! {
                r = events.recv() => match r {
                    Ok(e) => self.accept(&e),
                    Err(RecvError::Lagged(n)) => self.lagged(n),
                    Err(RecvError::Closed) => break,
                },
                _ = deadline.token().cancelled() => {
                    // What the engine emitted while the server drained is still in the
                    // channel: queue it before closing.
                    for _ in 0..SHUTDOWN_DRAIN_MAX {
                        match events.try_recv() {
                            Ok(e) => self.accept(&e),
                            Err(TryRecvError::Lagged(n)) => self.lagged(n),
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        }
                    }
                    break;
                }
            }
        }
        if deadline.token().is_cancelled() {
            deadline.begin();
        }
        for q in &self.queues {
            q.close();
        }
    }

    fn accept(&mut self, e: &Event) {
        if !self.kinds.contains(&kind_of(e)) {
            return;
        }
        self.seq += 1;
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let text: Arc<str> = Arc::from(encode(e, &format!("{}-{}", self.boot, self.seq), now_ms));
        for q in &self.queues {
            q.push(text.clone(), self.batch_max);
        }
    }

    /// The channel overwrote `n` events this collector had not read (of any kind, so some
    /// may not have been wanted); counted once, not per URL.
    fn lagged(&self, n: u64) {
        add(&self.metrics.events_dropped, n);
        tracing::warn!(missed = n, "event webhooks fell behind the engine's events");
    }
}
