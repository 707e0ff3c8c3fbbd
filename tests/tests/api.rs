//! The server API on a two-node Redis cluster, with real Faye clients as browser tabs
//! (`tests/interop/tab.js`) whose users come from JWTs: user-targeted sends, presence,
//! server-side unsubscribe, de-duplicated broadcasts, disconnects, stats, the reserved
//! event channels, waiting for a node that is behind; and the API's own edge (keys, validation, limits, the OpenAPI document).

use std::sync::OnceLock;
use std::time::Duration;

use crier_auth::{AuthConfig, JwtConfig};
use crier_engine::{EngineConfig, RequestContext};
use crier_protocol::Message;
use crier_redis::testing::RedisServer;
use crier_server::{ApiConfig, ServerConfig};
use crier_tests::{
    Cluster, Options, Tab, TestServer, connected_client, eventually, handshake, http, metric, post_json, subscribe,
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const KEY: &str = "test-api-key-0123456789";
const SECRET: &str = "jwt-secret-for-api-tests";
const WAIT: Duration = Duration::from_secs(15);

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 3600;
    let claims = json!({"sub": user, "exp": exp});
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
}

fn api_config() -> ApiConfig {
    ApiConfig { keys: vec![KEY.to_owned()], ..ApiConfig::default() }
}

fn options(event_channels: bool) -> Options {
    let jwt = JwtConfig { secret: Some(SECRET.to_owned()), required: false, ..JwtConfig::default() };
    let auth = AuthConfig { jwt: Some(jwt), ..AuthConfig::default() };
    Options {
        server: Some(ServerConfig { api: api_config(), ..ServerConfig::default() }),
        engine: Some(EngineConfig { event_channels, stats_interval_secs: 1, ..EngineConfig::default() }),
        extensions: crier_auth::policies(&auth).expect("policies"),
        ..Options::default()
    }
}

async fn cluster() -> Cluster {
    Cluster::start_with(redis(), 2, 2, || options(false)).await
}

