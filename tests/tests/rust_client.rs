//! The crate's own Rust client (`crier-client`) against a real Crier server: round trips
//! over both transports, wildcards, re-handshake after the server forgets the session, and
//! the batching publisher.

use std::time::Duration;

use crier_client::{Client, Publisher, Transport};
use crier_tests::{TestServer, post_json};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(5);

async fn client(server: &TestServer, t: Transport) -> Client {
    let c = Client::builder(server.url()).transport(t).build().expect("builder");
    c.connect().await.expect("connect");
    c
}

async fn roundtrip(t: Transport) {
    let server = TestServer::start().await;
    let a = client(&server, t).await;
    let b = client(&server, Transport::LongPolling).await;
    let mut exact = a.subscribe("/rt/room").await.expect("subscribe");
    let mut wild = a.subscribe("/rt/**").await.expect("subscribe");
    let reply = b.publish("/rt/room", json!({"n": 1})).await.expect("publish");
    assert_eq!(reply.successful(), Some(true));
    let m = tokio::time::timeout(LIMIT, exact.recv()).await.expect("delivered").expect("open");
    assert_eq!(m.data(), Some(&json!({"n": 1})));
    assert_eq!(m.0.get("id"), None, "deliveries carry no publisher id");
    let w = tokio::time::timeout(LIMIT, wild.recv()).await.expect("delivered").expect("open");
    assert_eq!(w.channel(), Some("/rt/room"));
    // An invalid publish is refused with the Bayeux error.
    let err =
        a.send_raw(vec![serde_json::from_value(json!({"channel":"/rt/*","data":1,"id":"x"})).expect("msg")]).await;
    let replies = err.expect("reply");
    assert_eq!(replies[0].error(), Some("405:/rt/*:Invalid channel"));
    a.disconnect().await.expect("disconnect");
    b.disconnect().await.expect("disconnect");
    server.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_over_websocket() {
    roundtrip(Transport::WebSocket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundtrip_over_long_polling() {
    roundtrip(Transport::LongPolling).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehandshakes_and_resubscribes_when_the_server_forgets_the_session() {
    let server = TestServer::start().await;
    let a = client(&server, Transport::LongPolling).await;
    let mut sub = a.subscribe("/forget").await.expect("subscribe");
    let old = a.client_id().expect("client id");
    let (_, r) = post_json(&server.url(), &json!({"channel":"/meta/disconnect","clientId":old})).await;
    assert_eq!(r[0]["successful"], json!(true));
    let mut ids = a.watch_client_id();
    let changed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if ids.borrow().as_deref().is_some_and(|id| id != old) {
                return;
            }
            if ids.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(changed.is_ok(), "client re-handshook");
    // Re-subscription is asynchronous: publish until the resubscribed session receives.
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_, _) = post_json(&server.url(), &json!({"channel":"/forget","data":"again"})).await;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
                return m;
            }
        }
    })
    .await
    .expect("delivered after re-handshake");
    assert_eq!(got.data(), Some(&json!("again")));
    a.disconnect().await.expect("disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_publisher_delivers_everything_in_order() {
    let server = TestServer::start().await;
    let sub_client = client(&server, Transport::WebSocket).await;
    let mut sub = sub_client.subscribe("/pub").await.expect("subscribe");
    let publisher =
        Publisher::builder(server.url()).transport(Transport::LongPolling).max_batch(25).build().expect("publisher");
    let acks: Vec<_> = (0..200).map(|i| publisher.publish("/pub", json!(i))).collect();
    for ack in acks {
        assert_eq!(ack.await.expect("ack").successful(), Some(true));
    }
    for i in 0..200 {
        let m = tokio::time::timeout(LIMIT, sub.recv()).await.expect("delivered").expect("open");
        assert_eq!(m.data(), Some(&json!(i)));
    }
    publisher.close().await;
    sub_client.disconnect().await.expect("disconnect");
}

/// A publisher's `ext` (here the publish secret) goes with every message of every batch;
/// without it the same server refuses the publishes, each with its own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_ext_carries_the_publish_secret() {
    let auth = crier_auth::AuthConfig { publish_secret: Some("s3cret".to_owned()), ..Default::default() };
    let server = TestServer::start_with(crier_tests::Options {
        extensions: crier_auth::policies(&auth).expect("policies"),
        ..Default::default()
    })
    .await;
    for t in [Transport::WebSocket, Transport::LongPolling] {
        let with = Publisher::builder(server.url()).transport(t).ext(json!({"password": "s3cret"})).build().expect("p");
        let acks: Vec<_> = (0..30).map(|i| with.publish("/guarded", json!(i))).collect();
        for ack in acks {
            assert_eq!(ack.await.expect("accepted with the secret").successful(), Some(true));
        }
        with.close().await;
        let without = Publisher::builder(server.url()).transport(t).build().expect("p");
        let refused = without.publish("/guarded", json!(0)).await;
        assert!(refused.is_err(), "{t:?}: {refused:?}");
        // A session's own presence needs no publish secret (it is refused here only for
        // lack of a user, not of the secret).
        let presence = without.publish("/service/presence", json!({"status": "away"})).await;
        let text = format!("{presence:?}");
        assert!(text.contains("presence needs a session") || text.contains("clientId"), "{t:?}: {text}");
        without.close().await;
    }
}
