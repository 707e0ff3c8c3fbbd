//! The in-memory backend: a complete single-node store and broker, the embedded default.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use crier_protocol::{ChannelName, ChannelPattern, ClientId};
use parking_lot::Mutex;

use crate::backend::{Backend, BackendError, ChannelsPage, Claim, DeliverySink, Millis, Touched};
use crate::context::Identity;
use crate::delivery::Delivery;
use crate::retry::RetryKey;
use crate::users::{NodeStats, Presence, PresenceChange, PresenceStatus, is_reserved};

/// How long an offline user's presence (its `last_online`) is kept: 30 days, as the Redis
/// backend's default `presence_retention_secs`.
const OFFLINE_RETENTION_MS: u64 = 30 * 24 * 3600 * 1000;

/// How many of a session's publishes are remembered for recognising retries (within
/// `engine.publish_retry_window_secs`). A client re-sends only the messages it is still
/// waiting for, so a session's last few are what matters; the cap bounds the memory a
/// session can make this node spend (64 × 24 bytes, looked through in order).
pub const REMEMBERED_PUBLISHES: usize = 64;

/// How many of the server API's publishes with an idempotency key are remembered (within
/// the same window), all apps together: about 5 MB at most, with an index. At the default
/// window of 120 s that covers 833 such calls a second.
pub const REMEMBERED_API_PUBLISHES: usize = 100_000;

/// One user's sessions and presence timestamps.
#[derive(Default)]
struct User {
    sessions: HashSet<ClientId>,
    away: HashSet<ClientId>,
    online_since: Option<Millis>,
    last_online: Option<Millis>,
    away_since: Option<Millis>,
}

impl User {
    fn status(&self) -> PresenceStatus {
        if self.sessions.is_empty() {
            PresenceStatus::Offline
        } else if self.sessions.iter().all(|s| self.away.contains(s)) {
            PresenceStatus::Away
        } else {
            PresenceStatus::Online
        }
    }

    /// Applies a change made at `now`: updates the timestamps and reports the new status
    /// if it differs from `before`.
    fn settle(&mut self, user: &str, before: PresenceStatus, now: Millis) -> Option<PresenceChange> {
        let after = self.status();
        if after == before {
            return None;
        }
        match after {
            PresenceStatus::Offline => {
                self.online_since = None;
                self.away_since = None;
                self.last_online = Some(now);
            }
            PresenceStatus::Online => {
                self.away_since = None;
                if before == PresenceStatus::Offline {
                    self.online_since = Some(now);
                }
            }
            PresenceStatus::Away => {
                self.away_since = Some(now);
                if before == PresenceStatus::Offline {
                    self.online_since = Some(now);
                }
            }
        }
        Some(PresenceChange { user: user.to_owned(), status: after, at: now })
    }
}

/// Publishes remembered for recognising retries, in the order they are forgotten (every
/// one is kept for the same window). A session's few are looked through in order; the
/// API's many have an index.
#[derive(Default)]
struct Remembered {
    order: VecDeque<([u8; 16], Millis)>,
    index: Option<HashSet<[u8; 16]>>,
}

impl Remembered {
    fn indexed() -> Self {
        Remembered { order: VecDeque::new(), index: Some(HashSet::new()) }
    }

    /// `false` if `digest` is remembered at `now`. Otherwise remembers it until `until`,
    /// forgetting the oldest beyond `cap`, and returns `true`.
    fn remember(&mut self, digest: [u8; 16], now: Millis, until: Millis, cap: usize) -> bool {
        while self.order.front().is_some_and(|(_, t)| *t <= now) {
            self.forget_oldest();
        }
        let known = match &self.index {
            Some(index) => index.contains(&digest),
            None => self.order.iter().any(|(d, _)| *d == digest),
        };
        if known {
            return false;
        }
        if self.order.len() >= cap {
            self.forget_oldest();
        }
        self.order.push_back((digest, until));
        if let Some(index) = &mut self.index {
            index.insert(digest);
        }
        true
    }

    fn forget_oldest(&mut self) {
        if let Some((d, _)) = self.order.pop_front()
            && let Some(index) = &mut self.index
        {
            index.remove(&d);
        }
    }
}

