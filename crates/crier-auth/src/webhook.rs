//! The authorization webhook: the app decides on handshake, subscribe and publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use crier_engine::{Extension, Identity, RequestContext, Verdict};
use crier_protocol::Message;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AuthError;
use crate::config::{WebhookConfig, WebhookEvent};
use crate::metrics::AuthMetrics;
use crate::util::{is_publish, refuse};

/// Most cached answers; beyond it the cache starts afresh.
const CACHE_MAX: usize = 10_000;

/// The app's answer.
#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    error: Option<String>,
    /// Top-level fields to set on the message (`null` removes one), e.g. `{"ext": null}`.
    #[serde(default)]
    changes: Option<serde_json::Map<String, Value>>,
    /// On handshake: the user to bind to the session, and claims for channel rules.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    claims: Option<serde_json::Map<String, Value>>,
}

/// A plain allow (`Ok`) or deny (`Err` with the error string), and when it was answered.
type Cached = (Instant, Result<(), String>);

/// The most `auth.webhook.max_in_flight` may be (far above what an app serves at once).
const MAX_IN_FLIGHT: usize = 1 << 20;

enum Decision {
    Allow(Answer),
    Deny(String),
    /// No usable answer (already logged and counted).
    Failed,
}

/// POSTs `{"event", "clientId", "user", "message", "headers"}` to the app and applies its
/// answer: `{"allow": true}`, `{"allow": false, "error": "403::..."}`, or
/// `{"allow": true, "changes": {...}}`. No answer in time (or a bad one) applies the fail
/// policy. Plain allow/deny answers are cached briefly per client, event, channel and `ext`.
pub struct WebhookPolicy {
    http: reqwest::Client,
    config: WebhookConfig,
    /// `max_in_flight` calls at once: one per message would let a burst of clients (a
    /// reconnect storm, a client defeating the cache with a new `ext` each time) flood the app.
    permits: tokio::sync::Semaphore,
    cache: Mutex<HashMap<String, Cached>>,
    metrics: Arc<AuthMetrics>,
}

