//! Wire conformance for `/meta/subscribe`, `/meta/unsubscribe`, publishing and routing over
//! raw HTTP: faye-behaviour.md §6.3 items 14–24, and divergences (a), (e) and (j).

mod common;

use std::time::{Duration, Instant};

use common::{poll, publish, send1, server, subscriber, until_fence};
use crier_engine::EngineConfig;
use crier_tests::{Options, TestServer, connected_client, subscribe};
use serde_json::{Value, json};

fn sub_msg(id: &str, subscription: Value) -> Value {
    json!({"channel":"/meta/subscribe","clientId":id,"subscription":subscription,"id":"s"})
}

// §6.3 item 14: `subscription` is echoed with the type it was sent with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_is_echoed_as_sent() {
    let s = server(3).await;
    let url = s.url();
    let id = connected_client(&url).await;
    let r = send1(&url, sub_msg(&id, json!("/foo"))).await;
    assert_eq!(r, json!({"id":"s","clientId":id,"channel":"/meta/subscribe","successful":true,"subscription":"/foo"}));
    let r = send1(&url, sub_msg(&id, json!(["/a", "/b/*"]))).await;
    assert_eq!(r["subscription"], json!(["/a", "/b/*"]), "{r}");
    assert_eq!(r["successful"], json!(true));
    let r = send1(&url, sub_msg(&id, json!("/foo/**"))).await;
    assert_eq!(r["successful"], json!(true), "{r}");
    assert!(r.get("advice").is_none(), "{r}");
    // An empty list is a successful no-op.
    let r = send1(&url, sub_msg(&id, json!([]))).await;
    assert_eq!(r["successful"], json!(true), "{r}");
    assert_eq!(r["subscription"], json!([]));
}

// §6.3 item 15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_and_invalid_subscriptions() {
    let s = server(3).await;
    let url = s.url();
    let id = connected_client(&url).await;
    for (ch, code) in [
        ("/meta/foo", "403:/meta/foo:Forbidden channel"),
        ("/service/foo", "403:/service/foo:Forbidden channel"),
        ("/meta/**", "403:/meta/**:Forbidden channel"),
        ("/service/*", "403:/service/*:Forbidden channel"),
        ("foo", "405:foo:Invalid channel"),
        ("/foo/*/bar", "405:/foo/*/bar:Invalid channel"),
        ("/a/***", "405:/a/***:Invalid channel"),
    ] {
        for channel in ["/meta/subscribe", "/meta/unsubscribe"] {
            let r = send1(&url, json!({"channel":channel,"clientId":id,"subscription":ch})).await;
            assert_eq!(r["error"], code, "{channel} {ch}: {r}");
            assert_eq!(r["successful"], json!(false));
            assert_eq!(r["clientId"], id.as_str(), "clientId kept on failure: {r}");
            assert_eq!(r["subscription"], ch);
            assert!(r.get("advice").is_none(), "{r}");
        }
    }
}

// §6.3 item 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_unknown_client_and_missing_parameters() {
    let s = server(3).await;
    let url = s.url();
    let unknown = "z".repeat(31);
    let r = send1(&url, sub_msg(&unknown, json!("/foo"))).await;
    assert_eq!(
        r,
        json!({"id":"s","clientId":unknown,"channel":"/meta/subscribe","successful":false,
               "error":format!("401:{unknown}:Unknown client"),"subscription":"/foo"})
    );
    let id = connected_client(&url).await;
    let r = send1(&url, json!({"channel":"/meta/subscribe","clientId":id})).await;
    assert_eq!(r["error"], "402:subscription:Missing required parameter", "{r}");
    assert_eq!(r["subscription"], json!([]));
    assert_eq!(r["clientId"], id.as_str());
    let r = send1(&url, json!({"channel":"/meta/subscribe","subscription":"/foo"})).await;
    assert_eq!(r["error"], "402:clientId:Missing required parameter", "{r}");
    // Precedence: a missing subscription beats a missing clientId.
    let r = send1(&url, json!({"channel":"/meta/unsubscribe"})).await;
    assert_eq!(r["error"], "402:subscription:Missing required parameter", "{r}");
}

// §6.3 item 17, divergence (e): a list with an invalid member subscribes nothing (Faye
// subscribes the members before the bad one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_lists_are_all_or_nothing() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/fence").await;
    let r = send1(&url, sub_msg(&id, json!(["/ok1", "bad", "/ok2"]))).await;
    assert_eq!(r["successful"], json!(false), "{r}");
    assert_eq!(r["error"], "405:bad:Invalid channel");
    assert_eq!(r["subscription"], json!(["/ok1", "bad", "/ok2"]));
    let r = send1(&url, sub_msg(&id, json!(["/ok1", "/service/x"]))).await;
    assert_eq!(r["error"], "403:/service/x:Forbidden channel", "{r}");
    publish(&url, "/ok1", json!(1)).await;
    publish(&url, "/ok2", json!(2)).await;
    assert_eq!(until_fence(&url, &id, "/fence").await, Vec::<Value>::new());
}

