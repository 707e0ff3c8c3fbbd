//! What the engine knows about the request a message came in on.

use std::net::SocketAddr;
use std::sync::Arc;

use crier_protocol::ConnectionType;

/// The transport a batch arrived on. It decides how `/meta/connect` behaves: HTTP
/// transports hold the request and return queued messages in the reply; socket transports
/// (WebSocket, EventSource) have messages pushed by a [`crate::Pump`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP POST (`long-polling` and `cross-origin-long-polling`).
    LongPolling,
    /// JSONP GET (`callback-polling`).
    CallbackPolling,
    /// WebSocket frames.
    WebSocket,
    /// POSTs from an EventSource client (the stream itself is a pump).
    EventSource,
    /// In-process messages from the server itself (no request; may use `/meta/**`).
    InProcess,
}

impl Transport {
    /// Whether deliveries go out through a pump rather than connect replies.
    pub fn is_socket(self) -> bool {
        matches!(self, Transport::WebSocket)
    }

    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Transport::LongPolling => "long-polling",
            Transport::CallbackPolling => "callback-polling",
            Transport::WebSocket => "websocket",
            Transport::EventSource => "eventsource",
            Transport::InProcess => "in-process",
        }
    }
}

/// The HTTP request behind a message: headers and remote address. Absent for in-process
/// messages, as Faye passes `request = null` to extensions for its local client.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// Header names (lowercase) and values, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The peer address.
    pub remote_addr: Option<SocketAddr>,
    /// The request path.
    pub path: String,
}

impl RequestInfo {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Who a session belongs to, bound at handshake by an extension (e.g. a verified JWT) and
/// kept with the session on every node.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The user id, if the session belongs to a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Verified claims (e.g. a JWT's payload), for channel rules.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// When the credentials expire (ms since the epoch); connects after it are refused by
    /// the policy that set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Context passed with each batch to the engine and to extensions.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The transport.
    pub transport: Transport,
    /// The request, or `None` for in-process messages.
    pub request: Option<Arc<RequestInfo>>,
    /// The identity of the session the message names by `clientId`, for extensions whose
    /// [`crate::Extension::wants_identity`] is true (`None` otherwise, and for unknown or
    /// anonymous sessions).
    pub identity: Option<Arc<Identity>>,
}

impl RequestContext {
    /// A context for an HTTP or socket request.
    pub fn new(transport: Transport, request: RequestInfo) -> Self {
        RequestContext { transport, request: Some(Arc::new(request)), identity: None }
    }

    /// A context for in-process messages (server-side clients).
    pub fn in_process() -> Self {
        RequestContext { transport: Transport::InProcess, request: None, identity: None }
    }

    /// Whether the messages come from inside the server (may subscribe to `/meta/**`, `/service/**`).
    pub fn is_local(&self) -> bool {
        self.transport == Transport::InProcess
    }

    /// The connection type names this transport may legitimately claim.
    pub fn connection_type(&self) -> ConnectionType {
        match self.transport {
            Transport::LongPolling => ConnectionType::LongPolling,
            Transport::CallbackPolling => ConnectionType::CallbackPolling,
            Transport::WebSocket => ConnectionType::WebSocket,
            Transport::EventSource => ConnectionType::EventSource,
            Transport::InProcess => ConnectionType::InProcess,
        }
    }
}
