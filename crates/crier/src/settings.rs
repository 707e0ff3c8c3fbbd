//! The whole configuration: defaults, then an optional TOML file, then `CRIER_*`
//! environment variables (nested keys joined with `__`), then command-line flags.

use std::path::{Path, PathBuf};

use crier_auth::AuthConfig;
use crier_engine::EngineConfig;
use crier_hooks::HooksConfig;
use crier_redis::RedisConfig;
use crier_server::{ApiConfig, LimitsConfig, ServerConfig};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// Level filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive list).
    pub(crate) level: String,
    /// `human` or `json`.
    pub(crate) format: LogFormat,
    /// OTLP/HTTP collector base URL, e.g. `http://127.0.0.1:4318`: when set, spans
    /// (handshake, publish, deliver) are exported as protobuf to `<endpoint>/v1/traces`.
    /// Plain `http://` only (this build has no TLS client): point it at a collector beside
    /// the node, which can forward over TLS. Unset: no traces are exported.
    pub(crate) otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of exported traces.
    pub(crate) service_name: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Human,
            otlp_endpoint: None,
            service_name: "crier".to_owned(),
        }
    }
}

/// Everything `crier serve` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Settings {
    /// Address and port to listen on.
    pub(crate) listen: String,
    /// Logging.
    pub(crate) log: LogConfig,
    /// The HTTP edge.
    pub(crate) server: ServerConfig,
    /// Bayeux semantics.
    pub(crate) engine: EngineConfig,
    /// The Redis backend; without a URL, the single-node memory engine runs.
    pub(crate) redis: RedisConfig,
    /// Security policies.
    pub(crate) auth: AuthConfig,
    /// Per-node, per-connection and per-session limits.
    pub(crate) limits: LimitsConfig,
    /// Calls to the app: /service forwarding and event webhooks.
    pub(crate) hooks: HooksConfig,
    /// The server API (`/api`): publish, users, presence, subscriptions, disconnects, stats.
    pub(crate) api: ApiConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "0.0.0.0:8000".to_owned(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            engine: EngineConfig::default(),
            redis: RedisConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            hooks: HooksConfig::default(),
            api: ApiConfig::default(),
        }
    }
}

/// Values given as flags; each overrides every other source.
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    pub(crate) listen: Option<String>,
    pub(crate) mount: Option<String>,
    pub(crate) timeout: Option<u64>,
    pub(crate) client_js: Option<PathBuf>,
    pub(crate) redis: Option<String>,
}

/// Builds the figment: defaults, file, env, flags. `env` is injected so tests never touch
/// the process environment.
pub(crate) fn figment(file: Option<&Path>, env: Env, o: &Overrides) -> Figment {
    let mut f = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(p) = file {
        f = f.merge(Toml::file_exact(p));
    }
    f = f.merge(env);
    if let Some(v) = &o.listen {
        f = f.merge(Serialized::default("listen", v));
    }
    if let Some(v) = &o.mount {
        f = f.merge(Serialized::default("server.mount", v));
    }
    if let Some(v) = o.timeout {
        f = f.merge(Serialized::default("engine.timeout_secs", v));
    }
    if let Some(v) = &o.client_js {
        f = f.merge(Serialized::default("server.client_js", v));
    }
    if let Some(v) = &o.redis {
        f = f.merge(Serialized::default("redis.url", v));
    }
    f
}

/// The `CRIER_` environment provider (`CRIER_SERVER__MOUNT` is `server.mount`).
pub(crate) fn env() -> Env {
    Env::prefixed("CRIER_").split("__")
}

/// Extracts and validates; the error names the offending key.
pub(crate) fn load(f: Figment) -> Result<Settings, String> {
    let s: Settings = f.extract().map_err(|e| e.into_iter().map(describe).collect::<Vec<_>>().join("; "))?;
    s.validate()?;
    Ok(s)
}

/// One figment error as `key.path: what is wrong (source)`, the key in the lowercase dotted
/// form the docs use, whichever source (file or `CRIER_*` env) it came from.
fn describe(e: figment::Error) -> String {
    if e.path.is_empty() {
        return e.to_string();
    }
    // Profile names ("default") are figment's, not ours.
    let key = e.path.iter().filter(|p| *p != "default").cloned().collect::<Vec<_>>().join(".").to_lowercase();
    let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
    format!("{key}: {}{source}", e.kind)
}

const MASK: &str = "***";

