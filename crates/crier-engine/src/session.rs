//! A session attached to this node: its bounded outbound queue and the wake-ups for
//! whoever delivers it (a held long-poll or a socket pump).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use crier_protocol::ClientId;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::backlog::Backlogs;
use crate::config::OverflowPolicy;
use crate::delivery::Delivery;

/// `Session::closed`: open; closed on its own; closed by the engine's drain.
const OPEN: u8 = 0;
const CLOSED: u8 = 1;
const DRAINED: u8 = 2;

/// What happened when a message was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// Queued after dropping the oldest message.
    DroppedOldest,
    /// The queue was full and the policy is to disconnect: the session is now closed.
    Overflowed,
    /// The session is closed; nothing was queued.
    Closed,
}

struct State {
    queue: VecDeque<Arc<Delivery>>,
    /// Counted in [`Backlogs`] as behind (see there for when).
    behind: bool,
    /// Incremented by every connect; a held connect whose number is no longer current has
    /// been superseded and returns at once.
    connect_gen: u64,
    /// Whether a connect has been answered since the handshake (the first is not held).
    connected_once: bool,
    /// The queue overflowed under the `disconnect` policy.
    overflowed: bool,
    /// EventSource streams open for the session on this node (usually 0 or 1). While one is
    /// open, the stream carries the messages, not the client's connect replies. (Fits the
    /// struct's padding: no cost per session.)
    streams: u16,
}

/// A session attached to this node.
pub(crate) struct Session {
    pub(crate) id: ClientId,
    /// The session's identity, once known on this node (set at handshake, or loaded).
    pub(crate) identity: Mutex<Option<Arc<crate::context::Identity>>>,
    state: Mutex<State>,
    /// Woken when messages are queued: the pump or a held long-poll takes them.
    queued: Notify,
    /// Woken when a newer connect supersedes a held one. Separate from `queued` so a
    /// socket's held connect (which never takes messages) sleeps through deliveries.
    superseded: Notify,
    /// Set once by `close` (to `CLOSED`, or `DRAINED` when the engine drains), which then
    /// wakes both of the above: a waiter enables its wake-up before it checks this, so it
    /// never sleeps through the end (and needs no cancellation token, which would cost
    /// every session an allocation).
    closed: AtomicU8,
    /// Socket pumps parked waiting for messages (usually 0 or 1): see [`Waiting`].
    waiting: AtomicU32,
    backlogs: Arc<Backlogs>,
}

impl Session {
    pub(crate) fn new(id: ClientId, backlogs: Arc<Backlogs>) -> Arc<Self> {
        Arc::new(Session {
            id,
            identity: Mutex::new(None),
            state: Mutex::new(State {
                queue: VecDeque::new(),
                behind: false,
                connect_gen: 0,
                connected_once: false,
                overflowed: false,
                streams: 0,
            }),
            queued: Notify::new(),
            superseded: Notify::new(),
            closed: AtomicU8::new(OPEN),
            waiting: AtomicU32::new(0),
            backlogs,
        })
    }

    /// Queues a delivery, applying the overflow policy, and wakes the deliverer.
    pub(crate) fn push(&self, d: &Arc<Delivery>, max: usize, policy: OverflowPolicy) -> Pushed {
        if self.is_closed() {
            return Pushed::Closed;
        }
        let result = {
            let mut st = self.state.lock();
            if st.queue.len() < max.max(1) {
                st.queue.push_back(d.clone());
                // Checked in this order: the first test is nearly always false. Counted
                // under the session's lock, so that a drain cannot count it caught up first.
                if st.queue.len() >= (max / 2).max(1)
                    && !st.behind
                    && !self.is_closed()
                    && self.waiting.load(Ordering::Acquire) > 0
                {
                    st.behind = true;
                    self.backlogs.fell_behind();
                }
                Pushed::Queued
            } else {
                match policy {
                    OverflowPolicy::DropOldest => {
                        st.queue.pop_front();
                        st.queue.push_back(d.clone());
                        Pushed::DroppedOldest
                    }
                    OverflowPolicy::Disconnect => {
                        st.overflowed = true;
                        st.queue.clear();
                        Pushed::Overflowed
                    }
                }
            }
        };
        if result == Pushed::Overflowed {
            // Closed like any other end of the session: a socket's held connect waits only
            // on `superseded`, and must answer now, not at its deadline.
            self.close();
            return result;
        }
        self.queued.notify_waiters();
        result
    }

    /// Takes what is queued, from the oldest, up to `max_bytes` of encoded messages (at
    /// least one; 0: everything). What is left stays queued for the next take.
    ///
    /// Only a take that empties the queue lets waiting publishers through (a quarter of
    /// `max_queue` each time): one that leaves most of a long queue of large messages
    /// behind would let them overflow the queue it is working through.
    pub(crate) fn drain(&self, max_bytes: usize) -> Vec<Arc<Delivery>> {
        let (items, emptied) = {
            let mut st = self.state.lock();
            let n = within(&st.queue, max_bytes);
            let items: Vec<_> = st.queue.drain(..n).collect();
            let emptied = st.queue.is_empty();
            if emptied {
                self.catch_up(&mut st);
            }
            (items, emptied)
        };
        if emptied {
            self.backlogs.drained();
        }
        items
    }