// §6.3 item 18.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/fence").await;
    let r = send1(&url, json!({"channel":"/meta/unsubscribe","clientId":id,"subscription":"/never","id":"u"})).await;
    assert_eq!(
        r,
        json!({"id":"u","clientId":id,"channel":"/meta/unsubscribe","successful":true,"subscription":"/never"})
    );
    subscribe(&url, &id, "/gone").await;
    let r = send1(&url, json!({"channel":"/meta/unsubscribe","clientId":id,"subscription":["/gone"]})).await;
    assert_eq!(r["successful"], json!(true), "{r}");
    assert_eq!(r["subscription"], json!(["/gone"]));
    publish(&url, "/gone", json!(1)).await;
    assert_eq!(until_fence(&url, &id, "/fence").await, Vec::<Value>::new());
    let unknown = "q".repeat(31);
    let r = send1(&url, json!({"channel":"/meta/unsubscribe","clientId":unknown,"subscription":"/x"})).await;
    assert_eq!(r["error"], format!("401:{unknown}:Unknown client"), "{r}");
}

// §6.3 item 19.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_unknown_client_publishes_succeed() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/anon").await;
    let r = send1(&url, json!({"channel":"/anon","data":"a","id":"1"})).await;
    assert_eq!(r, json!({"id":"1","channel":"/anon","successful":true}));
    let r = send1(&url, json!({"channel":"/anon","data":"b","clientId":"nonexistent"})).await;
    assert_eq!(r, json!({"clientId":"nonexistent","channel":"/anon","successful":true}));
    assert_eq!(
        poll(&url, &id).await,
        vec![json!({"channel":"/anon","data":"a"}), json!({"channel":"/anon","data":"b"})]
    );
}

// §6.3 item 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_validation() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/**").await;
    for (msg, want) in [
        (json!({"channel":"/foo/*","data":1}), "405:/foo/*:Invalid channel"),
        (json!({"channel":"/**","data":1}), "405:/**:Invalid channel"),
        (json!({"channel":"/foo"}), "402:data:Missing required parameter"),
        // Missing data wins over an invalid channel.
        (json!({"channel":"invalid"}), "402:data:Missing required parameter"),
        (json!({"data":1}), "405::Invalid channel"),
    ] {
        let r = send1(&url, msg.clone()).await;
        assert_eq!(r["error"], want, "{msg} -> {r}");
        assert_eq!(r["successful"], json!(false));
        assert!(r.get("advice").is_none());
    }
    // `data: null` is accepted (Faye's JS server) and delivered as null.
    let r = send1(&url, json!({"channel":"/nullable","data":null})).await;
    assert_eq!(r["successful"], json!(true), "{r}");
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/nullable","data":null})]);
}

// §6.3 item 21 (CVE-2020-11020): meta channels match exactly and a publish to one has no
// subscription side effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_meta_channels_are_forbidden_without_side_effects() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/fence").await;
    for ch in ["/meta/x", "/meta/subscribe/x", "/meta/connect/", "/meta"] {
        let r = send1(&url, json!({"channel":ch,"clientId":id,"subscription":"/secret","data":1,"id":"m","advice":{}}))
            .await;
        assert_eq!(
            r,
            json!({"id":"m","clientId":id,"channel":ch,"successful":false,"error":format!("403:{ch}:Forbidden channel")})
        );
    }
    publish(&url, "/secret", json!("leak")).await;
    assert_eq!(until_fence(&url, &id, "/fence").await, Vec::<Value>::new());
}

