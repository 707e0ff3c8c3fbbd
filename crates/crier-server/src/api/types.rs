//! Request and response bodies of the API. Their JSON schemas (schemars) make the OpenAPI
//! document, so the document cannot drift from what the handlers accept and return.

use crier_engine::{ChannelInfo, ClusterStats, Presence, SessionInfo};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /publish`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// The channel (a name, not a pattern; not `/meta/**` or `/service/**`).
    pub channel: String,
    /// The message's `data`, any JSON.
    pub data: Value,
    /// The message's `ext`, passed to subscribers as is.
    #[serde(default)]
    pub ext: Option<Value>,
}

/// `POST /broadcast`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastRequest {
    /// The channels (names).
    pub channels: Vec<String>,
    /// The message's `data`.
    pub data: Value,
    /// The message's `ext`.
    #[serde(default)]
    pub ext: Option<Value>,
    /// Deliver at most once per session, on the first listed channel that reaches it
    /// (default). `false`: once per channel.
    #[serde(default = "yes")]
    pub dedupe: bool,
}

fn yes() -> bool {
    true
}

/// `POST /send`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// User ids; every session of each receives the message once.
    pub users: Vec<String>,
    /// The channel the message carries (clients receive it through their subscription
    /// to it, e.g. `/inbox`).
    pub channel: String,
    /// The message's `data`.
    pub data: Value,
    /// The message's `ext`.
    #[serde(default)]
    pub ext: Option<Value>,
}

/// Which sessions: the union of those named, those of the users named, and the current
/// subscribers of the channels named. At least one list must be non-empty.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SelectRequest {
    /// Client ids.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// User ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// Channel names whose subscribers are selected.
    #[serde(default)]
    pub subscribers_of: Vec<String>,
}

/// `POST /subscribe` and `POST /unsubscribe`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscribeRequest {
    /// Client ids.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// User ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// Channel names whose subscribers are selected.
    #[serde(default)]
    pub subscribers_of: Vec<String>,
    /// Channels or patterns to subscribe the sessions to (or unsubscribe them from).
    pub channels: Vec<String>,
}

/// `POST /presence`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PresenceRequest {
    /// User ids.
    pub users: Vec<String>,
}

/// The id given to a published message.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PublishResponse {
    /// The message's `id`.
    pub id: String,
}

/// What a subscribe or unsubscribe did.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SubscribeResponse {
    /// Sessions selected.
    pub sessions: u64,
    /// Subscriptions added (or removed); already-present (or absent) ones do not count.
    pub changed: u64,
}

/// What a disconnect did.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct DisconnectResponse {
    /// Sessions ended.
    pub disconnected: u64,
}

/// One user: presence, sessions and the channels they subscribe to.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct UserResponse {
    /// The user id.
    pub user: String,
    /// The user's presence.
    pub presence: Presence,
    /// The user's sessions.
    pub sessions: Vec<SessionInfo>,
    /// The union of the sessions' subscriptions, sorted.
    pub channels: Vec<String>,
}

/// A name with subscribers.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ChannelCount {
    /// The channel name or pattern.
    pub channel: String,
    /// Sessions subscribed to exactly this name or pattern.
    pub sessions: u64,
}

/// `GET /channels`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ChannelsResponse {
    /// Every name or pattern with at least one subscriber, sorted.
    pub channels: Vec<ChannelCount>,
}

/// `POST /presence`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PresenceResponse {
    /// One entry per user asked, in order.
    pub presence: Vec<Presence>,
}

/// `GET /presence/online`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct OnlineResponse {
    /// Users with at least one session.
    pub online_users: u64,
}

/// Every error.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

/// The schemas the document needs, re-exported for `openapi.rs`.
pub(crate) type Channel = ChannelInfo;
pub(crate) type Stats = ClusterStats;
pub(crate) type Session = SessionInfo;
