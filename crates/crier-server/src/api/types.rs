//! Request and response bodies of the API. Their JSON schemas (schemars) make the OpenAPI
//! document, so the document cannot drift from what the handlers accept and return.

use std::borrow::Cow;

use crier_engine::{ChannelInfo, ClusterStats, Presence, SessionInfo};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One segment of a channel name (Faye's grammar, `crier_protocol::channel`).
const SEGMENT: &str = "[A-Za-z0-9_!~()$@-]+";
/// Names whose first segment is `meta` or `service`.
const META_OR_SERVICE: &str = "^/(meta|service)(/|$)";
/// Names whose first segment is `meta`.
const META: &str = "^/meta(/|$)";

/// The longest channel name or pattern (bytes; names are ASCII, so also characters) and
/// the most segments: the protocol's hard limits and the engine's defaults
/// (`engine.max_channel_length`, `engine.max_channel_depth`).
const MAX_CHANNEL_LEN: usize = crier_protocol::channel::MAX_CHANNEL_LEN;
const MAX_CHANNEL_DEPTH: usize = crier_protocol::channel::MAX_CHANNEL_DEPTH;

/// A plain name of any kind.
fn channel_name() -> Value {
    json!({
        "description": format!(
            "A channel name: `/`-separated segments of `[A-Za-z0-9-_!~()$@]`, no wildcards, at most \
             {MAX_CHANNEL_LEN} bytes and {MAX_CHANNEL_DEPTH} segments (engine.max_channel_length and \
             engine.max_channel_depth may set lower limits)."
        ),
        "type": "string",
        "maxLength": MAX_CHANNEL_LEN,
        "pattern": format!("^(/{SEGMENT}){{1,{MAX_CHANNEL_DEPTH}}}$"),
        "examples": ["/chat/room1"],
    })
}

/// A name the API may publish to.
fn publish_channel() -> Value {
    let mut s = channel_name();
    s["description"] = json!("A channel name (see ChannelName) that is not `/meta/**` or `/service/**`.");
    s["not"] = json!({"pattern": META_OR_SERVICE});
    s
}

/// A name whose subscribers `GET /channels/subscribers` lists.
pub(crate) fn listed_channel() -> Value {
    let mut s = channel_name();
    s["description"] = json!("A channel name (see ChannelName) that is not `/meta/**`.");
    s["not"] = json!({"pattern": META});
    s
}

/// A name or pattern the API may subscribe sessions to.
fn subscribe_channel() -> Value {
    json!({
        "description": "A channel name (see ChannelName) or a pattern whose last segment is `*` (one \
             segment) or `**` (any depth); not `/meta/**` or `/service/**`.",
        "type": "string",
        "maxLength": MAX_CHANNEL_LEN,
        "pattern": format!("^(/{SEGMENT}){{0,{}}}/({SEGMENT}|\\*|\\*\\*)$", MAX_CHANNEL_DEPTH - 1),
        "not": {"pattern": META_OR_SERVICE},
        "examples": ["/chat/room1", "/chat/*"],
    })
}

fn client_id() -> Value {
    json!({
        "description": "A client (session) id: 1 to 64 characters of `[0-9a-z]` (the server issues 31).",
        "type": "string",
        "pattern": "^[0-9a-z]{1,64}$",
    })
}

fn user_id() -> Value {
    json!({
        "description": format!(
            "A user id (the JWT's user claim): 1 to {max} bytes of UTF-8, any characters. `maxLength` \
             counts characters: an id of at most {max} characters but more than {max} bytes is refused too.",
            max = crier_engine::MAX_USER_LEN
        ),
        "type": "string",
        "minLength": 1,
        "maxLength": crier_engine::MAX_USER_LEN,
        "examples": ["alice"],
    })
}

/// The strings the API takes, as named schemas (`#/components/schemas/<name>`), each exactly
/// what the server accepts, so that a request valid by the document is never refused as
/// malformed, and one that is not is (with the default limits).
macro_rules! string_schema {
    ($(#[$doc:meta])* $ty:ident, $schema:expr) => {
        $(#[$doc])*
        pub(crate) struct $ty;

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                Schema::try_from($schema).unwrap_or_else(|_| json_schema!({"type": "string"}))
            }
        }
    };
}

string_schema!(
    /// A client (session) id as the server issues them.
    ClientId,
    client_id()
);
string_schema!(
    /// A user id.
    UserId,
    user_id()
);
string_schema!(
    /// A plain channel name, any kind.
    ChannelName,
    channel_name()
);
string_schema!(
    /// A channel name the API may publish to.
    PublishChannel,
    publish_channel()
);
string_schema!(
    /// A channel name or pattern the API may subscribe sessions to.
    SubscribeChannel,
    subscribe_channel()
);

/// "At least one of the lists `client_ids`, `users` and `subscribers_of` is non-empty",
/// for the session selectors.
fn one_selector(schema: &mut Schema) {
    let one = |list: &str| json!({"required": [list], "properties": {list: {"minItems": 1}}});
    schema.insert("anyOf".to_owned(), json!([one("client_ids"), one("users"), one("subscribers_of")]));
}

/// `POST /publish`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// The channel (a name, not a pattern; not `/meta/**` or `/service/**`).
    #[schemars(with = "PublishChannel")]
    pub channel: String,
    /// The message's `data`, any JSON.
    pub data: Value,
    /// The message's `ext`, passed to subscribers as is.
    #[serde(default)]
    pub ext: Option<Value>,
    /// Makes a retried call safe: a publish to the same channel with the same key within
    /// `engine.publish_retry_window_secs` (on any node) is not published again, and both
    /// calls answer the same `id`. One key must name one message.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub idempotency_key: Option<String>,
}

