//! The malformed-input battery: invalid JSON, primitives, deep nesting, oversized bodies
//! and frames, invalid UTF-8, unknown fields, wrong JSON types for every field, invalid
//! channel names, oversized batches. Each gets a clear Bayeux error or an HTTP 4xx, never
//! a 5xx, and a well-behaved client on another connection is served throughout.
//! (10,000 subscriptions in one message: `wire_subscribe_publish.rs`.)

mod common;

use std::time::Duration;

use common::{header, poll, raw_get, raw_post, send, send1, server_with, subscriber};
use crier_server::ServerConfig;
use crier_tests::{RawWs, TestServer, connected_client, handshake, http};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const SHORT: Duration = Duration::from_secs(2);

/// Small limits, so the oversized cases stay small.
fn limits() -> ServerConfig {
    ServerConfig { max_body_bytes: 4096, max_frame_bytes: 4096, max_batch: 10, ..ServerConfig::default() }
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn form_encode(s: &str) -> String {
    let mut out = String::from("message=");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// POSTs raw JSON bytes; asserts a 400 text/plain "Bad request: ..." and returns the text.
async fn expect_400(url: &str, body: impl Into<reqwest::Body>) -> String {
    let (status, h, text) = raw_post(url, Some("application/json"), body).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");
    assert!(text.starts_with("Bad request: "), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_and_top_level_primitives_are_400() {
    let s = server_with(limits()).await;
    let url = s.url();
    for bad in ["{", "[1,", "nul", "{\"channel\":\"/a\",}", "[{}]]", "1", "1.5e3", "true", "\"str\"", "", "   "] {
        let text = expect_400(&url, bad.to_owned()).await;
        assert!(text.contains("JSON") || text.contains("object"), "{bad:?}: {text}");
        // The same through the form and JSONP transports.
        let (status, _, _) = raw_post(&url, Some("application/x-www-form-urlencoded"), form_encode(bad)).await;
        assert_eq!(status, 400, "form {bad:?}");
        let (status, _, _) = raw_get(&format!("{url}?{}", form_encode(bad)), &[]).await;
        assert_eq!(status, 400, "jsonp {bad:?}");
    }
    let text = expect_400(&url, "1").await;
    assert_eq!(text, "Bad request: a message must be a JSON object or an array of objects");
    // `null`, `[]` and `[null]` are empty batches; non-object elements are publishes with
    // no data (Faye's answer).
    for empty in ["null", "[]", "[null]"] {
        let (status, _, text) = raw_post(&url, Some("application/json"), empty).await;
        assert_eq!((status, text.as_str()), (200, "[]"), "{empty}");
    }
    for odd in ["[1]", "[[]]", "[\"x\"]", "[true]"] {
        let (status, _, text) = raw_post(&url, Some("application/json"), odd).await;
        assert_eq!(status, 200, "{odd}");
        let r: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(r, json!([{"successful":false,"error":"402:data:Missing required parameter"}]), "{odd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_refused_before_parsing() {
    let s = server_with(limits()).await;
    let url = s.url();
    let text = expect_400(&url, nested(200)).await;
    assert_eq!(text, "Bad request: JSON nested deeper than 64 levels");
    let deep_data = format!(r#"{{"channel":"/deep","data":{}}}"#, nested(200));
    expect_400(&url, deep_data).await;
    let deep_obj = format!(r#"{{"channel":"/deep","data":{}1{}}}"#, "{\"a\":".repeat(200), "}".repeat(200));
    expect_400(&url, deep_obj).await;
    // Brackets inside strings do not count; moderate nesting is delivered intact.
    let id = subscriber(&url, "/deep").await;
    let fine = json!({"channel":"/deep","data":{"text":"[[[[{{{{".repeat(100),"nest":serde_json::from_str::<Value>(&nested(50)).expect("json")}});
    assert_eq!(send1(&url, fine.clone()).await["successful"], json!(true));
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/deep","data":fine["data"]})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let s = server_with(limits()).await;
    let url = s.url();
    let big = json!({"channel":"/big","data":"x".repeat(8000)}).to_string();
    // With a Content-Length.
    let (status, h, text) = raw_post(&url, Some("application/json"), big.clone()).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(text, "Payload too large: the limit is 4096 bytes");
    // Chunked, with no length announced.
    let chunks: Vec<Result<String, std::io::Error>> =
        big.as_bytes().chunks(1000).map(|c| Ok(String::from_utf8_lossy(c).into_owned())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, _, text) = raw_post(&url, Some("application/json"), body).await;
    assert_eq!(status, 413, "{text}");
    // Form bodies too.
    let (status, _, _) = raw_post(&url, Some("application/x-www-form-urlencoded"), form_encode(&big)).await;
    assert_eq!(status, 413);
    // Just under the limit is fine.
    let ok = json!({"channel":"/big","data":"x".repeat(3000)}).to_string();
    let (status, _, _) = raw_post(&url, Some("application/json"), ok).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_refused() {
    let s = server_with(limits()).await;
    let url = s.url();
    expect_400(&url, b"{\"channel\":\"/u\",\"data\":\"\xff\xfe\"}".to_vec()).await;
    expect_400(&url, b"\xef\xbb\xbf[]".to_vec()).await; // a BOM is not JSON either
    expect_400(&url, b"[\xc3\x28]".to_vec()).await;
    // Through a form, `%FF` decodes to U+FFFD (as Faye's Node adapter reads bodies), so a
    // bare one is not JSON.
    let (status, _, _) = raw_post(&url, Some("application/x-www-form-urlencoded"), "message=%FF").await;
    assert_eq!(status, 400);
    // A binary frame whose JSON is not UTF-8 closes the socket with 1007 ...
    let binary = WsMessage::Binary(b"[{\"data\":\"\xff\"}]".to_vec().into());
    assert_eq!(close_code_after(&s, binary).await, Some(1007));
    // ... and so does a text frame that is not UTF-8 (RFC 6455 §8.1; it used to be closed
    // without a code).
    let text = WsMessage::Frame(Frame::message(b"[\"\xff\"]".to_vec(), OpCode::Data(Data::Text), true));
    assert_eq!(close_code_after(&s, text).await, Some(1007));
}

/// Opens a socket, sends `frame`, and returns the code of the close frame that follows.
async fn close_code_after(s: &TestServer, frame: WsMessage) -> Option<u16> {
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url()).await.expect("ws");
    futures::SinkExt::send(&mut ws, frame).await.expect("send");
    loop {
        match tokio::time::timeout(SHORT, ws.next()).await {
            Ok(Some(Ok(WsMessage::Close(f)))) => return f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_accepted_and_forwarded() {
    let s = server_with(limits()).await;
    let url = s.url();
    let h = send1(
        &url,
        json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"minimumVersion":"1.0","foo":{"bar":[1]}}),
    )
    .await;
    assert_eq!(h["successful"], json!(true), "{h}");
    assert!(h.get("foo").is_none(), "unknown fields are not echoed in replies: {h}");
    let id = h["clientId"].as_str().expect("clientId").to_owned();
    let r = send1(&url, json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","x-trace":"t"}))
        .await;
    assert_eq!(r["successful"], json!(true), "{r}");
    let r = send1(&url, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/u","weird":[null]})).await;
    assert_eq!(r["successful"], json!(true), "{r}");
    let r = send1(&url, json!({"channel":"/u","data":1,"custom":{"k":"v"},"n":null,"successful":"maybe"})).await;
    assert_eq!(r, json!({"channel":"/u","successful":true}));
    assert_eq!(
        poll(&url, &id).await,
        vec![json!({"channel":"/u","data":1,"custom":{"k":"v"},"n":null,"successful":"maybe"})]
    );
}

/// One message, its expected `error` (None: success), and a note.
type Case = (Value, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_json_types_for_every_field() {
    let s = server_with(limits()).await;
    let url = s.url();
    let id = subscriber(&url, "/t/**").await;
    let hs = |extra: Value| {
        let mut m = json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]});
        if let (Some(m), Value::Object(e)) = (m.as_object_mut(), extra) {
            m.extend(e);
        }
        m
    };
    let err = |s: &str| Some(s.to_owned());
    let cases: Vec<Case> = vec![
        // channel
        (json!({"channel":5,"data":1}), err("405:5:Invalid channel")),
        (json!({"channel":null,"data":1}), err("405::Invalid channel")),
        (json!({"channel":["/t/a"],"data":1}), err("405:[\"/t/a\"]:Invalid channel")),
        (json!({"channel":{},"data":1}), err("405:{}:Invalid channel")),
        (json!({"channel":true}), err("402:data:Missing required parameter")),
        // clientId
        (
            json!({"channel":"/meta/subscribe","clientId":[],"subscription":"/t/x"}),
            err("402:clientId:Missing required parameter"),
        ),
        (
            json!({"channel":"/meta/subscribe","clientId":5,"subscription":"/t/x"}),
            err("402:clientId:Missing required parameter"),
        ),
        (
            json!({"channel":"/meta/connect","clientId":{},"connectionType":"long-polling"}),
            err("402:clientId:Missing required parameter"),
        ),
        (json!({"channel":"/meta/disconnect","clientId":[id]}), err("402:clientId:Missing required parameter")),
        (
            json!({"channel":"/meta/subscribe","clientId":"","subscription":"/t/x"}),
            err("402:clientId:Missing required parameter"),
        ),
        // id (echoed whatever its type; publishes still work)
        (json!({"channel":"/t/id","data":1,"id":{}}), None),
        (json!({"channel":"/t/id","data":2,"id":[1,"a"]}), None),
        (json!({"channel":"/t/id","data":3,"id":5.5}), None),
        // data
        (json!({"channel":"/t/nodata"}), err("402:data:Missing required parameter")),
        // subscription
        (json!({"channel":"/meta/subscribe","clientId":id,"subscription":5}), err("405:5:Invalid channel")),
        (json!({"channel":"/meta/subscribe","clientId":id,"subscription":[5]}), err("405:5:Invalid channel")),
        (json!({"channel":"/meta/subscribe","clientId":id,"subscription":{}}), err("405:{}:Invalid channel")),
        (json!({"channel":"/meta/subscribe","clientId":id,"subscription":[null]}), err("405:null:Invalid channel")),
        (json!({"channel":"/meta/subscribe","clientId":id,"subscription":true}), err("405:true:Invalid channel")),
        (
            json!({"channel":"/meta/subscribe","clientId":id,"subscription":""}),
            err("402:subscription:Missing required parameter"),
        ),
        (json!({"channel":"/meta/unsubscribe","clientId":id,"subscription":[{}]}), err("405:{}:Invalid channel")),
        // connectionType (a non-string reads as absent)
        (
            json!({"channel":"/meta/connect","clientId":id,"connectionType":7}),
            err("402:connectionType:Missing required parameter"),
        ),
        (
            json!({"channel":"/meta/connect","clientId":id,"connectionType":["long-polling"]}),
            err("402:connectionType:Missing required parameter"),
        ),
        (
            json!({"channel":"/meta/connect","clientId":id,"connectionType":""}),
            err("402:connectionType:Missing required parameter"),
        ),
        // supportedConnectionTypes
        (
            json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":"long-polling"}),
            err("301:long-polling:Connection types not supported"),
        ),
        (
            json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":5}),
            err("301:5:Connection types not supported"),
        ),
        (
            json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":[5,null]}),
            err("301:5,null:Connection types not supported"),
        ),
        (
            json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":[]}),
            err("301::Connection types not supported"),
        ),
        (
            json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":""}),
            err("402:supportedConnectionTypes:Missing required parameter"),
        ),
        // version: JavaScript-falsy values are missing (Faye tests `!message.version`)
        (hs(json!({"version":null})), err("402:version:Missing required parameter")),
        (hs(json!({"version":""})), err("402:version:Missing required parameter")),
        (hs(json!({"version":0})), err("402:version:Missing required parameter")),
        (hs(json!({"version":1})), None),
        // advice (ignored unless advice.timeout is a non-negative number)
        (
            json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":"x"},{"channel":"/t/adv","data":0}]),
            None,
        ),
        (
            json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":"x"}},{"channel":"/t/adv","data":0}]),
            None,
        ),
        (
            json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":-1e300}}),
            None,
        ),
        (
            json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":1e300}}),
            None,
        ),
        (hs(json!({"advice":[1]})), None),
        // ext (never interpreted; forwarded as is)
        (json!({"channel":"/t/ext","data":1,"ext":3}), None),
        (hs(json!({"ext":"x"})), None),
        (json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/t/e","ext":[]}), None),
        // error and successful sent by a client
        (json!({"channel":"/t/err","data":1,"error":"403::Client says no"}), err("403::Client says no")),
        (json!({"channel":"/t/err","data":2,"error":5}), None),
        (json!({"channel":"/t/err","data":3,"successful":false}), None),
    ];
    let mut delivered = Vec::new();
    for (msg, want) in cases {
        let (status, reply) = crier_tests::post_json(&url, &msg).await;
        assert!(status < 500, "{msg} -> HTTP {status}");
        assert_eq!(status, 200, "{msg} -> {reply}");
        let items = reply.as_array().unwrap_or_else(|| panic!("{msg} -> {reply}"));
        // Connects here are not held and carry what was published so far.
        delivered.extend(items.iter().skip_while(|m| m["channel"] != "/meta/connect").skip(1).cloned());
        let first = if msg.is_array() { &msg[0] } else { &msg };
        let r = items.iter().find(|m| m["channel"] == first["channel"]).unwrap_or_else(|| panic!("{msg} -> {reply}"));
        match &want {
            Some(e) => {
                assert_eq!(r["successful"], json!(false), "{msg} -> {r}");
                assert_eq!(r["error"].as_str(), Some(e.as_str()), "{msg} -> {r}");
            }
            None => {
                assert_eq!(r["successful"], json!(true), "{msg} -> {r}");
                assert!(r.get("error").is_none(), "{msg} -> {r}");
            }
        }
        if r["channel"] == "/meta/handshake" || r["channel"] == "/meta/connect" {
            assert!(r.get("advice").is_some(), "{msg} -> {r}");
        }
    }
    // What was accepted was delivered, with its odd types intact; what was refused was not.
    delivered.extend(poll(&url, &id).await);
    let got = delivered;
    let channels: Vec<&str> = got.iter().filter_map(|m| m["channel"].as_str()).collect();
    assert_eq!(channels, ["/t/id", "/t/id", "/t/id", "/t/adv", "/t/adv", "/t/ext", "/t/err", "/t/err"], "{got:?}");
    assert!(got.iter().all(|m| m.get("id").is_none() && m.get("clientId").is_none()), "{got:?}");
    assert_eq!(got[5], json!({"channel":"/t/ext","data":1,"ext":3}));
    assert_eq!(got[6], json!({"channel":"/t/err","data":2,"error":5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_channel_names() {
    let s = server_with(limits()).await;
    let url = s.url();
    let id = connected_client(&url).await;
    let long = format!("/{}", "a/".repeat(1000));
    for bad in
        ["", "/", "foo", "//a", "/a/", "/a b", "/a.b", "/ü", "/a/**/b", "/a%20", "/a//b", "/*/a", "/a\u{0}b", &long]
    {
        let r = send1(&url, json!({"channel":bad,"data":1})).await;
        assert_eq!(r["error"], format!("405:{bad}:Invalid channel"), "publish {bad:?}: {r}");
        let r = send1(&url, json!({"channel":"/meta/subscribe","clientId":id,"subscription":bad})).await;
        if bad.is_empty() {
            assert_eq!(r["error"], "402:subscription:Missing required parameter");
        } else {
            assert_eq!(r["error"], format!("405:{bad}:Invalid channel"), "subscribe {bad:?}: {r}");
        }
    }
}

// Channel names are bounded (1024 bytes, 64 segments; Faye has no bound): a publish
// expands its channel into one name per ancestor, so a 200 KB `/a/a/a/...` used to cost
// gigabytes and seconds. Now it is a prompt 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_channel_names_are_refused_fast() {
    let s = common::server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/a/**").await;
    let deepest = "/a".repeat(64);
    assert_eq!(send1(&url, json!({"channel":deepest,"data":"deep"})).await["successful"], json!(true));
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":deepest,"data":"deep"})]);
    for ch in
        ["/a".repeat(65), "/a".repeat(100_000), format!("/{}", "x".repeat(1024)), format!("/{}", "x".repeat(500_000))]
    {
        let t = std::time::Instant::now();
        let (status, r) = crier_tests::post_json(&url, &json!({"channel":ch,"data":1})).await;
        assert_eq!(status, 200);
        assert_eq!(r[0]["error"].as_str(), Some(format!("405:{ch}:Invalid channel").as_str()), "{} bytes", ch.len());
        let (_, r) =
            crier_tests::post_json(&url, &json!({"channel":"/meta/subscribe","clientId":id,"subscription":ch})).await;
        assert_eq!(r[0]["successful"], json!(false), "{} bytes", ch.len());
        assert!(t.elapsed() < Duration::from_secs(2), "{} bytes took {:?}", ch.len(), t.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_max_batch_are_400() {
    let s = server_with(limits()).await;
    let url = s.url();
    let batch = |n: usize| json!((0..n).map(|i| json!({"channel":"/b","data":i})).collect::<Vec<_>>());
    let text = expect_400(&url, batch(11).to_string()).await;
    assert_eq!(text, "Bad request: batch of 11 messages exceeds the limit of 10");
    assert_eq!(send(&url, batch(10)).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_on_the_endpoint_are_4xx() {
    let s = server_with(limits()).await;
    let url = s.url();
    // An upgrade request that is not a valid WebSocket handshake.
    let (status, _, _) = raw_get(&url, &[("upgrade", "websocket"), ("connection", "upgrade")]).await;
    assert!((400..500).contains(&status), "{status}");
    for m in [reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::PATCH, reqwest::Method::HEAD] {
        let r = http().request(m.clone(), &url).send().await.expect("request");
        assert_eq!(r.status(), 400, "{m}");
    }
    // A query that is not valid percent-encoding.
    let (status, _, _) = raw_get(&format!("{url}?message=%ZZ%"), &[]).await;
    assert_eq!(status, 400);
}

/// A WebSocket subscriber that must keep receiving while the battery runs.
struct Witness {
    ws: RawWs,
    n: u64,
}

impl Witness {
    async fn new(s: &TestServer) -> Self {
        let id = handshake(&s.url()).await;
        let mut ws = RawWs::connect(&s.ws_url()).await;
        ws.send(&json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/witness"})).await;
        assert_eq!(ws.recv(SHORT).await.expect("subscribe reply")[0]["successful"], json!(true));
        ws.send(&json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket"})).await;
        assert_eq!(ws.recv(SHORT).await.expect("connect reply")[0]["successful"], json!(true));
        // The next connect is held; pushes arrive meanwhile.
        ws.send(&json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket","id":"held"})).await;
        Witness { ws, n: 0 }
    }

    /// Publishes the next number and asserts the subscriber gets it.
    async fn check(&mut self, url: &str) {
        self.n += 1;
        common::publish(url, "/witness", json!(self.n)).await;
        loop {
            let f = self.ws.recv(SHORT).await.unwrap_or_else(|| panic!("witness lost message {}", self.n));
            if f[0]["channel"] == "/witness" {
                assert_eq!(f, json!([{"channel":"/witness","data":self.n}]));
                return;
            }
            // Held connect replies come back every timeout; skip them.
            assert_eq!(f[0]["channel"], "/meta/connect", "{f}");
        }
    }
}

// After (and during) all of the above, a well-behaved client is served normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_clients_are_served_during_and_after_the_battery() {
    // Bodies up to 256 KiB, so that 10,000 subscriptions fit in one request.
    let s = server_with(ServerConfig { max_body_bytes: 256 * 1024, ..limits() }).await;
    let url = s.url();
    let mut witness = Witness::new(&s).await;
    witness.check(&url).await;

    let bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"1".to_vec(),
        nested(200).into_bytes(),
        json!({"channel":"/x","data":"x".repeat(300_000)}).to_string().into_bytes(),
        b"[\xff]".to_vec(),
        json!((0..11).map(|_| json!({})).collect::<Vec<_>>()).to_string().into_bytes(),
        json!({"channel":5,"clientId":[],"id":{},"subscription":{},"connectionType":7,"version":null,"advice":"x","ext":3}).to_string().into_bytes(),
        json!({"channel":"/meta/handshake","supportedConnectionTypes":"long-polling","version":null}).to_string().into_bytes(),
    ];
    for (i, body) in bodies.iter().enumerate() {
        let (status, _, text) = raw_post(&url, Some("application/json"), body.clone()).await;
        let want = if i == bodies.len() - 1 || i == bodies.len() - 2 { 200 } else { 400 };
        let want = if body.len() > 256 * 1024 { 413 } else { want };
        assert_eq!(status, want, "body #{i}: {text}");
        witness.check(&url).await;
    }
    for frame in ["not json", "7", &nested(200), &"[{}]".repeat(2000)] {
        let mut ws = RawWs::connect(&s.ws_url()).await;
        ws.send_text(frame).await;
        assert!(ws.close_code(SHORT).await.is_some(), "socket closed with a code");
        witness.check(&url).await;
    }
    // 10,000 subscriptions on another session.
    let other = connected_client(&url).await;
    let many: Vec<String> = (0..10_000).map(|i| format!("/m/{i}")).collect();
    let (status, r) =
        crier_tests::post_json(&url, &json!({"channel":"/meta/subscribe","clientId":other,"subscription":many})).await;
    assert_eq!(status, 200);
    assert_eq!(r[0]["error"], "403::Too many subscriptions (limit 1000)");
    witness.check(&url).await;

    // And a brand-new client works end to end.
    let fresh = subscriber(&url, "/after").await;
    common::publish(&url, "/after", json!("ok")).await;
    assert_eq!(poll(&url, &fresh).await, vec![json!({"channel":"/after","data":"ok"})]);
    assert_eq!(common::metric(&s, "crier_websocket_connections").await, 1, "only the witness is left");
}
