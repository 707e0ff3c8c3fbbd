//! The Redis backend on a Redis Cluster (3 shards, channels spread over all of them) and on
//! a Sentinel group through a failover. All started locally from the `redis-server` binary.

use std::time::Duration;

use crier_redis::testing::{RedisCluster, RedisSentinel};
use crier_tests::{Cluster, connected_client, poll, post_json, run_node};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_with_channels_on_every_shard() {
    let redis = RedisCluster::start(3);
    let c = Cluster::start_url(&redis.url(), 2, 10).await;
    let id = connected_client(&c.url(0)).await;
    let channels: Vec<String> = (0..24).map(|i| format!("/spread/c{i}")).collect();
    let (_, r) =
        post_json(&c.url(1), &json!({"channel":"/meta/subscribe","clientId":id,"subscription":channels})).await;
    assert_eq!(r[0]["successful"], json!(true), "{r}");
    for (i, ch) in channels.iter().enumerate() {
        let (_, r) = post_json(&c.url(1), &json!({"channel": ch, "data": i})).await;
        assert_eq!(r[0]["successful"], json!(true), "{r}");
    }
    // The channels' keys landed on every shard.
    for (i, shard) in redis.nodes.iter().enumerate() {
        let size = shard.cmd(&["DBSIZE"]).unwrap_or_default();
        let n: u64 = size.trim_start_matches(':').trim().parse().unwrap_or(0);
        assert!(n > 0, "shard {i} holds keys ({size:?})");
    }
    let mut got: Vec<i64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < channels.len() && tokio::time::Instant::now() < deadline {
        let (data, reply) = poll(&c.url(0), &id, 2000).await;
        assert_eq!(reply["successful"], json!(true), "{reply}");
        got.extend(data.iter().filter_map(Value::as_i64));
    }
    got.sort_unstable();
    assert_eq!(got, (0..channels.len() as i64).collect::<Vec<_>>(), "each message once");
    // And the real Faye client across the two nodes, over WebSocket.
    let (ok, out) = run_node("cluster.js", &c.url(0), "websocket", &["--pub", &c.url(1), "--count", "30"]).await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_sessions_and_delivery() {
    let mut group = RedisSentinel::start();
    let c = Cluster::start_url(&group.url(), 2, 10).await;
    let id = connected_client(&c.url(0)).await;
    let (_, r) =
        post_json(&c.url(0), &json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/failover"})).await;
    assert_eq!(r[0]["successful"], json!(true), "{r}");
    post_json(&c.url(1), &json!({"channel":"/failover","data":"before"})).await;
    let (data, _) = poll(&c.url(0), &id, 3000).await;
    assert_eq!(data, vec![json!("before")]);
    // Once the replica has everything written so far, lose the master.
    assert!(group.replica_caught_up(Duration::from_secs(10)), "the replica applied the master's writes");
    group.master.kill();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while group.master_port() != Some(group.replica.port) {
        assert!(tokio::time::Instant::now() < deadline, "sentinel promoted the replica");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Publishes fail (407) until the nodes follow the sentinel to the new master, then work.
    let mut accepted = None;
    let mut i = 0;
    while accepted.is_none() && tokio::time::Instant::now() < deadline {
        let (_, r) = post_json(&c.url(1), &json!({"channel":"/failover","data":i})).await;
        if r[0]["successful"] == json!(true) {
            accepted = Some(i);
        } else {
            assert!(r[0]["error"].as_str().unwrap_or_default().starts_with("407:"), "{r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        i += 1;
    }
    let first = accepted.expect("publishes accepted after the failover");
    for k in first + 1..first + 6 {
        let (_, r) = post_json(&c.url(1), &json!({"channel":"/failover","data":k})).await;
        assert_eq!(r[0]["successful"], json!(true), "{r}");
    }
    let mut got: Vec<i64> = Vec::new();
    while got.len() < 6 && tokio::time::Instant::now() < deadline + Duration::from_secs(10) {
        let (data, reply) = poll(&c.url(0), &id, 1000).await;
        assert_eq!(reply["successful"], json!(true), "session survived the failover: {reply}");
        got.extend(data.iter().filter_map(Value::as_i64));
    }
    assert_eq!(got, (first..first + 6).collect::<Vec<_>>(), "every acknowledged publish delivered once");
}
