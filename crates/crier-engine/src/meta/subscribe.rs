//! `/meta/subscribe` and `/meta/unsubscribe`, which validate the same way.

use std::collections::HashSet;

use crier_protocol::message::truthy;
use crier_protocol::{BayeuxError, ChannelKind, ChannelPattern, ErrorCode, Message};
use serde_json::Value;

use crate::context::RequestContext;
use crate::engine::Inner;
use crate::events::Event;
use crate::metrics::Metrics;

fn label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn too_many(max: usize) -> BayeuxError {
    BayeuxError::with_text(
        ErrorCode::ChannelForbidden,
        Vec::<String>::new(),
        format!("Too many subscriptions (limit {max})"),
    )
}

impl Inner {
    pub(crate) async fn subscribe(&self, m: &Message, ctx: &RequestContext, subscribe: bool) -> Message {
        let mut r = m.response();
        r.set("subscription", m.subscription().cloned().unwrap_or_else(|| Value::Array(Vec::new())));
        let raw_id = m.client_id();
        let session = match self.client_of(m).await {
            Ok(s) => s,
            Err(e) => {
                r.fail(e);
                return r;
            }
        };
        let exists = session.is_some();
        // Missing in Faye's sense (`!message.subscription`): absent or JavaScript-falsy.
        let error = if !m.subscription().is_some_and(truthy) {
            Some(BayeuxError::missing("subscription").to_string())
        } else if raw_id.is_none() {
            Some(BayeuxError::missing("clientId").to_string())
        } else if !exists {
            Some(BayeuxError::unknown_client(raw_id.unwrap_or_default()).to_string())
        } else {
            m.error().map(str::to_owned)
        };
        if let Some(e) = error {
            r.fail(e);
            return r;
        }
        let Some(id) = session else { return r };

        let items: Vec<&Value> = match m.subscription() {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v) => vec![v],
            None => Vec::new(),
        };
        // Validate everything first, so a bad entry has no partial effect (Faye subscribes the
        // entries before the bad one; all-or-nothing is what a client can reason about).
        // A name given twice is one subscription: the backend is asked once. More distinct
        // names than a session may hold cannot all be meant: the message is refused as soon
        // as that many are seen (unsubscribes too: a session never holds more), so a
        // megabyte of names costs the backend nothing.
        let max = self.config.max_subscriptions;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut patterns = Vec::new();
        for v in &items {
            if v.as_str().is_some_and(|s| seen.contains(s)) {
                continue;
            }
            let parsed =
                v.as_str().filter(|s| self.config.channel_allowed(s)).and_then(|s| ChannelPattern::parse(s).ok());
            let Some(p) = parsed else {
                r.fail(BayeuxError::invalid_channel(&label(v)));
                return r;
            };
            if !ctx.is_local() && p.kind() != ChannelKind::Broadcast {
                r.fail(BayeuxError::forbidden(&label(v)));
                return r;
            }
            if let Some(s) = v.as_str() {
                seen.insert(s);
            }
            patterns.push(p);
            if patterns.len() > max {
                tracing::warn!(client_id = %id, limit = max, "too many names in one subscription message");
                r.fail(too_many(max));
                return r;
            }
        }
        // Held until the names are added: concurrent subscribes of this session (frames of
        // one socket, parallel POSTs) are counted one after the other, so together they
        // cannot pass the limit either. (Unsubscribes need no count.)
        let _serial = if subscribe { Some(self.session_locks.lock(&id).await) } else { None };
        if subscribe {
            let current = match self.backend.subscriptions(&id).await {
                Ok(v) => v,
                Err(e) => {
                    Metrics::inc(&self.metrics.backend_errors);
                    r.fail(super::backend_error(&e));
                    return r;
                }
            };
            // Count distinct new names: an entry repeated in the list, or one the session
            // already holds, adds no subscription, so it must not count towards the limit.
            let current: HashSet<&ChannelPattern> = current.iter().filter(|p| !crate::users::is_reserved(p)).collect();
            let new = patterns.iter().filter(|p| !current.contains(p)).collect::<HashSet<_>>().len();
            if current.len() + new > max {
                tracing::warn!(client_id = %id, limit = max, requested = new, "subscription limit reached");
                r.fail(too_many(max));
                return r;
            }
        }
        for p in patterns {
            let res =
                if subscribe { self.backend.subscribe(&id, &p).await } else { self.backend.unsubscribe(&id, &p).await };
            match res {
                Ok(true) => {
                    if subscribe {
                        Metrics::inc(&self.metrics.subscribes);
                        self.metrics.subscriptions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.emit(Event::Subscribe(id.clone(), p));
                    } else {
                        self.metrics.subscriptions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        self.emit(Event::Unsubscribe(id.clone(), p));
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    Metrics::inc(&self.metrics.backend_errors);
                    r.fail(super::backend_error(&e));
                    return r;
                }
            }
        }
        r
    }
}