/// When something remembered at `now` for `window` is forgotten.
fn remembered_until(now: Millis, window: Duration) -> Millis {
    now.saturating_add(window.as_millis().try_into().unwrap_or(u64::MAX))
}

#[derive(Default)]
struct Inner {
    /// Session → last touch and subscriptions.
    sessions: HashMap<ClientId, (Millis, HashSet<ChannelPattern>)>,
    /// A session's remembered publishes; the server API's under `None`.
    published: HashMap<Option<ClientId>, Remembered>,
    /// Identities bound to sessions.
    identities: HashMap<ClientId, Identity>,
    /// Subscription name or pattern → subscribed sessions.
    channels: HashMap<ChannelPattern, HashSet<ClientId>>,
    /// Each name's place in listings ([`Backend::channels_page`]), numbered when it gets
    /// its first session: a cursor (the last number listed) stays good while names come
    /// and go, and a name that stays is listed once.
    listed: BTreeMap<u64, ChannelPattern>,
    listed_at: HashMap<ChannelPattern, u64>,
    /// The last number given (never reused: a name new since a cursor comes after it).
    last_listed: u64,
    /// User id → sessions and presence (kept after the last session ends, for `last_online`).
    users: HashMap<String, User>,
    /// This node's last heartbeat.
    node: Option<NodeStats>,
}

impl Inner {
    /// Adds `id` to `pattern`'s sessions.
    fn join(&mut self, pattern: &ChannelPattern, id: &ClientId) {
        let set = self.channels.entry(pattern.clone()).or_default();
        if set.is_empty() {
            self.last_listed += 1;
            let n = self.last_listed;
            self.listed.insert(n, pattern.clone());
            self.listed_at.insert(pattern.clone(), n);
        }
        set.insert(id.clone());
    }

    /// Takes `id` out of `pattern`'s sessions; the name goes with its last session.
    fn leave(&mut self, pattern: &ChannelPattern, id: &ClientId) {
        let Some(set) = self.channels.get_mut(pattern) else { return };
        set.remove(id);
        if set.is_empty() {
            self.channels.remove(pattern);
            if let Some(n) = self.listed_at.remove(pattern) {
                self.listed.remove(&n);
            }
        }
    }

    /// The sessions subscribed to a name matching `channel`, each once.
    fn recipients(&self, channel: &ChannelName) -> Vec<ClientId> {
        let sets: Vec<&HashSet<ClientId>> =
            channel.expand().iter().filter_map(|name| self.channels.get(name)).collect();
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
    }
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

    async fn touch(&self, id: &ClientId, now: Millis) -> Result<Touched, BackendError> {
        Ok(match self.inner.lock().sessions.get_mut(id) {
            Some(s) => {
                s.0 = s.0.max(now);
                Touched::Here
            }
            None => Touched::Gone,
        })
    }

    async fn mark_streaming(&self, _id: &ClientId, _ttl: std::time::Duration) -> Result<(), BackendError> {
        Ok(())
    }

    /// One node: a session is never attached elsewhere.
    async fn streaming_elsewhere(&self, _id: &ClientId, _now: Millis) -> Result<bool, BackendError> {
        Ok(false)
    }

