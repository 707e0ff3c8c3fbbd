//! Per-session locks for requests that read a session's state and then change it, such as
//! the subscription limit: counted and added under one lock, concurrent subscribes of one
//! session (several frames of a WebSocket, parallel POSTs) cannot each pass the check.
//!
//! Striped (a fixed set of locks, a session hashed to one) rather than one lock per
//! session: no map to keep in step with sessions that end, and sessions that share a stripe
//! only wait on each other's subscribes, never on deliveries. Local to this node: requests
//! for one session through several nodes at once are not serialised by it.

use std::hash::BuildHasher;

use crier_protocol::ClientId;
use tokio::sync::{Mutex, MutexGuard};

/// Enough that sessions subscribing at the same time rarely share one (a reconnect storm
/// subscribes thousands at once), few enough to cost nothing: 256 × 48 bytes.
const STRIPES: usize = 256;

pub(crate) struct SessionLocks {
    stripes: Box<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl SessionLocks {
    pub(crate) fn new() -> Self {
        SessionLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Waits for the session's lock (first come, first served).
    pub(crate) async fn lock(&self, id: &ClientId) -> MutexGuard<'_, ()> {
        let i = (self.hasher.hash_one(id.as_str()) as usize) % self.stripes.len();
        self.stripes[i].lock().await
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_session_waits_for_its_own_lock_only() {
        let locks = SessionLocks::new();
        let a = ClientId::parse("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").expect("id");
        let held = locks.lock(&a).await;
        assert!(locks.lock(&a).now_or_never().is_none(), "a second lock of one session waits");
        // Most other sessions do not (one in 256 shares the stripe).
        let free = (0..64)
            .filter(|i| {
                let b = ClientId::parse(&format!("b{i:031}")).expect("id");
                locks.lock(&b).now_or_never().is_some()
            })
            .count();
        assert!(free >= 60, "{free} of 64 other sessions were free");
        drop(held);
        assert!(locks.lock(&a).now_or_never().is_some(), "free again once released");
    }
}