impl Settings {
    /// A copy safe to print: secrets replaced by `***`, credentials removed from URLs.
    pub(crate) fn masked(&self) -> Settings {
        let mut s = self.clone();
        for v in [&mut s.auth.publish_secret, &mut s.auth.subscribe_secret] {
            if v.is_some() {
                *v = Some(MASK.to_owned());
            }
        }
        if let Some(jwt) = &mut s.auth.jwt
            && jwt.secret.is_some()
        {
            jwt.secret = Some(MASK.to_owned());
        }
        s.redis.url = mask_url(&s.redis.url);
        s.api.keys.iter_mut().for_each(|k| *k = MASK.to_owned());
        s.log.otlp_endpoint = s.log.otlp_endpoint.as_deref().map(mask_url);
        if let Some(hook) = &mut s.auth.webhook {
            hook.url = mask_url(&hook.url);
        }
        // Headers to the app usually carry its credentials.
        for route in &mut s.hooks.service {
            route.url = mask_url(&route.url);
            route.headers.values_mut().for_each(|v| *v = MASK.to_owned());
        }
        s.hooks.events.urls.iter_mut().for_each(|u| *u = mask_url(u));
        s.hooks.events.headers.values_mut().for_each(|v| *v = MASK.to_owned());
        s
    }

    fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("listen: {e} (got {:?}; expected ADDR:PORT)", self.listen))?;
        self.server.validate()?;
        self.api.validate(&self.server.mount)?;
        if self.engine.timeout_secs == 0 {
            return Err("engine.timeout_secs: must be at least 1".to_owned());
        }
        if self.engine.max_queue == 0 {
            return Err("engine.max_queue: must be at least 1".to_owned());
        }
        let (len, depth) = (crier_protocol::channel::MAX_CHANNEL_LEN, crier_protocol::channel::MAX_CHANNEL_DEPTH);
        if !(2..=len).contains(&self.engine.max_channel_length) {
            return Err(format!("engine.max_channel_length: must be between 2 and {len}"));
        }
        if !(1..=depth).contains(&self.engine.max_channel_depth) {
            return Err(format!("engine.max_channel_depth: must be between 1 and {depth}"));
        }
        if self.engine.max_subscriptions == 0 {
            return Err("engine.max_subscriptions: must be at least 1".to_owned());
        }
        if self.engine.publish_retry_window_secs > 86_400 {
            return Err("engine.publish_retry_window_secs: must be at most 86400 (one day)".to_owned());
        }
        self.redis.validate()?;
        // Reads key and token files, so a bad one stops startup naming the key.
        crier_auth::policies(&self.auth).map_err(|e| e.to_string())?;
        self.hooks.validate().map_err(|e| e.to_string())?;
        if self.log.level.trim().is_empty() {
            return Err("log.level: must not be empty".to_owned());
        }
        if let Some(endpoint) = &self.log.otlp_endpoint
            && !endpoint.trim().starts_with("http://")
        {
            return Err(format!(
                "log.otlp_endpoint: only http:// is supported (this build has no TLS client); point it at a \
                 collector beside the node, which can forward over TLS: {:?}",
                mask_url(endpoint)
            ));
        }
        Ok(())
    }
}

/// `scheme://user:pass@host/...` → `scheme://***@host/...`.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{MASK}{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
mod tests {
    use super::*;

