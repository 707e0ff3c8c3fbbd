//! Server extensions seen from the wire: faye-behaviour.md §6.3 item 26 (an incoming
//! extension that refuses a subscription, one that requires `ext.password` to publish, an
//! outgoing one that sees the recipient's request), plus dropping a message silently.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{poll, send, send1, subscriber, until_fence};
use crier_engine::{EngineConfig, Extension, RequestContext, Verdict};
use crier_protocol::Message;
use crier_tests::{Options, TestServer, connected_client, http};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Refuses subscriptions to anything under `/private`, as Faye's docs' subscription
/// authoriser does: it sets `error`, and the server answers with it.
struct NoPrivate;

#[async_trait]
impl Extension for NoPrivate {
    async fn incoming(&self, m: &mut Message, _ctx: &RequestContext) -> Verdict {
        let private = |v: &Value| v.as_str().is_some_and(|s| s.starts_with("/private"));
        let wants_private = match m.subscription() {
            Some(Value::Array(items)) => items.iter().any(private),
            Some(v) => private(v),
            None => false,
        };
        if m.channel() == Some("/meta/subscribe") && wants_private {
            m.set_error("403::Access denied");
        }
        Verdict::Pass
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}

/// Requires `ext.password == "secret"` on publishes to `/guarded/**`, and removes the
/// password before the message is forwarded (as Faye's security docs advise).
struct Password;

#[async_trait]
impl Extension for Password {
    async fn incoming(&self, m: &mut Message, _ctx: &RequestContext) -> Verdict {
        if !m.channel().is_some_and(|c| c.starts_with("/guarded/")) {
            return Verdict::Pass;
        }
        let ok = m.ext().and_then(|e| e.get("password")).and_then(Value::as_str) == Some("secret");
        if ok {
            m.ext_mut().remove("password");
        } else {
            m.set_error("403::Password required");
        }
        Verdict::Pass
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}

/// Drops incoming messages that carry `ext.drop`, with no reply (a Faye extension calling
/// back `null`).
struct Dropper;

#[async_trait]
impl Extension for Dropper {
    async fn incoming(&self, m: &mut Message, _ctx: &RequestContext) -> Verdict {
        if m.ext().and_then(|e| e.get("drop")).is_some() { Verdict::Drop } else { Verdict::Pass }
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}

/// Records, for every delivered message, the `X-Recipient` header of the request it goes
/// out on, and stamps it into the message.
#[derive(Default)]
struct Recorder {
    /// (channel, recipient header) per delivery.
    seen: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Extension for Recorder {
    async fn outgoing(&self, m: &mut Message, ctx: &RequestContext) -> Verdict {
        // Replies carry `successful`; deliveries do not.
        if m.successful().is_some() {
            return Verdict::Pass;
        }
        let who = ctx.request.as_ref().and_then(|r| r.header("x-recipient")).unwrap_or("?").to_owned();
        let channel = m.channel().unwrap_or_default().to_owned();
        self.seen.lock().expect("lock").push((channel, who.clone()));
        m.set("recipient", who);
        Verdict::Pass
    }
}

async fn start(extensions: Vec<Arc<dyn Extension>>) -> TestServer {
    TestServer::start_with(Options {
        engine: Some(EngineConfig { timeout_secs: 3, ..EngineConfig::default() }),
        extensions,
        ..Options::default()
    })
    .await
}

// §6.3 item 26: an incoming extension that sets `error` on a subscribe: the error is the
// reply and nothing is subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_extension_refuses_a_subscription() {
    let s = start(vec![Arc::new(NoPrivate)]).await;
    let url = s.url();
    let id = subscriber(&url, "/fence").await;
    let r = send1(&url, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/private/x","id":"7"})).await;
    assert_eq!(
        r,
        json!({"id":"7","clientId":id,"channel":"/meta/subscribe","successful":false,
               "error":"403::Access denied","subscription":"/private/x"})
    );
    let r =
        send1(&url, json!({"channel":"/meta/subscribe","clientId":id,"subscription":["/public","/private/y"]})).await;
    assert_eq!(r["error"], "403::Access denied", "{r}");
    common::publish(&url, "/private/x", json!("secret")).await;
    common::publish(&url, "/public", json!("not subscribed either")).await;
    assert_eq!(until_fence(&url, &id, "/fence").await, Vec::<Value>::new());
    // A real 401 overrides the extension's error (Faye's precedence).
    let unknown = "u".repeat(31);
    let r = send1(&url, json!({"channel":"/meta/subscribe","clientId":unknown,"subscription":"/private/x"})).await;
    assert_eq!(r["error"], format!("401:{unknown}:Unknown client"), "{r}");
}

// §6.3 item 26: an extension requiring `ext.password` blocks publishes without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_extension_requires_a_password_to_publish() {
    let s = start(vec![Arc::new(Password)]).await;
    let url = s.url();
    let id = subscriber(&url, "/guarded/**").await;
    for ext in [json!(null), json!({}), json!({"password":"wrong"}), json!(3)] {
        let r = send1(&url, json!({"channel":"/guarded/a","data":1,"ext":ext,"id":"p"})).await;
        assert_eq!(
            r,
            json!({"id":"p","channel":"/guarded/a","successful":false,"error":"403::Password required"}),
            "ext {ext}"
        );
    }
    assert!(poll(&url, &id).await.is_empty());
    let r = send1(&url, json!({"channel":"/guarded/a","data":2,"ext":{"password":"secret","keep":true}})).await;
    assert_eq!(r["successful"], json!(true), "{r}");
    // Delivered, without the password.
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/guarded/a","data":2,"ext":{"keep":true}})]);
    // Meta messages are not affected.
    assert_eq!(
        send1(&url, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/x"})).await["successful"],
        json!(true)
    );
}

// An incoming extension that drops a message: no reply at all, and no effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_extension_can_drop_silently() {
    let s = start(vec![Arc::new(Dropper)]).await;
    let url = s.url();
    let id = subscriber(&url, "/d").await;
    let r =
        send(&url, json!([{"channel":"/d","data":1,"ext":{"drop":true},"id":"x"},{"channel":"/d","data":2,"id":"y"}]))
            .await;
    assert_eq!(r, vec![json!({"id":"y","channel":"/d","successful":true})]);
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/d","data":2})]);
    assert_eq!(send(&url, json!({"channel":"/d","data":3,"ext":{"drop":1}})).await, Vec::<Value>::new());
}

// §6.3 item 26: an outgoing extension sees the *recipient's* request for a delivery: the
// held long-poll's request, or the WebSocket upgrade request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_extension_sees_the_recipients_request() {
    let rec = Arc::new(Recorder::default());
    let s = start(vec![rec.clone()]).await;
    let url = s.url();

