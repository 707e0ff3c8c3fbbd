//! The OpenAPI 3.1 document of the API, built from the request and response types'
//! JSON schemas (schemars, draft 2020-12, which OpenAPI 3.1 uses), so it always matches
//! what the handlers accept and return. `docs/openapi.json` is this document for the
//! default path; a test fails when the two differ.

use crier_engine::{MAX_CHANNELS_PAGE, MAX_CURSOR, MAX_PREFIX_LEN};
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::ApiConfig;
use super::types::*;

/// One operation of the document.
struct Op<'a> {
    method: &'a str,
    path: &'a str,
    id: &'a str,
    summary: &'a str,
    request: Option<Value>,
    params: Value,
    ok: Value,
    errors: &'a [&'a str],
}

struct Doc {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
}

fn error_responses(codes: &[&str], err: &Value) -> Map<String, Value> {
    let text = |c: &str| match c {
        "400" => "Malformed request, or over a limit (api.max_items, api.max_sessions); `error` says why.",
        "401" => "Missing or invalid API key.",
        "404" => "Not found.",
        "408" => "The body did not arrive within `server.read_timeout_secs`; the connection is closed.",
        "413" => "Body larger than `api.max_body_bytes`.",
        _ => "The backend (Redis) is unavailable.",
    };
    codes
        .iter()
        .map(|c| {
            let mut r = json!({"description": text(c), "content": {"application/json": {"schema": err}}});
            if *c == "401" {
                let challenge = json!({"description": "`Bearer`.", "required": true, "schema": {"const": "Bearer"}});
                r["headers"] = json!({"WWW-Authenticate": challenge});
            }
            ((*c).to_owned(), r)
        })
        .collect()
}

impl Doc {
    fn op(&mut self, o: Op<'_>) {
        let Op { method, path, id, summary, request, params, ok, errors } = o;
        let err = self.generator.subschema_for::<ErrorBody>().to_value();
        let mut responses = Map::new();
        responses.insert("200".into(), json!({"description": "OK", "content": {"application/json": {"schema": ok}}}));
        responses.extend(error_responses(errors, &err));
        let mut op = json!({"operationId": id, "summary": summary, "responses": responses});
        if let Some(schema) = request {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        if params.as_array().is_some_and(|a| !a.is_empty()) {
            op["parameters"] = params;
        }
        if id == "openapi" {
            op["security"] = json!([]);
        }
        let entry = self.paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        entry[method] = op;
    }

    fn schema<T: schemars::JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }
}

/// Sets `maxItems` on every list of every request body (`api.max_items`, the default here).
fn limit_lists(schemas: &mut Map<String, Value>, max_items: usize) {
    for (name, schema) in schemas.iter_mut() {
        if !name.ends_with("Request") {
            continue;
        }
        for prop in schema["properties"].as_object_mut().into_iter().flat_map(|p| p.values_mut()) {
            if prop["type"] == "array" {
                prop["maxItems"] = json!(max_items);
            }
        }
    }
}

