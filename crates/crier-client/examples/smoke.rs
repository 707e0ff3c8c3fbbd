//! Network smoke test of crier-client against a live Bayeux server (Faye or Crier).
//!
//! Usage: `cargo run -p crier-client --example smoke -- http://127.0.0.1:18000/faye`
//!
//! Prints one PASS/FAIL line per check and exits non-zero if any check failed.
//! `RUST_LOG=crier_client=debug` shows the client's own logging.

use std::process::ExitCode;
use std::time::Duration;

use crier_client::{Client, ClientError, Message, Publisher, Subscription, Transport};
use serde_json::{Value, json};

/// How long to wait for a delivery that should arrive.
const ARRIVE: Duration = Duration::from_secs(5);
/// How long to wait to be fairly sure a delivery will not arrive.
const SILENCE: Duration = Duration::from_millis(700);

#[derive(Default)]
struct Report {
    failed: usize,
    passed: usize,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("PASS {name}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }

    fn result<T>(&mut self, name: &str, r: Result<T, ClientError>) -> Option<T> {
        match r {
            Ok(v) => {
                self.check(name, true, "");
                Some(v)
            }
            Err(e) => {
                self.check(name, false, e);
                None
            }
        }
    }
}

async fn next(sub: &mut Subscription, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, sub.recv()).await.ok().flatten()
}

fn data(m: &Option<Message>) -> Option<Value> {
    m.as_ref().and_then(|m| m.data().cloned())
}

/// Expects exactly `want` as the next delivery.
async fn expect(r: &mut Report, name: &str, sub: &mut Subscription, want: Value) {
    let got = next(sub, ARRIVE).await;
    r.check(name, data(&got) == Some(want.clone()), format!("want {want}, got {got:?}"));
}

/// Expects no delivery for a while.
async fn expect_none(r: &mut Report, name: &str, sub: &mut Subscription) {
    let got = next(sub, SILENCE).await;
    r.check(name, got.is_none(), format!("unexpected {got:?}"));
}

/// Makes the server forget `client_id`, as if the session had expired.
async fn external_disconnect(url: &str, client_id: &str) -> Result<String, reqwest::Error> {
    let body = json!([{"channel": "/meta/disconnect", "clientId": client_id, "id": "ext"}]);
    reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await?
        .text()
        .await
}

/// Forces a re-handshake of `client` and checks it re-subscribed `sub`, by publishing
/// from `other` to `channel`.
async fn rehandshake(
    r: &mut Report,
    url: &str,
    label: &str,
    client: &Client,
    other: &Client,
    sub: &mut Subscription,
    channel: &str,
) {
    let Some(old) = client.client_id() else {
        r.check(&format!("{label}: has a client id"), false, "none");
        return;
    };
    let mut watch = client.watch_client_id();
    watch.mark_unchanged();
    let answer = external_disconnect(url, &old).await;
    r.check(
        &format!("{label}: external /meta/disconnect"),
        matches!(&answer, Ok(t) if t.contains("true")),
        format!("{answer:?}"),
    );
    let wait = watch.wait_for(|v| v.as_ref().is_some_and(|id| *id != old));
    let new =
        tokio::time::timeout(Duration::from_secs(20), wait).await.ok().and_then(|r| r.ok()).and_then(|v| v.clone());
    r.check(&format!("{label}: re-handshake gives a new client id"), new.is_some(), "no new session within 20 s");
    let n = json!({"after": "rehandshake", "who": label});
    r.result(&format!("{label}: publish after re-handshake"), other.publish(channel, n.clone()).await);
    expect(r, &format!("{label}: re-subscribed after re-handshake"), sub, n).await;
}