impl WebhookPolicy {
    /// Builds the policy.
    pub fn new(config: &WebhookConfig, metrics: Arc<AuthMetrics>) -> Result<Self, AuthError> {
        // This build's HTTP client has no TLS: an https URL would fail every call, which
        // under the default fail policy refuses every client. It stops startup instead.
        if config.url.starts_with("https://") {
            return Err(AuthError::Config(format!(
                "auth.webhook.url: https is not supported (this build has no TLS client); use http:// to the \
                 app on a private network, or a TLS-originating proxy: {:?}",
                config.url
            )));
        }
        if !config.url.starts_with("http://") {
            return Err(AuthError::Config(format!("auth.webhook.url: not an http:// URL: {:?}", config.url)));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&config.max_in_flight) {
            return Err(AuthError::Config(format!(
                "auth.webhook.max_in_flight: must be between 1 and {MAX_IN_FLIGHT}"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms.max(1)))
            .build()
            .map_err(|e| AuthError::Config(format!("auth.webhook: {e}")))?;
        Ok(WebhookPolicy {
            http,
            permits: tokio::sync::Semaphore::new(config.max_in_flight),
            config: config.clone(),
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    fn wants(&self, e: WebhookEvent) -> bool {
        self.config.events.contains(&e)
    }

    fn cache_key(event: &str, m: &Message) -> String {
        let field = |k: &str| m.0.get(k).map(Value::to_string).unwrap_or_default();
        format!("{event}\n{}\n{}\n{}\n{}", field("clientId"), field("channel"), field("subscription"), field("ext"))
    }

    async fn ask(&self, event: &str, m: &Message, ctx: &RequestContext) -> Decision {
        let key = Self::cache_key(event, m);
        if self.config.cache_secs > 0
            && let Some((at, r)) = self.cache.lock().get(&key).cloned()
            && at.elapsed() < Duration::from_secs(self.config.cache_secs)
        {
            return match r {
                Ok(()) => Decision::Allow(Answer { allow: true, error: None, changes: None, user: None, claims: None }),
                Err(e) => Decision::Deny(e),
            };
        }
        let headers: serde_json::Map<String, Value> = self
            .config
            .headers
            .iter()
            .filter_map(|h| Some((h.clone(), Value::from(ctx.request.as_ref()?.header(h)?))))
            .collect();
        let body = json!({
            "event": event,
            "clientId": m.client_id(),
            "user": ctx.identity.as_ref().and_then(|i| i.user.clone()),
            "message": m,
            "headers": headers,
        });
        // One deadline for the wait for a slot and the call together.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.timeout_ms.max(1));
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, self.permits.acquire()).await else {
            AuthMetrics::inc(&self.metrics.webhook_busy);
            tracing::warn!(
                event,
                limit = self.config.max_in_flight,
                "authorization webhook busy: no call slot in time"
            );
            return Decision::Failed;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(1));
        let answer = match self.http.post(&self.config.url).timeout(left).json(&body).send().await {
            Ok(r) if r.status().is_success() => r.json::<Answer>().await.map_err(|e| format!("bad answer: {e}")),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) if e.is_timeout() => Err("timed out".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let decision = match answer {
            Ok(a) if a.allow => Decision::Allow(a),
            Ok(a) => Decision::Deny(a.error.unwrap_or_else(|| "403::Forbidden".to_owned())),
            Err(e) => {
                AuthMetrics::inc(&self.metrics.webhook_failures);
                tracing::warn!(event, error = %e, url = %self.config.url, "authorization webhook failed");
                return Decision::Failed;
            }
        };
        if self.config.cache_secs > 0 {
            let cached = match &decision {
                Decision::Allow(a) if a.changes.is_none() && a.user.is_none() => Some(Ok(())),
                Decision::Deny(e) => Some(Err(e.clone())),
                _ => None,
            };
            if let Some(c) = cached {
                let mut cache = self.cache.lock();
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, (Instant::now(), c));
            }
        }
        decision
    }

    fn unavailable(&self) -> Option<String> {
        (!self.config.fail_open).then(|| "403::Authorization unavailable".to_owned())
    }
}

#[async_trait]
impl Extension for WebhookPolicy {
    async fn identify(&self, handshake: &Message, ctx: &RequestContext) -> Result<Option<Identity>, String> {
        if ctx.is_local() || !self.wants(WebhookEvent::Handshake) {
            return Ok(None);
        }
        match self.ask("handshake", handshake, ctx).await {
            Decision::Allow(a) if a.user.is_some() || a.claims.is_some() => {
                Ok(Some(Identity { user: a.user, claims: a.claims.unwrap_or_default(), expires_ms: None }))
            }
            Decision::Allow(_) => Ok(None),
            Decision::Deny(e) => {
                AuthMetrics::inc(&self.metrics.webhook_refused);
                Err(e)
            }
            Decision::Failed => self.unavailable().map_or(Ok(None), Err),
        }
    }

    async fn incoming(&self, m: &mut Message, ctx: &RequestContext) -> Verdict {
        if ctx.is_local() {
            return Verdict::Pass;
        }
        let event = if m.channel() == Some("/meta/subscribe") && self.wants(WebhookEvent::Subscribe) {
            "subscribe"
        } else if is_publish(m) && self.wants(WebhookEvent::Publish) {
            "publish"
        } else {
            return Verdict::Pass;
        };
        if m.error().is_some() {
            // An earlier policy already refused it: no need to ask.
            return Verdict::Pass;
        }
        match self.ask(event, m, ctx).await {
            Decision::Allow(a) => {
                for (k, v) in a.changes.unwrap_or_default() {
                    // The app may not re-route or re-attribute the message.
                    if matches!(k.as_str(), "channel" | "clientId" | "id" | "subscription") {
                        continue;
                    }
                    if v.is_null() {
                        m.remove(&k);
                    } else {
                        m.set(&k, v);
                    }
                }
            }
            Decision::Deny(e) => {
                AuthMetrics::inc(&self.metrics.webhook_refused);
                refuse(m, e, "webhook");
            }
            Decision::Failed => {
                if let Some(e) = self.unavailable() {
                    refuse(m, e, "webhook");
                }
            }
        }
        Verdict::Pass
    }

    fn wants_identity(&self) -> bool {
        true
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(url: &str) -> Result<WebhookPolicy, AuthError> {
        WebhookPolicy::new(&WebhookConfig { url: url.to_owned(), ..WebhookConfig::default() }, Arc::default())
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(build("http://app:8080/authorize").is_ok());
        let https = build("https://app/authorize").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(https.contains("auth.webhook.url: https is not supported"), "{https}");
        let other = build("ftp://app").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(other.contains("auth.webhook.url: not an http:// URL"), "{other}");
        for n in [0, MAX_IN_FLIGHT + 1, usize::MAX] {
            let config = WebhookConfig { url: "http://app/".to_owned(), max_in_flight: n, ..WebhookConfig::default() };
            let e = WebhookPolicy::new(&config, Arc::default()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("auth.webhook.max_in_flight: must be between 1 and"), "{n}: {e}");
        }
    }
}
