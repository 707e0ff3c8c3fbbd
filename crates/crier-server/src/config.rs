//! Settings of the HTTP edge. The binary loads them; this crate defines and documents them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Seconds between WebSocket ping frames (0: none).
    pub ws_ping_secs: u64,
    /// Bytes each WebSocket reads from the network at a time, and the read buffer every
    /// socket keeps while idle (64 to 131072). Larger frames are still read whole, in
    /// several reads; a larger value costs that much memory per idle connection.
    pub ws_read_buffer_bytes: usize,
    /// Seconds between EventSource keep-alive comments.
    pub eventsource_ping_secs: u64,
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
            ws_read_buffer_bytes: 512,
            eventsource_ping_secs: 10,
            shutdown_grace_secs: 10,
            internal_listen: None,
            limits: crate::limits::LimitsConfig::default(),
            api: crate::api::ApiConfig::default(),
        }
    }
}

impl ServerConfig {
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
