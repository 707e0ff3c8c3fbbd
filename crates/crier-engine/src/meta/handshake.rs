//! `/meta/handshake`: creates a session.

use std::sync::atomic::Ordering;

use crier_protocol::message::truthy;
use crier_protocol::{Advice, BayeuxError, ClientId, ConnectionType, Message};
use serde_json::Value;

use std::sync::Arc;

use crate::engine::Inner;
use crate::events::Event;
use crate::metrics::Metrics;

/// The connection types this server implements, in Faye's order (Faye also lists
/// `in-process`, which only its own Node client can use).
pub(crate) const SERVER_TYPES: [ConnectionType; 5] = [
    ConnectionType::LongPolling,
    ConnectionType::CrossOriginLongPolling,
    ConnectionType::CallbackPolling,
    ConnectionType::WebSocket,
    ConnectionType::EventSource,
];

pub(crate) fn server_supports(t: &str) -> bool {
    SERVER_TYPES.iter().any(|s| s.as_str() == t)
}

fn value_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Inner {
    pub(crate) async fn handshake(&self, m: &Message, ctx: &crate::context::RequestContext) -> Message {
        let mut r = m.response();
        r.set("version", crier_protocol::BAYEUX_VERSION);
        r.set("supportedConnectionTypes", SERVER_TYPES.iter().map(|t| t.as_str()).collect::<Vec<_>>());

        // Faye tests `!message.supportedConnectionTypes` and `!message.version`: any
        // JavaScript-falsy value (`null`, `""`, `0`, `false`) is a missing parameter.
        let conntype_error = match m.supported_connection_types() {
            None => Some(BayeuxError::missing("supportedConnectionTypes")),
            Some(v) if !truthy(v) => Some(BayeuxError::missing("supportedConnectionTypes")),
            Some(Value::Array(types)) => {
                let names: Vec<String> = types.iter().map(value_label).collect();
                let overlap = types.iter().filter_map(Value::as_str).any(server_supports);
                (!overlap).then(|| BayeuxError::conntype_mismatch(names))
            }
            Some(other) => Some(BayeuxError::conntype_mismatch([value_label(other)])),
        };
        let error = conntype_error
            .map(|e| e.to_string())
            .or_else(|| (!m.version().is_some_and(truthy)).then(|| BayeuxError::missing("version").to_string()))
            .or_else(|| m.error().map(str::to_owned));
        if let Some(e) = error {
            r.fail(e);
            r.set_advice(&Advice::handshake());
            return r;
        }

        let identity = match self.pipeline.identify(m, ctx).await {
            Ok(i) => i,
            Err(e) => {
                r.fail(e);
                r.set_advice(&Advice::handshake());
                return r;
            }
        };
        let id = ClientId::from_random(rand::random());
        let created = async {
            self.backend.create_session(&id, self.clock.now()).await?;
            if let Some(i) = &identity {
                self.backend.set_identity(&id, i).await?;
            }
            Ok::<_, crate::BackendError>(())
        };
        if let Err(e) = created.await {
            Metrics::inc(&self.metrics.backend_errors);
            r.fail(super::backend_error(&e));
            r.set_advice(&Advice::handshake());
            return r;
        }
        // The client most likely connects through this node next.
        let user = identity.as_ref().and_then(|i| i.user.clone());
        let attached = self.attach(&id).await;
        if let Ok(s) = &attached {
            *s.identity.lock() = identity.map(Arc::new);
        }
        let attached = match (attached, &user) {
            (Ok(s), Some(user)) => self.join_user(&id, user).await.map(|()| s),
            (other, _) => other,
        };
        if let Err(e) = attached {
            Metrics::inc(&self.metrics.backend_errors);
            // The whole end of a session (presence included), not just its record.
            let _ = self.destroy(&id).await;
            r.fail(super::backend_error(&e));
            r.set_advice(&Advice::handshake());
            return r;
        }
        Metrics::inc(&self.metrics.handshakes);
        self.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::Handshake(id.clone(), user));
        r.set("clientId", id.as_str());
        r.set_advice(&Advice::retry(self.config.interval_ms, self.config.timeout().as_millis() as u64));
        r
    }

    /// Makes a new session one of its user's: subscribed to the user's private name (so
    /// user-targeted messages reach it on any node) and counted in the user's presence.
    /// A session destroyed meanwhile fails the handshake and is not counted.
    async fn join_user(&self, id: &ClientId, user: &str) -> Result<(), crate::BackendError> {
        let Some(name) = crate::users::user_name(user) else {
            tracing::warn!(client_id = %id, len = user.len(), "user id too long to address; session kept without a user");
            return Ok(());
        };
        let gone = || crate::BackendError::unavailable("session ended during its handshake");
        if !self.backend.subscribe(id, &name).await? {
            return Err(gone());
        }
        if let Some(change) = self.backend.user_joined(user, id, self.clock.now()).await? {
            self.emit(Event::Presence(change));
        }
        // A destroy between the subscribe and the join found nothing to leave: undo here.
        if !self.backend.session_exists(id).await? {
            if let Some(change) = self.backend.user_left(user, id, self.clock.now()).await? {
                self.emit(Event::Presence(change));
            }
            return Err(gone());
        }
        Ok(())
    }
}
