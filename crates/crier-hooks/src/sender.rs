//! One webhook URL's sender: takes batches from its queue in order and POSTs each, retrying
//! failures with exponential backoff, one batch in flight at a time (so batches arrive in
//! order). Delivery is at least once: a batch whose answer was lost is sent again.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{WebhookMetrics, add, inc};
use crate::payload::batch_body;
use crate::queue::Queue;

/// When sending must stop: `flush` after shutdown began. Shared by the collector and every
/// sender so that they all stop at one instant, however late each noticed.
#[derive(Clone)]
pub(crate) struct Deadline {
    token: CancellationToken,
    flush: Duration,
    at: Arc<OnceLock<Instant>>,
}

impl Deadline {
    pub(crate) fn new(token: CancellationToken, flush: Duration) -> Self {
        Deadline { token, flush, at: Arc::new(OnceLock::new()) }
    }

    /// Fixes the deadline (the first caller after cancellation does).
    pub(crate) fn begin(&self) -> Instant {
        *self.at.get_or_init(|| Instant::now() + self.flush)
    }

    /// Completes when shutdown began and its flush time is over.
    pub(crate) async fn passed(&self) {
        self.token.cancelled().await;
        tokio::time::sleep_until(self.begin()).await;
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// How to reach one URL.
pub(crate) struct Sender {
    pub(crate) http: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) headers: HeaderMap,
    pub(crate) node: String,
    pub(crate) timeout: Duration,
    pub(crate) batch_max: usize,
    pub(crate) flush: Duration,
    pub(crate) retries: u32,
    pub(crate) backoff: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) queue: Arc<Queue>,
    pub(crate) metrics: Arc<WebhookMetrics>,
    pub(crate) deadline: Deadline,
}

/// The wait before retry number `retry` (0 for the first): `base · 2^retry`, at most `max`.
pub(crate) fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    base.checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX)).unwrap_or(max).min(max)
}

/// A random wait in `[d/2, d]`, so that nodes that failed together do not retry together.
fn jittered(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::random::<f64>())
}

impl Sender {
    /// Sends batches until the queue is closed and empty, or the shutdown deadline passes.
    pub(crate) async fn run(self) {
        while let Some(batch) = self.queue.next_batch(self.batch_max, self.flush).await {
            if !self.deliver(&batch).await {
                let left = self.queue.discard();
                add(&self.metrics.events_dropped, (batch.len() + left) as u64);
                tracing::warn!(url = %self.url, dropped = batch.len() + left, "event webhook: shutdown deadline passed");
                return;
            }
        }
    }

    /// Delivers one batch, retrying; `false` if the shutdown deadline interrupted it.
    async fn deliver(&self, batch: &[Arc<str>]) -> bool {
        let body = batch_body(&self.node, batch);
        let mut last_error = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                inc(&self.metrics.retries);
                let wait = jittered(backoff(attempt - 1, self.backoff, self.backoff_max));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.deadline.passed() => return false,
                }
            }
            let outcome = tokio::select! {
                r = self.post(body.clone()) => r,
                _ = self.deadline.passed() => return false,
            };
            match outcome {
                Ok(()) => {
                    add(&self.metrics.events_sent, batch.len() as u64);
                    inc(&self.metrics.batches_sent);
                    return true;
                }
                Err(e) => {
                    tracing::debug!(url = %self.url, attempt, error = %e, "event webhook attempt failed");
                    last_error = e;
                }
            }
        }
        inc(&self.metrics.batches_failed);
        tracing::warn!(url = %self.url, events = batch.len(), error = %last_error, "event webhook: batch dropped after retries");
        true
    }

    async fn post(&self, body: String) -> Result<(), String> {
        let r = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| if e.is_timeout() { "timed out".to_owned() } else { e.to_string() })?;
        let status = r.status();
        // Read (a bounded amount of) the answer so the connection can be reused; its
        // content does not matter.
        let _ = crate::call::read_limited(r, 64 * 1024).await;
        if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let waits: Vec<Duration> = (0..7).map(|r| backoff(r, ms(200), ms(5000))).collect();
        assert_eq!(waits, [ms(200), ms(400), ms(800), ms(1600), ms(3200), ms(5000), ms(5000)]);
        assert_eq!(backoff(40, ms(200), ms(5000)), ms(5000), "no overflow");
        assert_eq!(backoff(u32::MAX, ms(200), ms(5000)), ms(5000));
    }

    #[test]
    fn jitter_stays_within_half_to_whole() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_millis(1000), "{d:?}");
        }
    }
}
