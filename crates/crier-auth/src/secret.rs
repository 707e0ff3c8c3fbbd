//! Publish and subscribe secrets (Faye's "push-only server" recipe, as configuration).

use std::sync::Arc;

use async_trait::async_trait;
use crier_engine::{Extension, RequestContext, Verdict};
use crier_protocol::Message;

use crate::metrics::AuthMetrics;
use crate::util::{ext_str, is_publish, refuse, same_secret, strip_ext};

/// Requires a secret in `ext.<field>` to publish (if `publish` is set) and to subscribe (if
/// `subscribe` is set), and removes it from every message, so it never reaches a subscriber.
/// Messages from inside the server (no request) need no secret, nor does a session's own
/// presence (`/service/presence` changes only the sender's session and is never broadcast).
pub struct SecretPolicy {
    pub(crate) publish: Option<String>,
    pub(crate) subscribe: Option<String>,
    pub(crate) field: String,
    pub(crate) metrics: Arc<AuthMetrics>,
}

impl SecretPolicy {
    fn check(&self, m: &mut Message, secret: &str) {
        match ext_str(m, &self.field) {
            None => {
                AuthMetrics::inc(&self.metrics.secret_refused);
                refuse(m, "403::Password required".to_owned(), "secret");
            }
            Some(given) if !same_secret(&given, secret) => {
                AuthMetrics::inc(&self.metrics.secret_refused);
                refuse(m, "403::Invalid password".to_owned(), "secret");
            }
            Some(_) => {}
        }
    }
}

#[async_trait]
impl Extension for SecretPolicy {
    async fn incoming(&self, m: &mut Message, ctx: &RequestContext) -> Verdict {
        if !ctx.is_local() {
            if is_publish(m) && m.channel() != Some(crier_engine::PRESENCE_CHANNEL) {
                if let Some(secret) = &self.publish {
                    self.check(m, secret);
                }
            } else if m.channel() == Some("/meta/subscribe")
                && let Some(secret) = &self.subscribe
            {
                self.check(m, secret);
            }
        }
        // Whatever happened, the secret goes no further.
        strip_ext(m, &self.field);
        Verdict::Pass
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}