async fn run(url: &str) -> Report {
    let mut r = Report::default();
    let build = |t: Transport| Client::builder(url).transport(t).ext(json!({"token": "smoke"})).build();
    let (Some(ws), Some(lp)) = (
        r.result("build ws client", build(Transport::WebSocket)),
        r.result("build lp client", build(Transport::LongPolling)),
    ) else {
        return r;
    };
    if r.result("ws: connect", ws.connect().await).is_none() | r.result("lp: connect", lp.connect().await).is_none() {
        return r;
    }
    let ok_id = |c: &Client| c.client_id().is_some_and(|id| !id.is_empty());
    r.check("client ids assigned", ok_id(&ws) && ok_id(&lp), format!("{:?} {:?}", ws.client_id(), lp.client_id()));

    // Subscribe and publish both ways.
    let (Some(mut ws_a), Some(mut lp_b)) = (
        r.result("ws: subscribe /smoke/a", ws.subscribe("/smoke/a").await),
        r.result("lp: subscribe /smoke/b", lp.subscribe("/smoke/b").await),
    ) else {
        return r;
    };
    let reply = lp.publish("/smoke/a", json!({"n": 1})).await;
    r.check(
        "lp: publish reply successful",
        matches!(&reply, Ok(m) if m.successful() == Some(true)),
        format!("{reply:?}"),
    );
    expect(&mut r, "lp -> ws delivery", &mut ws_a, json!({"n": 1})).await;
    r.result("ws: publish", ws.publish("/smoke/b", json!({"n": 2})).await);
    expect(&mut r, "ws -> lp delivery", &mut lp_b, json!({"n": 2})).await;
    r.result("ws: publish to itself", ws.publish("/smoke/a", json!({"self": true})).await);
    expect(&mut r, "ws: own publish delivered", &mut ws_a, json!({"self": true})).await;

    // Wildcards, and one copy per matching subscription.
    let ws_deep = r.result("ws: subscribe /smoke/w/**", ws.subscribe("/smoke/w/**").await);
    let ws_exact = r.result("ws: subscribe /smoke/w/z", ws.subscribe("/smoke/w/z").await);
    let lp_one = r.result("lp: subscribe /smoke/w/*", lp.subscribe("/smoke/w/*").await);
    if let (Some(mut deep), Some(mut exact), Some(mut one)) = (ws_deep, ws_exact, lp_one) {
        r.result("lp: publish /smoke/w/x/y", lp.publish("/smoke/w/x/y", json!("deep")).await);
        expect(&mut r, "ws: /** matches two levels", &mut deep, json!("deep")).await;
        expect_none(&mut r, "lp: /* does not match two levels", &mut one).await;
        r.result("lp: publish /smoke/w/z", lp.publish("/smoke/w/z", json!("z")).await);
        expect(&mut r, "ws: /** gets /smoke/w/z", &mut deep, json!("z")).await;
        expect(&mut r, "ws: exact gets /smoke/w/z", &mut exact, json!("z")).await;
        expect(&mut r, "lp: /* gets /smoke/w/z", &mut one, json!("z")).await;
        expect_none(&mut r, "ws: one copy per subscription (/**)", &mut deep).await;
        r.check("ws: one copy per subscription (exact)", exact.try_recv().is_none(), "duplicate");
    }

    // Errors.
    for (label, c) in [("ws", &ws), ("lp", &lp)] {
        let e = c.subscribe("/meta/foo").await;
        r.check(
            &format!("{label}: subscribe /meta/foo refused 403"),
            matches!(&e, Err(e) if e.bayeux_code() == Some(403)),
            format!("{e:?}"),
        );
        let e = c.publish("/smoke/*", json!(1)).await;
        r.check(
            &format!("{label}: publish to a pattern refused locally"),
            matches!(e, Err(ClientError::InvalidChannel { .. })),
            format!("{e:?}"),
        );
        let id = c.next_message_id();
        let raw: Message = match serde_json::from_value(json!({"channel": "/smoke/*", "data": 1, "id": id})) {
            Ok(m) => m,
            Err(e) => {
                r.check("raw message", false, e);
                continue;
            }
        };
        let replies = c.send_raw(vec![raw]).await;
        let refused = replies.as_ref().ok().and_then(|v| v.iter().find(|m| m.id() == Some(&json!(id))).cloned());
        let err = refused.as_ref().and_then(|m| m.error().map(str::to_owned));
        r.check(
            &format!("{label}: send_raw publish to pattern gets 405"),
            err.as_deref().is_some_and(|e| e.starts_with("405:")),
            format!("{replies:?}"),
        );
    }

    // Unsubscribe: explicit, and by drop with another subscription on the same pattern.
    let dup = r.result("ws: second subscription to /smoke/a", ws.subscribe("/smoke/a").await);
    if let Some(mut dup) = dup {
        drop(ws_a);
        r.result("lp: publish after dropping one of two", lp.publish("/smoke/a", json!("still")).await);
        expect(&mut r, "ws: remaining subscription still receives", &mut dup, json!("still")).await;
        r.result("ws: unsubscribe", dup.unsubscribe().await);
    }
    let mut probe = r.result("ws: probe subscription /smoke/other", ws.subscribe("/smoke/other").await);
    r.result("lp: publish to unsubscribed /smoke/a", lp.publish("/smoke/a", json!("gone")).await);
    if let Some(p) = probe.as_mut() {
        expect_none(&mut r, "ws: nothing delivered after unsubscribe", p).await;
    }
    drop(probe);

    // Re-handshake after the server forgets each client.
    let ws_r = r.result("ws: subscribe /smoke/r", ws.subscribe("/smoke/r").await);
    let lp_r = r.result("lp: subscribe /smoke/r2", lp.subscribe("/smoke/r2").await);
    if let (Some(mut ws_r), Some(mut lp_r)) = (ws_r, lp_r) {
        rehandshake(&mut r, url, "ws", &ws, &lp, &mut ws_r, "/smoke/r").await;
        rehandshake(&mut r, url, "lp", &lp, &ws, &mut lp_r, "/smoke/r2").await;
        r.result("ws: publish after both re-handshakes", ws.publish("/smoke/b", json!("b2")).await);
        expect(&mut r, "lp: older subscription re-subscribed too", &mut lp_b, json!("b2")).await;
    }

    // Handshake over WebSocket (CometD style).
    let cometd = Client::builder(url).transport(Transport::WebSocket).handshake_over_websocket(true).build();
    if let Some(c) = r.result("ws-handshake: build", cometd) {
        if r.result("ws-handshake: connect", c.connect().await).is_some() {
            if let Some(mut s) = r.result("ws-handshake: subscribe", c.subscribe("/smoke/c").await) {
                r.result("lp: publish /smoke/c", lp.publish("/smoke/c", json!("c")).await);
                expect(&mut r, "ws-handshake: delivery", &mut s, json!("c")).await;
            }
            r.result("ws-handshake: disconnect", c.disconnect().await);
        }
    }

    // Batching publishers: anonymous over HTTP, anonymous over WebSocket, and in-session.
    if let Some(mut sink) = r.result("ws: subscribe /smoke/pub/*", ws.subscribe("/smoke/pub/*").await) {
        let publishers = [
            ("anonymous http", Publisher::builder(url).build()),
            ("anonymous ws", Publisher::builder(url).transport(Transport::WebSocket).build()),
            ("lp session", lp.publisher().max_batch(7).build()),
            ("ws session", ws.publisher().max_batch(10).build()),
            ("anonymous http x4", Publisher::builder(url).max_batch(5).max_in_flight(4).build()),
        ];
        for (label, p) in publishers {
            let Some(p) = r.result(&format!("publisher {label}: build"), p) else { continue };
            let pending: Vec<_> = (0..50).map(|i| p.publish("/smoke/pub/x", json!({"i": i}))).collect();
            let bad = p.publish("/smoke/pub/*", json!(0));
            let results = futures::future::join_all(pending).await;
            let ok = results.iter().filter(|r| matches!(r, Ok(m) if m.successful() == Some(true))).count();
            r.check(
                &format!("publisher {label}: 50 results"),
                ok == 50,
                format!("{ok} ok; first error {:?}", results.iter().find(|r| r.is_err())),
            );
            r.check(&format!("publisher {label}: invalid channel refused"), bad.await.is_err(), "accepted");
            let mut seen = Vec::new();
            while seen.len() < 50 {
                match next(&mut sink, ARRIVE)
                    .await
                    .and_then(|m| m.data().and_then(|d| d.get("i")).and_then(Value::as_i64))
                {
                    Some(i) => seen.push(i),
                    None => break,
                }
            }
            // Concurrent batches may overtake each other; one in flight keeps call order.
            if label.ends_with("x4") {
                seen.sort_unstable();
            }
            r.check(
                &format!("publisher {label}: 50 deliveries in order"),
                seen == (0..50).collect::<Vec<_>>(),
                format!("{seen:?}"),
            );
            p.close().await;
        }
    }

    // Connection failures surface from connect().
    let refused = Client::builder("http://127.0.0.1:1/faye").transport(Transport::LongPolling).build();
    if let Ok(c) = refused {
        let e = c.connect().await;
        r.check("connect to a closed port fails with Http", matches!(e, Err(ClientError::Http(_))), format!("{e:?}"));
    }
    let stranger = url.rsplit_once('/').map(|(base, _)| format!("{base}/not-bayeux-{}", std::process::id()));
    if let Some(Ok(c)) = stranger
        .map(|u| Client::builder(u).transport(Transport::LongPolling).request_timeout(Duration::from_secs(3)).build())
    {
        let e = c.connect().await;
        r.check("connect to a non-Bayeux path fails", e.is_err(), "connected");
    }

    // Disconnect.
    r.result("ws: disconnect", ws.disconnect().await);
    r.result("lp: disconnect", lp.disconnect().await);
    r.check("lp: stream ends after disconnect", next(&mut lp_b, ARRIVE).await.is_none(), "still open");
    let after = ws.publish("/smoke/a", json!(0)).await;
    r.check("ws: publish after disconnect is Closed", matches!(after, Err(ClientError::Closed)), format!("{after:?}"));
    r.check("client ids cleared", ws.client_id().is_none() && lp.client_id().is_none(), "still set");
    r
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: smoke URL   (e.g. http://127.0.0.1:18000/faye)");
        return ExitCode::from(2);
    };
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let mut r = run(&url).await;
    // Everything is dropped now: no task of the client may outlive it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while metrics.num_alive_tasks() > baseline && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alive = metrics.num_alive_tasks();
    r.check("no tasks left after dropping everything", alive <= baseline, format!("{alive} alive, {baseline} before"));
    println!("{} passed, {} failed", r.passed, r.failed);
    if r.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
