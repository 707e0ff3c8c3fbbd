//! Publishing to any non-meta channel. No session is needed (Faye accepts anonymous
//! publishes and unknown client ids); the reply comes once the message is accepted for
//! delivery. A `/service/**` publish may instead be answered: by the built-in presence
//! service, or by an extension's [`crate::Extension::service`] hook (CometD's remote call).

use std::sync::atomic::Ordering;

use crier_protocol::{BayeuxError, ChannelKind, ChannelName, ErrorCode, Message};
use serde_json::Value;

use crate::context::RequestContext;
use crate::delivery::Delivery;
use crate::engine::Inner;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::retry::RetryKey;
use crate::turn::{Turn, pass_after_first_poll};

/// Where a session with a user says it is away (`{"status":"away"}`) or back
/// (`{"status":"online"}`).
pub const PRESENCE_CHANNEL: &str = "/service/presence";

impl Inner {
    pub(crate) async fn publish(&self, m: Message, ctx: &RequestContext, turn: &mut Turn) -> Message {
        let mut r = m.response();
        let channel_label = match m.channel_raw() {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let channel = m.channel().filter(|c| self.config.channel_allowed(c)).and_then(|c| ChannelName::parse(c).ok());
        let error = if m.data().is_none() {
            Some(BayeuxError::missing("data").to_string())
        } else if channel.is_none() {
            Some(BayeuxError::invalid_channel(&channel_label).to_string())
        } else {
            m.error().map(str::to_owned)
        };
        if let Some(e) = error {
            r.fail(e);
            return r;
        }
        let Some(channel) = channel else { return r };
        if channel.kind() == ChannelKind::Service {
            let answer = if channel.as_str() == PRESENCE_CHANNEL {
                Some(self.presence_service(&m).await)
            } else {
                // Service handlers see the caller's identity even when no extension asked
                // for it on every message (the lookup is paid for service calls only).
                let with_identity;
                let ctx = if ctx.identity.is_none() {
                    with_identity = RequestContext { identity: self.identity_of(&m).await, ..ctx.clone() };
                    &with_identity
                } else {
                    ctx
                };
                self.pipeline.service(&m, ctx).await
            };
            if let Some(answer) = answer {
                match answer {
                    Ok(data) => r.set("data", data),
                    Err(e) => r.fail(e),
                }
                return r;
            }
        }
        let publisher = m.client_id().map(str::to_owned);
        self.admit().await;
        let window = self.config.publish_retry_window();
        // Taken before `m` becomes the delivery, which drops `clientId` and `id`.
        let parts = window.and_then(|_| RetryKey::parts_of(&m));
        let now = self.clock.now();
        let delivery = Delivery::new(self.next_seq(), channel.clone(), m, now);
        let key = parts.and_then(|(client, id)| RetryKey::new(&client, &id, &channel, &delivery.json));
        // Once the backend has sent it, the client's next message may start (the order is
        // fixed); this one's answer comes when the backend's does.
        let turn = self.backend.publish_sends_at_once().then_some(turn);
        let published = match (&key, window) {
            (Some(key), Some(window)) => {
                pass_after_first_poll(self.backend.publish_once(&channel, delivery.clone(), key, window, now), turn)
                    .await
            }
            _ => pass_after_first_poll(self.backend.publish(&channel, delivery.clone()), turn).await.map(|()| true),
        };
        match published {
            Err(e) => {
                Metrics::inc(&self.metrics.backend_errors);
                tracing::warn!(channel = %channel, error = %e, "publish failed");
                r.fail(BayeuxError::new(ErrorCode::PublishFailed, [channel.as_str()]));
                return r;
            }
            // The client re-sent a publish it was not answered for: it was delivered then.
            Ok(false) => {
                Metrics::inc(&self.metrics.publish_retries);
                return r;
            }
            Ok(true) => {}
        }
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        // The event shares the delivery: no copy, so no need to ask whether anyone listens.
        self.emit(Event::Publish(publisher, channel, delivery));
        r
    }

    /// `/service/presence`: the sender's session marks itself away or back.
    async fn presence_service(&self, m: &Message) -> Result<Value, String> {
        let away = match m.data().and_then(|d| d.get("status")).and_then(Value::as_str) {
            Some("away") => true,
            Some("online") => false,
            _ => {
                return Err(BayeuxError::with_text(
                    ErrorCode::BadRequest,
                    [PRESENCE_CHANNEL],
                    "data.status must be \"away\" or \"online\"",
                )
                .to_string());
            }
        };
        let Some(id) = m.client_id().and_then(crier_protocol::ClientId::parse) else {
            return Err(BayeuxError::missing("clientId").to_string());
        };
        let identity = match self.backend.identity(&id).await {
            Ok(i) => i,
            Err(e) => return Err(self.backend_failure(&e).to_string()),
        };
        let Some(user) = identity.and_then(|i| i.user) else {
            return Err(BayeuxError::with_text(
                ErrorCode::ChannelForbidden,
                [PRESENCE_CHANNEL],
                "presence needs a session bound to a user",
            )
            .to_string());
        };
        match self.backend.set_away(&user, &id, away, self.clock.now()).await {
            Ok(change) => {
                if let Some(c) = change {
                    self.emit(Event::Presence(c));
                }
                Ok(serde_json::json!({"status": if away { "away" } else { "online" }}))
            }
            Err(e) => Err(self.backend_failure(&e).to_string()),
        }
    }
}
