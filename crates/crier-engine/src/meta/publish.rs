//! Publishing to any non-meta channel. No session is needed (Faye accepts anonymous
//! publishes and unknown client ids); the reply comes once the message is accepted for
//! delivery.

use std::sync::atomic::Ordering;

use crier_protocol::{BayeuxError, ChannelName, ErrorCode, Message};
use serde_json::Value;

use crate::delivery::Delivery;
use crate::engine::Inner;
use crate::events::Event;
use crate::metrics::Metrics;

impl Inner {
    pub(crate) async fn publish(&self, m: Message) -> Message {
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
        let publisher = m.client_id().map(str::to_owned);
        let delivery = Delivery::new(self.next_seq(), channel.clone(), m, self.clock.now());
        if let Err(e) = self.backend.publish(&channel, delivery).await {
            Metrics::inc(&self.metrics.backend_errors);
            tracing::warn!(channel = %channel, error = %e, "publish failed");
            r.fail(BayeuxError::new(ErrorCode::PublishFailed, [channel.as_str()]));
            return r;
        }
        self.metrics.published.fetch_add(1, Ordering::Relaxed);
        self.emit(Event::Publish(publisher, channel));
        r
    }
}
