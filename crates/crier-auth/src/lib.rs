//! Crier's built-in security policies, as engine [`Extension`]s configured from `auth.*`:
//! publish and subscribe secrets (push-only servers), subscription tokens from a file, JWT
//! identity at handshake with channel rules on its claims, and an authorization webhook.
//! They run on whichever node a message reaches; what they need of a session (its
//! identity) is kept by the backend, so they hold across a cluster. `docs/security.md`
//! documents each with an example.

mod config;
mod jwt;
mod metrics;
mod secret;
mod tokens;
mod util;
mod webhook;

use std::sync::Arc;

use async_trait::async_trait;
pub use config::{Action, AuthConfig, ChannelRule, JwtAlgorithm, JwtConfig, WebhookConfig, WebhookEvent};
use crier_engine::Extension;
pub use jwt::JwtPolicy;
pub use metrics::AuthMetrics;
pub use secret::SecretPolicy;
pub use tokens::TokenPolicy;
pub use webhook::WebhookPolicy;

/// A configuration that cannot work (the message names the key).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad settings or an unreadable key or tokens file.
    #[error("{0}")]
    Config(String),
}

/// Reports the policies' counters on `/metrics` (installed once, with the policies).
struct MetricsReporter(Arc<AuthMetrics>);

#[async_trait]
impl Extension for MetricsReporter {
    fn has_outgoing(&self) -> bool {
        false
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        self.0.snapshot()
    }
}

/// The extensions for a configuration, in the order they run: secrets, tokens, JWT, then
/// the webhook (which is only asked about what the others let through).
pub fn policies(config: &AuthConfig) -> Result<Vec<Arc<dyn Extension>>, AuthError> {
    let metrics = Arc::new(AuthMetrics::default());
    let mut out: Vec<Arc<dyn Extension>> = vec![Arc::new(MetricsReporter(metrics.clone()))];
    if config.secret_field.is_empty() {
        return Err(AuthError::Config("auth.secret_field: must not be empty".to_owned()));
    }
    for (key, v) in [("publish_secret", &config.publish_secret), ("subscribe_secret", &config.subscribe_secret)] {
        if v.as_deref() == Some("") {
            return Err(AuthError::Config(format!("auth.{key}: must not be empty (omit it to turn it off)")));
        }
    }
    if config.publish_secret.is_some() || config.subscribe_secret.is_some() {
        out.push(Arc::new(SecretPolicy {
            publish: config.publish_secret.clone(),
            subscribe: config.subscribe_secret.clone(),
            field: config.secret_field.clone(),
            metrics: metrics.clone(),
        }));
    }
    if let Some(path) = &config.subscribe_tokens_file {
        out.push(Arc::new(TokenPolicy::load(path, &config.token_field, metrics.clone())?));
    }
    if let Some(jwt) = &config.jwt {
        out.push(Arc::new(JwtPolicy::new(jwt, metrics.clone())?));
    }
    if let Some(hook) = &config.webhook {
        out.push(Arc::new(WebhookPolicy::new(hook, metrics.clone())?));
    }
    Ok(out)
}
