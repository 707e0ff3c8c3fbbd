//! Wire conformance for `/meta/handshake`, `/meta/connect` and `/meta/disconnect` over raw
//! HTTP: faye-behaviour.md §6.3 items 1–13 and 25, and the better-than-Faye items 43–44.

mod common;

use std::time::{Duration, Instant};

use common::{deliveries, metric, poll, publish, send, send1, server, subscriber, timed_connect, wait_metric};
use crier_tests::handshake;
use serde_json::{Value, json};

/// The connection types Crier implements, in Faye's order. Divergence (f): Faye also lists
/// `in-process`, which only its own in-process client can use.
const TYPES: [&str; 5] = ["long-polling", "cross-origin-long-polling", "callback-polling", "websocket", "eventsource"];

fn is_faye_client_id(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 31 && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

// §6.3 item 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_handshake_reply_has_faye_shape() {
    let s = server(3).await;
    let r = send(
        &s.url(),
        json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}),
    )
    .await;
    assert_eq!(r.len(), 1, "{r:?}");
    let h = &r[0];
    assert!(is_faye_client_id(&h["clientId"]), "{h}");
    assert_eq!(
        keys(h),
        ["advice", "channel", "clientId", "id", "successful", "supportedConnectionTypes", "version"],
        "{h}"
    );
    assert_eq!(h["id"], "1");
    assert_eq!(h["channel"], "/meta/handshake");
    assert_eq!(h["successful"], json!(true));
    assert_eq!(h["version"], "1.0");
    assert_eq!(h["supportedConnectionTypes"], json!(TYPES));
    assert_eq!(h["advice"], json!({"reconnect":"retry","interval":0,"timeout":3000}));
}

// §6.3 item 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_version_is_402() {
    let s = server(3).await;
    let h = send1(&s.url(), json!({"channel":"/meta/handshake","supportedConnectionTypes":["long-polling"],"id":"2"}))
        .await;
    assert_eq!(h["successful"], json!(false), "{h}");
    assert_eq!(h["error"], "402:version:Missing required parameter");
    assert_eq!(h["version"], "1.0");
    assert_eq!(h["supportedConnectionTypes"], json!(TYPES));
    assert_eq!(h["id"], "2");
    assert!(h.get("clientId").is_none(), "{h}");
    assert_eq!(h["advice"], json!({"reconnect":"handshake"}));
}

// §6.3 item 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_connection_type_errors() {
    let s = server(3).await;
    let h = send1(&s.url(), json!({"channel":"/meta/handshake","version":"1.0"})).await;
    assert_eq!(h["error"], "402:supportedConnectionTypes:Missing required parameter", "{h}");
    assert_eq!(h["successful"], json!(false));
    assert_eq!(h["advice"], json!({"reconnect":"handshake"}));
    assert!(h.get("clientId").is_none(), "{h}");

    let h = send1(
        &s.url(),
        json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["iframe","flash"]}),
    )
    .await;
    assert_eq!(h["error"], "301:iframe,flash:Connection types not supported", "{h}");
    assert_eq!(h["successful"], json!(false));
    assert_eq!(h["advice"], json!({"reconnect":"handshake"}));
    assert!(h.get("clientId").is_none(), "{h}");

    // Connection-type errors take precedence over the missing version (Faye: later checks win).
    let h = send1(&s.url(), json!({"channel":"/meta/handshake","supportedConnectionTypes":["flash"]})).await;
    assert_eq!(h["error"], "301:flash:Connection types not supported", "{h}");
}

// §6.3 items 4 and 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_is_not_negotiated_and_ids_are_unique() {
    let s = server(3).await;
    let h = send1(
        &s.url(),
        json!({"channel":"/meta/handshake","version":"2.0","supportedConnectionTypes":["websocket","long-polling"]}),
    )
    .await;
    assert_eq!(h["successful"], json!(true), "{h}");
    assert_eq!(h["version"], "1.0");
    assert!(is_faye_client_id(&h["clientId"]));
    let a = handshake(&s.url()).await;
    let b = handshake(&s.url()).await;
    assert_ne!(a, b);
    assert_ne!(a, h["clientId"]);
}

