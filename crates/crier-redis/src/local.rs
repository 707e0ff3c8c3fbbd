//! Sessions attached to this node, as the Redis backend sees them: their subscription names
//! and, per name, how far deliveries got. Pure and synchronous; the backend drives it.
//!
//! The rules that make each message reach each session once and in order:
//! - A message matching several of a session's names arrives once per name (each name has
//!   its own log and pub/sub channel). The first copy is taken; later copies are recognised
//!   by the message id and skipped. Order holds: each name's copies arrive in publish order,
//!   so the first copy of an earlier message precedes the first copy of a later one.
//! - Per name, offsets only move forward: a copy at or before the name's `queued` offset was
//!   already taken (a live message also read from the log while bridging).
//! - While a session is bridging (reading its logs after attaching, resubscribing or
//!   lagging), live messages wait in `pending` and are applied after the log entries, which
//!   are merged by offset.
//! - A skipped copy moves its name's `sent` position too when nothing taken through that
//!   name is still unsent, so resuming elsewhere does not replay it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crier_engine::Delivery;
use crier_protocol::{ChannelPattern, ClientId};

use crate::codec::Offset;
use crate::marks::{MarkBook, MarkWrite};

/// Message ids remembered per session to recognise copies arriving through other names.
const RECENT: usize = 128;

#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    /// Last offset taken into the session's queue (or skipped as not primary).
    queued: Offset,
    /// Last offset known to be sent to the client (or safe to skip on resume).
    sent: Offset,
    /// Last offset stored in Redis.
    stored: Offset,
}

#[derive(Debug, Default)]
struct SessionState {
    subs: HashMap<ChannelPattern, Cursor>,
    bridging: u32,
    pending: VecDeque<Arc<Delivery>>,
    recent: VecDeque<u64>,
    /// The session's identity as stored in Redis (JSON), to write back after data loss.
    identity: Option<String>,
    /// The `since` its attach here recorded in Redis (see `marks`), once it is registered.
    since: Option<u64>,
}

/// What forgetting a session left to do.
#[derive(Debug)]
pub(crate) struct Removed {
    /// Positions sent but not stored yet.
    pub(crate) unstored: Vec<(ChannelPattern, Offset)>,
    /// Names no attached session needs any more (their channels can go).
    pub(crate) unused: Vec<ChannelPattern>,
}

#[derive(Debug, Default)]
pub(crate) struct Local {
    sessions: HashMap<ClientId, SessionState>,
    names: HashMap<ChannelPattern, HashSet<ClientId>>,
    /// Sessions whose positions must be stored again (a store failed). Positions sent
    /// otherwise reach Redis through the node's marks, or when the session leaves.
    dirty: HashSet<ClientId>,
    pending_limit: usize,
    /// The node's marks: what was written, and what is in flight (see `marks`).
    pub(crate) marks: MarkBook,
    /// Per name held here, the least position sent to its sessions, as of the last mark
    /// write; `stale` names were touched since (recomputed at the next write only, so an
    /// idle node's writes cost nothing per session).
    least: HashMap<ChannelPattern, Offset>,
    stale: HashSet<ChannelPattern>,
}

impl Local {
    pub(crate) fn new(pending_limit: usize) -> Self {
        Local { pending_limit: pending_limit.max(1), ..Local::default() }
    }

