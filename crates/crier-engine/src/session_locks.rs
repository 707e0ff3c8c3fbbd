//! Per-session locks for requests that read a session's state and then change it, such as
//! the subscription limit: counted and added under one lock, concurrent subscribes of one
//! session (several frames of a WebSocket, parallel POSTs) cannot each pass the check.
//!
//! One lock per session that is subscribing right now, kept in a map only while held or
//! waited for: a session never waits on another's subscribes (a shared, striped lock would
//! let one session's long subscribes stall others, and their sockets' later frames). Local
//! to this node: requests for one session through several nodes at once are not
//! serialised by it.

use std::collections::HashMap;
use std::sync::Arc;

use crier_protocol::ClientId;
use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

/// Per-session async locks (one map entry per session holding or waiting for its lock).
/// Also the Redis backend's, for a session's subscription changes on a node.
#[derive(Default)]
pub struct SessionLocks {
    held: Mutex<HashMap<ClientId, Arc<tokio::sync::Mutex<()>>>>,
}

/// A session's lock; it leaves the map when the last holder or waiter is done.
pub struct SessionGuard<'a> {
    locks: &'a SessionLocks,
    id: ClientId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl SessionLocks {
    /// Waits for the session's lock (first come, first served).
    pub async fn lock(&self, id: &ClientId) -> SessionGuard<'_> {
        let lock = self.held.lock().entry(id.clone()).or_default().clone();
        // Made before the wait: a waiter dropped while waiting still tidies the map.
        let mut guard = SessionGuard { locks: self, id: id.clone(), guard: None };
        guard.guard = Some(lock.lock_owned().await);
        guard
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().len()
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self.locks.held.lock();
        // Only the map's own reference left: nobody holds or waits for it.
        if held.get(&self.id).is_some_and(|l| Arc::strong_count(l) == 1) {
            held.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_session_waits_for_its_own_lock_only_and_the_map_empties() {
        let locks = SessionLocks::default();
        let a = ClientId::parse("aaaa").expect("id");
        let held = locks.lock(&a).await;
        assert!(locks.lock(&a).now_or_never().is_none(), "a second lock of one session waits");
        let others: Vec<ClientId> = (0..64).map(|i| ClientId::parse(&format!("b{i}")).expect("id")).collect();
        for b in &others {
            assert!(locks.lock(b).now_or_never().is_some(), "another session never waits");
        }
        assert_eq!(locks.len(), 1, "only the held lock is kept");
        drop(held);
        assert!(locks.lock(&a).now_or_never().is_some(), "free again once released");
        assert_eq!(locks.len(), 0);
    }
}