    #[test]
    fn precedence_defaults_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "crier.toml",
                "listen = \"127.0.0.1:9000\"\n[server]\nmount = \"/bayeux\"\n[engine]\ntimeout_secs = 30\n",
            )?;
            jail.set_env("CRIER_ENGINE__TIMEOUT_SECS", "40");
            jail.set_env("CRIER_SERVER__MAX_BATCH", "7");
            let o = Overrides { timeout: Some(50), ..Overrides::default() };
            let s = load(figment(Some(Path::new("crier.toml")), env(), &o)).map_err(figment::Error::from)?;
            assert_eq!(s.listen, "127.0.0.1:9000");
            assert_eq!(s.server.mount, "/bayeux");
            assert_eq!(s.server.max_batch, 7);
            assert_eq!(s.engine.timeout_secs, 50);
            let s = load(figment(Some(Path::new("crier.toml")), env(), &Overrides::default()))
                .map_err(figment::Error::from)?;
            assert_eq!(s.engine.timeout_secs, 40);
            Ok(())
        });
    }

    #[test]
    fn the_write_timeout_loads_under_its_old_name_from_a_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("crier.toml", "[server]\nws_write_timeout_secs = 30\n")?;
            let s = load(figment(Some(Path::new("crier.toml")), env(), &Overrides::default()))
                .map_err(figment::Error::from)?;
            assert_eq!(s.server.ws_write_timeout_secs, Some(30));
            jail.set_env("CRIER_SERVER__WS_WRITE_TIMEOUT_SECS", "40");
            let s = load(figment(None, env(), &Overrides::default())).map_err(figment::Error::from)?;
            assert_eq!(s.server.ws_write_timeout_secs, Some(40));
            jail.set_env("CRIER_SERVER__WRITE_TIMEOUT_SECS", "50");
            let s = load(figment(None, env(), &Overrides::default())).map_err(figment::Error::from)?;
            assert_eq!((s.server.write_timeout_secs, s.server.ws_write_timeout_secs), (50, Some(40)));
            Ok(())
        });
    }

    #[test]
    fn printed_configuration_masks_secrets() {
        let mut s = Settings::default();
        s.auth.publish_secret = Some("hunter2".to_owned());
        s.api.keys = vec!["api-key-0123456789".to_owned()];
        s.auth.jwt = Some(crier_auth::JwtConfig { secret: Some("jwt-key".to_owned()), ..Default::default() });
        s.redis.url = "redis://app:pa55@redis:6379/0".to_owned();
        let text = toml::to_string_pretty(&s.masked()).expect("toml");
        for secret in ["hunter2", "jwt-key", "pa55", "api-key-0123456789"] {
            assert!(!text.contains(secret), "{secret} printed: {text}");
        }
        assert!(text.contains("redis://***@redis:6379/0"), "{text}");
    }

    #[test]
    fn hooks_are_validated_and_their_secrets_masked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hooks.toml",
                "[[hooks.service]]\nchannel = \"/service/rpc/**\"\nurl = \"http://app:8080/rpc\"\n\
                 headers = { authorization = \"Bearer rpc-key\" }\n\
                 [hooks.events]\nurls = [\"http://u:pw@app:8080/events\"]\nkinds = [\"publish\"]\n\
                 [hooks.events.headers]\nauthorization = \"Bearer event-key\"\n",
            )?;
            let s = load(figment(Some(Path::new("hooks.toml")), env(), &Overrides::default()))
                .map_err(figment::Error::from)?;
            assert_eq!(s.hooks.service[0].timeout_ms, 5000, "route defaults apply");
            assert_eq!(s.hooks.events.kinds, [crier_hooks::EventKind::Publish]);
            let text = toml::to_string_pretty(&s.masked()).expect("toml");
            for secret in ["rpc-key", "event-key", "pw@"] {
                assert!(!text.contains(secret), "{secret} printed: {text}");
            }
            for (body, want) in [
                ("[[hooks.service]]\nchannel = \"/rpc/**\"\nurl = \"http://a/\"\n", "hooks.service[0].channel"),
                ("[[hooks.service]]\nchannel = \"/service/x\"\nurl = \"nope\"\n", "hooks.service[0].url"),
                ("[hooks.events]\nurls = [\"https://app/events\"]\n", "hooks.events.urls[0]: https"),
                ("[hooks.events]\nkinds = [\"connect\"]\n", "hooks.events.kinds"),
                ("[hooks.events]\nbatch_max = 0\n", "hooks.events.batch_max"),
            ] {
                jail.create_file("bad-hooks.toml", body)?;
                let e = load(figment(Some(Path::new("bad-hooks.toml")), env(), &Overrides::default()))
                    .err()
                    .unwrap_or_default();
                assert!(e.contains(want), "{body}: {e}");
            }
            Ok(())
        });
    }

    #[test]
    fn bad_keys_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[server]\nmoutn = \"/x\"\n")?;
            let e = load(figment(Some(Path::new("bad.toml")), env(), &Overrides::default())).err().unwrap_or_default();
            assert!(e.contains("moutn"), "{e}");
            jail.create_file("bad2.toml", "[engine]\ntimeout_secs = \"soon\"\n")?;
            let e = load(figment(Some(Path::new("bad2.toml")), env(), &Overrides::default())).err().unwrap_or_default();
            assert!(e.contains("timeout_secs"), "{e}");
            jail.set_env("CRIER_SERVER__MOUNT", "no-slash");
            let e = load(figment(None, env(), &Overrides::default())).err().unwrap_or_default();
            assert!(e.contains("server.mount"), "{e}");
            jail.set_env("CRIER_SERVER__MOUNT", "/faye");
            // No TLS client in this build: TLS URLs stop startup, naming the key.
            for (key, value, want) in [
                ("CRIER_LOG__OTLP_ENDPOINT", "https://collector:4318", "log.otlp_endpoint: only http://"),
                ("CRIER_REDIS__URL", "rediss://redis:6380", "redis.url: TLS (rediss://) is not supported"),
                ("CRIER_AUTH__WEBHOOK__URL", "https://app/authorize", "auth.webhook.url: https is not supported"),
                (
                    "CRIER_ENGINE__PUBLISH_RETRY_WINDOW_SECS",
                    "86401",
                    "engine.publish_retry_window_secs: must be at most",
                ),
            ] {
                jail.set_env(key, value);
                let e = load(figment(None, env(), &Overrides::default())).err().unwrap_or_default();
                assert!(e.contains(want), "{key}={value}: {e}");
                jail.clear_env();
            }
            Ok(())
        });
    }
}
