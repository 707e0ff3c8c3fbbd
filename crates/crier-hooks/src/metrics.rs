//! Counters for `/metrics`, reported through the engine's extension metrics (no labels:
//! routes and URLs are summed, as `/metrics` has no per-channel series).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use crier_engine::Extension;

/// The `/service` forwarder's counters.
#[derive(Debug, Default)]
pub struct ServiceMetrics {
    pub(crate) forwarded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) app_errors: AtomicU64,
    pub(crate) in_flight: AtomicI64,
}

/// The event webhooks' counters (events are counted once per URL they are sent to).
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub(crate) events_sent: AtomicU64,
    pub(crate) batches_sent: AtomicU64,
    pub(crate) batches_failed: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) queued: AtomicI64,
}

pub(crate) fn inc(c: &AtomicU64) {
    add(c, 1);
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> i64 {
    c.load(Ordering::Relaxed) as i64
}

impl ServiceMetrics {
    /// `(name, help, value)` triples for exposition.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, i64)> {
        vec![
            ("crier_hooks_service_forwarded_total", "/service publishes sent to the app.", get(&self.forwarded)),
            (
                "crier_hooks_service_failed_total",
                "/service calls without a usable answer (unreachable, non-2xx, invalid answer or time-out).",
                get(&self.failed),
            ),
            (
                "crier_hooks_service_timeouts_total",
                "/service calls the app did not answer in time.",
                get(&self.timeouts),
            ),
            (
                "crier_hooks_service_busy_total",
                "/service publishes refused because the route had max_in_flight calls in progress.",
                get(&self.busy),
            ),
            (
                "crier_hooks_service_app_errors_total",
                "/service calls the app answered with an error.",
                get(&self.app_errors),
            ),
            ("crier_hooks_service_in_flight", "/service calls in progress.", self.in_flight.load(Ordering::Relaxed)),
        ]
    }
}

impl WebhookMetrics {
    /// `(name, help, value)` triples for exposition.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, i64)> {
        vec![
            ("crier_hooks_events_sent_total", "Events delivered to event webhooks (per URL).", get(&self.events_sent)),
            ("crier_hooks_event_batches_sent_total", "Event batches delivered (2xx).", get(&self.batches_sent)),
            (
                "crier_hooks_event_batches_failed_total",
                "Event batches given up on after every retry (their events are lost).",
                get(&self.batches_failed),
            ),
            ("crier_hooks_event_retries_total", "Event batch attempts that were retried.", get(&self.retries)),
            (
                "crier_hooks_events_dropped_total",
                "Events dropped before delivery: a full queue, the node lagging behind the engine, or still queued at \
                 the shutdown deadline.",
                get(&self.events_dropped),
            ),
            ("crier_hooks_events_queued", "Events waiting to be sent (all URLs).", self.queued.load(Ordering::Relaxed)),
        ]
    }
}

/// Reports the webhooks' counters on `/metrics`: installed as an engine extension before
/// the engine is built, while the webhooks themselves start once it exists.
pub(crate) struct WebhookMetricsReporter(pub(crate) std::sync::Arc<WebhookMetrics>);

#[async_trait]
impl Extension for WebhookMetricsReporter {
    fn metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        self.0.snapshot()
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}
