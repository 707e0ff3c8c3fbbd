//! Settings of the HTTP edge. The binary loads them; this crate defines and documents them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest connection timeout accepted, in seconds (a day): far beyond any use, and far
/// from the clock's overflow.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// HTTP and transport settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The Bayeux mount path; it and every sub-path under it are the Bayeux endpoint.
    pub mount: String,
    /// Path to the Faye browser bundle (e.g. `node_modules/faye/client/faye-browser-min.js`),
    /// served at `<mount>/client.js` and `<mount>.js`. Unset: those paths answer 404.
    pub client_js: Option<PathBuf>,
    /// Largest HTTP request body accepted, in bytes (HTTP 413 beyond).
    pub max_body_bytes: usize,
    /// Largest WebSocket message accepted, in bytes (the socket closes with 1009 beyond).
    pub max_frame_bytes: usize,
    /// Most messages in one batch (HTTP 400, or WebSocket close 1008, beyond).
    pub max_batch: usize,
    /// Deepest JSON nesting accepted in a request (HTTP 400 beyond).
    pub max_json_depth: usize,
    /// If non-empty, only requests whose `Origin` is in this list (exact match, e.g.
    /// `https://app.example.com`) are served; others get HTTP 403. Requests without an
    /// `Origin` (server-side publishers) are always served.
    pub allowed_origins: Vec<String>,
    /// Seconds between WebSocket ping frames (0: none; at most 86400). A socket that sends
    /// nothing, not even a pong, while two pings go out is closed (after two to three
    /// intervals of silence), so a vanished or silent peer does not hold its place.
    pub ws_ping_secs: u64,
    /// Seconds a connection may wait to write without any progress: a peer that stops
    /// reading (its socket buffers full) is closed after it, whatever it was being sent (a
    /// WebSocket frame, an EventSource stream, a long-poll answer). A WebSocket batch not
    /// written goes back to the session's queue for its next connection. A slow link that
    /// keeps reading is not cut off, however long a large answer takes, as long as it takes in
    /// about a third of the socket's send buffer (up to about 1.3 MiB) within the timeout: the
    /// kernel only then reports room to write. With 30 s more, it is also each accepted
    /// socket's `TCP_USER_TIMEOUT` (Linux): a client that vanished without closing, whose
    /// socket acknowledges nothing, is dropped that long after a write instead of after the
    /// kernel's retransmissions (about 15 minutes). At least 1, at most
    /// 86400. (`ws_write_timeout_secs`, its name when it covered WebSockets only, is still
    /// read, and wins when set.)
    pub write_timeout_secs: u64,
    /// The old name of `write_timeout_secs`; when set, it is used instead. A field of its
    /// own, not a serde alias: the defaults always carry `write_timeout_secs`, so an alias
    /// would make a configuration that uses the old name a duplicate field, refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub ws_write_timeout_secs: Option<u64>,
    /// Seconds a connection may be silent before the kernel sends TCP keep-alive probes (0:
    /// none; at most 86400). They find a client that vanished without closing even when
    /// nothing is being sent to it (a WebSocket with `ws_ping_secs = 0`, a quiet keep-alive
    /// connection). Probes go out `tcp_keepalive_secs / 3` apart; unanswered, the connection
    /// is dropped at the first probe that finds the client unheard for 30 s more than
    /// `write_timeout_secs` (its `TCP_USER_TIMEOUT`, Linux), so about 100 s after it was last
    /// heard with the defaults (elsewhere: after three unanswered probes). They also keep
    /// idle connections open through NATs and firewalls that forget silent flows.
    pub tcp_keepalive_secs: u64,
    /// Bytes each WebSocket reads from the network at a time, and the read buffer every
    /// socket keeps while idle (64 to 131072). Larger frames are still read whole, in
    /// several reads; a larger value costs that much memory per idle connection.
    pub ws_read_buffer_bytes: usize,
    /// Seconds between EventSource keep-alive comments.
    pub eventsource_ping_secs: u64,
    /// Seconds a client may take to send a request: a new connection's first request
    /// headers, counted from when it opens, and any request's body, counted from its
    /// headers. Beyond it the connection is closed (an unfinished body is answered HTTP 408
    /// first). Without it a connection that sends nothing, or trickles its request, would
    /// hold a descriptor and a place under `limits.max_connections`. (A new connection is
    /// also bound by `idle_timeout_secs`, whichever ends first.) At most 86400; 0: no limit.
    pub read_timeout_secs: u64,
    /// Seconds a keep-alive connection may stay idle after a response (and then take to send
    /// the next request's headers) before it is closed. Held long-polls, EventSource streams
    /// and WebSockets are not idle. Keep it above the idle timeout of any load balancer in
    /// front (nginx and AWS ALB default to 60 s, Google Cloud's to 600 s; an ALB raised to
    /// 3600 s for WebSockets needs more), or the balancer may send a request on a
    /// connection the node is closing and answer 502. At most 86400; 0: no limit.
    pub idle_timeout_secs: u64,
    /// Seconds to wait for connections to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Address and port (e.g. `127.0.0.1:9090`) for `/healthz`, `/readyz` and `/metrics`
    /// only. When set, those are served there and not on the public port.
    pub internal_listen: Option<String>,
    /// Connection and session limits. Not under `server.*`: the binary loads them from the
    /// top-level `limits` section.
    #[serde(skip)]
    pub limits: crate::limits::LimitsConfig,
    /// The server API. Not under `server.*`: the binary loads it from the top-level `api`
    /// section.
    #[serde(skip)]
    pub api: crate::api::ApiConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mount: "/faye".to_owned(),
            client_js: None,
            max_body_bytes: 1024 * 1024,
            max_frame_bytes: 1024 * 1024,
            max_batch: 1000,
            max_json_depth: 64,
            allowed_origins: Vec::new(),
            ws_ping_secs: 20,
            write_timeout_secs: 60,
            ws_write_timeout_secs: None,
            tcp_keepalive_secs: 60,
            ws_read_buffer_bytes: 512,
            eventsource_ping_secs: 10,
            read_timeout_secs: 30,
            idle_timeout_secs: 620,
            shutdown_grace_secs: 10,
            internal_listen: None,
            limits: crate::limits::LimitsConfig::default(),
            api: crate::api::ApiConfig::default(),
        }
    }
}

