//! Security settings (`auth.*`). The binary loads them; this crate defines and documents them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Built-in policies; each is off until configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Push-only: publishing to any non-`/meta` channel needs this secret in `ext`. The secret
    /// is removed from the message before anyone receives it.
    pub publish_secret: Option<String>,
    /// Only the holder of this secret (in `ext`) may subscribe (backend-driven subscriptions).
    pub subscribe_secret: Option<String>,
    /// The `ext` field carrying the publish or subscribe secret.
    pub secret_field: String,
    /// A JSON file mapping channel names or patterns to tokens; subscribing to a name that
    /// any entry overlaps needs the token of an entry that covers it (in `ext.<token_field>`).
    pub subscribe_tokens_file: Option<PathBuf>,
    /// The `ext` field carrying a subscription token.
    pub token_field: String,
    /// Origins allowed for HTTP and WebSocket requests (added to `server.allowed_origins`).
    pub allowed_origins: Vec<String>,
    /// JWT identity at handshake, with channel rules.
    pub jwt: Option<JwtConfig>,
    /// An authorization webhook.
    pub webhook: Option<WebhookConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            publish_secret: None,
            subscribe_secret: None,
            secret_field: "password".to_owned(),
            subscribe_tokens_file: None,
            token_field: "token".to_owned(),
            allowed_origins: Vec::new(),
            jwt: None,
            webhook: None,
        }
    }
}

/// A JWT algorithm Crier verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared `secret`.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256 (`public_key_file` or `jwks_file`).
    RS256,
    /// ECDSA P-256 with SHA-256 (`public_key_file` or `jwks_file`).
    ES256,
}

/// JWT identity: the handshake carries a token in `ext.<field>`; a valid one binds its user
/// to the session; channel rules may use its claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The `ext` field of the handshake carrying the token.
    pub field: String,
    /// Accepted algorithms.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Shared secret for HS256.
    pub secret: Option<String>,
    /// PEM public key for RS256 or ES256.
    pub public_key_file: Option<PathBuf>,
    /// A JWKS document (`{"keys":[...]}`); the token's `kid` picks the key.
    pub jwks_file: Option<PathBuf>,
    /// The claim holding the user id.
    pub user_claim: String,
    /// Refuse handshakes without a token (otherwise they are anonymous sessions).
    pub required: bool,
    /// Expected `iss`, if any: a token without it, or with another, is refused.
    pub issuer: Option<String>,
    /// Expected `aud`, if any: a token without it, or for another audience, is refused.
    pub audience: Option<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Patterns whose channels only the rules may open: a subscription or publish that
    /// reaches any of them must be covered by a rule.
    pub protected: Vec<String>,
    /// Rules opening protected channels, with `{claim}` placeholders filled from the
    /// session's claims (`{user}` is the user id).
    pub rules: Vec<ChannelRule>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            field: "jwt".to_owned(),
            algorithms: vec![JwtAlgorithm::HS256],
            secret: None,
            public_key_file: None,
            jwks_file: None,
            user_claim: "sub".to_owned(),
            required: false,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            protected: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `/meta/subscribe`.
    Subscribe,
    /// Publishing.
    Publish,
}

/// A pattern (with placeholders) and the actions it allows, e.g.
/// `{ pattern = "/users/{sub}/**", actions = ["subscribe"] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    /// A channel name or pattern; `{claim}` segments are replaced by claim values.
    pub pattern: String,
    /// The actions allowed on what the pattern covers.
    pub actions: Vec<Action>,
}

/// A Bayeux event the webhook may be asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    /// `/meta/handshake` (the answer may bind a user to the session).
    Handshake,
    /// `/meta/subscribe`.
    Subscribe,
    /// Publishing.
    Publish,
}

/// An authorization webhook: the node POSTs the message and selected request headers; the
/// app answers allow, deny (with an error string) or allow with changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Which events to ask about.
    pub events: Vec<WebhookEvent>,
    /// Milliseconds to wait for an answer.
    pub timeout_ms: u64,
    /// When the app does not answer in time or answers nonsense: `false` refuses (fail
    /// closed), `true` allows.
    pub fail_open: bool,
    /// Seconds an allow/deny answer (without changes) is reused for the same client,
    /// event, channel and `ext`; 0 disables caching.
    pub cache_secs: u64,
    /// Request headers forwarded to the app (lowercase names).
    pub headers: Vec<String>,
    /// Calls to the app in progress at once from this node (1 to 1,048,576). A call beyond
    /// it waits for one to finish; `timeout_ms` covers the wait and the call together, and
    /// past it the fail policy applies, as for no answer (counted in
    /// `crier_auth_webhook_busy_total` when no slot came in time).
    pub max_in_flight: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            events: vec![WebhookEvent::Handshake, WebhookEvent::Subscribe, WebhookEvent::Publish],
            timeout_ms: 2000,
            fail_open: false,
            cache_secs: 5,
            headers: vec!["cookie".to_owned(), "origin".to_owned(), "authorization".to_owned()],
            max_in_flight: 256,
        }
    }
}
