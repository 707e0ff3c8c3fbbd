//! Refusals by policy, exposed on `/metrics` through the engine.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the policies of one engine.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    pub(crate) secret_refused: AtomicU64,
    pub(crate) token_refused: AtomicU64,
    pub(crate) jwt_refused: AtomicU64,
    pub(crate) webhook_refused: AtomicU64,
    pub(crate) webhook_failures: AtomicU64,
    pub(crate) webhook_busy: AtomicU64,
}

impl AuthMetrics {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(name, help, value)` triples for exposition.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, i64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed) as i64;
        vec![
            (
                "crier_auth_secret_refused_total",
                "Messages refused for a missing or wrong secret.",
                g(&self.secret_refused),
            ),
            (
                "crier_auth_token_refused_total",
                "Subscriptions refused for a missing or wrong token.",
                g(&self.token_refused),
            ),
            (
                "crier_auth_jwt_refused_total",
                "Messages refused by JWT identity or channel rules.",
                g(&self.jwt_refused),
            ),
            (
                "crier_auth_webhook_refused_total",
                "Messages the authorization webhook denied.",
                g(&self.webhook_refused),
            ),
            (
                "crier_auth_webhook_failures_total",
                "Webhook calls that failed or timed out (then the fail policy applied).",
                g(&self.webhook_failures),
            ),
            (
                "crier_auth_webhook_busy_total",
                "Webhook calls not made: auth.webhook.max_in_flight calls were in progress for the whole timeout (then the fail policy applied).",
                g(&self.webhook_busy),
            ),
        ]
    }
}