// §6.3 item 6, with divergence (b): the first connect after a handshake is answered at
// once (CometD's rule); Faye holds it too. Later connects are held for the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_connect_is_immediate_later_ones_are_held_for_the_timeout() {
    let s = server(2).await;
    let id = handshake(&s.url()).await;
    let (r, took) = timed_connect(&s.url(), &id, json!({})).await;
    assert!(took < Duration::from_millis(1000), "first connect took {took:?}");
    assert_eq!(r.len(), 1, "{r:?}");
    let (r, took) = timed_connect(&s.url(), &id, json!({})).await;
    assert!(took >= Duration::from_millis(1800) && took < Duration::from_millis(4000), "held {took:?}");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        r[0],
        json!({"id":"c","clientId":id,"channel":"/meta/connect","successful":true,
               "advice":{"reconnect":"retry","interval":0,"timeout":2000}})
    );
}

// §6.3 item 7, plus divergence (b)'s cap: `advice.timeout` shortens the hold but never
// lengthens it past the server timeout (Faye honours any value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_timeout_shortens_the_hold_and_is_capped() {
    let s = server(2).await;
    let id = crier_tests::connected_client(&s.url()).await;
    let (r, took) = timed_connect(&s.url(), &id, json!({"advice":{"timeout":0}})).await;
    assert!(took < Duration::from_millis(1000), "timeout 0 took {took:?}");
    assert_eq!(r[0]["successful"], json!(true));
    let (_, took) = timed_connect(&s.url(), &id, json!({"advice":{"timeout":400}})).await;
    assert!(took >= Duration::from_millis(350) && took < Duration::from_millis(1500), "timeout 400 took {took:?}");
    let (r, took) = timed_connect(&s.url(), &id, json!({"advice":{"timeout":60000}})).await;
    assert!(took >= Duration::from_millis(1800) && took < Duration::from_millis(4000), "capped hold {took:?}");
    // The advice in the reply is still the server's.
    assert_eq!(r[0]["advice"], json!({"reconnect":"retry","interval":0,"timeout":2000}));
}

// Divergence (b): a connect batched with other messages is not held (Faye holds it, and
// its client sends `advice.timeout: 0` on such connects for that reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_connect_is_not_held() {
    let s = server(3).await;
    let id = crier_tests::connected_client(&s.url()).await;
    let t = Instant::now();
    let r = send(
        &s.url(),
        json!([
            {"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","id":"c"},
            {"channel":"/elsewhere","data":1,"id":"p"}
        ]),
    )
    .await;
    assert!(t.elapsed() < Duration::from_millis(1500), "batched connect took {:?}", t.elapsed());
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r.iter().all(|m| m["successful"] == json!(true)), "{r:?}");
}

// §6.3 item 8, with divergence (a): the delivered message has no `id` and no `clientId`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connect_returns_early_with_a_delivery() {
    let s = server(4).await;
    let url = s.url();
    let id = subscriber(&url, "/foo").await;
    let held = {
        let (url, id) = (url.clone(), id.clone());
        tokio::spawn(async move { timed_connect(&url, &id, json!({})).await })
    };
    wait_metric(&s, "crier_polls_in_flight", 1).await;
    let p = send1(&url, json!({"channel":"/foo","data":{"text":"hi"},"id":"pub-1","clientId":"someoneelse"})).await;
    assert_eq!(p["successful"], json!(true), "{p}");
    let (r, took) = held.await.expect("connect task");
    assert!(took < Duration::from_secs(2), "released after {took:?}");
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0]["channel"], "/meta/connect");
    assert_eq!(r[0]["successful"], json!(true));
    assert_eq!(r[1], json!({"channel":"/foo","data":{"text":"hi"}}));
}

// §6.3 item 9: the replies and the delivery come back in one array, in Faye's observed
// order (connect last among the replies, deliveries after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_connect_publish_in_one_post() {
    let s = server(3).await;
    let url = s.url();
    let id = crier_tests::connected_client(&url).await;
    let r = send(
        &url,
        json!([
            {"channel":"/meta/subscribe","clientId":id,"subscription":"/self","id":"s"},
            {"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":0},"id":"c"},
            {"channel":"/self","clientId":id,"data":"me","id":"p"}
        ]),
    )
    .await;
    assert_eq!(r.len(), 4, "{r:?}");
    assert_eq!(
        r[0],
        json!({"id":"s","clientId":id,"channel":"/meta/subscribe","successful":true,"subscription":"/self"})
    );
    assert_eq!(r[1], json!({"id":"p","clientId":id,"channel":"/self","successful":true}));
    assert_eq!(r[2]["id"], "c");
    assert_eq!(r[2]["successful"], json!(true));
    assert_eq!(r[3], json!({"channel":"/self","data":"me"}));
}

