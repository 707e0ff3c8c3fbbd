//! The sessions attached to this node, sharded so that deliveries to different sessions do
//! not contend on one lock.

use std::collections::HashMap;
use std::sync::Arc;

use crier_protocol::ClientId;
use parking_lot::RwLock;

use crate::backend::DeliverySink;
use crate::backlog::Backlogs;
use crate::config::OverflowPolicy;
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::session::{Pushed, Session};

const SHARDS: usize = 32;

pub(crate) struct Hub {
    shards: Vec<RwLock<HashMap<ClientId, Arc<Session>>>>,
    max_queue: usize,
    policy: OverflowPolicy,
    metrics: Arc<Metrics>,
    backlogs: Arc<Backlogs>,
}

fn shard_of(id: &ClientId) -> usize {
    // FNV-1a over the id; ids are random, so any mixing spreads them.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_str().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h as usize % SHARDS
}

impl Hub {
    pub(crate) fn new(
        max_queue: usize,
        policy: OverflowPolicy,
        metrics: Arc<Metrics>,
        backlogs: Arc<Backlogs>,
    ) -> Self {
        Hub { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(), max_queue, policy, metrics, backlogs }
    }

    /// The sessions this node has fallen behind on, which publishers wait for.
    pub(crate) fn backlogs(&self) -> &Backlogs {
        &self.backlogs
    }

    pub(crate) fn get(&self, id: &ClientId) -> Option<Arc<Session>> {
        self.shards[shard_of(id)].read().get(id).cloned()
    }

    /// Returns the attached session, creating it if absent.
    pub(crate) fn attach(&self, id: &ClientId) -> Arc<Session> {
        let mut shard = self.shards[shard_of(id)].write();
        shard.entry(id.clone()).or_insert_with(|| Session::new(id.clone(), self.backlogs.clone())).clone()
    }

    pub(crate) fn remove(&self, id: &ClientId) -> Option<Arc<Session>> {
        let s = self.shards[shard_of(id)].write().remove(id);
        if let Some(s) = &s {
            s.close();
        }
        s
    }

    /// Removes (and closes) `session` if it is still the one attached under its id.
    pub(crate) fn remove_copy(&self, session: &Arc<Session>) {
        let mut shard = self.shards[shard_of(&session.id)].write();
        if shard.get(&session.id).is_some_and(|s| Arc::ptr_eq(s, session)) {
            shard.remove(&session.id);
        }
        drop(shard);
        session.close();
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Closes every attached session (shutdown).
    pub(crate) fn close_all(&self) {
        for shard in &self.shards {
            for s in shard.read().values() {
                s.close_for_drain();
            }
        }
    }
}

impl DeliverySink for Hub {
    fn deliver(&self, sessions: &[ClientId], delivery: &Arc<Delivery>) {
        for id in sessions {
            let Some(s) = self.get(id) else { continue };
            match s.push(delivery, self.max_queue, self.policy) {
                Pushed::Queued => Metrics::inc(&self.metrics.delivered),
                Pushed::DroppedOldest => {
                    Metrics::inc(&self.metrics.delivered);
                    Metrics::inc(&self.metrics.queue_dropped);
                    tracing::warn!(client_id = %id, limit = self.max_queue, "outbound queue full, dropped oldest message");
                }
                Pushed::Overflowed => {
                    Metrics::inc(&self.metrics.queue_disconnects);
                    tracing::warn!(client_id = %id, limit = self.max_queue, "outbound queue full, disconnecting session");
                }
                Pushed::Closed => {}
            }
        }
    }

    fn close(&self, session: &ClientId) {
        self.remove(session);
    }
}
