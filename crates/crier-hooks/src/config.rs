//! Settings for calls to the app (`hooks.*`). The binary loads them; this crate defines,
//! documents and validates them.

use std::collections::BTreeMap;
use std::time::Duration;

use crier_protocol::{ChannelKind, ChannelPattern};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::HooksError;

/// Calls from Crier to the app; each part is off until configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// `/service/**` publishes forwarded to the app as HTTP requests, whose answers are the
    /// publish replies (CometD's `remoteCall`). Each route is `{ channel, url, timeout_ms,
    /// headers, max_in_flight, max_response_bytes }`; the first route whose `channel`
    /// pattern matches handles the publish (docs/hooks.md).
    pub service: Vec<ServiceRoute>,
    /// Monitoring events delivered to webhooks in batches.
    pub events: EventsConfig,
}

/// One `/service` route: publishes on matching channels are POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceRoute {
    /// A channel name or pattern under `/service/`, e.g. `/service/rpc/**`.
    pub channel: String,
    /// Where to POST each call (`http://`).
    pub url: String,
    /// Milliseconds to wait for the app's whole answer; then the publish fails.
    pub timeout_ms: u64,
    /// Extra headers sent with each call (e.g. `authorization`), values as given.
    pub headers: BTreeMap<String, String>,
    /// Calls in progress at once on this route; a publish beyond it fails at once (no queue).
    pub max_in_flight: usize,
    /// Largest answer body accepted, in bytes.
    pub max_response_bytes: usize,
}

impl Default for ServiceRoute {
    fn default() -> Self {
        ServiceRoute {
            channel: String::new(),
            url: String::new(),
            timeout_ms: 5000,
            headers: BTreeMap::new(),
            max_in_flight: 64,
            max_response_bytes: 1024 * 1024,
        }
    }
}

/// A kind of monitoring event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A session was created.
    Handshake,
    /// A session subscribed to a channel or pattern.
    Subscribe,
    /// A session lost a subscription.
    Unsubscribe,
    /// A message was published (with its data).
    Publish,
    /// A session ended.
    Disconnect,
    /// A user's presence changed.
    Presence,
}

impl EventKind {
    /// The name used in payloads (`type`) and in `hooks.events.kinds`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Handshake => "handshake",
            EventKind::Subscribe => "subscribe",
            EventKind::Unsubscribe => "unsubscribe",
            EventKind::Publish => "publish",
            EventKind::Disconnect => "disconnect",
            EventKind::Presence => "presence",
        }
    }
}

/// Event webhooks: this node's monitoring events POSTed to each URL in batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Webhook URLs (`http://`); each receives every event. Empty: no webhooks.
    pub urls: Vec<String>,
    /// Which events to send. `publish` is off by default: it carries every message's data.
    pub kinds: Vec<EventKind>,
    /// Most events in one POST.
    pub batch_max: usize,
    /// Milliseconds an event may wait for a batch to fill before the batch is sent.
    pub flush_ms: u64,
    /// Events waiting per URL; beyond it the oldest are dropped (and counted).
    pub queue_max: usize,
    /// Further attempts for a batch that failed (error, timeout or non-2xx) before it is
    /// dropped.
    pub retries: u32,
    /// Milliseconds before the first retry; each further retry waits twice as long.
    pub backoff_ms: u64,
    /// Longest wait between retries, in milliseconds.
    pub backoff_max_ms: u64,
    /// Milliseconds to wait for each POST's answer.
    pub timeout_ms: u64,
    /// On shutdown, milliseconds allowed to send what is still queued; the rest is dropped.
    pub shutdown_flush_ms: u64,
    /// Extra headers sent with each POST (e.g. `authorization`), values as given.
    pub headers: BTreeMap<String, String>,
    /// This node's name in payloads (`node`); empty: the backend's node id.
    pub node: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            urls: Vec::new(),
            kinds: vec![
                EventKind::Handshake,
                EventKind::Subscribe,
                EventKind::Unsubscribe,
                EventKind::Disconnect,
                EventKind::Presence,
            ],
            batch_max: 100,
            flush_ms: 500,
            queue_max: 10_000,
            retries: 5,
            backoff_ms: 200,
            backoff_max_ms: 10_000,
            timeout_ms: 5000,
            shutdown_flush_ms: 5000,
            headers: BTreeMap::new(),
            node: String::new(),
        }
    }
}

