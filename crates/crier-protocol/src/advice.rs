//! The `advice` object that handshake and connect replies carry.

use serde::{Deserialize, Serialize};

/// What the client should do after this reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reconnect {
    /// Connect again after `interval` ms.
    Retry,
    /// The session is gone: handshake again.
    Handshake,
    /// Do not reconnect.
    None,
}

/// Advice sent on `/meta/handshake` and `/meta/connect` replies only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advice {
    /// The reconnect policy.
    pub reconnect: Reconnect,
    /// Milliseconds to wait before the next connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// Milliseconds the server may hold a connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

impl Advice {
    /// `{"reconnect":"retry","interval":..,"timeout":..}`, Faye's advice on success.
    pub fn retry(interval_ms: u64, timeout_ms: u64) -> Self {
        Advice { reconnect: Reconnect::Retry, interval: Some(interval_ms), timeout: Some(timeout_ms) }
    }

    /// `{"reconnect":"handshake"}`, Faye's advice on any handshake or connect failure.
    pub fn handshake() -> Self {
        Advice { reconnect: Reconnect::Handshake, interval: None, timeout: None }
    }

    /// As JSON.
    pub fn to_value(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let r = match self.reconnect {
            Reconnect::Retry => "retry",
            Reconnect::Handshake => "handshake",
            Reconnect::None => "none",
        };
        m.insert("reconnect".into(), r.into());
        if let Some(i) = self.interval {
            m.insert("interval".into(), i.into());
        }
        if let Some(t) = self.timeout {
            m.insert("timeout".into(), t.into());
        }
        serde_json::Value::Object(m)
    }
}
