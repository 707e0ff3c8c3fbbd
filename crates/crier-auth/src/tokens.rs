//! Subscription tokens from a file: channel or pattern → token.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use crier_engine::{Extension, RequestContext, Verdict};
use crier_protocol::{ChannelPattern, Message};

use crate::AuthError;
use crate::metrics::AuthMetrics;
use crate::util::{ext_str, refuse, strip_ext, subscriptions};

/// Subscribing to a name that any protected entry overlaps needs, in `ext.<field>`, the
/// token of an entry that *covers* the whole name: a token for `/foo/**` opens `/foo/bar`
/// and `/foo/*`; a token for `/foo/bar` does not open `/foo/*`, which also reaches
/// `/foo/baz`; `/**` is refused while anything is protected. All-or-nothing per message.
pub struct TokenPolicy {
    entries: Vec<(ChannelPattern, String)>,
    field: String,
    metrics: Arc<AuthMetrics>,
}

impl TokenPolicy {
    /// Reads the file (`{"/channel": "token", "/pattern/**": "token"}`).
    pub fn load(path: &Path, field: &str, metrics: Arc<AuthMetrics>) -> Result<Self, AuthError> {
        let where_ = || format!("auth.subscribe_tokens_file ({})", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Config(format!("{}: {e}", where_())))?;
        let map: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| AuthError::Config(format!("{}: {e}", where_())))?;
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let p = ChannelPattern::parse(&k)
                .map_err(|_| AuthError::Config(format!("{}: {k:?} is not a channel name or pattern", where_())))?;
            entries.push((p, v));
        }
        Ok(TokenPolicy { entries, field: field.to_owned(), metrics })
    }

    /// Why `name` may not be subscribed with `token`, if it may not.
    fn refusal(&self, name: &ChannelPattern, token: Option<&str>) -> Option<String> {
        if !self.entries.iter().any(|(p, _)| p.overlaps(name)) {
            return None;
        }
        let Some(token) = token else { return Some(format!("403:{name}:Subscription token required")) };
        let opened = self.entries.iter().any(|(p, t)| p.covers(name) && crate::util::same_secret(t, token));
        (!opened).then(|| format!("403:{name}:Invalid subscription token"))
    }
}

#[async_trait]
impl Extension for TokenPolicy {
    async fn incoming(&self, m: &mut Message, ctx: &RequestContext) -> Verdict {
        if m.channel() == Some("/meta/subscribe") && !ctx.is_local() {
            let token = ext_str(m, &self.field);
            if let Some(e) = subscriptions(m).iter().find_map(|n| self.refusal(n, token.as_deref())) {
                AuthMetrics::inc(&self.metrics.token_refused);
                refuse(m, e, "subscription-token");
            }
            strip_ext(m, &self.field);
        }
        Verdict::Pass
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}
