//! The in-memory backend: a complete single-node store and broker, the embedded default.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use crier_protocol::{ChannelName, ChannelPattern, ClientId};
use parking_lot::Mutex;

use crate::backend::{Backend, BackendError, DeliverySink, Millis};
use crate::context::Identity;
use crate::delivery::Delivery;

#[derive(Default)]
struct Inner {
    /// Session → last touch and subscriptions.
    sessions: HashMap<ClientId, (Millis, HashSet<ChannelPattern>)>,
    /// Identities bound to sessions.
    identities: HashMap<ClientId, Identity>,
    /// Subscription name or pattern → subscribed sessions.
    channels: HashMap<ChannelPattern, HashSet<ClientId>>,
}

/// Sessions and subscriptions in this process; publishing hands messages straight to the
/// local hub. Every method completes without waiting, so "durable" means "in the map".
#[derive(Default)]
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    sink: OnceLock<Arc<dyn DeliverySink>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn bind(&self, sink: Arc<dyn DeliverySink>) {
        let _ = self.sink.set(sink);
    }

    async fn create_session(&self, id: &ClientId, now: Millis) -> Result<(), BackendError> {
        self.inner.lock().sessions.insert(id.clone(), (now, HashSet::new()));
        Ok(())
    }

    async fn set_identity(&self, id: &ClientId, identity: &Identity) -> Result<(), BackendError> {
        let mut inner = self.inner.lock();
        if inner.sessions.contains_key(id) {
            inner.identities.insert(id.clone(), identity.clone());
        }
        Ok(())
    }

    async fn identity(&self, id: &ClientId) -> Result<Option<Identity>, BackendError> {
        Ok(self.inner.lock().identities.get(id).cloned())
    }

    async fn session_exists(&self, id: &ClientId) -> Result<bool, BackendError> {
        Ok(self.inner.lock().sessions.contains_key(id))
    }

    async fn touch(&self, id: &ClientId, now: Millis) -> Result<bool, BackendError> {
        Ok(match self.inner.lock().sessions.get_mut(id) {
            Some(s) => {
                s.0 = s.0.max(now);
                true
            }
            None => false,
        })
    }

    async fn destroy_session(&self, id: &ClientId) -> Result<Option<Vec<ChannelPattern>>, BackendError> {
        let mut inner = self.inner.lock();
        let Some((_, subs)) = inner.sessions.remove(id) else { return Ok(None) };
        inner.identities.remove(id);
        for p in &subs {
            if let Some(set) = inner.channels.get_mut(p) {
                set.remove(id);
                if set.is_empty() {
                    inner.channels.remove(p);
                }
            }
        }
        let mut subs: Vec<_> = subs.into_iter().collect();
        subs.sort();
        Ok(Some(subs))
    }

    async fn expired_sessions(&self, cutoff: Millis) -> Result<Vec<ClientId>, BackendError> {
        Ok(self.inner.lock().sessions.iter().filter(|(_, (t, _))| *t < cutoff).map(|(id, _)| id.clone()).collect())
    }

    async fn subscribe(&self, id: &ClientId, pattern: &ChannelPattern) -> Result<bool, BackendError> {
        let mut inner = self.inner.lock();
        let Some((_, subs)) = inner.sessions.get_mut(id) else { return Ok(false) };
        if !subs.insert(pattern.clone()) {
            return Ok(false);
        }
        inner.channels.entry(pattern.clone()).or_default().insert(id.clone());
        Ok(true)
    }

    async fn unsubscribe(&self, id: &ClientId, pattern: &ChannelPattern) -> Result<bool, BackendError> {
        let mut inner = self.inner.lock();
        let Some((_, subs)) = inner.sessions.get_mut(id) else { return Ok(false) };
        if !subs.remove(pattern) {
            return Ok(false);
        }
        if let Some(set) = inner.channels.get_mut(pattern) {
            set.remove(id);
            if set.is_empty() {
                inner.channels.remove(pattern);
            }
        }
        Ok(true)
    }

    async fn subscriptions(&self, id: &ClientId) -> Result<Vec<ChannelPattern>, BackendError> {
        let inner = self.inner.lock();
        let mut v: Vec<_> = inner.sessions.get(id).map(|(_, s)| s.iter().cloned().collect()).unwrap_or_default();
        v.sort();
        Ok(v)
    }

    async fn publish(&self, channel: &ChannelName, delivery: Arc<Delivery>) -> Result<(), BackendError> {
        let recipients: Vec<ClientId> = {
            let inner = self.inner.lock();
            let sets: Vec<&HashSet<ClientId>> =
                channel.expand().iter().filter_map(|name| inner.channels.get(name)).collect();
            match sets.as_slice() {
                [] => Vec::new(),
                // The common case, one matching name: no union needed.
                [one] => one.iter().cloned().collect(),
                many => {
                    let mut union: HashSet<&ClientId> = HashSet::new();
                    for s in many {
                        union.extend(s.iter());
                    }
                    union.into_iter().cloned().collect()
                }
            }
        };
        if let Some(sink) = self.sink.get() {
            sink.deliver(&recipients, &delivery);
        }
        Ok(())
    }
}
