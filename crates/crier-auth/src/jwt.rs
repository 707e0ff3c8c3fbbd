//! JWT identity at handshake, expiry on connect, and channel rules that use claims.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use crier_engine::{Extension, Identity, RequestContext, Verdict};
use crier_protocol::{ChannelPattern, Message};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::AuthError;
use crate::config::{Action, ChannelRule, JwtAlgorithm, JwtConfig};
use crate::metrics::AuthMetrics;
use crate::util::{ext_str, is_publish, refuse, subscriptions};

enum Keys {
    /// One key (a secret or a PEM public key).
    One(DecodingKey),
    /// A JWKS: the token's `kid` picks the key.
    Set(JwkSet),
}

/// Verifies the handshake's token, binds its user to the session, refuses connects after it
/// expires, and opens protected channels only as the rules allow.
pub struct JwtPolicy {
    keys: Keys,
    validation: Validation,
    field: String,
    user_claim: String,
    required: bool,
    protected: Vec<ChannelPattern>,
    rules: Vec<ChannelRule>,
    metrics: Arc<AuthMetrics>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl JwtPolicy {
    /// Builds the policy; keys are read now, so a bad file stops startup.
    pub fn new(c: &JwtConfig, metrics: Arc<AuthMetrics>) -> Result<Self, AuthError> {
        let bad = |m: String| AuthError::Config(format!("auth.jwt: {m}"));
        if c.algorithms.is_empty() {
            return Err(bad("algorithms: list at least one".to_owned()));
        }
        let keys = if let Some(path) = &c.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|e| bad(format!("jwks_file {}: {e}", path.display())))?;
            Keys::Set(serde_json::from_str(&text).map_err(|e| bad(format!("jwks_file {}: {e}", path.display())))?)
        } else if let Some(path) = &c.public_key_file {
            let pem = std::fs::read(path).map_err(|e| bad(format!("public_key_file {}: {e}", path.display())))?;
            let key = if c.algorithms.contains(&JwtAlgorithm::ES256) {
                DecodingKey::from_ec_pem(&pem)
            } else {
                DecodingKey::from_rsa_pem(&pem)
            };
            Keys::One(key.map_err(|e| bad(format!("public_key_file {}: {e}", path.display())))?)
        } else if let Some(secret) = &c.secret {
            if secret.is_empty() {
                return Err(bad("secret: must not be empty".to_owned()));
            }
            Keys::One(DecodingKey::from_secret(secret.as_bytes()))
        } else {
            return Err(bad("set one of secret (HS256), public_key_file or jwks_file".to_owned()));
        };
        let mut validation = Validation::new(algorithm(c.algorithms[0]));
        validation.algorithms = c.algorithms.iter().copied().map(algorithm).collect();
        validation.leeway = c.leeway_secs;
        validation.validate_aud = c.audience.is_some();
        // A configured issuer or audience is required, not only checked when present:
        // jsonwebtoken requires only `exp` by default, so a token without `iss` (one signed
        // for another purpose with the same key) would otherwise pass.
        if let Some(aud) = &c.audience {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let mut protected = Vec::with_capacity(c.protected.len());
        for p in &c.protected {
            protected
                .push(ChannelPattern::parse(p).map_err(|_| bad(format!("protected: {p:?} is not a channel pattern")))?);
        }
        for r in &c.rules {
            // Placeholders aside, the pattern must be valid.
            let probe = fill(&r.pattern, &|_| Some("x".to_owned()));
            if probe.is_none() {
                return Err(bad(format!("rules: {:?} is not a channel pattern", r.pattern)));
            }
        }
        Ok(JwtPolicy {
            keys,
            validation,
            field: c.field.clone(),
            user_claim: c.user_claim.clone(),
            required: c.required,
            protected,
            rules: c.rules.clone(),
            metrics,
        })
    }

    fn verify(&self, token: &str) -> Result<serde_json::Map<String, Value>, String> {
        let key = match &self.keys {
            Keys::One(k) => k.clone(),
            Keys::Set(set) => {
                let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
                let jwk = match header.kid.as_deref() {
                    Some(kid) => set.find(kid),
                    None => set.keys.first(),
                };
                DecodingKey::from_jwk(jwk.ok_or("no key for the token's kid")?).map_err(|e| e.to_string())?
            }
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &self.validation)
            .map_err(|e| e.to_string())?;
        Ok(data.claims)
    }

