//! `[api]` settings. The binary loads them from the top-level `api` section.

use serde::{Deserialize, Serialize};

/// The server API (`/api`): programmatic publish, users, presence, subscriptions, stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// API keys; a request must send one as `Authorization: Bearer KEY`. Empty: the API is
    /// off (its paths answer 404). Secret: masked by `print-config`.
    pub keys: Vec<String>,
    /// Path prefix of the API (its OpenAPI document is at `<path>/openapi.json`). Must not
    /// overlap the Bayeux mount.
    pub path: String,
    /// Address and port (e.g. `127.0.0.1:8001`) to serve the API on instead of the main
    /// port. Unset: the main port.
    pub listen: Option<String>,
    /// Most entries (channels, users, client ids) in one request's lists (HTTP 400 beyond).
    pub max_items: usize,
    /// Largest request body, in bytes (HTTP 413 beyond).
    pub max_body_bytes: usize,
    /// Most sessions one subscribe, unsubscribe or disconnect may select, and most
    /// subscribers `channels/subscribers` lists (HTTP 400 beyond, before anything changes).
    pub max_sessions: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            keys: Vec::new(),
            path: "/api".to_owned(),
            listen: None,
            max_items: 1000,
            max_body_bytes: 1024 * 1024,
            max_sessions: 10_000,
        }
    }
}

impl ApiConfig {
    /// Whether the API is served.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Checks values against each other and the Bayeux mount; the error names the key.
    pub fn validate(&self, mount: &str) -> Result<(), String> {
        let p = self.path.trim_end_matches('/');
        if !self.path.starts_with('/') || p.is_empty() {
            return Err(format!("api.path: must start with '/' and not be '/' (got {:?})", self.path));
        }
        let m = mount.trim_end_matches('/');
        let under = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if self.listen.is_none() && (under(p, m) || under(m, p)) {
            return Err(format!("api.path: {p:?} overlaps the Bayeux mount {m:?}"));
        }
        if self.keys.iter().any(|k| k.trim().len() < 16) {
            return Err("api.keys: each key must have at least 16 characters".to_owned());
        }
        if self.max_items == 0 {
            return Err("api.max_items: must be at least 1".to_owned());
        }
        if self.max_sessions == 0 {
            return Err("api.max_sessions: must be at least 1".to_owned());
        }
        if self.max_body_bytes == 0 {
            return Err("api.max_body_bytes: must be at least 1".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_key() {
        let ok = ApiConfig { keys: vec!["k".repeat(16)], ..ApiConfig::default() };
        assert_eq!(ok.validate("/faye"), Ok(()));
        let short = ApiConfig { keys: vec!["short".into()], ..ApiConfig::default() };
        assert!(short.validate("/faye").unwrap_err().starts_with("api.keys"));
        let overlap = ApiConfig { path: "/faye/api".into(), ..ok.clone() };
        assert!(overlap.validate("/faye").unwrap_err().contains("overlaps"));
        let apart = ApiConfig { listen: Some("127.0.0.1:0".into()), ..overlap };
        assert_eq!(apart.validate("/faye"), Ok(()));
        assert!(ApiConfig { max_items: 0, ..ok.clone() }.validate("/faye").is_err());
        assert!(ApiConfig { path: "api".into(), ..ok }.validate("/faye").is_err());
    }
}
