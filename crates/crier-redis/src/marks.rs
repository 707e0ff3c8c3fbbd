//! Node marks: one hash per node saying, per subscription name, how far every session
//! attached to the node has been sent. They replace per-session cursor stores for sockets,
//! so the Redis cost of streaming does not grow with the number of connected sessions.
//!
//! A session that moves from node A to node B starts each name at the larger of its own
//! stored cursor and A's mark. That is safe only if A's mark was computed while the session
//! was attached to A with all its names, so the marks carry a validity number:
//! - Each mark write is numbered (`writes`, counted per node process).
//! - An attach records, in the session's Redis info, the number of writes A had started
//!   before it (`since`). The write's `valid` number covers a session iff `valid > since`:
//!   `valid` is the write's number, lowered to the `since` of the oldest attach still in
//!   flight (a session whose names are not yet known here).
//! - A name being subscribed here (its start cursor read from Redis, the session not yet
//!   registered under it) keeps its previous mark, or the lower of that and the current
//!   minimum: a previous mark was the log's position before the subscribe, so it is at or
//!   before the new subscription's start.
//! - A subscribe through another node than the one the session is attached to clears the
//!   session's `since` (in the subscribe script), so the marks of its node do not apply to
//!   it until it next attaches.
//! - A node that drops a session while Redis may still name it as the session's node (an
//!   attach that failed or was abandoned, a detach) "disowns" it: validity stays at the
//!   session's `since` until a script has cleared that `since` in Redis (if still this
//!   node's).
//! - The node a session moves to reads the old node's marks *before* it attaches the
//!   session, and uses them only if the attach script finds `node` and `since` unchanged:
//!   until then the old node had no reason to drop the session, so the marks it wrote with
//!   a covering validity counted it.
//!
//! Marks are lower bounds: a move replays what lies between a mark and what the session was
//! really sent (a duplicate), never skips what it was not sent.
//!
//! Not covered: Redis rolling back acknowledged writes (a failover to a replica that was
//! behind, a restart from an older snapshot) can bring back a session's old `node` and
//! `since`; messages can then be lost, as the log entries of the lost writes are.

use std::collections::{BTreeSet, HashMap};

use crier_protocol::{ChannelPattern, ClientId};

use crate::codec::Offset;

/// The hash field holding a write's validity number (names start with `/`, so no clash).
pub(crate) const VALID_FIELD: &str = "_v";

/// The hash field holding the number of the write that set it (the MARKS script reads it
/// as `_w`).
pub(crate) const WRITE_FIELD: &str = "_w";

/// What one mark write sends to Redis.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MarkWrite {
    /// Delete the hash first (a previous write may have failed half-known).
    pub(crate) full: bool,
    /// Sessions whose attach `since` is below this are covered.
    pub(crate) valid: u64,
    /// The write's number: Redis keeps a write only over an older one (a write that timed
    /// out here may still land later).
    pub(crate) writes: u64,
    /// Names whose mark changed, with the new mark.
    pub(crate) set: Vec<(ChannelPattern, Offset)>,
    /// Names no longer held here.
    pub(crate) gone: Vec<ChannelPattern>,
}

#[derive(Debug, Default)]
pub(crate) struct MarkBook {
    /// Mark writes started.
    writes: u64,
    next_token: u64,
    /// Attaches in flight: token → `since`.
    attaching: HashMap<u64, u64>,
    /// Sessions dropped here whose `since` in Redis may still name this node: each `since`
    /// to clear (one per attach or subscribe that went wrong).
    disowned: HashMap<ClientId, BTreeSet<u64>>,
    /// Names being subscribed here: how many subscribes are in flight.
    joining: HashMap<ChannelPattern, u32>,
    /// What Redis holds, as far as this node knows.
    written: HashMap<ChannelPattern, Offset>,
    /// The last write failed: Redis may hold anything this node wrote before.
    rewrite: bool,
}

impl MarkBook {
    /// An attach starts: returns its token and the `since` to record for the session.
    pub(crate) fn begin_attach(&mut self) -> (u64, u64) {
        self.next_token += 1;
        self.attaching.insert(self.next_token, self.writes);
        (self.next_token, self.writes)
    }

    pub(crate) fn end_attach(&mut self, token: u64) {
        self.attaching.remove(&token);
    }

    /// This node dropped a session that Redis may still record as attached here since
    /// `since`: no write may cover it until that is cleared (see [`MarkBook::cleared`]).
    pub(crate) fn disown(&mut self, id: &ClientId, since: u64) {
        self.disowned.entry(id.clone()).or_default().insert(since);
    }

    /// Each session to clear in Redis, with the least `since` to clear (the script clears
    /// any `since` at or above it: clearing too much costs duplicates, never a loss).
    pub(crate) fn disowned(&self) -> Vec<(ClientId, u64)> {
        self.disowned.iter().filter_map(|(id, s)| Some((id.clone(), *s.first()?))).collect()
    }

    /// Redis no longer records the session as attached here since `since` or later; a
    /// disown recorded meanwhile (a `since` not yet written when the script ran) stays.
    pub(crate) fn cleared(&mut self, id: &ClientId, since: u64) {
        if let Some(set) = self.disowned.get_mut(id) {
            set.remove(&since);
            if set.is_empty() {
                self.disowned.remove(id);
            }
        }
    }

    pub(crate) fn begin_join(&mut self, name: &ChannelPattern) {
        *self.joining.entry(name.clone()).or_default() += 1;
    }