/// The document, with paths under `base` (e.g. `/api`). Limits (list lengths, channel
/// names) are the defaults, so that every server with the same path serves the same
/// document, the checked-in one; a server configured otherwise applies its own (400 beyond).
pub(crate) fn document(base: &str) -> Value {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut d = Doc { generator: settings.into_generator(), paths: Map::new() };
    let base = base.trim_end_matches('/');
    let p = |s: &str| format!("{base}{s}");
    let none = json!([]);
    let std = ["400", "401", "408", "413", "503"];
    let reads = ["401", "503"];

    let (req, ok) = (d.schema::<PublishRequest>(), d.schema::<PublishResponse>());
    d.op(Op {
        method: "post",
        path: &p("/publish"),
        id: "publish",
        summary: "Publish one message to a channel.",
        request: Some(req),
        params: none.clone(),
        ok,
        errors: &std,
    });
    let (req, ok) = (d.schema::<BroadcastRequest>(), d.schema::<PublishResponse>());
    d.op(Op {
        method: "post",
        path: &p("/broadcast"),
        id: "broadcast",
        summary: "Publish one message to several channels, by default at most once per session.",
        request: Some(req),
        params: none.clone(),
        ok,
        errors: &std,
    });
    let (req, ok) = (d.schema::<SendRequest>(), d.schema::<PublishResponse>());
    d.op(Op {
        method: "post",
        path: &p("/send"),
        id: "send",
        summary: "Send a message to every session of the users named.",
        request: Some(req),
        params: none.clone(),
        ok,
        errors: &std,
    });
    let (req, ok) = (d.schema::<SubscribeRequest>(), d.schema::<SubscribeResponse>());
    d.op(Op {
        method: "post",
        path: &p("/subscribe"),
        id: "subscribe",
        summary: "Subscribe the selected sessions to channels, cluster-wide.",
        request: Some(req.clone()),
        params: none.clone(),
        ok: ok.clone(),
        errors: &std,
    });
    d.op(Op {
        method: "post",
        path: &p("/unsubscribe"),
        id: "unsubscribe",
        summary: "Unsubscribe the selected sessions from channels, cluster-wide.",
        request: Some(req),
        params: none.clone(),
        ok,
        errors: &std,
    });
    let (req, ok) = (d.schema::<SelectRequest>(), d.schema::<DisconnectResponse>());
    d.op(Op {
        method: "post",
        path: &p("/disconnect"),
        id: "disconnect",
        summary: "End the selected sessions (their next connect is told to handshake).",
        request: Some(req),
        params: none.clone(),
        ok,
        errors: &std,
    });
    let path_param = |name: &str, what: &str, schema: Value| json!([{"name": name, "in": "path", "required": true, "description": what, "schema": schema}]);
    let (client_id, ok) = (d.schema::<ClientId>(), d.schema::<Session>());
    d.op(Op {
        method: "get",
        path: &p("/sessions/{client_id}"),
        id: "session",
        summary: "One session: its user and subscriptions.",
        request: None,
        params: path_param("client_id", "The client id.", client_id),
        ok,
        errors: &["400", "401", "404", "503"],
    });
    let (user, ok) = (d.schema::<UserId>(), d.schema::<UserResponse>());
    d.op(Op {
        method: "get",
        path: &p("/users/{user}"),
        id: "user",
        summary: "One user: presence, sessions and the channels they subscribe to.",
        request: None,
        params: path_param("user", "The user id (URL-encoded).", user),
        ok,
        errors: &["400", "401", "503"],
    });
    let ok = d.schema::<ChannelsResponse>();
    d.op(Op {
        method: "get",
        path: &p("/channels"),
        id: "channels",
        summary: "The channels and patterns with subscribers, a page at a time.",
        request: None,
        params: json!([
            {"name": "prefix", "in": "query", "required": false, "description": "Only names starting with it, e.g. /chat/.", "schema": {"type": "string", "maxLength": MAX_PREFIX_LEN}},
            {"name": "cursor", "in": "query", "required": false, "description": "The next_cursor of the page before; 0 or none for the first page.", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR}},
            {"name": "limit", "in": "query", "required": false, "description": "About how many names a page holds.", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_CHANNELS_PAGE, "default": super::handlers::DEFAULT_CHANNELS_PAGE}}
        ]),
        ok,
        errors: &["400", "401", "503"],
    });
    let ok = d.schema::<Channel>();
    let q = json!([{"name": "channel", "in": "query", "required": true, "description": "A channel name, e.g. /chat/room1.", "schema": listed_channel()}]);
    d.op(Op {
        method: "get",
        path: &p("/channels/subscribers"),
        id: "channel_subscribers",
        summary: "The sessions and users a publish to the channel reaches.",
        request: None,
        params: q,
        ok,
        errors: &["400", "401", "503"],
    });
    let (req, ok) = (d.schema::<PresenceRequest>(), d.schema::<PresenceResponse>());
    d.op(Op {
        method: "post",
        path: &p("/presence"),
        id: "presence",
        summary: "Presence of several users.",
        request: Some(req),
        params: none.clone(),
        ok,
        errors: &std,
    });
    let ok = d.schema::<OnlineResponse>();
    d.op(Op {
        method: "get",
        path: &p("/presence/online"),
        id: "online_users",
        summary: "Number of users online.",
        request: None,
        params: none.clone(),
        ok,
        errors: &reads,
    });
    let ok = d.schema::<Stats>();
    d.op(Op {
        method: "get",
        path: &p("/stats"),
        id: "stats",
        summary: "Cluster figures: nodes, sessions, subscriptions, rates.",
        request: None,
        params: none.clone(),
        ok,
        errors: &reads,
    });
    d.op(Op {
        method: "get",
        path: &p("/openapi.json"),
        id: "openapi",
        summary: "This document.",
        request: None,
        params: none,
        ok: json!({"type": "object"}),
        errors: &[],
    });

    // Follow-ups the stateful phase of a property-based test (and a reader) can take: from
    // a channel's subscribers to their sessions and users, from a user to their sessions.
    let link = |op: &str, param: &str, from: &str| json!({"operationId": op, "parameters": {param: from}});
    let links = [
        (
            "/channels/subscribers",
            json!({
                "GetSession": link("session", "client_id", "$response.body#/sessions/0"),
                "GetUser": link("user", "user", "$response.body#/users/0"),
            }),
        ),
        ("/users/{user}", json!({"GetSession": link("session", "client_id", "$response.body#/sessions/0/client_id")})),
    ];
    for (path, l) in links {
        d.paths[&p(path)]["get"]["responses"]["200"]["links"] = l;
    }

    let mut schemas = d.generator.take_definitions(true);
    limit_lists(&mut schemas, ApiConfig::default().max_items);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Crier server API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Programmatic control of a Crier cluster: publish, users, presence, subscriptions, disconnects and stats. Every call but this document's needs `Authorization: Bearer <api key>`. The limits in the schemas (list lengths, channel names) are the defaults of api.max_items, engine.max_channel_length and engine.max_channel_depth; a server configured otherwise applies its own. See docs/api.md."
        },
        "paths": d.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "One of `api.keys`."}}
        },
        "security": [{"apiKey": []}]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    /// `docs/openapi.json` is the generated document; `CRIER_UPDATE_DOCS=1` rewrites it.
    #[test]
    fn checked_in_document_matches_the_code() {
        let doc = document("/api");
        let text = serde_json::to_string_pretty(&doc).expect("json") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        if std::env::var_os("CRIER_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &text).expect("write docs/openapi.json");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "docs/openapi.json is stale: run CRIER_UPDATE_DOCS=1 cargo test -p crier-server openapi"
        );
    }

    /// Every reference resolves, every operation has an id and a 200 response.
    #[test]
    fn document_is_self_consistent() {
        let doc = document("/api");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("foreign ref {r}"));
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
        }
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            assert!(path.starts_with("/api/"), "{path}");
            for (method, op) in item.as_object().expect("item") {
                assert!(ids.insert(op["operationId"].as_str().expect("id").to_owned()), "{method} {path}");
                assert!(op["responses"]["200"].is_object(), "{method} {path}");
            }
        }
        assert_eq!(ids.len(), 14);
    }
}