// §6.3 item 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_unknown_client_is_401_without_client_id() {
    let s = server(3).await;
    for unknown in ["a".repeat(31), "__proto__".to_owned(), "x".to_owned()] {
        let r = send1(
            &s.url(),
            json!({"channel":"/meta/connect","clientId":unknown,"connectionType":"long-polling","id":"9"}),
        )
        .await;
        assert_eq!(
            r,
            json!({"id":"9","channel":"/meta/connect","successful":false,
                   "error":format!("401:{unknown}:Unknown client"),"advice":{"reconnect":"handshake"}})
        );
    }
}

// §6.3 item 11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_parameter_errors_in_faye_precedence() {
    let s = server(3).await;
    let id = handshake(&s.url()).await;
    let cases = [
        (json!({"channel":"/meta/connect","clientId":id}), "402:connectionType:Missing required parameter".to_owned()),
        (
            json!({"channel":"/meta/connect","clientId":id,"connectionType":"flash"}),
            "301:flash:Connection types not supported".to_owned(),
        ),
        (
            json!({"channel":"/meta/connect","connectionType":"long-polling"}),
            "402:clientId:Missing required parameter".to_owned(),
        ),
        // Precedence: connectionType errors beat a missing clientId.
        (json!({"channel":"/meta/connect"}), "402:connectionType:Missing required parameter".to_owned()),
        (
            json!({"channel":"/meta/connect","connectionType":"flash"}),
            "301:flash:Connection types not supported".to_owned(),
        ),
    ];
    for (msg, want) in cases {
        let r = send1(&s.url(), msg.clone()).await;
        assert_eq!(r["error"], want, "{msg} -> {r}");
        assert_eq!(r["successful"], json!(false));
        assert!(r.get("clientId").is_none(), "{r}");
        assert_eq!(r["advice"], json!({"reconnect":"handshake"}), "{r}");
    }
    // Divergence (f): `in-process` is not a type this server offers.
    let r = send1(&s.url(), json!({"channel":"/meta/connect","clientId":id,"connectionType":"in-process"})).await;
    assert_eq!(r["error"], "301:in-process:Connection types not supported", "{r}");
    let r =
        send1(&s.url(), json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["in-process"]}))
            .await;
    assert_eq!(r["error"], "301:in-process:Connection types not supported", "{r}");
    // None of that hurt the session, and (as in Faye) the connectionType need not match the
    // transport actually used.
    assert!(poll(&s.url(), &id).await.is_empty());
    for t in ["websocket", "callback-polling", "cross-origin-long-polling"] {
        let r =
            send1(&s.url(), json!({"channel":"/meta/connect","clientId":id,"connectionType":t,"advice":{"timeout":0}}))
                .await;
        assert_eq!(r["successful"], json!(true), "{t}: {r}");
    }
}

// §6.3 item 12: an EventSource connect (over POST) is never held, and its advice asks the
// client to wait the timeout before the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_connect_is_immediate_with_interval_advice() {
    let s = server(2).await;
    let id = crier_tests::connected_client(&s.url()).await;
    let (r, took) = timed_connect(&s.url(), &id, json!({"connectionType":"eventsource"})).await;
    assert!(took < Duration::from_millis(1000), "eventsource connect took {took:?}");
    assert_eq!(r[0]["successful"], json!(true), "{r:?}");
    assert_eq!(r[0]["advice"], json!({"reconnect":"retry","interval":2000,"timeout":0}));
}

// §6.3 item 13: a client not seen for more than 2T is gone: 401 and handshake advice; a
// fresh handshake and re-subscribe then work as the Faye client does them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_expires_then_rehandshake_and_resubscribe() {
    let s = server(1).await;
    let url = s.url();
    let old = subscriber(&url, "/live").await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    s.engine.sweep().await;
    let r = send1(&url, json!({"channel":"/meta/connect","clientId":old,"connectionType":"long-polling"})).await;
    assert_eq!(r["error"], format!("401:{old}:Unknown client"), "{r}");
    assert_eq!(r["advice"], json!({"reconnect":"handshake"}));
    assert!(r.get("clientId").is_none(), "{r}");
    let r = send1(&url, json!({"channel":"/meta/subscribe","clientId":old,"subscription":"/live"})).await;
    assert_eq!(r["error"], format!("401:{old}:Unknown client"), "{r}");

    let new = subscriber(&url, "/live").await;
    assert_ne!(new, old);
    publish(&url, "/live", json!("again")).await;
    assert_eq!(poll(&url, &new).await, vec![json!({"channel":"/live","data":"again"})]);
}