    pub(crate) fn end_join(&mut self, name: &ChannelPattern) {
        if let Some(n) = self.joining.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                self.joining.remove(name);
            }
        }
    }

    /// The write failed or its outcome is unknown; also after Redis lost its data.
    pub(crate) fn failed(&mut self) {
        self.rewrite = true;
    }

    /// Numbers a new write from `current`, each held name's least sent offset over the
    /// sessions attached here (taken under the same lock as the attach bookkeeping).
    pub(crate) fn write(&mut self, current: &HashMap<ChannelPattern, Offset>) -> MarkWrite {
        self.writes += 1;
        let disowned = self.disowned.values().filter_map(|s| s.first());
        let valid = self.attaching.values().chain(disowned).copied().min().unwrap_or(self.writes);
        let full = std::mem::take(&mut self.rewrite);
        let mut set = Vec::new();
        for (name, least) in current {
            let mark = if self.joining.contains_key(name) {
                match self.written.get(name) {
                    Some(old) => (*least).min(*old),
                    // No earlier mark to bound the new subscription's start: leave it out.
                    None => continue,
                }
            } else {
                *least
            };
            if full || self.written.get(name) != Some(&mark) {
                self.written.insert(name.clone(), mark);
                set.push((name.clone(), mark));
            }
        }
        // Names neither held nor being joined go; a name being joined by its first session
        // here keeps its previous mark.
        let gone: Vec<ChannelPattern> = self
            .written
            .keys()
            .filter(|n| !current.contains_key(*n) && !self.joining.contains_key(*n))
            .cloned()
            .collect();
        for n in &gone {
            self.written.remove(n);
        }
        if full {
            for name in self.joining.keys() {
                if !current.contains_key(name)
                    && let Some(old) = self.written.get(name)
                {
                    set.push((name.clone(), *old));
                }
            }
        }
        MarkWrite { full, valid, writes: self.writes, set, gone: if full { Vec::new() } else { gone } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).expect("valid")
    }

    fn current(v: &[(&str, u64)]) -> HashMap<ChannelPattern, Offset> {
        v.iter().map(|(n, o)| (name(n), (*o, 0))).collect()
    }

    #[test]
    fn writes_are_numbered_and_send_only_what_changed() {
        let mut b = MarkBook::default();
        let w = b.write(&current(&[("/a", 5), ("/b", 7)]));
        assert_eq!(w.valid, 1);
        assert!(!w.full);
        assert_eq!(w.set.len(), 2);
        let w = b.write(&current(&[("/a", 5), ("/b", 9)]));
        assert_eq!((w.valid, w.set, w.gone), (2, vec![(name("/b"), (9, 0))], vec![]));
        let w = b.write(&current(&[("/b", 9)]));
        assert_eq!((w.valid, w.set, w.gone), (3, vec![], vec![name("/a")]));
    }

    #[test]
    fn an_attach_in_flight_holds_validity_at_its_since() {
        let mut b = MarkBook::default();
        b.write(&HashMap::new());
        let (token, since) = b.begin_attach();
        assert_eq!(since, 1);
        // Written while the attach runs: it must not cover the attaching session.
        let w = b.write(&HashMap::new());
        assert!(w.valid <= since, "{} covers a session attaching since {since}", w.valid);
        b.end_attach(token);
        // The first write after the session was registered covers it.
        let w = b.write(&HashMap::new());
        assert!(w.valid > since);
        assert_eq!(w.valid, 3);
    }

    #[test]
    fn a_disowned_session_holds_validity_until_cleared() {
        let mut b = MarkBook::default();
        b.write(&HashMap::new());
        let x = ClientId::from_random([7; 20]);
        b.disown(&x, 1);
        assert_eq!(b.write(&HashMap::new()).valid, 1);
        assert_eq!(b.disowned(), vec![(x.clone(), 1)]);
        // A second attach here went wrong too before the clear of the first ran: clearing
        // the first releases only the first.
        b.disown(&x, 3);
        b.cleared(&x, 1);
        assert_eq!(b.write(&HashMap::new()).valid, 3);
        assert_eq!(b.disowned(), vec![(x.clone(), 3)]);
        b.cleared(&x, 3);
        assert_eq!(b.write(&HashMap::new()).valid, 4);
    }

    #[test]
    fn a_name_being_joined_never_rises_above_its_previous_mark() {
        let mut b = MarkBook::default();
        b.write(&current(&[("/j", 10)]));
        b.begin_join(&name("/j"));
        // Others got further meanwhile; the joining session starts at the log's end as of
        // its subscribe, which is at or after 10, but may be before 12.
        let w = b.write(&current(&[("/j", 12)]));
        assert!(w.set.is_empty(), "kept at 10: {:?}", w.set);
        // A session registered lower (it attached with an old cursor) lowers it.
        let w = b.write(&current(&[("/j", 4)]));
        assert_eq!(w.set, vec![(name("/j"), (4, 0))]);
        b.end_join(&name("/j"));
        let w = b.write(&current(&[("/j", 12)]));
        assert_eq!(w.set, vec![(name("/j"), (12, 0))]);
    }

    #[test]
    fn a_name_first_joined_here_gets_no_mark_until_the_join_ends() {
        let mut b = MarkBook::default();
        b.begin_join(&name("/new"));
        let w = b.write(&current(&[("/new", 3)]));
        assert!(w.set.is_empty());
        b.end_join(&name("/new"));
        assert_eq!(b.write(&current(&[("/new", 3)])).set, vec![(name("/new"), (3, 0))]);
    }

    #[test]
    fn after_a_failure_the_whole_hash_is_rewritten() {
        let mut b = MarkBook::default();
        b.write(&current(&[("/a", 1)]));
        b.failed();
        let w = b.write(&current(&[("/a", 1)]));
        assert!(w.full);
        assert_eq!(w.set, vec![(name("/a"), (1, 0))]);
        assert!(!b.write(&current(&[("/a", 1)])).full);
    }
}
