//! Backpressure across nodes: a node whose fan-out falls behind asks every node's
//! publishers to wait. Pure and synchronous (instants come in as arguments); the listener
//! and the backend drive it.
//!
//! Why: a node acknowledges a publish once it is in Redis. Without this, publishers acked
//! as fast as Redis takes them outrun a node that must fan each message out to many
//! sockets; its pub/sub buffer overflows and, once the logs are trimmed past its sessions,
//! messages are lost (94 % of them in an ack-paced benchmark, see `docs/benchmarks.md`).
//!
//! How:
//! - Each node watches two signs of falling behind ([`Gauge`]): its backlog of live
//!   messages received from Redis but not yet fanned out (above
//!   `redis.backpressure_backlog`), and how late its runtime runs a timer twice in a row
//!   (above `redis.backpressure_lag_ms`: the CPU is saturated, so the sockets fall behind
//!   even when the fan-out keeps up). Either makes it pressured; it stays so until both are down
//!   to a quarter of their limits. One slow client raises neither.
//! - While pressured it says so on one pub/sub channel every node listens to
//!   (`on NODE HOLD_MS`), again every [`REPEAT`], and says `off NODE` when it recovers.
//! - Every node keeps the nodes it heard are pressured ([`Pressured`]). An `on` holds for
//!   `HOLD_MS` after it was heard unless repeated, so a node that dies pressured (or an
//!   `off` that is lost) holds publishers back for at most [`HOLD`].
//! - A publish on any node first waits while some node is pressured, for at most
//!   `redis.backpressure_max_wait_ms`; then it goes ahead anyway (a node that never
//!   recovers must not stop publishing for good). The engine waits (`Backend::admit`) once
//!   before each publish of a client or of the API, not for its monitoring events.
//!   Publishers that wait for their acknowledgements therefore slow down to what the
//!   slowest node delivers.
//!
//! The signal is per node, not per channel: a pressured node slows publishes to every
//! channel, also those it does not serve. Clocks are not compared across nodes: the
//! receiver times an announcement from when it heard it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an `on` announcement holds unless repeated.
pub(crate) const HOLD: Duration = Duration::from_millis(1000);
/// How often a pressured node repeats its announcement.
pub(crate) const REPEAT: Duration = Duration::from_millis(250);

/// A node's own state, from its two signs of falling behind, with hysteresis: pressured
/// when either is above its limit, clear again when both are at or below a quarter of it.
/// A limit of 0 turns its sign off.
#[derive(Debug, Clone)]
pub(crate) struct Gauge {
    backlog_limit: usize,
    lag_limit: Duration,
    backlog: usize,
    lag: Duration,
    pressured: bool,
}

impl Gauge {
    pub(crate) fn new(backlog_limit: usize, lag_limit: Duration) -> Self {
        Gauge { backlog_limit, lag_limit, backlog: 0, lag: Duration::ZERO, pressured: false }
    }

    /// Live messages received but not fanned out yet. Returns the new state if it changed.
    pub(crate) fn backlog(&mut self, n: usize) -> Option<bool> {
        self.backlog = n;
        self.update()
    }

    /// How late the node's runtime ran a timer (its CPU is saturated: sockets fall behind
    /// even when the pub/sub buffer does not). Returns the new state if it changed.
    pub(crate) fn lag(&mut self, d: Duration) -> Option<bool> {
        self.lag = d;
        self.update()
    }

    /// Clears the state (shutting down); `Some(false)` if it was pressured.
    pub(crate) fn release(&mut self) -> Option<bool> {
        std::mem::take(&mut self.pressured).then_some(false)
    }

    fn update(&mut self) -> Option<bool> {
        // Above the limit, or above a quarter of it while pressured (hysteresis).
        let over = |v: u128, limit: u128| limit > 0 && if self.pressured { v * 4 > limit } else { v > limit };
        let next = over(self.backlog as u128, self.backlog_limit as u128)
            || over(self.lag.as_micros(), self.lag_limit.as_micros());
        (next != self.pressured).then(|| {
            self.pressured = next;
            next
        })
    }
}

/// An announcement on the pressure channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Announcement {
    /// The node is pressured; hold publishes for this long unless told again.
    On { node: String, hold: Duration },
    /// The node recovered.
    Off { node: String },
}

impl Announcement {
    pub(crate) fn encode(&self) -> String {
        match self {
            Announcement::On { node, hold } => format!("on {node} {}", hold.as_millis()),
            Announcement::Off { node } => format!("off {node}"),
        }
    }

