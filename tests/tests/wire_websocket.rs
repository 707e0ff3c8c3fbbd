//! The WebSocket transport with raw frames: faye-behaviour.md §6.3 items 35–38, and
//! divergence (h) (malformed frames close the socket instead of being ignored).

mod common;

use std::time::{Duration, Instant};

use common::{poll, publish, send1, server, server_with, wait_metric};
use crier_server::ServerConfig;
use crier_tests::{RawWs, handshake, subscribe};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(2);

fn ws_connect(id: &str, msg_id: &str) -> Value {
    json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket","id":msg_id})
}

/// Receives frames until one holds a message with this `id`; returns the frames before it
/// and that frame.
async fn until_reply(ws: &mut RawWs, id: &str) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    loop {
        let f = ws.recv(Duration::from_secs(5)).await.unwrap_or_else(|| panic!("no reply {id}; got {before:?}"));
        if f.as_array().is_some_and(|a| a.iter().any(|m| m["id"] == id)) {
            return (before, f);
        }
        before.push(f);
    }
}

// §6.3 item 35: a bare object is accepted and the reply is an array; `[]` gets `[]`;
// `null` gets `[]`. Handshake and everything else work over the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_batches_and_replies_are_arrays() {
    let s = server(3).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"],"id":"h"}))
        .await;
    let r = ws.recv(SHORT).await.expect("handshake reply");
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r[0]["successful"], json!(true), "{r}");
    assert_eq!(r[0]["id"], "h");
    ws.send_text("[]").await;
    assert_eq!(ws.recv(SHORT).await, Some(json!([])));
    ws.send_text("null").await;
    assert_eq!(ws.recv(SHORT).await, Some(json!([])));
    ws.send(&json!([{"channel":"/a","data":1,"id":"1"},{"channel":"/b","data":2,"id":"2"}])).await;
    assert_eq!(
        ws.recv(SHORT).await,
        Some(json!([{"id":"1","channel":"/a","successful":true},{"id":"2","channel":"/b","successful":true}]))
    );
}

// §6.3 item 35, divergence (h): invalid JSON or a top-level primitive closes the socket
// with 1007 (Faye logs and ignores the frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_frames_close_with_1007() {
    let s = server(3).await;
    for bad in ["not json", "42", "\"str\"", "{\"channel\":"] {
        let mut ws = RawWs::connect(&s.ws_url()).await;
        ws.send_text(bad).await;
        assert_eq!(ws.close_code(SHORT).await, Some(1007), "frame {bad:?}");
    }
    // The server still serves sockets afterwards.
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send_text("[]").await;
    assert_eq!(ws.recv(SHORT).await, Some(json!([])));
}

// Upgrades are accepted on any sub-path of the mount (as Faye), and refused elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_paths() {
    let s = server(3).await;
    let mut ws = RawWs::connect(&format!("{}/any/sub/path", s.ws_url())).await;
    ws.send_text("[]").await;
    assert_eq!(ws.recv(SHORT).await, Some(json!([])));
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/elsewhere", s.addr)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 404),
        other => panic!("expected an HTTP 404 refusal, got {:?}", other.map(|_| ())),
    }
}

