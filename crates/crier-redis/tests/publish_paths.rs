//! How a publish reaches Redis: one script call for every matching name on one server, one
//! call per name where the server keeps keys of different slots apart. A server in cluster
//! mode behind a plain `redis://` URL (one shard holding every slot, as some managed Redis
//! offerings run) refuses the single call; publishing must go on with one call per name.

use std::sync::Arc;
use std::time::Duration;

use crier_engine::conformance::Harness;
use crier_engine::{Engine, EngineConfig};
use crier_redis::testing::{RedisServer, unique_prefix};
use crier_redis::{RedisBackend, RedisConfig};
use serde_json::json;

async fn harness(server: &RedisServer, label: &str) -> Harness {
    let config = RedisConfig { url: server.url(), prefix: unique_prefix(label), ..RedisConfig::default() };
    let backend = RedisBackend::connect(config, Duration::from_secs(4)).await.expect("redis backend connects");
    let config = EngineConfig { timeout_secs: 2, ..EngineConfig::default() };
    Harness { engine: Engine::builder(config, Arc::new(backend)).build() }
}

/// An exact and a wildcard subscriber (two names, two hash tags) both get three publishes.
/// Returns the script calls the publishes made.
async fn both_subscribers_get_it(h: &Harness, server: &RedisServer) -> u64 {
    let exact = h.client().await;
    let wildcard = h.client().await;
    h.subscribe(&exact, "/a/b").await;
    h.subscribe(&wildcard, "/a/*").await;
    server.cmd(&["CONFIG", "RESETSTAT"]).expect("reset stats");
    for i in 0..3 {
        h.publish("/a/b", json!(i)).await;
    }
    // A write of the node's marks (EVALSHA with one HSET) may fall in between.
    let scripts = server.calls("evalsha") - server.calls("hset");
    for id in [&exact, &wildcard] {
        let got: Vec<_> = h.poll(id).await.iter().filter_map(|m| m.data().cloned()).collect();
        assert_eq!(got, vec![json!(0), json!(1), json!(2)], "{id}");
    }
    scripts
}

/// A publish re-sent by its client reaches an exact and a wildcard subscriber once: the
/// retry key sits on the exact name's slot, and the other names are published only if it
/// was not set.
async fn a_retry_reaches_every_name_once(h: &Harness) {
    let exact = h.client().await;
    let wildcard = h.client().await;
    let publisher = h.client().await;
    h.subscribe(&exact, "/r/b").await;
    h.subscribe(&wildcard, "/r/*").await;
    for (id, data) in [("1", "a"), ("1", "a"), ("2", "b"), ("1", "a")] {
        let r = h.send(vec![json!({"channel":"/r/b","clientId":publisher,"id":id,"data":data})]).await;
        assert_eq!(r[0].successful(), Some(true), "{r:?}");
    }
    for id in [&exact, &wildcard] {
        let got: Vec<_> = h.poll(id).await.iter().filter_map(|m| m.data().cloned()).collect();
        assert_eq!(got, vec![json!("a"), json!("b")], "{id}");
    }
}

