//! The local subscription registry: which [`Subscription`](crate::Subscription)s exist,
//! and handing each delivered message to every one whose pattern matches.
//!
//! Delivery never blocks. Each subscription has a bounded queue; when it is full the
//! message is dropped *for that subscription only* and counted (see
//! [`Subscription::dropped`](crate::Subscription::dropped)). Blocking instead would stall
//! the WebSocket reader or the long-poll loop, and with it every other subscription and
//! the connect heartbeat, until the slowest consumer caught up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crier_protocol::{ChannelName, ChannelPattern, Message};
use tokio::sync::mpsc;

/// One local subscription's sending side.
#[derive(Debug)]
struct Entry {
    pattern: ChannelPattern,
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
struct Inner {
    next_key: u64,
    entries: HashMap<u64, Entry>,
    closed: bool,
}

/// What [`Registry::add`] hands to a new subscription.
#[derive(Debug)]
pub(crate) struct Added {
    pub(crate) key: u64,
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) dropped: Arc<AtomicU64>,
}

/// All local subscriptions of one client.
#[derive(Debug)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Registry {
    /// A registry whose subscriptions buffer up to `capacity` messages each.
    pub(crate) fn new(capacity: usize) -> Self {
        Registry { inner: Mutex::new(Inner::default()), capacity: capacity.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map half-updated (every
        // critical section is a single insert/remove/iteration), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a subscription; `None` once the client is closed.
    pub(crate) fn add(&self, pattern: ChannelPattern) -> Option<Added> {
        let mut g = self.lock();
        if g.closed {
            return None;
        }
        g.next_key += 1;
        let key = g.next_key;
        let (tx, rx) = mpsc::channel(self.capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        g.entries.insert(key, Entry { pattern, tx, dropped: dropped.clone() });
        Some(Added { key, rx, dropped })
    }

    /// Removes a subscription. Returns its pattern if no other local subscription uses
    /// the same pattern, i.e. if the server-side subscription should now be dropped.
    pub(crate) fn remove(&self, key: u64) -> Option<ChannelPattern> {
        let mut g = self.lock();
        let entry = g.entries.remove(&key)?;
        let still_used = g.entries.values().any(|e| e.pattern == entry.pattern);
        (!still_used).then_some(entry.pattern)
    }

    /// Whether any local subscription uses `pattern`.
    pub(crate) fn has_pattern(&self, pattern: &ChannelPattern) -> bool {
        self.lock().entries.values().any(|e| &e.pattern == pattern)
    }

    /// The distinct patterns in use, to re-subscribe after a new handshake.
    pub(crate) fn patterns(&self) -> Vec<ChannelPattern> {
        let g = self.lock();
        let mut v: Vec<ChannelPattern> = g.entries.values().map(|e| e.pattern.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Hands `msg` to every subscription whose pattern matches its channel, once each.
    /// Returns how many subscriptions received it.
    pub(crate) fn dispatch(&self, msg: &Message) -> usize {
        let Some(name) = msg.channel().and_then(|c| ChannelName::parse(c).ok()) else {
            tracing::debug!(channel = ?msg.channel_raw(), "delivery on an invalid channel ignored");
            return 0;
        };
        let g = self.lock();
        let mut n = 0;
        for e in g.entries.values().filter(|e| e.pattern.matches(&name)) {
            match e.tx.try_send(msg.clone()) {
                Ok(()) => n += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let total = e.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(pattern = %e.pattern, dropped = total, "subscription queue full: message dropped");
                }
                // The Subscription is being dropped; its Drop removes the entry.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        n
    }

    /// Drops every sender so each subscription's stream ends, and refuses new ones.
    pub(crate) fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pat(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn delivery(ch: &str, n: i64) -> Message {
        serde_json::from_value(json!({"channel": ch, "data": n})).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn dispatches_once_per_matching_subscription() {
        let r = Registry::new(10);
        let mut all = r.add(pat("/**")).unwrap_or_else(|| panic!("closed"));
        let mut one = r.add(pat("/foo/*")).unwrap_or_else(|| panic!("closed"));
        let mut exact = r.add(pat("/foo/bar")).unwrap_or_else(|| panic!("closed"));
        let mut other = r.add(pat("/baz")).unwrap_or_else(|| panic!("closed"));
        assert_eq!(r.dispatch(&delivery("/foo/bar", 1)), 3);
        assert_eq!(r.dispatch(&delivery("/foo/bar/baz", 2)), 1);
        assert_eq!(r.dispatch(&delivery("not a channel", 3)), 0);
        assert_eq!(all.rx.try_recv().ok().and_then(|m| m.data().cloned()), Some(json!(1)));
        assert_eq!(all.rx.try_recv().ok().and_then(|m| m.data().cloned()), Some(json!(2)));
        assert!(all.rx.try_recv().is_err());
        assert_eq!(one.rx.try_recv().ok().and_then(|m| m.data().cloned()), Some(json!(1)));
        assert!(one.rx.try_recv().is_err());
        assert!(exact.rx.try_recv().is_ok() && exact.rx.try_recv().is_err());
        assert!(other.rx.try_recv().is_err());
    }

    #[test]
    fn overflow_drops_and_counts() {
        let r = Registry::new(2);
        let mut a = r.add(pat("/a")).unwrap_or_else(|| panic!("closed"));
        for i in 0..5 {
            r.dispatch(&delivery("/a", i));
        }
        assert_eq!(a.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(a.rx.try_recv().ok().and_then(|m| m.data().cloned()), Some(json!(0)));
        assert_eq!(a.rx.try_recv().ok().and_then(|m| m.data().cloned()), Some(json!(1)));
    }

    #[test]
    fn remove_reports_last_user_of_a_pattern() {
        let r = Registry::new(1);
        let a = r.add(pat("/a")).unwrap_or_else(|| panic!("closed"));
        let b = r.add(pat("/a")).unwrap_or_else(|| panic!("closed"));
        assert_eq!(r.patterns(), vec![pat("/a")]);
        assert_eq!(r.remove(a.key), None);
        assert!(r.has_pattern(&pat("/a")));
        assert_eq!(r.remove(b.key), Some(pat("/a")));
        assert_eq!(r.remove(b.key), None);
        assert!(r.patterns().is_empty());
    }

    #[test]
    fn close_ends_streams_and_refuses_new() {
        let r = Registry::new(1);
        let mut a = r.add(pat("/a")).unwrap_or_else(|| panic!("closed"));
        r.close();
        assert!(matches!(a.rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
        assert!(r.add(pat("/b")).is_none());
    }
}