    /// `None` for anything else (from a newer or foreign sender): ignored.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let a = match (parts.next()?, parts.next()?) {
            ("on", node) if !node.is_empty() => {
                let ms: u64 = parts.next()?.parse().ok()?;
                // A hold longer than a minute is not something this version sends.
                Announcement::On { node: node.to_owned(), hold: Duration::from_millis(ms.min(60_000)) }
            }
            ("off", node) if !node.is_empty() => Announcement::Off { node: node.to_owned() },
            _ => return None,
        };
        parts.next().is_none().then_some(a)
    }
}

/// The nodes this node heard are pressured, each until when.
#[derive(Debug, Default)]
pub(crate) struct Pressured {
    until: HashMap<String, Instant>,
}

impl Pressured {
    /// Applies an announcement heard at `now`.
    pub(crate) fn apply(&mut self, a: Announcement, now: Instant) {
        match a {
            Announcement::On { node, hold } => {
                self.until.insert(node, now + hold);
            }
            Announcement::Off { node } => {
                self.until.remove(&node);
            }
        }
    }

    /// Forgets what expired; returns when the next still-active entry expires (`None`: no
    /// node is pressured now).
    pub(crate) fn next_expiry(&mut self, now: Instant) -> Option<Instant> {
        self.until.retain(|_, t| *t > now);
        self.until.values().min().copied()
    }

    /// How many nodes are pressured at `now` (for the metric).
    pub(crate) fn count(&self, now: Instant) -> usize {
        self.until.values().filter(|t| **t > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_turns_on_above_a_limit_and_off_when_both_are_at_a_quarter() {
        let ms = Duration::from_millis;
        let mut g = Gauge::new(100, ms(200));
        assert_eq!(g.backlog(100), None, "at the limit: not yet");
        assert_eq!(g.backlog(101), Some(true));
        assert_eq!(g.backlog(500), None);
        assert_eq!(g.backlog(26), None, "still above a quarter");
        assert_eq!(g.backlog(25), Some(false));
        assert_eq!(g.backlog(0), None);
        // The runtime's lag alone, then both: off only when both are down.
        assert_eq!(g.lag(ms(201)), Some(true));
        assert_eq!(g.backlog(300), None);
        assert_eq!(g.lag(ms(10)), None, "the backlog still holds it");
        assert_eq!(g.backlog(20), Some(false));
        assert_eq!(g.release(), None, "not pressured: nothing to release");
        assert_eq!(g.backlog(101), Some(true));
        assert_eq!(g.release(), Some(false));
        let mut off = Gauge::new(0, Duration::ZERO);
        assert_eq!(off.backlog(1_000_000), None, "0 turns a sign off");
        assert_eq!(off.lag(Duration::from_secs(60)), None);
    }

    #[test]
    fn announcements_round_trip_and_junk_is_ignored() {
        let on = Announcement::On { node: "abc".into(), hold: Duration::from_millis(1000) };
        assert_eq!(on.encode(), "on abc 1000");
        assert_eq!(Announcement::parse(&on.encode()), Some(on));
        let off = Announcement::Off { node: "abc".into() };
        assert_eq!(Announcement::parse(&off.encode()), Some(off));
        for junk in ["", "on", "on abc", "on abc x", "on  10", "off", "off abc extra", "maybe abc", "on abc 10 20"] {
            assert_eq!(Announcement::parse(junk), None, "{junk:?}");
        }
        assert_eq!(
            Announcement::parse("on abc 99999999"),
            Some(Announcement::On { node: "abc".into(), hold: Duration::from_secs(60) }),
            "holds are capped"
        );
    }

    #[test]
    fn pressure_holds_until_off_or_expiry() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pressured::default();
        assert_eq!(p.next_expiry(t0), None);
        p.apply(Announcement::On { node: "a".into(), hold: ms(1000) }, t0);
        p.apply(Announcement::On { node: "b".into(), hold: ms(300) }, t0);
        assert_eq!(p.count(t0), 2);
        assert_eq!(p.next_expiry(t0), Some(t0 + ms(300)));
        // b's hold ran out (it died, or its `off` was lost); a is still pressured.
        assert_eq!(p.next_expiry(t0 + ms(300)), Some(t0 + ms(1000)));
        assert_eq!(p.count(t0 + ms(300)), 1);
        // a repeats itself: held again from when it was heard.
        p.apply(Announcement::On { node: "a".into(), hold: ms(1000) }, t0 + ms(900));
        assert_eq!(p.next_expiry(t0 + ms(1200)), Some(t0 + ms(1900)));
        p.apply(Announcement::Off { node: "a".into() }, t0 + ms(1300));
        assert_eq!(p.next_expiry(t0 + ms(1300)), None);
    }
}
