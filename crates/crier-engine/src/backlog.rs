//! Publish backpressure on one node: publishers wait while a socket's session has fallen
//! behind because this node is short of CPU, instead of its queue overflowing and dropping
//! messages for a client that reads everything it is sent.
//!
//! Many publishers and one subscriber (a dashboard fed by every service) showed why: the
//! publishers' sockets took the node's CPU, the subscriber's socket task ran too seldom,
//! and its queue overflowed: 24 to 31 % of the messages were dropped for a client that
//! was keeping up (docs/benchmarks.md, "Other modes").
//!
//! A session counts as *behind* when half of `max_queue` or more is queued while its
//! WebSocket's pump is parked waiting for messages ([`crate::session::Waiting`]): the
//! messages woke the socket's task and it has not run since. A socket task busy elsewhere
//! (writing to a client that does not read, answering a request) has no parked pump, so a
//! slow client is left to the overflow policy. So are long-polling clients (their queues
//! fill between polls by design; waiting for their round trips would slow everyone to
//! their pace) and EventSource streams (the HTTP server stops asking for chunks when the
//! client does not read, which leaves the pump parked).
//!
//! It stops being behind when its socket takes its messages, when its pump stops waiting,
//! or when it ends. Publishers wait until no session of the node is behind, bounded twice:
//! by `engine.publish_wait_ms`, and by [`STALE`]: when no session has caught up for that
//! long, they go ahead (nothing is catching up, so waiting would not help).
//!
//! Once no session is behind, publishers do not all go at once: while some still wait,
//! every publisher (waiting or new) takes a ticket, a quarter of `max_queue` of them per
//! drain of a session. Released all at once, 200 publishers with 16 publishes in flight
//! each are 3,200 messages for the queue of 1,000 they waited for. When no drain comes for
//! [`REFILL`], the publishes are not feeding a socket that is waiting for them, and every
//! waiting publisher goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Publishers stop waiting when no session has caught up for this long.
pub(crate) const STALE: Duration = Duration::from_millis(250);

/// Once no session is behind, waiting publishers all go after this long without a drain.
pub(crate) const REFILL: Duration = Duration::from_millis(10);

/// How a publisher's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waited {
    /// Time spent waiting.
    pub(crate) time: Duration,
    /// It gave up at `publish_wait_ms` with a session still behind.
    pub(crate) gave_up: bool,
}

/// The sessions of this node that are behind, and the publishers waiting for them.
#[derive(Debug)]
pub(crate) struct Backlogs {
    behind: AtomicUsize,
    /// Notified whenever a session catches up.
    caught_up: Notify,
    base: Instant,
    /// When a session last caught up (or the first fell behind), in ms since `base`.
    progress_ms: AtomicU64,
    max_wait: Duration,
    metrics: Arc<Metrics>,
    /// Publishers inside [`Backlogs::wait`].
    waiting: AtomicUsize,
    /// How many publishers may still go before the next drain, while some wait.
    tickets: AtomicI64,
    /// What a drain lets through: a quarter of `max_queue`.
    release: i64,
    /// When the tickets were last refilled, in ms since `base`.
    refilled_ms: AtomicU64,
}

impl Backlogs {
    pub(crate) fn new(max_wait: Duration, max_queue: usize, metrics: Arc<Metrics>) -> Self {
        let release = i64::try_from(max_queue / 4).unwrap_or(i64::MAX).max(1);
        Backlogs {
            behind: AtomicUsize::new(0),
            caught_up: Notify::new(),
            base: Instant::now(),
            progress_ms: AtomicU64::new(0),
            max_wait,
            metrics,
            waiting: AtomicUsize::new(0),
            tickets: AtomicI64::new(release),
            release,
            refilled_ms: AtomicU64::new(0),
        }
    }

    /// A session's messages were taken: waiting publishers may send some more. Wakes them
    /// only if tickets were used since the last refill (an idle pump turn changes nothing).
    pub(crate) fn drained(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 && self.tickets.load(Ordering::Acquire) < self.release {
            self.refill();
            self.caught_up.notify_waiters();
        }
    }