// §6.3 item 25.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_then_401_and_held_connect_returns() {
    let s = server(4).await;
    let url = s.url();
    let id = subscriber(&url, "/d").await;
    let held = {
        let (url, id) = (url.clone(), id.clone());
        tokio::spawn(async move { timed_connect(&url, &id, json!({})).await })
    };
    wait_metric(&s, "crier_polls_in_flight", 1).await;
    let r = send1(&url, json!({"channel":"/meta/disconnect","clientId":id,"id":"d1"})).await;
    assert_eq!(r, json!({"id":"d1","clientId":id,"channel":"/meta/disconnect","successful":true}));
    let (held_reply, took) = held.await.expect("connect task");
    assert!(took < Duration::from_secs(2), "held connect released after {took:?}");
    assert_eq!(held_reply[0]["channel"], "/meta/connect");

    let r = send1(&url, json!({"channel":"/meta/disconnect","clientId":id,"id":"d2"})).await;
    assert_eq!(
        r,
        json!({"id":"d2","channel":"/meta/disconnect","successful":false,"error":format!("401:{id}:Unknown client")})
    );
    let r = send1(&url, json!({"channel":"/meta/disconnect"})).await;
    assert_eq!(r["error"], "402:clientId:Missing required parameter", "{r}");
    let r = send1(&url, json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"})).await;
    assert_eq!(r["error"], format!("401:{id}:Unknown client"), "{r}");
}

/// Writes a held long-poll connect on a raw TCP socket, so the test can drop the socket.
async fn raw_held_connect(s: &crier_tests::TestServer, id: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let body = json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}).to_string();
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        s.mount,
        s.addr,
        body.len(),
        body
    );
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.expect("tcp connect");
    tcp.write_all(req.as_bytes()).await.expect("write request");
    tcp
}

// §6.3 item 43, divergence (d): a message published while the client's long-poll is
// abandoned (TCP closed) is delivered on the next connect. Faye writes it to the dead
// socket and loses it (faye-behaviour.md §2.11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_published_after_the_poll_was_abandoned_is_not_lost() {
    let s = server(5).await;
    let url = s.url();
    let id = subscriber(&url, "/precious").await;
    let tcp = raw_held_connect(&s, &id).await;
    wait_metric(&s, "crier_polls_in_flight", 1).await;
    drop(tcp);
    // The server noticed the closed connection and dropped the held connect.
    wait_metric(&s, "crier_polls_in_flight", 0).await;
    publish(&url, "/precious", json!({"n":1})).await;
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/precious","data":{"n":1}})]);
}

// §6.3 item 44, divergence (c): a second concurrent connect releases the first at once
// with a successful empty reply. Faye orphans the first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_concurrent_connect_releases_the_first() {
    let s = server(4).await;
    let url = s.url();
    let id = subscriber(&url, "/two").await;
    let first = {
        let (url, id) = (url.clone(), id.clone());
        tokio::spawn(async move { timed_connect(&url, &id, json!({"id":"first"})).await })
    };
    wait_metric(&s, "crier_polls_in_flight", 1).await;
    let mut second = {
        let (url, id) = (url.clone(), id.clone());
        tokio::spawn(async move { timed_connect(&url, &id, json!({"id":"second"})).await })
    };
    let (r1, took) = tokio::time::timeout(Duration::from_secs(2), first)
        .await
        .expect("the first connect is released promptly")
        .expect("connect task");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        r1,
        vec![json!({"id":"first","clientId":id,"channel":"/meta/connect","successful":true,
                              "advice":{"reconnect":"retry","interval":0,"timeout":4000}})]
    );
    // The second is the one held now (bounded check), and it gets the next message.
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut second).await.is_err(), "second not held");
    publish(&url, "/two", json!(2)).await;
    let (r2, _) = second.await.expect("connect task");
    assert_eq!(r2[0]["id"], "second");
    assert_eq!(deliveries(&r2), vec![json!({"channel":"/two","data":2})]);
    assert_eq!(metric(&s, "crier_polls_in_flight").await, 0);
}