    /// Why the session may not do `action` on `target`, if it may not.
    fn refusal(&self, identity: Option<&Identity>, target: &ChannelPattern, action: Action) -> Option<String> {
        if let Some(exp) = identity.and_then(|i| i.expires_ms)
            && exp < now_ms()
        {
            return Some("403::Token expired".to_owned());
        }
        if !self.protected.iter().any(|p| p.overlaps(target)) {
            return None;
        }
        let allowed = identity.is_some_and(|i| {
            self.rules
                .iter()
                .filter(|r| r.actions.contains(&action))
                .any(|r| fill(&r.pattern, &|claim| claim_value(i, claim)).is_some_and(|p| p.covers(target)))
        });
        (!allowed).then(|| format!("403:{target}:Forbidden channel"))
    }
}

/// A claim as a channel segment: strings and numbers only.
fn claim_value(i: &Identity, claim: &str) -> Option<String> {
    if claim == "user" {
        return i.user.clone();
    }
    match i.claims.get(claim)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Fills `{claim}` segments; `None` if a claim is missing or makes an invalid pattern
/// (a claim value cannot smuggle in `/` or `*`: it must be one valid segment).
fn fill(template: &str, value: &dyn Fn(&str) -> Option<String>) -> Option<ChannelPattern> {
    let mut out = String::with_capacity(template.len());
    for seg in template.split('/').skip(1) {
        out.push('/');
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(claim) => {
                let v = value(claim)?;
                if v.is_empty() || v.contains(['/', '*']) {
                    return None;
                }
                out.push_str(&v);
            }
            None => out.push_str(seg),
        }
    }
    ChannelPattern::parse(&out).ok()
}

#[async_trait]
impl Extension for JwtPolicy {
    async fn identify(&self, handshake: &Message, ctx: &RequestContext) -> Result<Option<Identity>, String> {
        if ctx.is_local() {
            return Ok(None);
        }
        let Some(token) = ext_str(handshake, &self.field) else {
            if self.required {
                AuthMetrics::inc(&self.metrics.jwt_refused);
                tracing::info!(policy = "jwt", "handshake without a token refused");
                return Err("403::Authentication required".to_owned());
            }
            return Ok(None);
        };
        let claims = self.verify(&token).map_err(|e| {
            AuthMetrics::inc(&self.metrics.jwt_refused);
            tracing::info!(policy = "jwt", error = %e, "handshake with an invalid token refused");
            "403::Invalid token".to_owned()
        })?;
        let user = match claims.get(&self.user_claim) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let expires_ms = claims.get("exp").and_then(Value::as_u64).map(|s| s.saturating_mul(1000));
        Ok(Some(Identity { user, claims, expires_ms }))
    }

    async fn incoming(&self, m: &mut Message, ctx: &RequestContext) -> Verdict {
        if ctx.is_local() {
            return Verdict::Pass;
        }
        let identity = ctx.identity.as_deref();
        let refusal = match m.channel() {
            // Verified by `identify`, which runs after the incoming hooks (the handshake
            // reply never carries `ext`, so the token goes no further anyway).
            Some("/meta/handshake") => None,
            Some("/meta/connect") => identity
                .and_then(|i| i.expires_ms)
                .filter(|exp| *exp < now_ms())
                .map(|_| "403::Token expired".to_owned()),
            Some("/meta/subscribe") => {
                subscriptions(m).iter().find_map(|n| self.refusal(identity, n, Action::Subscribe))
            }
            _ if is_publish(m) => m
                .channel()
                .and_then(|c| ChannelPattern::parse(c).ok())
                .and_then(|c| self.refusal(identity, &c, Action::Publish)),
            _ => None,
        };
        if let Some(e) = refusal {
            AuthMetrics::inc(&self.metrics.jwt_refused);
            refuse(m, e, "jwt");
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

    #[test]
    fn placeholders_fill_whole_segments_only() {
        let v = |c: &str| match c {
            "sub" => Some("42".to_owned()),
            "evil" => Some("x/**".to_owned()),
            _ => None,
        };
        assert_eq!(fill("/users/{sub}/**", &v).map(|p| p.to_string()), Some("/users/42/**".to_owned()));
        assert_eq!(fill("/users/{evil}", &v), None, "a claim cannot widen the pattern");
        assert_eq!(fill("/users/{missing}/**", &v), None);
        assert_eq!(fill("/public/**", &v).map(|p| p.to_string()), Some("/public/**".to_owned()));
    }
}