/// Calls the API of `node`; returns (status, body).
async fn api(node: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = node.at(&format!("/api{path}"));
    let req = match method {
        "GET" => http().get(url),
        _ => http().post(url),
    };
    let req = req.bearer_auth(KEY);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().await.expect("api request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ok(node: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = api(node, method, path, body).await;
    assert_eq!(status, 200, "{method} {path}: {v}");
    v
}

async fn presence(node: &TestServer, user: &str) -> Value {
    ok(node, "GET", &format!("/users/{user}"), None).await["presence"].clone()
}

async fn status_becomes(node: &TestServer, user: &str, want: &str) -> bool {
    eventually(WAIT, || async { presence(node, user).await["status"] == want }).await
}

/// A user with two tabs on two nodes gets a user-targeted message in both, once; another
/// user and an anonymous subscriber of the same channel get nothing; presence goes
/// online → away (only when every tab is away) → online → offline (a clean disconnect, and
/// a tab that vanishes and expires), with its timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_tabs_on_two_nodes_get_targeted_messages_and_presence_follows_them() {
    let c = cluster().await;
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let mut a1 = Tab::open(&c.url(0), "websocket", Some(&token("alice")), &["/inbox"]).await;
    let mut a2 = Tab::open(&c.url(1), "long-polling", Some(&token("alice")), &["/inbox"]).await;
    let bob = Tab::open(&c.url(1), "websocket", Some(&token("bob")), &["/inbox"]).await;
    let anon = Tab::open(&c.url(0), "websocket", None, &["/inbox"]).await;

    let p = presence(n1, "alice").await;
    assert_eq!((p["status"].as_str(), p["sessions"].as_u64()), (Some("online"), Some(2)), "{p}");
    assert!(p["online_since"].is_u64() && p["away_since"].is_null(), "{p}");
    assert_eq!(ok(n0, "GET", "/presence/online", None).await["online_users"], 2);

    ok(n0, "POST", "/send", Some(json!({"users": ["alice"], "channel": "/inbox", "data": {"n": 1}}))).await;
    ok(n1, "POST", "/send", Some(json!({"users": ["bob"], "channel": "/inbox", "data": {"n": 2}}))).await;
    for tab in [&a1, &a2] {
        assert!(tab.wait(WAIT, |l| l == r#"MSG /inbox {"n":1}"#).await, "{:?}", tab.log());
    }
    assert!(bob.wait(WAIT, |l| l == r#"MSG /inbox {"n":2}"#).await, "{:?}", bob.log());
    // Sends are ordered per user: bob's own message came, alice's never will.
    assert_eq!(bob.messages("/inbox"), [r#"{"n":2}"#]);
    assert!(anon.messages("/inbox").is_empty(), "{:?}", anon.log());
    assert_eq!(a1.messages("/inbox"), [r#"{"n":1}"#], "once per tab");
    assert_eq!(a2.messages("/inbox"), [r#"{"n":1}"#], "once per tab");

    a1.send("away").await;
    assert!(a1.wait(WAIT, |l| l == "ACK away").await, "{:?}", a1.log());
    assert_eq!(presence(n0, "alice").await["status"], "online", "one tab is still active");
    a2.send("away").await;
    assert!(a2.wait(WAIT, |l| l == "ACK away").await, "{:?}", a2.log());
    let p = presence(n0, "alice").await;
    assert_eq!(p["status"], "away", "{p}");
    assert!(p["away_since"].is_u64(), "{p}");
    a1.send("online").await;
    assert!(status_becomes(n1, "alice", "online").await);

    a1.send("disconnect").await;
    assert!(a1.wait(WAIT, |l| l == "ACK disconnect").await, "{:?}", a1.log());
    assert!(eventually(WAIT, || async { presence(n0, "alice").await["sessions"] == 1 }).await);
    a2.send("disconnect").await;
    assert!(status_becomes(n1, "alice", "offline").await);
    let p = presence(n0, "alice").await;
    assert!(p["last_online"].is_u64() && p["online_since"].is_null(), "{p}");

    // A tab that vanishes (no disconnect) goes offline when its session expires (2 × 2 s).
    bob.kill().await;
    assert!(status_becomes(n0, "bob", "offline").await, "bob's session expires");
    assert_eq!(ok(n1, "GET", "/presence/online", None).await["online_users"], 0, "the anonymous tab is no user");
}

/// Unsubscribing a user through the API stops deliveries to all of their sessions on every
/// node as soon as the call returns; others keep receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_a_user_through_the_api_stops_deliveries_everywhere_at_once() {
    let c = cluster().await;
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let a1 = Tab::open(&c.url(0), "websocket", Some(&token("alice")), &["/project/1"]).await;
    let a2 = Tab::open(&c.url(1), "long-polling", Some(&token("alice")), &["/project/1"]).await;
    let bob = Tab::open(&c.url(1), "websocket", Some(&token("bob")), &["/project/1"]).await;
    ok(n0, "POST", "/publish", Some(json!({"channel": "/project/1", "data": {"n": 1}}))).await;
    for tab in [&a1, &a2, &bob] {
        assert!(tab.wait(WAIT, |l| l == r#"MSG /project/1 {"n":1}"#).await, "{:?}", tab.log());
    }
    let info = ok(n1, "GET", "/channels/subscribers?channel=/project/1", None).await;
    assert_eq!(info["sessions"].as_array().map(Vec::len), Some(3), "{info}");
    assert_eq!(info["users"], json!(["alice", "bob"]));
    let user = ok(n0, "GET", "/users/alice", None).await;
    assert_eq!(user["channels"], json!(["/project/1"]), "{user}");

    let r = ok(n1, "POST", "/unsubscribe", Some(json!({"users": ["alice"], "channels": ["/project/1"]}))).await;
    assert_eq!((r["sessions"].as_u64(), r["changed"].as_u64()), (Some(2), Some(2)), "{r}");
    // Right after the call, through the other node.
    for n in 2..7 {
        ok(n0, "POST", "/publish", Some(json!({"channel": "/project/1", "data": {"n": n}}))).await;
    }
    assert!(bob.wait(WAIT, |l| l == r#"MSG /project/1 {"n":6}"#).await, "{:?}", bob.log());
    // Bob got everything; alice's tabs had as long to get anything and did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a1.messages("/project/1"), [r#"{"n":1}"#], "{:?}", a1.log());
    assert_eq!(a2.messages("/project/1"), [r#"{"n":1}"#], "{:?}", a2.log());
    let info = ok(n0, "GET", "/channels/subscribers?channel=/project/1", None).await;
    assert_eq!(info["users"], json!(["bob"]), "{info}");

    // And subscribing them back through the API, selected by user, works the same way.
    ok(n0, "POST", "/subscribe", Some(json!({"users": ["alice"], "channels": ["/project/1"]}))).await;
    ok(n1, "POST", "/publish", Some(json!({"channel": "/project/1", "data": {"n": 7}}))).await;
    for tab in [&a1, &a2] {
        assert!(tab.wait(WAIT, |l| l == r#"MSG /project/1 {"n":7}"#).await, "{:?}", tab.log());
    }
}

/// A broadcast to several channels with de-duplication reaches a Faye client subscribed to
/// several of them once; without it, once per channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deduplicated_broadcast_reaches_a_faye_client_once() {
    let c = cluster().await;
    let n0 = &c.nodes[0];
    let tab = Tab::open(&c.url(1), "websocket", None, &["/b/a", "/b/b", "/b/*"]).await;
    let other = Tab::open(&c.url(0), "long-polling", None, &["/b/b"]).await;
    let channels = json!(["/b/a", "/b/b", "/b/c"]);
    ok(n0, "POST", "/broadcast", Some(json!({"channels": channels, "data": {"n": 1}}))).await;
    ok(n0, "POST", "/broadcast", Some(json!({"channels": channels, "data": {"n": 2}, "dedupe": false}))).await;
    ok(n0, "POST", "/publish", Some(json!({"channel": "/b/z", "data": {"n": 3}}))).await;
    assert!(tab.wait(WAIT, |l| l == r#"MSG /b/* {"n":3}"#).await, "{:?}", tab.log());
    assert!(other.wait(WAIT, |l| l.contains(r#"{"n":2}"#)).await, "{:?}", other.log());
    let count =
        |n: u64| tab.log().iter().filter(|l| l.starts_with("MSG ") && l.ends_with(&format!(r#"{{"n":{n}}}"#))).count();
    // The Faye client calls every matching subscription's callback per message it gets:
    // one message on /b/a → the /b/a and /b/* callbacks.
    assert_eq!(count(1), 2, "deduplicated: one message (two callbacks): {:?}", tab.log());
    assert_eq!(tab.messages("/b/a"), [r#"{"n":1}"#, r#"{"n":2}"#], "{:?}", tab.log());
    // Without dedupe: /b/a, /b/b, /b/c each arrive once; /b/* fires for all three.
    assert_eq!(count(2), 5, "{:?}", tab.log());
    assert_eq!(other.messages("/b/b"), [r#"{"n":1}"#, r#"{"n":2}"#], "{:?}", other.log());
}

/// An app retrying `/api/publish` with the same `idempotency_key`, through the other node
/// too, publishes once: a real Faye client gets the message once, and every call answers
/// the same id. A key of 257 characters gets a 400 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_publish_retried_with_its_idempotency_key_reaches_a_faye_client_once() {
    let c = cluster().await;
    let tab = Tab::open(&c.url(1), "websocket", None, &["/idem"]).await;
    let call = |n: u64, key: &str| json!({"channel": "/idem", "data": {"n": n}, "idempotency_key": key});
    let first = ok(&c.nodes[0], "POST", "/publish", Some(call(1, "order-7"))).await;
    for node in [&c.nodes[1], &c.nodes[0]] {
        assert_eq!(ok(node, "POST", "/publish", Some(call(1, "order-7"))).await, first);
    }
    ok(&c.nodes[1], "POST", "/publish", Some(call(2, "order-8"))).await;
    assert!(tab.wait(WAIT, |l| l == r#"MSG /idem {"n":2}"#).await, "{:?}", tab.log());
    assert_eq!(tab.messages("/idem"), [r#"{"n":1}"#, r#"{"n":2}"#], "{:?}", tab.log());
    let (status, body) = api(&c.nodes[0], "POST", "/publish", Some(call(3, &"k".repeat(257)))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("idempotency_key"), "{body}");
    // A broadcast too, retried through the other node.
    let broadcast = json!({"channels": ["/idem", "/idem2"], "data": {"n": 4}, "idempotency_key": "order-7"});
    let first = ok(&c.nodes[0], "POST", "/broadcast", Some(broadcast.clone())).await;
    assert_eq!(ok(&c.nodes[1], "POST", "/broadcast", Some(broadcast)).await, first);
    ok(&c.nodes[0], "POST", "/publish", Some(call(5, "order-10"))).await;
    assert!(tab.wait(WAIT, |l| l == r#"MSG /idem {"n":5}"#).await, "{:?}", tab.log());
    assert_eq!(tab.messages("/idem"), [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":4}"#, r#"{"n":5}"#], "{:?}", tab.log());
}

/// While a node of the cluster asks publishers to wait (announced here on the pressure
/// channel, as a node that falls behind does), the API's publishes wait too: channel
/// publishes, sends to users and de-duplicated broadcasts, and so does a client's publish,
/// each for at most
/// `redis.backpressure_max_wait_ms` (2 s by default). They go on at once after `off`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_publishes_wait_while_a_node_is_behind() {
    let c = cluster().await;
    let n0 = &c.nodes[0];
    let channel = format!("{}:{{pressure}}", c.prefix);
    let say = |what: &str| {
        let reply = redis().cmd(&["SPUBLISH", &channel, what]);
        assert!(reply.is_some_and(|r| r.starts_with(':')), "SPUBLISH answered");
    };
    say("on ghost 60000");
    assert!(eventually(WAIT, || async { metric(n0, "crier_redis_pressured_nodes").await == 1.0 }).await);
    let calls = [
        ("/publish", json!({"channel": "/bp/a", "data": {"n": 1}})),
        ("/send", json!({"users": ["alice"], "channel": "/inbox", "data": {"n": 2}})),
        ("/broadcast", json!({"channels": ["/bp/a", "/bp/b"], "data": {"n": 3}})),
    ];
    for (path, body) in &calls {
        let started = std::time::Instant::now();
        ok(n0, "POST", path, Some(body.clone())).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(10), "{path} took {took:?}");
    }
    assert_eq!(metric(n0, "crier_redis_publish_wait_timeouts_total").await, 3.0);
    // A Bayeux client's publish waits the same way.
    let client = handshake(&c.url(0)).await;
    let started = std::time::Instant::now();
    let (_, reply) = post_json(&c.url(0), &json!({"channel": "/bp/a", "clientId": client, "data": {"n": 4}})).await;
    let took = started.elapsed();
    assert_eq!(reply[0]["successful"], json!(true), "{reply}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(10), "a client's publish took {took:?}");
    assert_eq!(metric(n0, "crier_redis_publish_wait_timeouts_total").await, 4.0);
    say("off ghost");
    assert!(eventually(WAIT, || async { metric(n0, "crier_redis_pressured_nodes").await == 0.0 }).await);
    for (path, body) in &calls {
        let started = std::time::Instant::now();
        ok(n0, "POST", path, Some(body.clone())).await;
        assert!(started.elapsed() < Duration::from_millis(1500), "{path} waited after off");
    }
}

/// Disconnecting a user through the API ends their sessions on every node: the old ids are
/// gone, and the Faye client, told to handshake, comes back with a new session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_a_user_ends_their_sessions_and_clients_rehandshake() {
    let c = cluster().await;
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let ws = Tab::open(&c.url(0), "websocket", Some(&token("carol")), &["/c"]).await;
    let lp = Tab::open(&c.url(1), "long-polling", Some(&token("carol")), &["/c"]).await;
    let (old_ws, old_lp) = (ws.client_id().await, lp.client_id().await);
    assert_eq!(ok(n1, "GET", &format!("/sessions/{old_ws}"), None).await["user"], "carol");
    let r = ok(n1, "POST", "/disconnect", Some(json!({"users": ["carol"]}))).await;
    assert_eq!(r["disconnected"], 2, "{r}");
    for id in [&old_ws, &old_lp] {
        let (status, body) = api(n0, "GET", &format!("/sessions/{id}"), None).await;
        assert_eq!(status, 404, "{body}");
    }
    for tab in [&ws, &lp] {
        assert!(
            eventually(WAIT, || async { tab.client_ids().len() >= 2 }).await,
            "the client re-handshakes: {:?}",
            tab.log()
        );
    }
    assert!(eventually(WAIT, || async { presence(n0, "carol").await["sessions"] == 2 }).await);
}

/// Stats list both nodes and count what the cluster holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_cover_the_whole_cluster() {
    let c = cluster().await;
    let _a = Tab::open(&c.url(0), "websocket", Some(&token("dan")), &["/s/1", "/s/2"]).await;
    let _b = Tab::open(&c.url(1), "long-polling", None, &["/s/1"]).await;
    let n0 = &c.nodes[0];
    assert!(
        eventually(WAIT, || async { ok(n0, "GET", "/stats", None).await["nodes"].as_array().map(Vec::len) == Some(2) })
            .await
    );
    let s = ok(&c.nodes[1], "GET", "/stats", None).await;
    assert_eq!(
        (s["sessions"].as_u64(), s["subscriptions"].as_u64(), s["channels"].as_u64()),
        (Some(2), Some(3), Some(2)),
        "{s}"
    );
    assert_eq!(s["online_users"], 1, "{s}");
    let list = ok(n0, "GET", "/channels", None).await;
    assert_eq!(list["channels"], json!([{"channel": "/s/1", "sessions": 2}, {"channel": "/s/2", "sessions": 1}]));
    assert_eq!(list["next_cursor"], Value::Null, "one page: {list}");
    // A prefix, and pages of one followed by their cursors (Redis returns a set this small
    // whole: one page; the paging itself is the conformance suite's case).
    let mut seen = Vec::new();
    let mut path = "/channels?prefix=/s/&limit=1".to_owned();
    for _ in 0..10 {
        let page = ok(n0, "GET", &path, None).await;
        seen.extend(page["channels"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_u64() {
            Some(c) => path = format!("/channels?prefix=/s/&limit=1&cursor={c}"),
            None => break,
        }
    }
    seen.sort_by_key(|c| c["channel"].as_str().map(str::to_owned));
    seen.dedup();
    assert_eq!(seen, [json!({"channel": "/s/1", "sessions": 2}), json!({"channel": "/s/2", "sessions": 1})]);
}

fn msg(v: Value) -> Message {
    match v {
        Value::Object(m) => Message(m),
        _ => Message::new(),
    }
}

/// With `engine.event_channels`, a server-side (in-process) subscriber to
/// `/meta/crier/events/**` on one node sees what clients do on the other; a remote `/**`
/// subscriber never sees events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_events_reach_server_side_subscribers_across_nodes() {
    let c = Cluster::start_with(redis(), 2, 2, || options(true)).await;
    let engine = &c.nodes[0].engine;
    let local = RequestContext::in_process();
    let hs = engine
        .process(
            vec![msg(json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}))],
            &local,
        )
        .await;
    let id = hs[0].to_message().client_id().expect("handshake").to_owned();
    let sub = engine
        .process(
            vec![msg(json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/meta/crier/events/**"}))],
            &local,
        )
        .await;
    assert_eq!(sub[0].to_message().successful(), Some(true), "{:?}", sub[0].to_message());
    let spy = Tab::open(&c.url(0), "websocket", None, &["/**"]).await;

    let tab = Tab::open(&c.url(1), "websocket", Some(&token("erin")), &["/e/1"]).await;
    let erin = tab.client_id().await;
    let mut seen: Vec<Value> = Vec::new();
    let has = |seen: &[Value], t: &str| seen.iter().any(|e| e["type"] == t && e["client_id"] == erin.as_str());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut found = false;
    while tokio::time::Instant::now() < deadline && !found {
        let c = json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":0}});
        let out = engine.process(vec![msg(c)], &local).await;
        seen.extend(out.iter().map(|o| o.to_message()).filter_map(|m| m.data().cloned()));
        found = has(&seen, "handshake")
            && has(&seen, "subscribe")
            && seen.iter().any(|e| e["type"] == "presence" && e["user"] == "erin");
        if !found {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(found, "{seen:?}");
    let hs = seen.iter().find(|e| e["type"] == "handshake" && e["client_id"] == erin.as_str()).expect("handshake");
    assert_eq!(hs["user"], "erin");
    assert!(spy.log().iter().all(|l| !l.contains("/meta/crier")), "{:?}", spy.log());
}

/// The API's edge: keys, the off switch, validation with reasons, limits, the document.
#[tokio::test]
async fn the_api_checks_keys_input_and_limits() {
    let off = TestServer::start().await;
    let r = http().post(off.at("/api/publish")).bearer_auth(KEY).json(&json!({})).send().await.expect("request");
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap_or_default().contains("api.keys"));

    let limited = ApiConfig { max_items: 3, max_body_bytes: 4096, ..api_config() };
    let s = TestServer::start_with(Options {
        server: Some(ServerConfig { api: limited, ..ServerConfig::default() }),
        ..Options::default()
    })
    .await;
    let publish = json!({"channel": "/x", "data": 1});
    let r = http().post(s.at("/api/publish")).json(&publish).send().await.expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    let r =
        http().post(s.at("/api/publish")).bearer_auth("wrong-key-0123456789").json(&publish).send().await.expect("r");
    assert_eq!(r.status(), 401);
    assert_eq!(api(&s, "POST", "/publish", Some(publish)).await.0, 200);

    let cases = [
        ("/publish", json!({"channel": "/x"}), "data"),
        ("/publish", json!({"channel": "no-slash", "data": 1}), "invalid channel"),
        ("/publish", json!({"channel": "/a/*", "data": 1}), "invalid channel"),
        ("/publish", json!({"channel": "/meta/x", "data": 1}), "/meta"),
        ("/publish", json!({"channel": "/x", "data": 1, "extra": 1}), "unknown field"),
        ("/broadcast", json!({"channels": [], "data": 1}), "empty"),
        ("/broadcast", json!({"channels": ["/a", "/b", "/c", "/d"], "data": 1}), "api.max_items"),
        ("/send", json!({"users": [""], "channel": "/x", "data": 1}), "user id"),
        ("/subscribe", json!({"channels": ["/x"]}), "select sessions"),
        ("/subscribe", json!({"client_ids": ["not an id!"], "channels": ["/x"]}), "client id"),
        ("/disconnect", json!({"users": "alice"}), "invalid type"),
        ("/presence", json!([1, 2]), "invalid"),
    ];
    for (path, body, reason) in cases {
        let (status, v) = api(&s, "POST", path, Some(body.clone())).await;
        assert_eq!(status, 400, "{path} {body}: {v}");
        let text = v["error"].as_str().unwrap_or_default();
        assert!(text.contains(reason), "{path} {body}: {text:?} lacks {reason:?}");
    }
    let r = http().post(s.at("/api/publish")).bearer_auth(KEY).body("{not json").send().await.expect("r");
    assert_eq!(r.status(), 400);
    let big = json!({"channel": "/x", "data": "x".repeat(5000)});
    assert_eq!(api(&s, "POST", "/publish", Some(big)).await.0, 413);
    assert_eq!(api(&s, "GET", "/channels/subscribers", None).await.0, 400);
    for query in ["limit=0", "limit=10001", "limit=x", "cursor=nope", "cursor=-1", "cursor=9007199254740992"] {
        let (status, v) = api(&s, "GET", &format!("/channels?{query}"), None).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{query}: {v}");
    }
    let (status, v) = api(&s, "GET", "/nope", None).await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].is_string());
    assert_eq!(api(&s, "GET", "/publish", None).await.0, 405);
    assert_eq!(api(&s, "GET", "/sessions/not%20an%20id", None).await.0, 400);

    // The document is served without a key and is the checked-in one.
    let doc: Value = http().get(s.at("/api/openapi.json")).send().await.expect("r").json().await.expect("json");
    let on_disk: Value =
        serde_json::from_str(include_str!("../../docs/openapi.json")).expect("docs/openapi.json parses");
    assert_eq!(doc, on_disk);
}

/// `api.path` and `api.listen` move the API: on its own port it is not on the main one.
#[tokio::test]
async fn the_api_path_and_port_are_configurable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let moved = ApiConfig { path: "/admin/v1".to_owned(), listen: Some(format!("127.0.0.1:{port}")), ..api_config() };
    let s = TestServer::start_with(Options {
        server: Some(ServerConfig { api: moved, ..ServerConfig::default() }),
        ..Options::default()
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/admin/v1/presence/online");
    let reached = eventually(WAIT, || async {
        matches!(http().get(&url).bearer_auth(KEY).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(reached, "the API answers on its own port and path");
    let doc: Value = http()
        .get(format!("http://127.0.0.1:{port}/admin/v1/openapi.json"))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert!(doc["paths"].get("/admin/v1/publish").is_some(), "the document names the configured path");
    for path in ["/admin/v1/presence/online", "/api/presence/online"] {
        let r = http().get(s.at(path)).bearer_auth(KEY).send().await.expect("request");
        assert_eq!(r.status(), 404, "{path} is not on the main port");
    }
}

/// `api.max_sessions` bounds how many sessions one call may select or list: beyond it the
/// call is refused with 400 before anything changes.
#[tokio::test]
async fn api_selections_are_bounded_by_max_sessions() {
    let limited = ApiConfig { max_sessions: 2, ..api_config() };
    let s = TestServer::start_with(Options {
        server: Some(ServerConfig { api: limited, ..ServerConfig::default() }),
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = connected_client(&s.url()).await;
        subscribe(&s.url(), &id, "/many").await;
        ids.push(id);
    }
    let (status, v) =
        api(&s, "POST", "/subscribe", Some(json!({"subscribers_of": ["/many"], "channels": ["/more"]}))).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap_or_default().contains("limit of 2"), "{v}");
    let (status, v) = api(&s, "GET", "/channels/subscribers?channel=/many", None).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = api(&s, "POST", "/disconnect", Some(json!({"subscribers_of": ["/many"]}))).await;
    assert_eq!(status, 400, "{v}");
    // Nothing changed: nobody was subscribed to /more, nobody disconnected.
    assert_eq!(s.engine.api_channel("/more", None).await.expect("api").sessions.len(), 0);
    assert_eq!(s.engine.api_channel("/many", None).await.expect("api").sessions.len(), 3);
    // Within the limit it goes ahead.
    let two = json!({"client_ids": [ids[0], ids[1]], "channels": ["/more"]});
    let (status, v) = api(&s, "POST", "/subscribe", Some(two)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(s.engine.api_channel("/more", None).await.expect("api").sessions.len(), 2);
}