// §6.3 item 22.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_routing_and_once_per_subscriber() {
    let s = server(3).await;
    let url = s.url();
    let mut subs = Vec::new();
    for pattern in ["/messages/*", "/messages/**", "/**", "/*", "/messages/bar"] {
        subs.push((pattern, subscriber(&url, pattern).await));
    }
    let both = subscriber(&url, "/messages/*").await;
    subscribe(&url, &both, "/**").await;

    publish(&url, "/messages/foo", json!("m1")).await;
    let m = json!({"channel":"/messages/foo","data":"m1"});
    for (pattern, id) in &subs {
        let want = if matches!(*pattern, "/messages/*" | "/messages/**" | "/**") { vec![m.clone()] } else { vec![] };
        assert_eq!(poll(&url, id).await, want, "subscriber of {pattern}");
    }
    assert_eq!(poll(&url, &both).await, vec![m.clone()], "matched twice, delivered once");

    // Publishing twice (even with the same id) delivers twice.
    for _ in 0..2 {
        let r = send1(&url, json!({"channel":"/messages/foo","data":"m1","id":"same"})).await;
        assert_eq!(r["successful"], json!(true));
    }
    assert_eq!(poll(&url, &both).await, vec![m.clone(), m]);
    for (_, id) in &subs {
        poll(&url, id).await;
    }
    // `/*` matches one segment, `/**` deeper ones.
    publish(&url, "/top", json!(0)).await;
    publish(&url, "/messages/a/b", json!(3)).await;
    let star = &subs[3].1;
    assert_eq!(poll(&url, star).await, vec![json!({"channel":"/top","data":0})]);
    let deep = &subs[1].1;
    assert_eq!(poll(&url, deep).await, vec![json!({"channel":"/messages/a/b","data":3})]);
}

// §6.3 item 23.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globstar_subscriber_receives_service_publishes() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/**").await;
    publish(&url, "/service/x", json!({"rpc":true})).await;
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/service/x","data":{"rpc":true}})]);
}

// §6.3 item 24, with divergence (a): `ext` and unknown fields travel, multibyte data is
// intact, and neither the publisher's `id` nor its `clientId` is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_message_keeps_ext_and_unknown_fields() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/full").await;
    let publisher = connected_client(&url).await;
    let text = "Apple = \u{f8ff} 🍎, ünïcødé, 中文, \u{2028}";
    let r = send1(
        &url,
        json!({"channel":"/full","data":{"text":text},"id":"11","clientId":publisher,"ext":{"x":1},"blank":null,"extra":[1,{"y":2}]}),
    )
    .await;
    assert_eq!(r["successful"], json!(true), "{r}");
    assert_eq!(
        poll(&url, &id).await,
        vec![json!({"channel":"/full","data":{"text":text},"ext":{"x":1},"blank":null,"extra":[1,{"y":2}]})]
    );
}

fn limited(max_subscriptions: usize) -> Options {
    Options {
        engine: Some(EngineConfig { timeout_secs: 3, max_subscriptions, ..EngineConfig::default() }),
        ..Options::default()
    }
}

// Divergence (j): at most `engine.max_subscriptions` per session; a request that would go
// over subscribes nothing. Subscribing again to something held, or repeating an entry in
// one list, does not count twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limit_per_session() {
    let s = TestServer::start_with(limited(2)).await;
    let url = s.url();
    let id = connected_client(&url).await;
    let r = send1(&url, sub_msg(&id, json!(["/a", "/a", "/b"]))).await;
    assert_eq!(r["successful"], json!(true), "a repeated entry counts once: {r}");
    let r = send1(&url, sub_msg(&id, json!(["/a", "/b"]))).await;
    assert_eq!(r["successful"], json!(true), "held subscriptions do not count again: {r}");
    let r = send1(&url, sub_msg(&id, json!(["/b", "/d"]))).await;
    assert_eq!(r["successful"], json!(false), "{r}");
    assert_eq!(r["error"], "403::Too many subscriptions (limit 2)");
    assert_eq!(r["clientId"], id.as_str());
    publish(&url, "/d", json!("no")).await;
    publish(&url, "/b", json!("yes")).await;
    assert_eq!(poll(&url, &id).await, vec![json!({"channel":"/b","data":"yes"})]);
    // Unsubscribing makes room again.
    let r = send1(&url, json!({"channel":"/meta/unsubscribe","clientId":id,"subscription":"/a"})).await;
    assert_eq!(r["successful"], json!(true));
    let r = send1(&url, sub_msg(&id, json!("/d"))).await;
    assert_eq!(r["successful"], json!(true), "{r}");
}

// Divergence (j) at scale: 10,000 subscriptions in one message are refused quickly and
// leave nothing subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscriptions_in_one_message() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/fence").await;
    let many: Vec<String> = (0..10_000).map(|i| format!("/many/c{i}")).collect();
    let t = Instant::now();
    // (post_json rather than send: a failure message should not print 10,000 names.)
    let (status, r) = crier_tests::post_json(&url, &sub_msg(&id, json!(many))).await;
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    assert_eq!(r[0]["successful"], json!(false), "{}", r[0]["error"]);
    assert_eq!(r[0]["error"], "403::Too many subscriptions (limit 1000)");
    publish(&url, "/many/c0", json!(0)).await;
    publish(&url, "/many/c9999", json!(9999)).await;
    assert_eq!(until_fence(&url, &id, "/fence").await, Vec::<Value>::new());
}