/// `POST /broadcast`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastRequest {
    /// The channels (names).
    #[schemars(with = "Vec<PublishChannel>", length(min = 1))]
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
    /// Makes a retried call safe: a broadcast with the same key within
    /// `engine.publish_retry_window_secs` (on any node) is not made again, and both calls
    /// answer the same `id`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub idempotency_key: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /send`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendRequest {
    /// User ids; every session of each receives the message once.
    #[schemars(with = "Vec<UserId>", length(min = 1))]
    pub users: Vec<String>,
    /// The channel the message carries (clients receive it through their subscription
    /// to it, e.g. `/inbox`).
    #[schemars(with = "PublishChannel")]
    pub channel: String,
    /// The message's `data`.
    pub data: Value,
    /// The message's `ext`.
    #[serde(default)]
    pub ext: Option<Value>,
    /// Makes a retried call safe: a send with the same key within
    /// `engine.publish_retry_window_secs` (on any node) is not made again, and both calls
    /// answer the same `id`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 256))]
    pub idempotency_key: Option<String>,
}

/// Which sessions: the union of those named, those of the users named, and the current
/// subscribers of the channels named. At least one list must be non-empty.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = one_selector)]
pub(crate) struct SelectRequest {
    /// Client ids.
    #[serde(default)]
    #[schemars(with = "Vec<ClientId>")]
    pub client_ids: Vec<String>,
    /// User ids.
    #[serde(default)]
    #[schemars(with = "Vec<UserId>")]
    pub users: Vec<String>,
    /// Channel names whose subscribers are selected.
    #[serde(default)]
    #[schemars(with = "Vec<ChannelName>")]
    pub subscribers_of: Vec<String>,
}

/// `POST /subscribe` and `POST /unsubscribe`: the sessions as in `SelectRequest` (at least
/// one list non-empty), and the channels.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = one_selector)]
pub(crate) struct SubscribeRequest {
    /// Client ids.
    #[serde(default)]
    #[schemars(with = "Vec<ClientId>")]
    pub client_ids: Vec<String>,
    /// User ids.
    #[serde(default)]
    #[schemars(with = "Vec<UserId>")]
    pub users: Vec<String>,
    /// Channel names whose subscribers are selected.
    #[serde(default)]
    #[schemars(with = "Vec<ChannelName>")]
    pub subscribers_of: Vec<String>,
    /// Channels or patterns to subscribe the sessions to (or unsubscribe them from).
    #[schemars(with = "Vec<SubscribeChannel>", length(min = 1))]
    pub channels: Vec<String>,
}

/// `POST /presence`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PresenceRequest {
    /// User ids.
    #[schemars(with = "Vec<UserId>")]
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

/// `GET /channels`: a page.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ChannelsResponse {
    /// Names or patterns with at least one subscriber, sorted within the page.
    pub channels: Vec<ChannelCount>,
    /// Pass it as `cursor` for the next page; `null` after the last. A page may hold fewer
    /// than `limit` names, even none, before the last.
    pub next_cursor: Option<u64>,
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