    /// No longer counted as behind (under the session's lock, as the count was raised).
    fn catch_up(&self, st: &mut State) {
        if std::mem::take(&mut st.behind) {
            self.backlogs.caught_up();
        }
    }

    /// A socket pump parks waiting for messages until the returned guard is dropped.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self)
    }

    /// Puts messages back at the front of the queue (a response that could not be sent).
    pub(crate) fn requeue(&self, items: Vec<Arc<Delivery>>) {
        if items.is_empty() {
            return;
        }
        {
            let mut st = self.state.lock();
            for it in items.into_iter().rev() {
                st.queue.push_front(it);
            }
        }
        self.queued.notify_waiters();
    }

    /// Starts a connect: supersedes any held one. Returns its number and whether it is the
    /// first connect of the session.
    pub(crate) fn begin_connect(&self) -> (u64, bool) {
        let r = {
            let mut st = self.state.lock();
            st.connect_gen += 1;
            let first = !st.connected_once;
            st.connected_once = true;
            (st.connect_gen, first)
        };
        self.superseded.notify_waiters();
        r
    }

    /// Records that the session's first connect was answered (on another node).
    pub(crate) fn mark_connected(&self) {
        self.state.lock().connected_once = true;
    }

    pub(crate) fn is_current(&self, generation: u64) -> bool {
        self.state.lock().connect_gen == generation
    }

    /// An EventSource stream opened (`true`) or ended (`false`) for the session here.
    pub(crate) fn stream_open(&self, open: bool) {
        let mut st = self.state.lock();
        st.streams = if open { st.streams.saturating_add(1) } else { st.streams.saturating_sub(1) };
    }

    /// Whether an EventSource stream serves the session on this node.
    pub(crate) fn is_streaming(&self) -> bool {
        self.state.lock().streams > 0
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.state.lock().overflowed
    }

    pub(crate) fn queued(&self) -> &Notify {
        &self.queued
    }

    pub(crate) fn superseded(&self) -> &Notify {
        &self.superseded
    }

    /// Whether the session was closed here (lock-free; see `closed`).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != OPEN
    }

    /// Whether the session was closed on its own (destroyed, or gone to another node,
    /// which re-reads what it was not sent), not by the drain: what it still has queued is
    /// not to be delivered from here, as it could repeat what the other node delivers.
    pub(crate) fn withholds_queue(&self) -> bool {
        self.closed.load(Ordering::Acquire) == CLOSED
    }

    /// Ends the session locally: held connects return and pumps stop.
    pub(crate) fn close(&self) {
        self.close_as(CLOSED);
    }

    /// Ends the session because the engine drains: held connects and pumps still hand
    /// over what is queued, in their last replies.
    pub(crate) fn close_for_drain(&self) {
        self.close_as(DRAINED);
    }

    fn close_as(&self, how: u8) {
        // The first close says how (a drain does not turn a withheld queue into one to flush).
        let _ = self.closed.compare_exchange(OPEN, how, Ordering::AcqRel, Ordering::Acquire);
        self.catch_up(&mut self.state.lock());
        self.queued.notify_waiters();
        self.superseded.notify_waiters();
    }
}

/// A socket pump parked waiting for its session's messages, as opposed to a socket task
/// busy elsewhere (writing to a client that does not read, answering a request) or gone.
/// Only a session with a waiting pump counts as behind: its task was woken by the
/// messages and has not run since, so the node is short of CPU. When the last waiting
/// pump stops waiting without taking them (its future dropped), the session stops counting.
pub(crate) struct Waiting<'a>(&'a Session);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut st = self.0.state.lock();
            // A pump that started waiting meanwhile keeps it counted.
            if self.0.waiting.load(Ordering::Acquire) == 0 {
                self.0.catch_up(&mut st);
            }
        }
    }
}

/// Messages taken from a session's queue on their way out: if the future carrying them is
/// dropped before they are handed over, they go back to the front of the queue.
pub(crate) struct Requeue<'a> {
    session: &'a Session,
    items: Option<Vec<Arc<Delivery>>>,
}

impl<'a> Requeue<'a> {
    pub(crate) fn new(session: &'a Session, items: Vec<Arc<Delivery>>) -> Self {
        Requeue { session, items: Some(items) }
    }

    pub(crate) fn items(&self) -> &[Arc<Delivery>] {
        self.items.as_deref().unwrap_or_default()
    }

    /// They were handed over: nothing goes back.
    pub(crate) fn disarm(mut self) -> Vec<Arc<Delivery>> {
        self.items.take().unwrap_or_default()
    }
}

impl Drop for Requeue<'_> {
    fn drop(&mut self) {
        if let Some(items) = self.items.take() {
            self.session.requeue(items);
        }
    }
}

/// How many messages from the front of `queue` fit in `max_bytes` of JSON (each message
/// plus its comma): at least one, all of them for 0.
fn within(queue: &VecDeque<Arc<Delivery>>, max_bytes: usize) -> usize {
    if max_bytes == 0 {
        return queue.len();
    }
    let mut total = 0usize;
    let fit = queue
        .iter()
        .take_while(|d| {
            total = total.saturating_add(d.json.len() + 1);
            total <= max_bytes
        })
        .count();
    fit.max(1).min(queue.len())
}
