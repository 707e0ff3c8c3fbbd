//! One URL's queue of encoded events: bounded (a full queue drops its oldest event and
//! counts it), handed out in batches that are full or whose oldest event waited `flush`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::{WebhookMetrics, inc};

struct State {
    /// Each event with when it was queued.
    items: VecDeque<(Instant, Arc<str>)>,
    closed: bool,
}

/// A bounded event queue with one consumer (the URL's sender task).
pub(crate) struct Queue {
    state: Mutex<State>,
    /// Wakes the consumer: on the first event, on a full batch and on close (not on every
    /// event, which would wake it a hundred times per batch).
    notify: Notify,
    max: usize,
    metrics: Arc<WebhookMetrics>,
}

impl Queue {
    pub(crate) fn new(max: usize, metrics: Arc<WebhookMetrics>) -> Self {
        Queue {
            state: Mutex::new(State { items: VecDeque::new(), closed: false }),
            notify: Notify::new(),
            max: max.max(1),
            metrics,
        }
    }

    /// Queues an event; when full, the oldest is dropped to make room (the newest events
    /// describe the current state best). Ignored once closed.
    pub(crate) fn push(&self, event: Arc<str>, batch_max: usize) {
        let len = {
            let mut s = self.state.lock();
            if s.closed {
                return;
            }
            if s.items.len() >= self.max {
                s.items.pop_front();
                inc(&self.metrics.events_dropped);
            } else {
                self.metrics.queued.fetch_add(1, Ordering::Relaxed);
            }
            s.items.push_back((Instant::now(), event));
            s.items.len()
        };
        if len == 1 || len >= batch_max {
            self.notify.notify_one();
        }
    }

    /// No more events: the consumer takes what is left without waiting for `flush`.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.notify.notify_one();
    }

    /// Drops everything left (the shutdown deadline passed); returns how many.
    pub(crate) fn discard(&self) -> usize {
        let n = {
            let mut s = self.state.lock();
            s.closed = true;
            let n = s.items.len();
            s.items.clear();
            n
        };
        self.metrics.queued.fetch_sub(n as i64, Ordering::Relaxed);
        n
    }

    /// The next batch: up to `batch_max` events, once there are that many, or the oldest
    /// has waited `flush`, or the queue is closed. `None` when closed and empty.
    pub(crate) async fn next_batch(&self, batch_max: usize, flush: Duration) -> Option<Vec<Arc<str>>> {
        loop {
            let wait_until = {
                let mut s = self.state.lock();
                let due = s.items.front().map(|(at, _)| *at + flush);
                if s.items.len() >= batch_max
                    || (s.closed && !s.items.is_empty())
                    || due.is_some_and(|d| d <= Instant::now())
                {
                    let n = s.items.len().min(batch_max);
                    let batch: Vec<Arc<str>> = s.items.drain(..n).map(|(_, e)| e).collect();
                    self.metrics.queued.fetch_sub(n as i64, Ordering::Relaxed);
                    return Some(batch);
                }
                if s.closed {
                    return None;
                }
                due
            };
            match wait_until {
                None => self.notify.notified().await,
                Some(due) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize) -> Arc<str> {
        Arc::from(i.to_string())
    }

    fn texts(b: &[Arc<str>]) -> Vec<String> {
        b.iter().map(|e| e.to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_and_a_partial_one_after_flush() {
        let m = Arc::new(WebhookMetrics::default());
        let q = Queue::new(100, m.clone());
        for i in 0..5 {
            q.push(ev(i), 3);
        }
        let started = Instant::now();
        assert_eq!(texts(&q.next_batch(3, Duration::from_millis(500)).await.expect("batch")), ["0", "1", "2"]);
        assert_eq!(started.elapsed(), Duration::ZERO, "a full batch does not wait");
        assert_eq!(texts(&q.next_batch(3, Duration::from_millis(500)).await.expect("batch")), ["3", "4"]);
        assert_eq!(started.elapsed(), Duration::from_millis(500), "a partial batch waits for flush");
        assert_eq!(m.queued.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_consumer_wakes_for_the_first_event() {
        let q = Arc::new(Queue::new(100, Arc::new(WebhookMetrics::default())));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move { q.next_batch(10, Duration::from_millis(200)).await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        let at = Instant::now();
        q.push(ev(1), 10);
        let batch = consumer.await.expect("task").expect("batch");
        assert_eq!(texts(&batch), ["1"]);
        assert_eq!(at.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_its_oldest_and_counts_them() {
        let m = Arc::new(WebhookMetrics::default());
        let q = Queue::new(3, m.clone());
        for i in 0..5 {
            q.push(ev(i), 100);
        }
        assert_eq!(m.events_dropped.load(Ordering::Relaxed), 2);
        assert_eq!(m.queued.load(Ordering::Relaxed), 3);
        q.close();
        assert_eq!(texts(&q.next_batch(100, Duration::from_secs(60)).await.expect("batch")), ["2", "3", "4"]);
        assert!(q.next_batch(100, Duration::from_secs(60)).await.is_none(), "closed and empty");
    }

    #[tokio::test(start_paused = true)]
    async fn close_hands_out_the_rest_without_waiting() {
        let m = Arc::new(WebhookMetrics::default());
        let q = Queue::new(100, m.clone());
        for i in 0..5 {
            q.push(ev(i), 2);
        }
        q.close();
        q.push(ev(9), 2);
        let started = Instant::now();
        let mut all = Vec::new();
        while let Some(b) = q.next_batch(2, Duration::from_secs(60)).await {
            assert!(b.len() <= 2);
            all.extend(texts(&b));
        }
        assert_eq!(all, ["0", "1", "2", "3", "4"], "nothing is queued after close");
        assert_eq!(started.elapsed(), Duration::ZERO);
        q.push(ev(10), 2);
        assert_eq!(q.discard(), 0);
        assert_eq!(m.queued.load(Ordering::Relaxed), 0);
    }
}