impl EventsConfig {
    /// The webhooks are on.
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }
}

impl HooksConfig {
    /// Checks every setting; the error names the key (`hooks.service[0].url: ...`).
    pub fn validate(&self) -> Result<(), HooksError> {
        for (i, route) in self.service.iter().enumerate() {
            route.validate(&format!("hooks.service[{i}]"))?;
        }
        self.events.validate()
    }
}

impl ServiceRoute {
    /// The route's channel pattern, checked to lie under `/service/`.
    pub(crate) fn pattern(&self, key: &str) -> Result<ChannelPattern, HooksError> {
        let p = ChannelPattern::parse(&self.channel)
            .map_err(|e| config(format!("{key}.channel: not a channel name or pattern: {:?} ({e})", self.channel)))?;
        if p.kind() != ChannelKind::Service {
            return Err(config(format!("{key}.channel: must be under /service/ (got {:?})", self.channel)));
        }
        Ok(p)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub(crate) fn validate(&self, key: &str) -> Result<(), HooksError> {
        self.pattern(key)?;
        check_url(&format!("{key}.url"), &self.url)?;
        header_map(&format!("{key}.headers"), &self.headers)?;
        between(&format!("{key}.timeout_ms"), self.timeout_ms, 1, MAX_MS)?;
        between(&format!("{key}.max_in_flight"), self.max_in_flight as u64, 1, Semaphore::MAX_PERMITS as u64)?;
        positive(&format!("{key}.max_response_bytes"), self.max_response_bytes as u64)
    }
}

impl EventsConfig {
    fn validate(&self) -> Result<(), HooksError> {
        for (i, url) in self.urls.iter().enumerate() {
            check_url(&format!("hooks.events.urls[{i}]"), url)?;
        }
        header_map("hooks.events.headers", &self.headers)?;
        positive("hooks.events.batch_max", self.batch_max as u64)?;
        positive("hooks.events.queue_max", self.queue_max as u64)?;
        between("hooks.events.timeout_ms", self.timeout_ms, 1, MAX_MS)?;
        between("hooks.events.backoff_ms", self.backoff_ms, 1, MAX_MS)?;
        between("hooks.events.backoff_max_ms", self.backoff_max_ms, 1, MAX_MS)?;
        between("hooks.events.flush_ms", self.flush_ms, 0, MAX_MS)?;
        between("hooks.events.shutdown_flush_ms", self.shutdown_flush_ms, 0, MAX_MS)?;
        if self.backoff_max_ms < self.backoff_ms {
            return Err(config("hooks.events.backoff_max_ms: must be at least hooks.events.backoff_ms".to_owned()));
        }
        Ok(())
    }
}

fn config(msg: String) -> HooksError {
    HooksError::Config(msg)
}

fn positive(key: &str, v: u64) -> Result<(), HooksError> {
    between(key, v, 1, u64::MAX)
}

/// Longest duration setting: a day. Durations are added to instants, which must not
/// overflow (that would panic), and nothing here needs to wait longer.
const MAX_MS: u64 = 86_400_000;

fn between(key: &str, v: u64, min: u64, max: u64) -> Result<(), HooksError> {
    if v < min {
        Err(config(format!("{key}: must be at least {min}")))
    } else if v > max {
        Err(config(format!("{key}: must be at most {max}")))
    } else {
        Ok(())
    }
}

/// An `http://` URL with a host. This build has no TLS client, so an `https://` URL would
/// fail on every call: refuse it at startup instead.
pub(crate) fn check_url(key: &str, url: &str) -> Result<reqwest::Url, HooksError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| config(format!("{key}: not a URL: {url:?} ({e})")))?;
    match parsed.scheme() {
        "http" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(parsed),
        "http" => Err(config(format!("{key}: no host in {url:?}"))),
        "https" => Err(config(format!(
            "{key}: https is not supported (this build has no TLS client); use http:// to the app on a \
             private network, or a TLS-originating proxy: {url:?}"
        ))),
        other => Err(config(format!("{key}: unsupported scheme {other:?} in {url:?} (expected http://)"))),
    }
}