// §6.3 items 36 and 38: handshake over HTTP, then connect and subscribe on the socket; a
// message from another client is pushed at once as its own `[msg]` frame while the
// connect is still held; the held connect is answered at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_arrive_while_the_connect_is_held() {
    let s = server(3).await;
    let url = s.url();
    let id = handshake(&url).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/chat/*","id":"s"})).await;
    assert_eq!(
        ws.recv(SHORT).await,
        Some(json!([{"id":"s","clientId":id,"channel":"/meta/subscribe","successful":true,"subscription":"/chat/*"}]))
    );
    // Divergence (b): the first connect is answered at once.
    ws.send(&ws_connect(&id, "c1")).await;
    let r = ws.recv(SHORT).await.expect("first connect reply");
    assert_eq!(r[0]["id"], "c1", "{r}");
    assert_eq!(r[0]["successful"], json!(true));
    assert_eq!(r[0]["advice"], json!({"reconnect":"retry","interval":0,"timeout":3000}));

    let held_since = Instant::now();
    ws.send(&ws_connect(&id, "c2")).await;
    // Another client publishes over its own socket.
    let other = handshake(&url).await;
    let mut pub_ws = RawWs::connect(&s.ws_url()).await;
    for n in 1..=2 {
        pub_ws.send(&json!({"channel":"/chat/room","clientId":other,"data":{"n":n},"id":format!("p{n}")})).await;
        let ack = pub_ws.recv(SHORT).await.expect("publish ack");
        assert_eq!(ack[0]["successful"], json!(true), "{ack}");
        // Pushed as its own one-message frame, long before the connect is answered.
        let pushed = ws.recv(SHORT).await.expect("push");
        assert_eq!(pushed, json!([{"channel":"/chat/room","data":{"n":n}}]));
        assert!(held_since.elapsed() < Duration::from_millis(2500));
    }
    // A publish on the subscriber's own socket is answered while its connect is held.
    ws.send(&json!({"channel":"/elsewhere","data":0,"id":"own"})).await;
    assert_eq!(ws.recv(SHORT).await, Some(json!([{"id":"own","channel":"/elsewhere","successful":true}])));
    let (before, reply) = until_reply(&mut ws, "c2").await;
    assert!(before.is_empty(), "{before:?}");
    let took = held_since.elapsed();
    assert!(took >= Duration::from_millis(2700) && took < Duration::from_secs(5), "held {took:?}");
    assert_eq!(reply[0]["successful"], json!(true));
}

// §6.3 item 44 over a socket, divergence (c): a newer connect releases the held one at
// once with a successful reply (Faye leaves the earlier `id` unanswered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connect_on_the_socket_releases_the_held_one() {
    let s = server(3).await;
    let id = handshake(&s.url()).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&ws_connect(&id, "c1")).await;
    assert_eq!(ws.recv(SHORT).await.expect("first connect")[0]["id"], "c1");
    ws.send(&ws_connect(&id, "c2")).await;
    // c2 is held (bounded check) ...
    assert_eq!(ws.recv(Duration::from_millis(300)).await, None);
    let t = Instant::now();
    ws.send(&ws_connect(&id, "c3")).await;
    // ... until c3 arrives: c2 is answered at once, c3 is the one held now.
    let r = ws.recv(SHORT).await.expect("c2 released");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(
        r,
        json!([{"id":"c2","clientId":id,"channel":"/meta/connect","successful":true,
                "advice":{"reconnect":"retry","interval":0,"timeout":3000}}])
    );
    assert_eq!(ws.recv(Duration::from_millis(300)).await, None);
}

// §6.3 item 37: close the socket, publish, reconnect on a new socket within 2T with the
// same clientId: the messages published in between are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_while_the_socket_was_closed_are_delivered() {
    let s = server(3).await;
    let url = s.url();
    let id = handshake(&url).await;
    subscribe(&url, &id, "/q").await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&ws_connect(&id, "c1")).await;
    assert_eq!(ws.recv(SHORT).await.expect("connect reply")[0]["successful"], json!(true));
    drop(ws);
    wait_metric(&s, "crier_websocket_connections", 0).await;
    publish(&url, "/q", json!(1)).await;
    publish(&url, "/q", json!(2)).await;

    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&ws_connect(&id, "c2")).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = ws.recv(SHORT).await.unwrap_or_else(|| panic!("queued messages not delivered; got {got:?}"));
        got.extend(f.as_array().into_iter().flatten().filter(|m| m.get("successful").is_none()).cloned());
    }
    assert_eq!(got, vec![json!({"channel":"/q","data":1}), json!({"channel":"/q","data":2})]);

    // And the same over long-polling after a socket went away.
    drop(ws);
    wait_metric(&s, "crier_websocket_connections", 0).await;
    publish(&url, "/q", json!(3)).await;
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/q","data":3})]);
}

// A socket binds only to a session that exists: a connect naming an unknown client gets a
// 401 and the socket receives nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_for_unknown_client_over_websocket() {
    let s = server(3).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    let ghost = "g".repeat(31);
    ws.send(&ws_connect(&ghost, "c")).await;
    let r = ws.recv(SHORT).await.expect("reply");
    assert_eq!(
        r,
        json!([{"id":"c","channel":"/meta/connect","successful":false,
                "error":format!("401:{ghost}:Unknown client"),"advice":{"reconnect":"handshake"}}])
    );
    let r = send1(&s.url(), json!({"channel":"/meta/disconnect","clientId":ghost})).await;
    assert_eq!(r["error"], format!("401:{ghost}:Unknown client"));
}

// Divergence (h): a frame over `server.max_frame_bytes` closes with 1009, a batch over
// `server.max_batch` or JSON nested too deep with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_overlong_frames_close_the_socket() {
    let s = server_with(ServerConfig { max_frame_bytes: 4096, max_batch: 5, ..ServerConfig::default() }).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&json!({"channel":"/big","data":"x".repeat(8000)})).await;
    assert_eq!(ws.close_code(SHORT).await, Some(1009));

    let mut ws = RawWs::connect(&s.ws_url()).await;
    let batch: Vec<Value> = (0..6).map(|i| json!({"channel":"/b","data":i})).collect();
    ws.send(&json!(batch)).await;
    assert_eq!(ws.close_code(SHORT).await, Some(1008));

    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send_text(&format!("{}{}", "[".repeat(200), "]".repeat(200))).await;
    assert_eq!(ws.close_code(SHORT).await, Some(1008));

    // Within the limits all is well.
    let mut ws = RawWs::connect(&s.ws_url()).await;
    let batch: Vec<Value> = (0..5).map(|i| json!({"channel":"/b","data":i})).collect();
    ws.send(&json!(batch)).await;
    let r = ws.recv(SHORT).await.expect("reply");
    assert_eq!(r.as_array().map(Vec::len), Some(5), "{r}");
}

// `server.ws_read_buffer_bytes` bounds what an idle socket keeps, not what it can read: with
// a 64-byte buffer a 200 KB publish is read whole and delivered intact, in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_the_read_buffer_are_read_whole() {
    let s = server_with(ServerConfig { ws_read_buffer_bytes: 64, ..ServerConfig::default() }).await;
    let url = s.url();
    let id = handshake(&url).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/big","id":"s"})).await;
    assert_eq!(ws.recv(SHORT).await.expect("subscribe reply")[0]["successful"], json!(true));
    ws.send(&ws_connect(&id, "c1")).await;
    until_reply(&mut ws, "c1").await;
    let data = "y".repeat(200_000);
    let other = handshake(&url).await;
    let mut pub_ws = RawWs::connect(&s.ws_url()).await;
    pub_ws.send(&json!({"channel":"/big","clientId":other,"data":data,"id":"p"})).await;
    assert_eq!(pub_ws.recv(SHORT).await.expect("publish ack")[0]["successful"], json!(true));
    assert_eq!(ws.recv(SHORT).await, Some(json!([{"channel":"/big","data":data}])));
}

#[test]
fn the_read_buffer_size_is_bounded() {
    for bad in [0, 63, 128 * 1024 + 1] {
        let c = ServerConfig { ws_read_buffer_bytes: bad, ..ServerConfig::default() };
        let e = c.validate().expect_err("out of range");
        assert!(e.contains("server.ws_read_buffer_bytes"), "{e}");
    }
    for good in [64, 512, 128 * 1024] {
        assert_eq!(ServerConfig { ws_read_buffer_bytes: good, ..ServerConfig::default() }.validate(), Ok(()));
    }
}

// Pings and the held connect's deadline share one timer per socket: both keep their times.
// The engine's timeout here is 2 s, pings come every second.
/// A server with a 2 s timeout and these pings, a session, and a socket whose first
/// connect (answered at once) is done.
async fn connected_socket(ws_ping_secs: u64) -> (crier_tests::TestServer, String, RawWs) {
    let s = server_with(ServerConfig { ws_ping_secs, ..ServerConfig::default() }).await;
    let id = handshake(&s.url()).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    ws.send(&ws_connect(&id, "c1")).await;
    assert_eq!(ws.recv(SHORT).await.expect("first connect")[0]["id"], "c1");
    (s, id, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_go_out_on_time_while_a_connect_is_held() {
    let (_s, id, mut ws) = connected_socket(1).await;
    ws.send(&ws_connect(&id, "c2")).await;
    let got = ws.frames_and_pings(Duration::from_millis(4000)).await;
    let pings: Vec<(Duration, String)> =
        got.iter().filter_map(|(t, f)| f.as_ref().err().map(|n| (*t, n.clone()))).collect();
    let replies: Vec<(Duration, &Value)> = got.iter().filter_map(|(t, f)| f.as_ref().ok().map(|v| (*t, v))).collect();
    // Numbered from 1, about a second apart (the first came a second after the upgrade);
    // the bounds leave room for a loaded test machine.
    assert!(pings.len() >= 2, "{got:?}");
    for (i, (_, n)) in pings.iter().enumerate() {
        assert_eq!(n, &(i + 1).to_string(), "{got:?}");
    }
    for pair in pings.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap > Duration::from_millis(500) && gap < Duration::from_millis(2000), "{got:?}");
    }
    // The held connect is answered at its deadline, once, between the pings.
    assert_eq!(replies.len(), 1, "{got:?}");
    let (at, reply) = replies[0];
    assert_eq!(reply[0]["id"], "c2", "{got:?}");
    assert_eq!(reply[0]["successful"], json!(true));
    assert!(at > Duration::from_millis(1500) && at < Duration::from_millis(3500), "{got:?}");
}

// With pings off, the timer still answers a held connect at its deadline, and nothing
// else arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pings_a_held_connect_is_still_answered_at_its_deadline() {
    let (_s, id, mut ws) = connected_socket(0).await;
    for n in 2..=3 {
        let id_n = format!("c{n}");
        ws.send(&ws_connect(&id, &id_n)).await;
        let got = ws.frames_and_pings(Duration::from_millis(3000)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let (at, reply) = &got[0];
        let reply = reply.as_ref().expect("a reply, not a ping");
        assert_eq!(reply[0]["id"], id_n.as_str(), "{got:?}");
        assert!(*at > Duration::from_millis(1500), "{got:?}");
    }
}

// Two sessions on one socket (allowed up to `limits.max_sessions_per_connection`): one's
// held connect does not cut the other's short; both run to their deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_on_one_socket_keep_their_own_holds() {
    let s = server(2).await;
    let a = handshake(&s.url()).await;
    let b = handshake(&s.url()).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    for (id, msg) in [(&a, "a1"), (&b, "b1")] {
        ws.send(&ws_connect(id, msg)).await;
        assert_eq!(ws.recv(SHORT).await.expect("first connect")[0]["id"], msg);
    }
    let t = Instant::now();
    ws.send(&ws_connect(&a, "a2")).await;
    ws.send(&ws_connect(&b, "b2")).await;
    // Neither is answered early ...
    assert_eq!(ws.recv(Duration::from_millis(1200)).await, None);
    // ... and both are answered at their deadline.
    let mut answered = Vec::new();
    while answered.len() < 2 {
        let f = ws.recv(Duration::from_secs(3)).await.unwrap_or_else(|| panic!("only {answered:?} answered"));
        for m in f.as_array().expect("a batch") {
            assert_eq!(m["successful"], json!(true), "{f}");
            answered.push(m["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    answered.sort();
    assert_eq!(answered, ["a2", "b2"]);
    assert!(t.elapsed() >= Duration::from_millis(1500), "{:?}", t.elapsed());
}