    fn refill(&self) {
        self.tickets.store(self.release, Ordering::Release);
        self.refilled_ms.store(self.ms(), Ordering::Release);
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn take_ticket(&self) -> bool {
        if self.tickets.fetch_sub(1, Ordering::AcqRel) > 0 {
            return true;
        }
        self.tickets.fetch_add(1, Ordering::AcqRel);
        false
    }

    /// A session fell behind (called once per episode, by the session).
    pub(crate) fn fell_behind(&self) {
        // Only the first starts the clock: sessions that keep falling behind while none
        // catches up must not keep publishers waiting past the staleness bound.
        if self.behind.fetch_add(1, Ordering::AcqRel) == 0 {
            self.touch();
        }
        self.metrics.sessions_behind.fetch_add(1, Ordering::Relaxed);
    }

    /// A session that was behind caught up or ended.
    pub(crate) fn caught_up(&self) {
        self.behind.fetch_sub(1, Ordering::AcqRel);
        self.metrics.sessions_behind.fetch_sub(1, Ordering::Relaxed);
        self.touch();
        self.refill();
        self.caught_up.notify_waiters();
    }

    fn touch(&self) {
        self.progress_ms.store(self.ms(), Ordering::Release);
    }

    /// When waiting stops helping: [`STALE`] after the last progress.
    fn stale_at(&self) -> Instant {
        self.base + Duration::from_millis(self.progress_ms.load(Ordering::Acquire)) + STALE
    }

    /// Waits while a session is behind, and then for a ticket while others still wait,
    /// within the bounds above. `None` when it did not wait at all (while nobody waits,
    /// the publish hot path costs two atomic loads).
    pub(crate) async fn wait(&self) -> Option<Waited> {
        if self.max_wait.is_zero()
            || (self.behind.load(Ordering::Acquire) == 0 && self.waiting.load(Ordering::Acquire) == 0)
        {
            return None;
        }
        let _waiting = WaitingPublisher::new(self);
        let start = Instant::now();
        let deadline = start + self.max_wait;
        let mut waited = false;
        loop {
            let caught_up = self.caught_up.notified();
            tokio::pin!(caught_up);
            caught_up.as_mut().enable();
            let now = Instant::now();
            let behind = self.behind.load(Ordering::Acquire) > 0;
            let wake = if behind {
                let stale_at = self.stale_at();
                if now >= stale_at || now >= deadline {
                    let gave_up = now >= deadline && now < stale_at;
                    return waited.then(|| Waited { time: now - start, gave_up });
                }
                stale_at.min(deadline)
            } else {
                if self.take_ticket() {
                    return waited.then(|| Waited { time: now - start, gave_up: false });
                }
                let open_at = self.base + Duration::from_millis(self.refilled_ms.load(Ordering::Acquire)) + REFILL;
                if now >= open_at || now >= deadline {
                    // No drain came: these publishes are not feeding a socket that waits
                    // for them. (Not a timeout: no session is behind.)
                    return waited.then(|| Waited { time: now - start, gave_up: false });
                }
                open_at.min(deadline)
            };
            waited = true;
            tokio::select! {
                () = &mut caught_up => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// Counts a publisher in [`Backlogs::waiting`] while it is inside `wait`, however its future
/// ends (it may be dropped at any await).
struct WaitingPublisher<'a>(&'a Backlogs);

impl<'a> WaitingPublisher<'a> {
    fn new(b: &'a Backlogs) -> Self {
        b.waiting.fetch_add(1, Ordering::AcqRel);
        WaitingPublisher(b)
    }
}

impl Drop for WaitingPublisher<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlogs(max_wait_ms: u64) -> Arc<Backlogs> {
        Arc::new(Backlogs::new(Duration::from_millis(max_wait_ms), 1000, Arc::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_behind_means_no_wait() {
        assert_eq!(backlogs(2000).wait().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_publisher_waits_until_the_session_catches_up() {
        let b = backlogs(2000);
        b.fell_behind();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        b.caught_up();
        let w = waiter.await.unwrap().unwrap();
        assert_eq!(w.time, Duration::from_millis(100));
        assert!(!w.gave_up);
        assert_eq!(b.metrics.sessions_behind.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_stops_when_nothing_catches_up() {
        let b = backlogs(2000);
        b.fell_behind();
        let w = b.wait().await.unwrap();
        assert_eq!(w.time, STALE);
        assert!(!w.gave_up, "stale is not the configured limit");
        // Still behind and still stale: the next publisher does not wait at all.
        assert_eq!(b.wait().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_elsewhere_keeps_publishers_waiting_up_to_the_limit() {
        let b = backlogs(400);
        b.fell_behind();
        b.fell_behind();
        let keeper = tokio::spawn({
            let b = b.clone();
            async move {
                // One session catches up and falls behind again every 100 ms; the other
                // stays behind: progress, but never none behind.
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    b.caught_up();
                    b.fell_behind();
                }
            }
        });
        let w = b.wait().await.unwrap();
        assert_eq!(w.time, Duration::from_millis(400));
        assert!(w.gave_up);
        keeper.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_falling_behind_while_none_catches_up_do_not_extend_the_wait() {
        let b = backlogs(2000);
        b.fell_behind();
        let faller = tokio::spawn({
            let b = b.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    b.fell_behind();
                }
            }
        });
        let w = b.wait().await.unwrap();
        assert_eq!(w.time, STALE);
        faller.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_publishers_go_a_quarter_of_the_queue_at_a_time() {
        // A queue of 4: one publisher per drain, or per REFILL without a drain.
        let b = Arc::new(Backlogs::new(Duration::from_millis(2000), 4, Arc::default()));
        b.fell_behind();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.wait().await.map(|w| w.time) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.caught_up();
        // One goes now; a drain lets the next through at once; the last one goes when no
        // drain came for REFILL.
        tokio::time::sleep(Duration::from_millis(1)).await;
        b.drained();
        let mut times = Vec::new();
        for w in waiters {
            times.push(w.await.unwrap().unwrap());
        }
        times.sort();
        assert_eq!(times[0], Duration::from_millis(100));
        assert_eq!(times[1], Duration::from_millis(101));
        assert_eq!(times[2], Duration::from_millis(101) + REFILL);
        // Nobody waits any more: the next publish does not either.
        assert_eq!(b.wait().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn without_drains_every_waiting_publisher_goes_after_refill() {
        let b = Arc::new(Backlogs::new(Duration::from_millis(2000), 4, Arc::default()));
        b.fell_behind();
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.wait().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.caught_up();
        let mut longest = Duration::ZERO;
        for w in waiters {
            let w = w.await.unwrap().unwrap();
            assert!(!w.gave_up, "no session was behind: not a timeout");
            longest = longest.max(w.time);
        }
        // Their publishes feed no waiting socket: not capped at one per REFILL.
        assert_eq!(longest, Duration::from_millis(100) + REFILL);
        assert_eq!(b.wait().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_wait_never_waits() {
        let b = backlogs(0);
        b.fell_behind();
        assert_eq!(b.wait().await, None);
    }
}