impl ServerConfig {
    /// `read_timeout_secs` (`None`: no limit).
    pub(crate) fn read_timeout(&self) -> Option<std::time::Duration> {
        (self.read_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.read_timeout_secs))
    }

    /// `write_timeout_secs`, or its old name when that is set, with the name used.
    fn write_timeout_setting(&self) -> (&'static str, u64) {
        match self.ws_write_timeout_secs {
            Some(secs) => ("ws_write_timeout_secs", secs),
            None => ("write_timeout_secs", self.write_timeout_secs),
        }
    }

    /// `write_timeout_secs` (or `ws_write_timeout_secs`, its old name, when set).
    pub(crate) fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.write_timeout_setting().1)
    }

    /// `tcp_keepalive_secs` (`None`: no keep-alive probes).
    pub(crate) fn tcp_keepalive(&self) -> Option<std::time::Duration> {
        (self.tcp_keepalive_secs > 0).then(|| std::time::Duration::from_secs(self.tcp_keepalive_secs))
    }

    /// `idle_timeout_secs` (`None`: no limit).
    pub(crate) fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.idle_timeout_secs > 0).then(|| std::time::Duration::from_secs(self.idle_timeout_secs))
    }

    /// Checks values that serde cannot; names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.mount.starts_with('/') || (self.mount.len() > 1 && self.mount.ends_with('/')) {
            return Err(format!("server.mount: must start with '/' and not end with '/' (got {:?})", self.mount));
        }
        if self.mount.contains(['?', '#', ' ']) {
            return Err(format!("server.mount: invalid characters in {:?}", self.mount));
        }
        if self.max_body_bytes < 1024 {
            return Err("server.max_body_bytes: must be at least 1024".to_owned());
        }
        if self.max_frame_bytes < 1024 {
            return Err("server.max_frame_bytes: must be at least 1024".to_owned());
        }
        if !(64..=128 * 1024).contains(&self.ws_read_buffer_bytes) {
            return Err(format!(
                "server.ws_read_buffer_bytes: must be between 64 and 131072 (got {})",
                self.ws_read_buffer_bytes
            ));
        }
        if self.ws_ping_secs > MAX_TIMEOUT_SECS {
            return Err(format!(
                "server.ws_ping_secs: must be at most {MAX_TIMEOUT_SECS} (got {}; 0 for no pings)",
                self.ws_ping_secs
            ));
        }
        let (key, secs) = self.write_timeout_setting();
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(format!("server.{key}: must be between 1 and {MAX_TIMEOUT_SECS} (got {secs})"));
        }
        for (key, secs) in [
            ("read_timeout_secs", self.read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("tcp_keepalive_secs", self.tcp_keepalive_secs),
        ] {
            if secs > MAX_TIMEOUT_SECS {
                return Err(format!("server.{key}: must be at most {MAX_TIMEOUT_SECS} (got {secs}; 0 for no limit)"));
            }
        }
        if self.max_batch == 0 {
            return Err("server.max_batch: must be at least 1".to_owned());
        }
        if self.max_json_depth < 4 {
            return Err("server.max_json_depth: must be at least 4".to_owned());
        }
        if let Some(addr) = &self.internal_listen {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| format!("server.internal_listen: {e} (got {addr:?}; expected ADDR:PORT)"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_timeouts_are_bounded_and_zero_means_none() {
        let ok = ServerConfig { read_timeout_secs: 0, idle_timeout_secs: MAX_TIMEOUT_SECS, ..ServerConfig::default() };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.read_timeout(), None);
        assert_eq!(ok.idle_timeout(), Some(std::time::Duration::from_secs(MAX_TIMEOUT_SECS)));
        let too_long = ServerConfig { idle_timeout_secs: MAX_TIMEOUT_SECS + 1, ..ServerConfig::default() };
        let err = too_long.validate().expect_err("beyond a day");
        assert!(err.starts_with("server.idle_timeout_secs: must be at most 86400"), "{err}");
        let too_long = ServerConfig { read_timeout_secs: u64::MAX, ..ServerConfig::default() };
        assert!(too_long.validate().is_err_and(|e| e.starts_with("server.read_timeout_secs")));
        let off = ServerConfig { tcp_keepalive_secs: 0, ..ServerConfig::default() };
        assert_eq!((off.validate(), off.tcp_keepalive()), (Ok(()), None));
        let bad = ServerConfig { tcp_keepalive_secs: MAX_TIMEOUT_SECS + 1, ..ServerConfig::default() };
        assert!(bad.validate().is_err_and(|e| e.starts_with("server.tcp_keepalive_secs: must be at most 86400")));
        let bad = ServerConfig { ws_ping_secs: MAX_TIMEOUT_SECS + 1, ..ServerConfig::default() };
        assert!(bad.validate().is_err_and(|e| e.starts_with("server.ws_ping_secs: must be at most 86400")));
        for secs in [0, MAX_TIMEOUT_SECS + 1] {
            let bad = ServerConfig { write_timeout_secs: secs, ..ServerConfig::default() };
            assert!(bad.validate().is_err_and(|e| e.starts_with("server.write_timeout_secs: must be between 1")));
        }
    }

    #[test]
    fn the_write_timeout_is_still_read_under_its_websocket_only_name() {
        let old = ServerConfig { ws_write_timeout_secs: Some(7), ..ServerConfig::default() };
        assert_eq!(old.write_timeout(), std::time::Duration::from_secs(7));
        let bad = ServerConfig { ws_write_timeout_secs: Some(0), ..ServerConfig::default() };
        assert!(bad.validate().is_err_and(|e| e.starts_with("server.ws_write_timeout_secs: must be between 1")));
        // Not written back out: a printed configuration names the setting once.
        let text = serde_json::to_string(&ServerConfig::default()).expect("json");
        assert!(!text.contains("ws_write_timeout_secs"), "{text}");
    }
}