    async fn destroy_session(&self, id: &ClientId) -> Result<Option<Vec<ChannelPattern>>, BackendError> {
        let mut inner = self.inner.lock();
        let Some((_, subs)) = inner.sessions.remove(id) else { return Ok(None) };
        inner.identities.remove(id);
        inner.published.remove(&Some(id.clone()));
        for p in &subs {
            inner.leave(p, id);
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
        inner.join(pattern, id);
        Ok(true)
    }

    async fn unsubscribe(&self, id: &ClientId, pattern: &ChannelPattern) -> Result<bool, BackendError> {
        let mut inner = self.inner.lock();
        let Some((_, subs)) = inner.sessions.get_mut(id) else { return Ok(false) };
        if !subs.remove(pattern) {
            return Ok(false);
        }
        inner.leave(pattern, id);
        Ok(true)
    }

    async fn subscriptions(&self, id: &ClientId) -> Result<Vec<ChannelPattern>, BackendError> {
        let inner = self.inner.lock();
        let mut v: Vec<_> = inner.sessions.get(id).map(|(_, s)| s.iter().cloned().collect()).unwrap_or_default();
        v.sort();
        Ok(v)
    }

    async fn publish(&self, channel: &ChannelName, delivery: Arc<Delivery>) -> Result<(), BackendError> {
        let recipients = self.inner.lock().recipients(channel);
        if let Some(sink) = self.sink.get() {
            sink.deliver(&recipients, &delivery);
        }
        Ok(())
    }

    // Both finish on their first poll: nothing is left to wait for.
    fn publish_sends_at_once(&self) -> bool {
        true
    }

    async fn publish_once(
        &self,
        channel: &ChannelName,
        delivery: Arc<Delivery>,
        key: &RetryKey,
        window: Duration,
        now: Millis,
    ) -> Result<bool, BackendError> {
        let recipients = {
            let mut inner = self.inner.lock();
            // Only a live session's publishes are remembered: the memory ends with it.
            let cap = match key.client() {
                Some(id) if inner.sessions.contains_key(id) => Some(REMEMBERED_PUBLISHES),
                Some(_) => None,
                None => Some(REMEMBERED_API_PUBLISHES),
            };
            if let Some(cap) = cap {
                let until = remembered_until(now, window);
                let mine = inner.published.entry(key.client().cloned()).or_insert_with(|| match key.client() {
                    Some(_) => Remembered::default(),
                    None => Remembered::indexed(),
                });
                if !mine.remember(key.digest(), now, until, cap) {
                    return Ok(false);
                }
            }
            inner.recipients(channel)
        };
        if let Some(sink) = self.sink.get() {
            sink.deliver(&recipients, &delivery);
        }
        Ok(true)
    }

    /// A claim is done at once ([`Backend::finish`] has nothing to do): the engine claims
    /// only after its last wait, and this backend's publishes never wait, so a call cannot
    /// stop between its claim and its publishes and still leave the claim behind.
    async fn claim(&self, key: &RetryKey, window: Duration, now: Millis) -> Result<Claim, BackendError> {
        let until = remembered_until(now, window);
        let mut inner = self.inner.lock();
        let api = inner.published.entry(None).or_insert_with(Remembered::indexed);
        Ok(if api.remember(key.digest(), now, until, REMEMBERED_API_PUBLISHES) { Claim::New } else { Claim::Done })
    }

    async fn finish(&self, _key: &RetryKey) -> Result<(), BackendError> {
        Ok(())
    }

    async fn publish_to(&self, targets: &[(ChannelPattern, Arc<Delivery>)]) -> Result<(), BackendError> {
        // Each session takes the first delivery that reaches it, so one call delivers once.
        let mut groups: Vec<(Vec<ClientId>, &Arc<Delivery>)> = Vec::with_capacity(targets.len());
        {
            let inner = self.inner.lock();
            let mut seen: HashSet<&ClientId> = HashSet::new();
            for (name, d) in targets {
                let Some(set) = inner.channels.get(name) else { continue };
                let fresh: Vec<ClientId> = set.iter().filter(|id| seen.insert(*id)).cloned().collect();
                if !fresh.is_empty() {
                    groups.push((fresh, d));
                }
            }
        }
        if let Some(sink) = self.sink.get() {
            for (ids, d) in groups {
                sink.deliver(&ids, d);
            }
        }
        Ok(())
    }

    async fn subscribers(&self, channel: &ChannelName) -> Result<Vec<ClientId>, BackendError> {
        let inner = self.inner.lock();
        let mut all: Vec<ClientId> = channel
            .expand()
            .iter()
            .filter_map(|n| inner.channels.get(n))
            .flatten()
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        all.sort();
        Ok(all)
    }

    async fn channels(&self) -> Result<Vec<(ChannelPattern, u64)>, BackendError> {
        let inner = self.inner.lock();
        let mut v: Vec<_> = inner.channels.iter().map(|(p, s)| (p.clone(), s.len() as u64)).collect();
        v.sort();
        Ok(v)
    }

    async fn channels_page(&self, prefix: &str, cursor: u64, limit: usize) -> Result<ChannelsPage, BackendError> {
        let inner = self.inner.lock();
        let mut channels = Vec::new();
        let mut last = None;
        // Bounded work under the lock every publish takes: a selective prefix gets short
        // pages, not a walk over every name.
        let look_at = limit.saturating_mul(16);
        for (n, p) in inner.listed.range(cursor.saturating_add(1)..).take(look_at) {
            if channels.len() == limit {
                break;
            }
            last = Some(*n);
            // Server-internal names are not listed (and take no place in a page).
            if p.as_str().starts_with(prefix) && !is_reserved(p) {
                let sessions = inner.channels.get(p).map_or(0, HashSet::len) as u64;
                channels.push((p.clone(), sessions));
            }
        }
        // More after the last one looked at: the next page starts there.
        let more = last.is_some_and(|l| inner.listed.range(l + 1..).next().is_some());
        channels.sort();
        Ok(ChannelsPage { channels, next: if more { last } else { None } })
    }

    async fn session_count(&self) -> Result<u64, BackendError> {
        Ok(self.inner.lock().sessions.len() as u64)
    }

    async fn user_joined(
        &self,
        user: &str,
        id: &ClientId,
        now: Millis,
    ) -> Result<Option<PresenceChange>, BackendError> {
        let mut inner = self.inner.lock();
        let u = inner.users.entry(user.to_owned()).or_default();
        let before = u.status();
        u.sessions.insert(id.clone());
        Ok(u.settle(user, before, now))
    }

    async fn user_left(&self, user: &str, id: &ClientId, now: Millis) -> Result<Option<PresenceChange>, BackendError> {
        let mut inner = self.inner.lock();
        let Some(u) = inner.users.get_mut(user) else { return Ok(None) };
        let before = u.status();
        u.sessions.remove(id);
        u.away.remove(id);
        Ok(u.settle(user, before, now))
    }

    async fn set_away(
        &self,
        user: &str,
        id: &ClientId,
        away: bool,
        now: Millis,
    ) -> Result<Option<PresenceChange>, BackendError> {
        let mut inner = self.inner.lock();
        let Some(u) = inner.users.get_mut(user) else { return Ok(None) };
        if !u.sessions.contains(id) {
            return Ok(None);
        }
        let before = u.status();
        if away {
            u.away.insert(id.clone());
        } else {
            u.away.remove(id);
        }
        Ok(u.settle(user, before, now))
    }

    async fn user_sessions(&self, user: &str) -> Result<Vec<ClientId>, BackendError> {
        let inner = self.inner.lock();
        let mut v: Vec<ClientId> =
            inner.users.get(user).map(|u| u.sessions.iter().cloned().collect()).unwrap_or_default();
        v.sort();
        Ok(v)
    }

    async fn presence(&self, users: &[String], now: Millis) -> Result<Vec<Presence>, BackendError> {
        let inner = self.inner.lock();
        Ok(users
            .iter()
            .map(|name| match inner.users.get(name) {
                Some(u) => {
                    let status = u.status();
                    Presence {
                        user: name.clone(),
                        status,
                        sessions: u.sessions.len() as u64,
                        online_since: u.online_since,
                        last_online: if status == PresenceStatus::Offline { u.last_online } else { Some(now) },
                        away_since: u.away_since,
                    }
                }
                None => Presence {
                    user: name.clone(),
                    status: PresenceStatus::Offline,
                    sessions: 0,
                    online_since: None,
                    last_online: None,
                    away_since: None,
                },
            })
            .collect())
    }

    async fn online_users(&self) -> Result<u64, BackendError> {
        Ok(self.inner.lock().users.values().filter(|u| !u.sessions.is_empty()).count() as u64)
    }

    async fn online_user_sample(&self, n: usize) -> Result<Vec<String>, BackendError> {
        let inner = self.inner.lock();
        Ok(inner.users.iter().filter(|(_, u)| !u.sessions.is_empty()).take(n).map(|(k, _)| k.clone()).collect())
    }

    async fn heartbeat(&self, stats: &NodeStats) -> Result<(), BackendError> {
        let mut inner = self.inner.lock();
        inner.node = Some(stats.clone());
        // Offline users are kept for their `last_online`, but not forever.
        let horizon = stats.updated_ms.saturating_sub(OFFLINE_RETENTION_MS);
        inner.users.retain(|_, u| !u.sessions.is_empty() || u.last_online.is_some_and(|t| t >= horizon));
        Ok(())
    }

    async fn nodes(&self, _since: Millis) -> Result<Vec<NodeStats>, BackendError> {
        Ok(self.inner.lock().node.clone().into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crier_protocol::Message;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl DeliverySink for Count {
        fn deliver(&self, sessions: &[ClientId], _: &Arc<Delivery>) {
            self.0.fetch_add(sessions.len(), Ordering::Relaxed);
        }
        fn close(&self, _: &ClientId) {}
    }

    /// Pages of the listing: each name once, at most `limit` a page, server-internal names
    /// left out, and a page's work bounded when a prefix matches few names.
    #[tokio::test]
    async fn channels_are_paged_once_each_and_within_the_limit() {
        let b = MemoryBackend::new();
        let id = ClientId::from_random([3; 20]);
        b.create_session(&id, 0).await.expect("session");
        for n in 0..50 {
            let p = ChannelPattern::parse(&format!("/c/{n:02}")).expect("valid");
            assert!(b.subscribe(&id, &p).await.expect("subscribe"));
        }
        let private = ChannelPattern::parse("/meta/crier/users/6a6f").expect("valid");
        assert!(b.subscribe(&id, &private).await.expect("subscribe"));
        let (mut seen, mut cursor, mut pages) = (Vec::new(), 0, 0);
        loop {
            let page = b.channels_page("", cursor, 7).await.expect("page");
            assert!(page.channels.len() <= 7, "{page:?}");
            seen.extend(page.channels.into_iter().map(|(p, _)| p.as_str().to_owned()));
            pages += 1;
            match page.next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        let want: Vec<String> = (0..50).map(|n| format!("/c/{n:02}")).collect();
        assert_eq!(seen, want, "each once, in order, no internal name");
        assert_eq!(pages, 8);
        // A prefix no name has: a page looks at 16 x limit names at most.
        let page = b.channels_page("/none/", 0, 1).await.expect("page");
        assert_eq!((page.channels.len(), page.next), (0, Some(16)));
    }

    /// A session's last `REMEMBERED_PUBLISHES` publishes are remembered, not more: the
    /// memory one client can make the node spend is bounded.
    #[tokio::test]
    async fn a_session_s_last_publishes_are_remembered() {
        let b = MemoryBackend::new();
        let count = Arc::new(Count::default());
        b.bind(count.clone());
        let (publisher, reader) = (ClientId::from_random([1; 20]), ClientId::from_random([2; 20]));
        let channel = ChannelName::parse("/m").expect("valid");
        for id in [&publisher, &reader] {
            b.create_session(id, 0).await.expect("memory");
        }
        b.subscribe(&reader, &channel.clone().into()).await.expect("memory");
        let window = Duration::from_secs(60);
        let send = |n: usize| {
            let key = RetryKey::new(publisher.as_str(), &n.to_string(), &channel, "{}").expect("key");
            let d = Delivery::new(n as u64, channel.clone(), Message::new(), 0);
            let b = &b;
            let channel = &channel;
            async move { b.publish_once(channel, d, &key, window, 1).await.expect("memory") }
        };
        for n in 0..=REMEMBERED_PUBLISHES {
            assert!(send(n).await, "publish {n} is new");
        }
        assert!(!send(REMEMBERED_PUBLISHES).await, "the last one is remembered");
        assert!(!send(1).await, "so is the oldest that fits");
        assert!(send(0).await, "the one before it is forgotten");
        assert_eq!(count.0.load(Ordering::Relaxed), REMEMBERED_PUBLISHES + 2);
        b.destroy_session(&publisher).await.expect("memory");
        assert!(b.inner.lock().published.is_empty(), "a session's memory ends with it");
    }
}