    // Long-polling recipient.
    let lp = connected_client(&url).await;
    crier_tests::subscribe(&url, &lp, "/rec").await;
    // WebSocket recipient, whose upgrade request carries its own header.
    // (Handshake only, so the connect on the socket is the first, answered at once.)
    let ws_id = crier_tests::handshake(&url).await;
    crier_tests::subscribe(&url, &ws_id, "/rec").await;
    let mut req = s.ws_url().into_client_request().expect("ws request");
    req.headers_mut().insert("x-recipient", "ws-subscriber".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    let connect = json!({"channel":"/meta/connect","clientId":ws_id,"connectionType":"websocket"});
    ws.send(WsMessage::Text(connect.to_string().into())).await.expect("send");
    let first = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.expect("connect reply");
    assert!(matches!(first, Some(Ok(WsMessage::Text(_)))), "{first:?}");

    let r = http()
        .post(&url)
        .header("x-recipient", "the-publisher")
        .json(&json!({"channel":"/rec","data":"hello"}))
        .send()
        .await
        .expect("publish");
    let reply: Value = r.json().await.expect("json");
    assert_eq!(reply[0]["successful"], json!(true), "{reply}");
    assert!(reply[0].get("recipient").is_none(), "replies are not deliveries: {reply}");

    // The WebSocket recipient gets a push stamped with its own header.
    let pushed = loop {
        match tokio::time::timeout(Duration::from_secs(2), ws.next()).await.expect("push") {
            Some(Ok(WsMessage::Text(t))) => break serde_json::from_str::<Value>(t.as_str()).expect("json"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    };
    assert_eq!(pushed, json!([{"channel":"/rec","data":"hello","recipient":"ws-subscriber"}]));

    // The long-poll recipient's delivery goes out on its connect request.
    let r = http()
        .post(&url)
        .header("x-recipient", "lp-subscriber")
        .json(&json!({"channel":"/meta/connect","clientId":lp,"connectionType":"long-polling","advice":{"timeout":0}}))
        .send()
        .await
        .expect("connect");
    let reply: Value = r.json().await.expect("json");
    assert_eq!(reply[1], json!({"channel":"/rec","data":"hello","recipient":"lp-subscriber"}), "{reply}");

    let mut seen = rec.seen.lock().expect("lock").clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![("/rec".to_owned(), "lp-subscriber".to_owned()), ("/rec".to_owned(), "ws-subscriber".to_owned())]
    );
}

/// The data of the first `n` messages on `channel` that `ws` receives.
async fn data_of(ws: &mut crier_tests::RawWs, channel: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = ws.recv(Duration::from_secs(5)).await.expect("deliveries");
        got.extend(
            frame.as_array().into_iter().flatten().filter(|m| m["channel"] == channel).map(|m| m["data"].clone()),
        );
    }
    got
}

/// Holds back the publish whose data is "first", as an authoriser that takes its time would.
struct SlowFirst;

#[async_trait]
impl Extension for SlowFirst {
    async fn incoming(&self, m: &mut Message, _ctx: &RequestContext) -> Verdict {
        if m.data() == Some(&json!("first")) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Verdict::Pass
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}

// Faye's WebSocket transport sends each message in a frame of its own: a publish that waits
// (here in an extension; publish backpressure and authorising webhooks wait the same way)
// must not be overtaken by the next frame's, or subscribers see a publisher's messages out
// of order. The replies come back in order too.
#[tokio::test]
async fn a_socket_s_publishes_keep_their_order_when_one_waits() {
    let s = TestServer::start_with(Options { extensions: vec![Arc::new(SlowFirst)], ..Options::default() }).await;
    let (_, mut sub) = crier_tests::socket_subscriber(&s, "/ordered").await;
    let id = connected_client(&s.url()).await;
    let mut publisher = crier_tests::RawWs::connect(&s.ws_url()).await;
    for (n, data) in ["first", "second", "third"].iter().enumerate() {
        let publish = json!({"channel":"/ordered","clientId":id,"data":data,"id":n.to_string()});
        // The first two batched with a connect, as Bayeux clients other than Faye's may
        // send: answered at once, so they take their turn too, and the one that waits
        // ("first") is not overtaken because its frame also holds a connect.
        let frame = if n < 2 {
            json!([publish, {"channel":"/meta/connect","clientId":id,"connectionType":"websocket"}])
        } else {
            publish
        };
        publisher.send(&frame).await;
    }
    let mut replies = Vec::new();
    while replies.len() < 3 {
        let frame = publisher.recv(Duration::from_secs(5)).await.expect("publish replies");
        replies.extend(
            frame.as_array().into_iter().flatten().filter(|m| m["channel"] == "/ordered").map(|m| m["id"].clone()),
        );
    }
    assert_eq!(replies, vec![json!("0"), json!("1"), json!("2")]);
    assert_eq!(data_of(&mut sub, "/ordered", 3).await, vec![json!("first"), json!("second"), json!("third")]);
}

// The messages of one long-polling batch start one after the other too (each once the one
// before it was handed to the backend): the one that waits is not overtaken, and the
// replies keep the batch's order.
#[tokio::test]
async fn a_batch_s_publishes_keep_their_order_when_one_waits() {
    let s = TestServer::start_with(Options { extensions: vec![Arc::new(SlowFirst)], ..Options::default() }).await;
    let (_, mut sub) = crier_tests::socket_subscriber(&s, "/ordered").await;
    let id = connected_client(&s.url()).await;
    let batch: Vec<Value> = ["first", "second", "third"]
        .iter()
        .enumerate()
        .map(|(n, data)| json!({"channel":"/ordered","clientId":id,"data":data,"id":n.to_string()}))
        .collect();
    let replies = send(&s.url(), Value::Array(batch)).await;
    let ids: Vec<Value> = replies.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, vec![json!("0"), json!("1"), json!("2")], "{replies:?}");
    assert_eq!(data_of(&mut sub, "/ordered", 3).await, vec![json!("first"), json!("second"), json!("third")]);
}

/// Holds back a message whose data is "hold" for 300 ms, and says when it has begun:
/// coming in (a publish) or going out (a delivery).
struct Gate(Arc<tokio::sync::Notify>);

impl Gate {
    async fn hold(&self, m: &Message) {
        if m.data() == Some(&json!("hold")) {
            self.0.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[async_trait]
impl Extension for Gate {
    async fn incoming(&self, m: &mut Message, _ctx: &RequestContext) -> Verdict {
        if m.channel() != Some("/out") {
            self.hold(m).await;
        }
        Verdict::Pass
    }

    async fn outgoing(&self, m: &mut Message, _ctx: &RequestContext) -> Verdict {
        if m.channel() == Some("/out") {
            self.hold(m).await;
        }
        Verdict::Pass
    }
}

// A drain answers what a socket has in flight before its close frame: here a publish still
// waiting in an extension when the drain began. Its client learns the outcome instead of
// re-sending it to another node.
#[tokio::test]
async fn a_drain_answers_a_publish_in_flight_before_closing_the_socket() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let s = TestServer::start_with(Options { extensions: vec![Arc::new(Gate(entered.clone()))], ..Options::default() })
        .await;
    let id = connected_client(&s.url()).await;
    let mut ws = crier_tests::RawWs::connect(&s.ws_url()).await;
    ws.send(&json!({"channel":"/held","clientId":id,"data":"hold","id":"p1"})).await;
    tokio::time::timeout(Duration::from_secs(5), entered.notified()).await.expect("the publish reached the extension");
    s.begin_shutdown();
    let reply = ws.recv(Duration::from_secs(5)).await.expect("the publish's reply before the close");
    assert_eq!(reply[0]["id"], json!("p1"), "{reply}");
    assert_eq!(reply[0]["successful"], json!(true), "{reply}");
    assert_eq!(ws.close_code(Duration::from_secs(5)).await, Some(1001), "then the socket closes, going away");
}

// A drain sends what waits for a socket's session before the close frame: here a delivery
// that was on its way out (in an outgoing extension) when the drain began. The session
// ends with the drain, so this is its last chance to get it.
#[tokio::test]
async fn a_drain_sends_a_socket_s_queued_deliveries_before_closing_it() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let s = TestServer::start_with(Options { extensions: vec![Arc::new(Gate(entered.clone()))], ..Options::default() })
        .await;
    let (_, mut sub) = crier_tests::socket_subscriber(&s, "/out").await;
    let (status, reply) = crier_tests::post_json(&s.url(), &json!({"channel":"/out","data":"hold"})).await;
    assert_eq!(status, 200, "{reply}");
    tokio::time::timeout(Duration::from_secs(5), entered.notified()).await.expect("the delivery reached the extension");
    s.begin_shutdown();
    assert_eq!(data_of(&mut sub, "/out", 1).await, vec![json!("hold")], "the delivery before the close");
    assert_eq!(sub.close_code(Duration::from_secs(5)).await, Some(1001), "then the socket closes, going away");
}
