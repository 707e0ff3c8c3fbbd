//! Client configuration and its builder.

use std::time::Duration;

use crier_protocol::ConnectionType;
use reqwest::Url;
use serde_json::Value;

use crate::client::Client;
use crate::error::ClientError;

/// Which transport a session uses after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// One WebSocket at the endpoint URL (scheme `ws`/`wss`); every frame is a JSON
    /// array, and messages are pushed as soon as the server has them.
    #[default]
    WebSocket,
    /// HTTP POST long-polling: `/meta/connect` is held by the server until it has
    /// messages or its time-out expires.
    LongPolling,
}

impl Transport {
    /// The `connectionType` this transport announces.
    pub fn connection_type(self) -> ConnectionType {
        match self {
            Transport::WebSocket => ConnectionType::WebSocket,
            Transport::LongPolling => ConnectionType::LongPolling,
        }
    }
}

/// The default for [`ClientBuilder::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The default for [`ClientBuilder::subscription_capacity`].
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 10_000;

/// Everything a session needs to know, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) url: Url,
    pub(crate) ws_url: Url,
    pub(crate) transport: Transport,
    pub(crate) handshake_over_websocket: bool,
    pub(crate) ext: Option<Value>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_margin: Duration,
    pub(crate) retry: Duration,
    pub(crate) subscription_capacity: usize,
}

/// Parses an `http(s)://` endpoint URL.
pub(crate) fn parse_http_url(url: &str) -> Result<Url, ClientError> {
    let u = Url::parse(url).map_err(|_| ClientError::Url(url.to_owned()))?;
    match u.scheme() {
        "http" | "https" => Ok(u),
        _ => Err(ClientError::Url(url.to_owned())),
    }
}

/// The WebSocket URL for an HTTP endpoint: same host, port and path, scheme `ws`/`wss`,
/// which is where Faye (and Crier) accept the upgrade.
pub(crate) fn ws_url(http: &Url) -> Result<Url, ClientError> {
    let mut u = http.clone();
    let scheme = if http.scheme() == "https" { "wss" } else { "ws" };
    u.set_scheme(scheme).map_err(|()| ClientError::Url(http.to_string()))?;
    Ok(u)
}

/// Builds a [`Client`]. Obtained from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    transport: Transport,
    handshake_over_websocket: bool,
    ext: Option<Value>,
    request_timeout: Duration,
    connect_margin: Duration,
    retry: Duration,
    subscription_capacity: usize,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    pub(crate) fn new(url: impl Into<String>) -> Self {
        ClientBuilder {
            url: url.into(),
            transport: Transport::default(),
            handshake_over_websocket: false,
            ext: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_margin: Duration::from_secs(5),
            retry: Duration::from_secs(1),
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            http: None,
        }
    }

    /// The transport used after the handshake (default [`Transport::WebSocket`]).
    pub fn transport(mut self, t: Transport) -> Self {
        self.transport = t;
        self
    }

    /// An `ext` object sent with every handshake (including re-handshakes), e.g. an
    /// auth token checked by a server extension.
    pub fn ext(mut self, ext: Value) -> Self {
        self.ext = Some(ext);
        self
    }

    /// With [`Transport::WebSocket`], send the handshake on the WebSocket too (as CometD
    /// clients do) instead of over HTTP POST first (as Faye clients do). Default `false`.
    pub fn handshake_over_websocket(mut self, yes: bool) -> Self {
        self.handshake_over_websocket = yes;
        self
    }

    /// Time-out for every request other than `/meta/connect` (default 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// How long past the server's advised `timeout` a held `/meta/connect` may take
    /// before the client gives up on it (default 5 s). The server should answer within
    /// its advised time-out; the margin absorbs scheduling and network delay.
    pub fn connect_timeout_margin(mut self, d: Duration) -> Self {
        self.connect_margin = d;
        self
    }

    /// Pause before retrying after a failed handshake or connect (default 1 s; Faye's
    /// client uses 5 s).
    pub fn retry_interval(mut self, d: Duration) -> Self {
        self.retry = d;
        self
    }

    /// How many undelivered messages each [`Subscription`](crate::Subscription)
    /// buffers before further messages for it are dropped (default 10 000).
    pub fn subscription_capacity(mut self, n: usize) -> Self {
        self.subscription_capacity = n;
        self
    }

    /// Use this `reqwest::Client` (e.g. one shared by many Bayeux clients, so they share
    /// a connection pool). By default each client builds its own.
    pub fn http_client(mut self, c: reqwest::Client) -> Self {
        self.http = Some(c);
        self
    }

    /// Validates the configuration and builds the client; nothing is sent until
    /// [`Client::connect`].
    pub fn build(self) -> Result<Client, ClientError> {
        let url = parse_http_url(&self.url)?;
        let ws_url = ws_url(&url)?;
        let http = match self.http {
            Some(c) => c,
            None => reqwest::Client::builder().build()?,
        };
        let cfg = Config {
            url,
            ws_url,
            transport: self.transport,
            handshake_over_websocket: self.handshake_over_websocket,
            ext: self.ext,
            request_timeout: self.request_timeout,
            connect_margin: self.connect_margin,
            retry: self.retry,
            subscription_capacity: self.subscription_capacity,
        };
        Ok(Client::from_config(cfg, http))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_follows_http_url() {
        let u = parse_http_url("http://127.0.0.1:18000/faye").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws_url(&u).map(|u| u.to_string()).ok().as_deref(), Some("ws://127.0.0.1:18000/faye"));
        let u = parse_http_url("https://example.com/bayeux?x=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ws_url(&u).map(|u| u.to_string()).ok().as_deref(), Some("wss://example.com/bayeux?x=1"));
        assert!(parse_http_url("ws://example.com/").is_err());
        assert!(parse_http_url("not a url").is_err());
    }
}