/// An API broadcast with an idempotency key claims it (`p`) and marks it done (`d`) once
/// every channel is published. A claim left at `p` (the node stopped half-way; made here
/// by hand) makes the app's retry broadcast again: at least once, never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_call_left_half_done_is_made_again_on_retry() {
    let server = RedisServer::start();
    let h = harness(&server, "claims").await;
    let s = h.client().await;
    h.subscribe(&s, "/c/a").await;
    let channels = vec!["/c/a".to_owned(), "/c/b".to_owned()];
    let call = || h.engine.api_broadcast(&channels, json!("x"), None, true, Some("order-9"));
    let id = call().await.expect("broadcast");
    let hex = crier_engine::RetryKey::api_call("order-9", "broadcast").hex();
    let key = server.cmd(&["KEYS", &format!("*{{r:{hex}}}")]).unwrap_or_default();
    let key = key.lines().find(|l| l.contains(&hex)).expect("the claim").to_owned();
    assert_eq!(server.cmd(&["GET", &key]).unwrap_or_default().lines().nth(1), Some("d"));
    assert_eq!(call().await.expect("broadcast"), id, "a repeat");
    server.cmd(&["SET", &key, "p", "KEEPTTL"]).expect("left half done");
    assert_eq!(call().await.expect("broadcast"), id, "made again, same id");
    assert_eq!(server.cmd(&["GET", &key]).unwrap_or_default().lines().nth(1), Some("d"));
    let got: Vec<_> = h.poll(&s).await.iter().filter_map(|m| m.data().cloned()).collect();
    assert_eq!(got, vec![json!("x"), json!("x")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_publishes_to_every_name() {
    let server = RedisServer::start();
    let h = harness(&server, "one-call").await;
    // One script call per publish for the four matching names (/a/b, /a/*, /a/**, /**).
    assert_eq!(both_subscribers_get_it(&h, &server).await, 3);
    a_retry_reaches_every_name_once(&h).await;
    // A publish that reached nobody keeps no retry key (it costs no memory).
    let publisher = h.client().await;
    let r = h.send(vec![json!({"channel":"/nobody/here","clientId":publisher,"id":"1","data":1})]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    assert_eq!(server.cmd(&["KEYS", "*:r:*"]).unwrap_or_default().lines().filter(|l| l.contains("/nobody")).count(), 0);
    assert!(server.cmd(&["KEYS", "*:r:*"]).unwrap_or_default().contains("{c:/r/b}:r:"), "a delivered one does");
}

/// On Redis Cluster the exact name's call sets the retry key to `p`, and it becomes `d`
/// once the other names are done. A node that stopped in between leaves `p` (made here by
/// hand): the client's retry then goes to the other names again, so the wildcard
/// subscriber gets it (twice: at least once, never lost), the exact one does not get it
/// again, and the key is done after that.
async fn a_retry_after_a_half_done_publish_reaches_the_other_names(h: &Harness, server: &RedisServer) {
    let exact = h.client().await;
    let wildcard = h.client().await;
    let publisher = h.client().await;
    h.subscribe(&exact, "/h/b").await;
    h.subscribe(&wildcard, "/h/*").await;
    let m = json!({"channel":"/h/b","clientId":publisher,"id":"1","data":"a"});
    assert_eq!(h.send(vec![m.clone()]).await[0].successful(), Some(true));
    let keys = server.cmd(&["KEYS", "*{c:/h/b}:r:*"]).unwrap_or_default();
    let key = keys.lines().find(|l| l.contains(":r:")).expect("the retry key").to_owned();
    assert_eq!(server.cmd(&["GET", &key]).unwrap_or_default().lines().nth(1), Some("d"), "done");
    let ttl: i64 = server.cmd(&["PTTL", &key]).unwrap_or_default().trim().trim_start_matches(':').parse().unwrap_or(0);
    assert!(ttl > 100_000, "still expiring with the window after it was marked done: {ttl}");
    server.cmd(&["SET", &key, "p", "KEEPTTL"]).expect("left half done");
    assert_eq!(h.send(vec![m.clone()]).await[0].successful(), Some(true));
    assert_eq!(server.cmd(&["GET", &key]).unwrap_or_default().lines().nth(1), Some("d"), "done again");
    assert_eq!(h.send(vec![m]).await[0].successful(), Some(true));
    let data = |id: &String| {
        let id = id.clone();
        async move { h.poll(&id).await.iter().filter_map(|m| m.data().cloned()).collect::<Vec<_>>() }
    };
    assert_eq!(data(&exact).await, vec![json!("a")]);
    assert_eq!(data(&wildcard).await, vec![json!("a"), json!("a")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_mode_server_behind_a_plain_url_still_gets_every_publish() {
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    server.cmd(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).expect("slots assigned");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !server.cmd(&["CLUSTER", "INFO"]).unwrap_or_default().contains("cluster_state:ok") {
        assert!(tokio::time::Instant::now() < deadline, "cluster did not become ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = harness(&server, "crossslot").await;
    // Refused once (not counted as a call), then one call per name.
    assert_eq!(both_subscribers_get_it(&h, &server).await, 3 * 4);
    a_retry_reaches_every_name_once(&h).await;
    a_retry_after_a_half_done_publish_reaches_the_other_names(&h, &server).await;
}

/// `redis.log_retention_secs` is how long a name's log keeps messages; once publishing
/// stops, the log key itself goes after twice that. A value below the floor (the session
/// lifetime plus 10 s: logs must outlive every session that may still read them) is raised
/// to the floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_retention_is_configurable_and_never_below_the_session_lifetime() {
    let server = RedisServer::start();
    // The session lifetime is 4 s, so the floor is 14 s.
    for (secs, retention_ms) in [(100, 100_000), (5, 14_000)] {
        let prefix = unique_prefix("retention");
        let config = RedisConfig {
            url: server.url(),
            prefix: prefix.clone(),
            log_retention_secs: secs,
            ..RedisConfig::default()
        };
        let backend = RedisBackend::connect(config, Duration::from_secs(4)).await.expect("redis backend connects");
        let config = EngineConfig { timeout_secs: 2, ..EngineConfig::default() };
        let h = Harness { engine: Engine::builder(config, Arc::new(backend)).build() };
        let a = h.client().await;
        h.subscribe(&a, "/kept").await;
        h.publish("/kept", json!(1)).await;
        let reply = server.cmd(&["PTTL", &format!("{prefix}:{{c:/kept}}:log")]).unwrap_or_default();
        let ttl: u64 = reply.trim().trim_start_matches(':').parse().unwrap_or(0);
        assert!(
            (2 * retention_ms - 5_000..=2 * retention_ms).contains(&ttl),
            "log_retention_secs {secs}: the log expires in {ttl} ms, want about {}",
            2 * retention_ms
        );
    }
}