/// The configured extra headers as a `HeaderMap`, or an error naming the bad one.
pub(crate) fn header_map(key: &str, headers: &BTreeMap<String, String>) -> Result<HeaderMap, HooksError> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| config(format!("{key}: not a header name: {name:?}")))?;
        // The value may be a secret: do not echo it.
        let v = HeaderValue::from_str(value).map_err(|_| config(format!("{key}.{name}: not a valid header value")))?;
        out.insert(n, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(channel: &str, url: &str) -> ServiceRoute {
        ServiceRoute { channel: channel.to_owned(), url: url.to_owned(), ..ServiceRoute::default() }
    }

    fn error_of(c: HooksConfig) -> String {
        c.validate().err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn defaults_are_valid_and_off() {
        assert!(HooksConfig::default().validate().is_ok());
        assert!(!HooksConfig::default().events.enabled());
        assert!(!EventsConfig::default().kinds.contains(&EventKind::Publish), "publish is opt-in");
    }

    #[test]
    fn bad_routes_are_named() {
        let cases = [
            (route("/service/rpc/**", "http://app:8080/rpc"), ""),
            (route("/rpc/**", "http://app/rpc"), "hooks.service[0].channel: must be under /service/"),
            (route("/service/**/x", "http://app/rpc"), "hooks.service[0].channel: not a channel name or pattern"),
            (route("", "http://app/rpc"), "hooks.service[0].channel"),
            (route("/service/x", "app/rpc"), "hooks.service[0].url: not a URL"),
            (route("/service/x", "https://app/rpc"), "hooks.service[0].url: https is not supported"),
            (route("/service/x", "ftp://app/rpc"), "hooks.service[0].url: unsupported scheme"),
            (ServiceRoute { timeout_ms: 0, ..route("/service/x", "http://a/") }, "hooks.service[0].timeout_ms"),
            (
                ServiceRoute { max_in_flight: 0, ..route("/service/x", "http://a/") },
                "hooks.service[0].max_in_flight: must be",
            ),
        ];
        for (r, want) in cases {
            let e = error_of(HooksConfig { service: vec![r.clone()], ..HooksConfig::default() });
            if want.is_empty() {
                assert_eq!(e, "", "{r:?}");
            } else {
                assert!(e.starts_with(want), "{r:?}: {e}");
            }
        }
    }

    #[test]
    fn bad_headers_are_named_without_their_values() {
        let mut r = route("/service/x", "http://a/");
        r.headers.insert("authorization".to_owned(), "Bearer s3cret\n".to_owned());
        let e = error_of(HooksConfig { service: vec![r], ..HooksConfig::default() });
        assert_eq!(e, "hooks.service[0].headers.authorization: not a valid header value");
        let mut events = EventsConfig::default();
        events.headers.insert("bad name".to_owned(), "x".to_owned());
        let e = error_of(HooksConfig { events, ..HooksConfig::default() });
        assert!(e.starts_with("hooks.events.headers: not a header name"), "{e}");
    }

    #[test]
    fn bad_event_settings_are_named() {
        let urls = vec!["http://app/events".to_owned(), "localhost:80".to_owned()];
        let e =
            error_of(HooksConfig { events: EventsConfig { urls, ..EventsConfig::default() }, ..Default::default() });
        assert!(e.starts_with("hooks.events.urls[1]:"), "{e}");
        let events = EventsConfig { batch_max: 0, ..EventsConfig::default() };
        assert_eq!(
            error_of(HooksConfig { events, ..Default::default() }),
            "hooks.events.batch_max: must be at least 1"
        );
        let events = EventsConfig { flush_ms: u64::MAX, ..EventsConfig::default() };
        assert_eq!(
            error_of(HooksConfig { events, ..Default::default() }),
            "hooks.events.flush_ms: must be at most 86400000"
        );
        let huge = ServiceRoute { max_in_flight: usize::MAX, ..route("/service/x", "http://a/") };
        let e = error_of(HooksConfig { service: vec![huge], ..Default::default() });
        assert!(e.starts_with("hooks.service[0].max_in_flight: must be at most"), "{e}");
        let events = EventsConfig { backoff_ms: 500, backoff_max_ms: 100, ..EventsConfig::default() };
        assert!(error_of(HooksConfig { events, ..Default::default() }).starts_with("hooks.events.backoff_max_ms"));
    }
}