    pub(crate) fn contains(&self, id: &ClientId) -> bool {
        self.sessions.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether any attached session subscribes to `name` (the node needs its channel).
    pub(crate) fn wants(&self, name: &ChannelPattern) -> bool {
        self.names.get(name).is_some_and(|s| !s.is_empty())
    }

    /// Every name some attached session needs.
    pub(crate) fn names(&self) -> Vec<ChannelPattern> {
        self.names.iter().filter(|(_, s)| !s.is_empty()).map(|(n, _)| n.clone()).collect()
    }

    /// Every attached session.
    pub(crate) fn sessions(&self) -> Vec<ClientId> {
        self.sessions.keys().cloned().collect()
    }

    /// Remembers a session's identity (JSON), if the session is attached here.
    pub(crate) fn set_identity(&mut self, id: &ClientId, json: String) {
        if let Some(st) = self.sessions.get_mut(id) {
            st.identity = Some(json);
        }
    }

    /// The session's identity (JSON), if known here.
    pub(crate) fn identity(&self, id: &ClientId) -> Option<String> {
        self.sessions.get(id).and_then(|s| s.identity.clone())
    }

    /// A session's names and their sent offsets (to restore them in Redis).
    pub(crate) fn subscriptions(&self, id: &ClientId) -> Vec<(ChannelPattern, Offset)> {
        self.sessions.get(id).map(|s| s.subs.iter().map(|(n, c)| (n.clone(), c.sent)).collect()).unwrap_or_default()
    }

    /// Starts bridging a session: registers the given names at their start offsets (names it
    /// already has keep theirs), and returns every name to read with the offset to read
    /// after: the given names, or all of the session's names if `all`. Only an attach (or a
    /// subscribe Redis says is ours) may `create` the session; otherwise an unknown session
    /// gets `None` (it left this node meanwhile).
    pub(crate) fn begin_bridge(
        &mut self,
        id: &ClientId,
        names: &[(ChannelPattern, Offset)],
        all: bool,
        create: bool,
    ) -> Option<Vec<(ChannelPattern, Offset)>> {
        if !create && !self.sessions.contains_key(id) {
            return None;
        }
        let st = self.sessions.entry(id.clone()).or_default();
        st.bridging += 1;
        for (name, start) in names {
            st.subs.entry(name.clone()).or_insert(Cursor { queued: *start, sent: *start, stored: *start });
            self.names.entry(name.clone()).or_default().insert(id.clone());
            self.stale.insert(name.clone());
        }
        Some(if all {
            st.subs.iter().map(|(n, c)| (n.clone(), c.queued)).collect()
        } else {
            names.iter().filter_map(|(n, _)| st.subs.get(n).map(|c| (n.clone(), c.queued))).collect()
        })
    }

    /// Starts bridging every attached session from where each name got to, in one step, so
    /// live messages that follow (after a lag or a reconnect) wait instead of moving offsets
    /// past the gap. Returns what to read per session.
    pub(crate) fn begin_bridge_all(&mut self) -> Vec<(ClientId, Vec<(ChannelPattern, Offset)>)> {
        self.sessions
            .iter_mut()
            .map(|(id, st)| {
                st.bridging += 1;
                (id.clone(), st.subs.iter().map(|(n, c)| (n.clone(), c.queued)).collect())
            })
            .collect()
    }

    /// Ends a bridge: applies the log entries read (sorted by offset), then, if no other
    /// bridge is running, the live messages that arrived meanwhile.
    pub(crate) fn end_bridge(&mut self, id: &ClientId, mut entries: Vec<Arc<Delivery>>) -> Vec<Arc<Delivery>> {
        let mut out = Vec::new();
        let Some(st) = self.sessions.get_mut(id) else { return out };
        // Stable: each name's entries keep their log order.
        entries.sort_by_key(|d| d.position.as_ref().map(|p| p.offset));
        let mut moved = Vec::new();
        for d in entries {
            match accept(st, &d) {
                Accepted::Take => out.push(d),
                Accepted::SkipMoved(name) => moved.push(name),
                Accepted::Skip => {}
            }
        }
        st.bridging = st.bridging.saturating_sub(1);
        if st.bridging == 0 {
            while let Some(d) = st.pending.pop_front() {
                match accept(st, &d) {
                    Accepted::Take => out.push(d),
                    Accepted::SkipMoved(name) => moved.push(name),
                    Accepted::Skip => {}
                }
            }
        }
        self.stale.extend(moved);
        out
    }

    /// A live message from its name's channel: the attached sessions that take it now, and
    /// how many bridging buffers overflowed. Sessions that are bridging keep it for later.
    pub(crate) fn on_live(&mut self, d: &Arc<Delivery>) -> (Vec<ClientId>, u64) {
        let mut recipients = Vec::new();
        let mut dropped = 0;
        let Some(name) = d.position.as_ref().map(|p| &p.name) else { return (recipients, dropped) };
        let Some(ids) = self.names.get(name) else { return (recipients, dropped) };
        for id in ids {
            let Some(st) = self.sessions.get_mut(id) else { continue };
            if st.bridging > 0 {
                if st.pending.len() >= self.pending_limit {
                    st.pending.pop_front();
                    dropped += 1;
                }
                st.pending.push_back(d.clone());
            } else {
                match accept(st, d) {
                    Accepted::Take => recipients.push(id.clone()),
                    Accepted::SkipMoved(name) => {
                        self.stale.insert(name);
                    }
                    Accepted::Skip => {}
                }
            }
        }
        (recipients, dropped)
    }

    /// Removes names from a session; returns those no attached session needs any more.
    pub(crate) fn remove_names(&mut self, id: &ClientId, names: &[ChannelPattern]) -> Vec<ChannelPattern> {
        let Some(st) = self.sessions.get_mut(id) else { return Vec::new() };
        for n in names {
            st.subs.remove(n);
            self.stale.insert(n.clone());
        }
        self.release(id, names)
    }

    /// Records the `since` of the session's attach here, now that it is registered; false
    /// if it is not (dropped meanwhile).
    pub(crate) fn set_since(&mut self, id: &ClientId, since: u64) -> bool {
        let Some(st) = self.sessions.get_mut(id) else { return false };
        st.since = Some(since);
        true
    }

    /// Something about the session went wrong after Redis may have recorded it (a subscribe
    /// that failed half-way): the marks stop covering it, though it stays attached here.
    pub(crate) fn disown_attached(&mut self, id: &ClientId) {
        if let Some(since) = self.sessions.get_mut(id).and_then(|st| st.since.take()) {
            self.marks.disown(id, since);
        }
    }

    /// Forgets a session; returns its unstored positions and the names nobody needs now.
    /// `disown`: Redis may still record it as attached here (it did not move, and was not
    /// destroyed), so the marks must stop covering it (see `marks`).
    pub(crate) fn remove_session(&mut self, id: &ClientId, disown: bool) -> Option<Removed> {
        let st = self.sessions.remove(id)?;
        self.dirty.remove(id);
        if disown && let Some(since) = st.since {
            self.marks.disown(id, since);
        }
        self.stale.extend(st.subs.keys().cloned());
        let unstored = st.subs.iter().filter(|(_, c)| c.sent > c.stored).map(|(n, c)| (n.clone(), c.sent)).collect();
        let names: Vec<ChannelPattern> = st.subs.into_keys().collect();
        Some(Removed { unstored, unused: self.release(id, &names) })
    }

    fn release(&mut self, id: &ClientId, names: &[ChannelPattern]) -> Vec<ChannelPattern> {
        let mut unused = Vec::new();
        for n in names {
            if let Some(set) = self.names.get_mut(n) {
                set.remove(id);
                if set.is_empty() {
                    self.names.remove(n);
                    unused.push(n.clone());
                }
            }
        }
        unused
    }

    /// Records deliveries handed to the client; whether a position moved.
    pub(crate) fn record_sent(&mut self, id: &ClientId, items: &[Arc<Delivery>]) -> bool {
        let Some(st) = self.sessions.get_mut(id) else { return false };
        let mut changed = false;
        for d in items {
            let Some(p) = &d.position else { continue };
            if let Some(c) = st.subs.get_mut(&p.name)
                && p.offset > c.sent
            {
                c.sent = p.offset;
                changed = true;
                if !self.stale.contains(&p.name) {
                    self.stale.insert(p.name.clone());
                }
            }
        }
        changed
    }

    /// Numbers the next mark write: per name held here, the least position sent to any
    /// session attached here (under the same lock as attaches, so none is half-counted).
    pub(crate) fn take_marks(&mut self) -> MarkWrite {
        for name in self.stale.drain() {
            let least = self.names.get(&name).and_then(|ids| {
                ids.iter().filter_map(|id| self.sessions.get(id)?.subs.get(&name)).map(|c| c.sent).min()
            });
            match least {
                Some(least) => self.least.insert(name, least),
                None => self.least.remove(&name),
            };
        }
        self.marks.write(&self.least)
    }

    /// Sessions with positions sent but not stored (to store them all before shutting down).
    pub(crate) fn unstored_sessions(&self) -> Vec<ClientId> {
        self.sessions
            .iter()
            .filter(|(_, st)| st.subs.values().any(|c| c.sent > c.stored))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Takes a session's positions not yet stored, marking them stored.
    pub(crate) fn take_unstored(&mut self, id: &ClientId) -> Vec<(ChannelPattern, Offset)> {
        self.dirty.remove(id);
        let Some(st) = self.sessions.get_mut(id) else { return Vec::new() };
        let mut out = Vec::new();
        for (n, c) in &mut st.subs {
            if c.sent > c.stored {
                c.stored = c.sent;
                out.push((n.clone(), c.sent));
            }
        }
        out
    }

    /// A store of these positions failed: keep them to store again.
    pub(crate) fn unstore(&mut self, id: &ClientId, cursors: &[(ChannelPattern, Offset)]) {
        let Some(st) = self.sessions.get_mut(id) else { return };
        for (n, _) in cursors {
            if let Some(c) = st.subs.get_mut(n) {
                c.stored = crate::codec::ZERO;
            }
        }
        self.dirty.insert(id.clone());
    }

    /// Sessions whose positions must be stored again.
    pub(crate) fn take_dirty(&mut self) -> Vec<ClientId> {
        self.dirty.drain().collect()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Accepted {
    /// Queue it for the session.
    Take,
    /// Already had (or not subscribed).
    Skip,
    /// A copy already had through another name; the name's `sent` position moved past it.
    SkipMoved(ChannelPattern),
}

/// Whether a session takes a delivery now (see the module docs for the rules).
fn accept(st: &mut SessionState, d: &Arc<Delivery>) -> Accepted {
    let Some(p) = &d.position else { return Accepted::Skip };
    let several = st.subs.len() > 1;
    let Some(c) = st.subs.get_mut(&p.name) else { return Accepted::Skip };
    if p.offset <= c.queued {
        return Accepted::Skip;
    }
    let caught_up = c.queued == c.sent;
    c.queued = p.offset;
    // Copies come only through a session's other names: with one name there is nothing to
    // look for (this runs per message per session), but the id is still recorded below in
    // case a second name is being added.
    if several && st.recent.contains(&d.seq) {
        // Nothing taken through this name waits to be sent: resuming may start after it.
        if caught_up {
            c.sent = p.offset;
            return Accepted::SkipMoved(p.name.clone());
        }
        return Accepted::Skip;
    }
    if st.recent.len() >= RECENT {
        st.recent.pop_front();
    }
    st.recent.push_back(d.seq);
    Accepted::Take
}

#[cfg(test)]
mod tests {
    use crier_engine::LogPosition;
    use crier_protocol::{ChannelName, Message};

    use super::*;
    use crate::codec::ZERO;

    fn id(n: u8) -> ClientId {
        ClientId::from_random([n; 20])
    }

    fn name(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).expect("valid")
    }

    fn d(via: &str, offset: u64, seq: u64, channel: &str) -> Arc<Delivery> {
        let channel = ChannelName::parse(channel).expect("valid");
        Delivery::from_backend(
            seq,
            channel,
            Message::new(),
            Arc::from("{}"),
            Some(LogPosition { name: name(via), offset: (offset, 0) }),
            0,
        )
    }

    #[test]
    fn a_session_with_overlapping_names_takes_each_message_once() {
        let mut l = Local::new(100);
        let a = id(1);
        l.begin_bridge(&a, &[(name("/a/*"), ZERO), (name("/a/b"), ZERO)], false, true);
        assert!(l.end_bridge(&a, Vec::new()).is_empty());
        // The same publish arrives through both names: the first copy is taken.
        let (via_exact, _) = l.on_live(&d("/a/b", 1, 7, "/a/b"));
        let (via_wild, _) = l.on_live(&d("/a/*", 1, 7, "/a/b"));
        assert_eq!(via_exact, vec![a.clone()]);
        assert!(via_wild.is_empty(), "the second copy is skipped");
        // The skipped copy moved the wildcard's position (nothing else waits there).
        let marks = l.take_marks();
        assert!(marks.set.contains(&(name("/a/*"), (1, 0))), "{marks:?}");
        // A message only the wildcard matches comes through it.
        assert_eq!(l.on_live(&d("/a/*", 2, 8, "/a/c")).0, vec![a.clone()]);
        // A bridge reading both logs takes each message once, in publish order.
        l.begin_bridge(&a, &[], true, false);
        let out = l.end_bridge(
            &a,
            vec![d("/a/*", 3, 9, "/a/b"), d("/a/b", 3, 9, "/a/b"), d("/a/*", 4, 10, "/a/b"), d("/a/b", 4, 10, "/a/b")],
        );
        assert_eq!(out.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![9, 10]);
    }

    #[test]
    fn live_messages_during_a_bridge_wait_and_merge_without_loss_or_doubles() {
        let mut l = Local::new(100);
        let a = id(2);
        assert!(l.begin_bridge(&a, &[(name("/x"), (5, 0))], false, false).is_none(), "only an attach creates");
        let to_read = l.begin_bridge(&a, &[(name("/x"), (5, 0))], false, true);
        assert_eq!(to_read, Some(vec![(name("/x"), (5, 0))]));
        // Live 8 arrives while the log read (6, 7, 8) is in flight.
        assert!(l.on_live(&d("/x", 8, 108, "/x")).0.is_empty(), "held while bridging");
        let out = l.end_bridge(&a, vec![d("/x", 7, 107, "/x"), d("/x", 6, 106, "/x"), d("/x", 8, 108, "/x")]);
        let seqs: Vec<u64> = out.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, vec![106, 107, 108], "log order, live duplicate dropped");
        assert_eq!(l.on_live(&d("/x", 9, 109, "/x")).0, vec![a.clone()]);
        assert!(l.on_live(&d("/x", 9, 109, "/x")).0.is_empty(), "same offset again is a duplicate");
    }

    #[test]
    fn a_bridge_of_every_session_holds_live_messages_until_the_logs_are_read() {
        let mut l = Local::new(100);
        let a = id(4);
        l.begin_bridge(&a, &[(name("/g"), ZERO)], false, true);
        l.end_bridge(&a, Vec::new());
        assert_eq!(l.on_live(&d("/g", 1, 1, "/g")).0.len(), 1);
        // A lag: 2 and 3 were dropped; 4 arrives before the logs are read.
        let snapshot = l.begin_bridge_all();
        assert_eq!(snapshot, vec![(a.clone(), vec![(name("/g"), (1, 0))])]);
        assert!(l.on_live(&d("/g", 4, 4, "/g")).0.is_empty());
        let out = l.end_bridge(&a, vec![d("/g", 2, 2, "/g"), d("/g", 3, 3, "/g"), d("/g", 4, 4, "/g")]);
        assert_eq!(out.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn a_mark_is_the_least_position_any_attached_session_was_sent() {
        let mut l = Local::new(100);
        let (a, b) = (id(5), id(6));
        for s in [&a, &b] {
            l.begin_bridge(s, &[(name("/m"), (2, 0))], false, true);
            l.end_bridge(s, Vec::new());
        }
        let (m3, m4) = (d("/m", 3, 1, "/m"), d("/m", 4, 2, "/m"));
        assert_eq!(l.on_live(&m3).0.len(), 2);
        assert_eq!(l.on_live(&m4).0.len(), 2);
        l.record_sent(&a, &[m3.clone(), m4]);
        l.record_sent(&b, &[m3]);
        // b still has 4 to send: a move of either replays from 3, never skips 4.
        assert_eq!(l.take_marks().set, vec![(name("/m"), (3, 0))]);
        // b leaves: a alone sets it.
        l.remove_session(&b, false);
        assert_eq!(l.take_marks().set, vec![(name("/m"), (4, 0))]);
        l.remove_session(&a, false);
        assert_eq!(l.take_marks().gone, vec![name("/m")]);
    }

    #[test]
    fn sent_positions_are_recorded_and_taken_once() {
        let mut l = Local::new(100);
        let a = id(3);
        l.begin_bridge(&a, &[(name("/s"), ZERO)], false, true);
        l.end_bridge(&a, Vec::new());
        let m = d("/s", 4, 1, "/s");
        assert_eq!(l.on_live(&m).0.len(), 1);
        assert!(l.record_sent(&a, &[m]));
        // Reaches Redis through the node's marks, or when the session leaves.
        assert!(l.take_dirty().is_empty());
        assert_eq!(l.unstored_sessions(), vec![a.clone()]);
        assert_eq!(l.take_marks().set, vec![(name("/s"), (4, 0))]);
        assert_eq!(l.take_unstored(&a), vec![(name("/s"), (4, 0))]);
        assert!(l.take_unstored(&a).is_empty());
        assert!(l.unstored_sessions().is_empty());
        // A failed store is kept for the next flush.
        l.unstore(&a, &[(name("/s"), (4, 0))]);
        assert_eq!(l.take_dirty(), vec![a.clone()]);
        assert_eq!(l.take_unstored(&a), vec![(name("/s"), (4, 0))]);
        let removed = l.remove_session(&a, false).expect("attached");
        assert!(removed.unstored.is_empty());
        assert_eq!(removed.unused, vec![name("/s")]);
        assert!(!l.wants(&name("/s")));
    }
}
