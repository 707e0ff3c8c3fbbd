//! A cluster of Crier nodes on one real Redis (started for this test process; a fresh key
//! prefix per test): cross-node delivery with the real Faye client, long-polling sessions
//! that change node on every connect, socket sessions that move, cross-node disconnect,
//! Redis cost per publish (also while sockets stream), and a Redis restart.

use std::sync::OnceLock;
use std::time::Duration;

use crier_redis::testing::RedisServer;
use crier_tests::{
    Cluster, RawWs, connected_client, eventually, http, metric, poll, post_json, run_node, socket_subscriber, subscribe,
};
use futures::StreamExt;
use serde_json::{Value, json};

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

async fn publish(url: &str, channel: &str, data: Value) -> Value {
    let (status, r) = post_json(url, &json!({"channel": channel, "data": data})).await;
    assert_eq!(status, 200, "{r}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faye_client_across_nodes_over_websocket() {
    let c = Cluster::start(redis(), 2, 10).await;
    let (ok, out) = run_node("cluster.js", &c.url(0), "websocket", &["--pub", &c.url(1), "--count", "50"]).await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faye_client_across_nodes_over_long_polling() {
    let c = Cluster::start(redis(), 2, 10).await;
    let (ok, out) = run_node("cluster.js", &c.url(0), "long-polling", &["--pub", &c.url(1), "--count", "50"]).await;
    assert!(ok, "{out}");
}

/// A long-polling session whose every connect lands on the next node (a round-robin
/// balancer), while messages are published through a third: each message arrives once, in
/// order. Faye on faye-redis loses messages in this setup (faye-behaviour.md §5.5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_session_alternating_nodes_gets_every_message_once() {
    let c = Cluster::start(redis(), 3, 10).await;
    let id = connected_client(&c.url(0)).await;
    subscribe(&c.url(1), &id, "/hop/room").await;
    const N: i64 = 200;
    let pub_url = c.url(2);
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            let r = publish(&pub_url, "/hop/room", json!(i)).await;
            assert_eq!(r[0]["successful"], json!(true), "{r}");
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut got: Vec<i64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let mut node = 0;
    while (got.len() as i64) < N && tokio::time::Instant::now() < deadline {
        node = (node + 1) % 3;
        let (data, reply) = poll(&c.url(node), &id, 2000).await;
        assert_eq!(reply["successful"], json!(true), "{reply}");
        got.extend(data.iter().filter_map(Value::as_i64));
    }
    publisher.await.expect("publisher");
    // Anything doubled would come with the next connects.
    for _ in 0..3 {
        node = (node + 1) % 3;
        let (data, _) = poll(&c.url(node), &id, 200).await;
        got.extend(data.iter().filter_map(Value::as_i64));
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

/// A publish re-sent through another node (the Faye client re-sends one whose reply it
/// missed; behind a balancer, during a rolling restart, the copy lands elsewhere) is
/// answered as a success and delivered once. A new message id is a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_re_sent_through_another_node_is_delivered_once() {
    let c = Cluster::start(redis(), 3, 10).await;
    let subscriber = connected_client(&c.url(0)).await;
    subscribe(&c.url(0), &subscriber, "/resent/*").await;
    let publisher = connected_client(&c.url(1)).await;
    let sent = |id: &str, data: i64| json!({"channel":"/resent/x","clientId":publisher,"id":id,"data":data});
    for (node, m) in [(1, sent("9", 1)), (2, sent("9", 1)), (1, sent("9", 1)), (2, sent("10", 2))] {
        let (status, r) = post_json(&c.url(node), &m).await;
        assert_eq!((status, &r[0]["successful"]), (200, &json!(true)), "{r}");
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let (data, _) = poll(&c.url(0), &subscriber, 300).await;
        got.extend(data);
    }
    assert_eq!(got, vec![json!(1), json!(2)]);
    let retries = metric(&c.nodes[2], "crier_publish_retries_total").await
        + metric(&c.nodes[1], "crier_publish_retries_total").await;
    assert_eq!(retries, 2.0);
}

/// The real Faye client re-sends a publish whose reply was lost; the copy goes to another
/// node (a proxy drops the first reply and sends the rest elsewhere, as a balancer does when
/// a node goes away). The subscriber, on a third node, gets the message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_faye_client_re_sends_to_another_node_is_delivered_once() {
    let c = Cluster::start(redis(), 3, 10).await;
    let (ok, out) = run_node("resend.js", &c.url(0), "websocket", &["--then", &c.url(1), "--sub", &c.url(2)]).await;
    assert!(ok && out.contains("delivered once"), "{out}");
}

/// A connect held on one node returns at once when the session is disconnected through
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_through_one_node_releases_a_connect_held_on_another() {
    let c = Cluster::start(redis(), 2, 20).await;
    let id = connected_client(&c.url(0)).await;
    let (url, held_id) = (c.url(0), id.clone());
    let held = tokio::spawn(async move { poll(&url, &held_id, 15_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the connect is held");
    let (_, r) = post_json(&c.url(1), &json!({"channel":"/meta/disconnect","clientId":id})).await;
    assert_eq!(r[0]["successful"], json!(true), "{r}");
    let (_, reply) =
        tokio::time::timeout(Duration::from_secs(3), held).await.expect("released within 3 s").expect("task");
    assert_eq!(reply["successful"], json!(true), "{reply}");
    let (_, after) = poll(&c.url(1), &id, 0).await;
    assert_eq!(after["error"], json!(format!("401:{id}:Unknown client")), "{after}");
}

/// A subscribe acknowledged by one node is in force for publishes through any other node at
/// once, also while the session's connect is held on a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_through_one_node_is_in_force_everywhere_after_the_ack() {
    let c = Cluster::start(redis(), 3, 20).await;
    let id = connected_client(&c.url(0)).await;
    let (url, held_id) = (c.url(0), id.clone());
    let held = tokio::spawn(async move { poll(&url, &held_id, 10_000).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    subscribe(&c.url(1), &id, "/acked/*").await;
    publish(&c.url(2), "/acked/x", json!("first")).await;
    let (data, _) = tokio::time::timeout(Duration::from_secs(5), held).await.expect("delivered").expect("task");
    assert_eq!(data, vec![json!("first")]);
}

/// Redis commands per publish do not grow with the number of subscribers (faye-redis spends
/// 1 + 7N). Counted by Redis itself (INFO commandstats).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_per_publish_do_not_grow_with_subscribers() {
    const MESSAGES: u64 = 10;
    let mut per_publish = Vec::new();
    for subscribers in [1usize, 100, 1000] {
        let c = Cluster::start(redis(), 2, 60).await;
        let url = c.url(0);
        let channel = format!("/cost/{subscribers}");
        let ids: Vec<String> = futures::stream::iter(0..subscribers)
            .map(|_| {
                let (url, channel) = (url.clone(), channel.clone());
                async move {
                    let id = connected_client(&url).await;
                    subscribe(&url, &id, &channel).await;
                    id
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        assert_eq!(ids.len(), subscribers);
        let delivered_before = delivered(&c.nodes[0]);
        redis().cmd(&["CONFIG", "RESETSTAT"]).expect("reset stats");
        for i in 0..MESSAGES {
            publish(&c.url(1), &channel, json!(i)).await;
        }
        // Mark writes (one EVALSHA with one HSET each, about once a second per node) may
        // fall between the publishes; nothing else here calls HSET.
        let evalsha = redis().calls("evalsha") - redis().calls("hset");
        let all = total_calls(redis());
        let want = delivered_before + subscribers as u64 * MESSAGES;
        assert!(
            eventually(Duration::from_secs(10), || async { delivered(&c.nodes[0]) >= want }).await,
            "every subscriber got every message ({} of {want})",
            delivered(&c.nodes[0])
        );
        // One script call per publish on one Redis server, for every matching name
        // (/cost/N, /cost/*, /cost/**, /**; Redis Cluster makes one per name).
        assert_eq!(evalsha, MESSAGES, "script calls for {subscribers} subscribers");
        per_publish.push((subscribers, all as f64 / MESSAGES as f64));
    }
    let (_, first) = per_publish[0];
    for (n, cost) in &per_publish {
        // Background work (liveness pings, sweeps) adds a little noise, never per subscriber.
        assert!(*cost <= first + 2.0, "{n} subscribers: {cost} commands per publish vs {first} for 1: {per_publish:?}");
    }
    eprintln!("redis commands per publish by subscribers: {per_publish:?}");
}

/// What sockets stream costs Redis nothing per subscriber: how far each session got reaches
/// Redis as its node's marks, one write per interval, not a store per session. Counted over
/// the publishes, the deliveries and two mark writes after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_subscribers_add_no_redis_commands_per_subscriber() {
    const MESSAGES: u64 = 10;
    let mut per_publish = Vec::new();
    let mut breakdown = Vec::new();
    // 300 sockets: two descriptors each in this process stays under a default 1,024 limit.
    for subscribers in [10usize, 300] {
        let c = Cluster::start(redis(), 2, 60).await;
        let channel = format!("/stream/{subscribers}");
        let sockets: Vec<(String, RawWs)> = futures::stream::iter(0..subscribers)
            .map(|_| socket_subscriber(&c.nodes[0], &channel))
            .buffer_unordered(32)
            .collect()
            .await;
        redis().cmd(&["CONFIG", "RESETSTAT"]).expect("reset stats");
        for i in 0..MESSAGES {
            publish(&c.url(1), &channel, json!(i)).await;
        }
        let got = futures::future::join_all(sockets.into_iter().map(|(_, mut ws)| {
            let channel = channel.clone();
            async move { read_data(&mut ws, &channel, MESSAGES as usize).await.len() }
        }))
        .await;
        assert!(got.iter().all(|n| *n == MESSAGES as usize), "every socket got every message: {got:?}");
        two_mark_writes(&c.nodes[0]).await;
        let all = total_calls(redis());
        per_publish.push((subscribers, all as f64 / MESSAGES as f64));
        breakdown.push(redis().cmd(&["INFO", "commandstats"]).unwrap_or_default());
    }
    eprintln!("redis commands per publish with socket subscribers: {per_publish:?}");
    let (_, few) = per_publish[0];
    let (_, many) = per_publish[1];
    // Mark writes and background work (pings, heartbeats, sweeps) come with time, not with
    // publishes, and the window with 300 sockets is longer: under CPU load it added 3.3 per
    // publish. Anything done per subscriber adds at least 30 (one command for each of 300
    // sessions over 10 publishes); 300 sessions storing once each (3 commands a store) 90.
    assert!(many <= few + 10.0, "{per_publish:?}\n{breakdown:#?}");
}

/// A socket session that moves to another node (its client reconnects through a balancer)
/// starts after what its old node sent it, known from that node's marks: nothing is
/// replayed, and what follows arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_session_moving_nodes_resumes_after_what_it_was_sent() {
    let c = Cluster::start(redis(), 2, 20).await;
    let channel = "/move/room";
    let (id, mut ws) = socket_subscriber(&c.nodes[0], channel).await;
    for i in 0..20 {
        publish(&c.url(1), channel, json!(i)).await;
    }
    assert_eq!(read_data(&mut ws, channel, 20).await, (0..20).map(|i| json!(i)).collect::<Vec<_>>());
    two_mark_writes(&c.nodes[0]).await;
    drop(ws);
    // Back through the other node, over long-polling: whatever the attach re-read from the
    // logs would be answered at once.
    let (data, reply) = poll(&c.url(1), &id, 500).await;
    assert_eq!(reply["successful"], json!(true), "{reply}");
    assert_eq!(data, Vec::<Value>::new(), "nothing it was sent is replayed");
    assert_eq!(metric(&c.nodes[1], "crier_redis_marks_applied_total").await, 1.0);
    for i in 20..40 {
        publish(&c.url(0), channel, json!(i)).await;
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 20 && tokio::time::Instant::now() < deadline {
        let (data, reply) = poll(&c.url(1), &id, 1000).await;
        assert_eq!(reply["successful"], json!(true), "{reply}");
        got.extend(data);
    }
    let (late, _) = poll(&c.url(1), &id, 200).await;
    got.extend(late);
    assert_eq!(got, (20..40).map(|i| json!(i)).collect::<Vec<_>>());
}

/// A connect that moves a session to another node, abandoned by its client while the move
/// is stalled (Redis writes paused), leaves nothing half-done there: the next connect on
/// that node attaches the session again and gets what is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_abandoned_half_way_is_redone_by_the_next_connect() {
    let c = Cluster::start(redis(), 2, 20).await;
    let id = connected_client(&c.url(0)).await;
    subscribe(&c.url(0), &id, "/abandon/room").await;
    // The move's attach script waits in Redis until the pause ends; its client leaves
    // long before.
    assert!(redis().cmd(&["CLIENT", "PAUSE", "1500", "WRITE"]).is_some_and(|r| r.starts_with("+OK")));
    let gave_up = http()
        .post(c.url(1))
        .timeout(Duration::from_millis(300))
        .json(&json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}))
        .send()
        .await;
    assert!(gave_up.is_err(), "the connect was still in flight when its client left: {gave_up:?}");
    // A write returns once the pause is over.
    let written = tokio::task::spawn_blocking(|| redis().cmd(&["SET", "abandon-test", "1"])).await.expect("task");
    assert!(written.is_some_and(|r| r.starts_with("+OK")), "redis writes resume");
    publish(&c.url(0), "/abandon/room", json!("after")).await;
    let (data, reply) = poll(&c.url(1), &id, 3000).await;
    assert_eq!(reply["successful"], json!(true), "{reply}");
    assert_eq!(data, vec![json!("after")]);
}

/// Waits for two more writes of `node`'s marks, so one was computed wholly after the call
/// (positions sent before it are in Redis).
async fn two_mark_writes(node: &crier_tests::TestServer) {
    let writes = metric(node, "crier_redis_mark_writes_total").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            metric(node, "crier_redis_mark_writes_total").await >= writes + 2.0
        })
        .await,
        "the node writes its marks"
    );
}

/// The data of the first `n` messages on `channel` that reach the socket (within 15 s).
async fn read_data(ws: &mut RawWs, channel: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let Some(frame) = ws.recv(Duration::from_secs(15)).await else { break };
        let items = frame.as_array().cloned().unwrap_or_default();
        out.extend(items.into_iter().filter(|m| m["channel"] == channel).map(|m| m["data"].clone()));
    }
    out
}

fn delivered(s: &crier_tests::TestServer) -> u64 {
    s.engine.metrics().delivered.load(std::sync::atomic::Ordering::Relaxed)
}

fn total_calls(r: &RedisServer) -> u64 {
    let info = r.cmd(&["INFO", "commandstats"]).unwrap_or_default();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info") && !l.starts_with("cmdstat_config"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

/// Redis goes away: publishes fail with `407` instead of being lost silently and `/readyz`
/// turns 503. It comes back empty (no persistence): nodes restore the sessions and
/// subscriptions they hold, and delivery resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_fails_publishes_then_restores_subscriptions() {
    // Its own Redis: this test kills it.
    let mut redis = RedisServer::start();
    let c = Cluster::start(&redis, 2, 10).await;
    let id = connected_client(&c.url(0)).await;
    subscribe(&c.url(0), &id, "/outage/room").await;
    publish(&c.url(1), "/outage/room", json!("before")).await;
    let (data, _) = poll(&c.url(0), &id, 3000).await;
    assert_eq!(data, vec![json!("before")]);

    redis.kill();
    let r = publish(&c.url(1), "/outage/room", json!("during")).await;
    assert_eq!(r[0]["successful"], json!(false), "{r}");
    assert!(r[0]["error"].as_str().unwrap_or_default().starts_with("407:"), "{r}");
    let ready = http().get(c.nodes[1].at("/readyz")).send().await.expect("readyz").status().as_u16();
    assert_eq!(ready, 503);
    // A connect meanwhile fails, but tells the client to keep its session and connect again
    // (a handshake would start a new session and lose what is published for the old one
    // until the client has subscribed again).
    // On the node that holds the session and on one that would have to look it up.
    for node in [0, 1] {
        let (_, reply) = poll(&c.url(node), &id, 500).await;
        assert_eq!(reply["successful"], json!(false), "node {node}: {reply}");
        assert_eq!(reply["error"], json!("500::Backend unavailable"), "node {node}: {reply}");
        assert_eq!(reply["advice"]["reconnect"], json!("retry"), "node {node}: {reply}");
        assert_eq!(reply["clientId"], json!(id), "node {node}: {reply}");
    }

    redis.restart();
    for n in &c.nodes {
        let url = n.at("/readyz");
        assert!(
            eventually(Duration::from_secs(20), || {
                let url = url.clone();
                async move { http().get(&url).send().await.map(|r| r.status().as_u16() == 200).unwrap_or(false) }
            })
            .await,
            "node ready again"
        );
    }
    // The node restored the session and its subscription: publishes through the other node
    // reach it again.
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while got.is_empty() && tokio::time::Instant::now() < deadline {
        let r = publish(&c.url(1), "/outage/room", json!(format!("after-{i}"))).await;
        assert_eq!(r[0]["successful"], json!(true), "{r}");
        i += 1;
        let (data, reply) = poll(&c.url(0), &id, 500).await;
        assert_eq!(reply["successful"], json!(true), "session survived the restart: {reply}");
        got.extend(data);
    }
    assert!(!got.is_empty(), "delivery resumed after the restart");
    // From here on nothing acknowledged is lost.
    for k in 0..10 {
        publish(&c.url(1), "/outage/room", json!(k)).await;
    }
    let mut rest = Vec::new();
    while rest.len() < 10 && tokio::time::Instant::now() < deadline + Duration::from_secs(10) {
        let (data, _) = poll(&c.url(0), &id, 1000).await;
        rest.extend(data.into_iter().filter(|d| d.is_i64()));
    }
    assert_eq!(rest, (0..10).map(|k| json!(k)).collect::<Vec<_>>());
}

/// Messages wait for a session on its exact channel while it is away; it comes back on
/// another node with a batch that also subscribes to a wildcard matching the same channel.
/// It gets each waiting message once, and later ones once though two names match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_overlapping_subscription_in_the_hop_batch_loses_and_doubles_nothing() {
    let c = Cluster::start(redis(), 2, 10).await;
    let id = connected_client(&c.url(0)).await;
    subscribe(&c.url(0), &id, "/w/x").await;
    for i in 0..5 {
        publish(&c.url(1), "/w/x", json!(i)).await;
    }
    let (_, r) = post_json(
        &c.url(1),
        &json!([
            {"channel":"/meta/subscribe","clientId":id,"subscription":"/w/*"},
            {"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}
        ]),
    )
    .await;
    let mut got: Vec<i64> = r
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["channel"] == "/w/x")
        .filter_map(|m| m["data"].as_i64())
        .collect();
    for i in 5..10 {
        publish(&c.url(0), "/w/x", json!(i)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 10 && tokio::time::Instant::now() < deadline {
        let (data, _) = poll(&c.url(1), &id, 1000).await;
        got.extend(data.iter().filter_map(Value::as_i64));
    }
    let (data, _) = poll(&c.url(1), &id, 300).await;
    got.extend(data.iter().filter_map(Value::as_i64));
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

/// An EventSource stream: the data of each message it carries, in order (`None` once the
/// stream ends). Dropping it closes the stream.
struct EventSource {
    rx: tokio::sync::mpsc::UnboundedReceiver<Option<i64>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventSource {
    async fn recv(&mut self) -> Option<Option<i64>> {
        self.rx.recv().await
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn eventsource(url: &str, id: &str) -> EventSource {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Option<i64>>();
    let url = format!("{url}/{id}");
    let task = tokio::spawn(async move {
        let resp = http().get(url).header("accept", "text/event-stream").send().await.expect("stream");
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut text = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\r\n\r\n") {
                let event: String = text.drain(..end + 4).collect();
                if let Some(data) = event.strip_prefix("data: ") {
                    let msgs: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                    for m in msgs.as_array().into_iter().flatten() {
                        if tx.send(m["data"].as_i64()).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let _ = tx.send(None);
    });
    EventSource { rx, task }
}

/// Nodes whose EventSource streams send a keep-alive comment (and renew their mark) every
/// second, so a stream's mark lapses 3 s after it ends.
fn quick_eventsource_pings() -> crier_tests::Options {
    crier_tests::Options {
        server: Some(crier_server::ServerConfig { eventsource_ping_secs: 1, ..crier_server::ServerConfig::default() }),
        ..crier_tests::Options::default()
    }
}

fn es_connect(id: &str) -> Value {
    json!({"channel":"/meta/connect","clientId":id,"connectionType":"eventsource"})
}

/// An EventSource client behind a balancer without stickiness: handshaken through one node,
/// its stream on another, and its connects (POSTs answered at once, one per `interval` as a
/// keep-alive) landing on the first. Messages published meanwhile all arrive on the stream,
/// once, in order; the connects keep the session alive without taking it from the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventsource_stream_keeps_delivering_while_its_connects_land_on_other_nodes() {
    // Keep-alive comments every second: the stream's mark (3 s) is renewed during the run.
    let c = Cluster::start_with(redis(), 2, 10, quick_eventsource_pings).await;
    let id = crier_tests::handshake(&c.url(1)).await;
    let (_, r) = post_json(&c.url(1), &es_connect(&id)).await;
    assert_eq!(r[0]["successful"], json!(true), "{r}");
    subscribe(&c.url(1), &id, "/es/room").await;
    let mut stream = eventsource(&c.url(0), &id);
    // The stream is open once it carries a message.
    publish(&c.url(1), "/es/room", json!(-1)).await;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.recv()).await;
    assert_eq!(first, Ok(Some(Some(-1))), "the stream opened");
    const N: i64 = 30;
    let mut got = Vec::new();
    for i in 0..N {
        // Every third message, a keep-alive connect through the node that handshook it
        // (which may still hold a copy of the session the stream took).
        if i % 3 == 0 {
            let (_, r) = post_json(&c.url(1), &es_connect(&id)).await;
            assert_eq!(r[0]["successful"], json!(true), "connect on node 1: {r}");
            assert_eq!(r[0]["advice"], json!({"reconnect":"retry","interval":10000,"timeout":0}), "{r}");
            assert_eq!(r.as_array().map(Vec::len), Some(1), "a keep-alive carries no messages: {r}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        publish(&c.url(1), "/es/room", json!(i)).await;
        match tokio::time::timeout(Duration::from_secs(3), stream.recv()).await {
            Ok(Some(Some(n))) => got.push(n),
            other => panic!("message {i} not on the stream ({other:?}); got {got:?}"),
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

/// Without an open stream (never opened, or gone and its mark lapsed), an EventSource
/// client's connect on any node takes the session there and carries what is queued, so a
/// client whose stream is gone for good still gets its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventsource_connect_delivers_when_no_stream_is_open() {
    let c = Cluster::start_with(redis(), 2, 10, quick_eventsource_pings).await;
    // Never opened.
    let id = connected_client(&c.url(0)).await;
    subscribe(&c.url(0), &id, "/es/none").await;
    for i in 0..3 {
        publish(&c.url(0), "/es/none", json!(i)).await;
    }
    let (_, r) = post_json(&c.url(1), &es_connect(&id)).await;
    let data: Vec<i64> = r.as_array().into_iter().flatten().filter_map(|m| m["data"].as_i64()).collect();
    assert_eq!(data, vec![0, 1, 2], "{r}");

    // Opened on node 0, then gone: its mark (2 × the 1 s keep-alive + 1 s) lapses.
    let mut stream = eventsource(&c.url(0), &id);
    publish(&c.url(0), "/es/none", json!(3)).await;
    let first = tokio::time::timeout(Duration::from_secs(5), stream.recv()).await;
    assert_eq!(first, Ok(Some(Some(3))), "the stream opened");
    drop(stream);
    let closed = eventually(Duration::from_secs(5), || async {
        metric(&c.nodes[0], "crier_eventsource_connections").await == 0.0
    })
    .await;
    assert!(closed, "the stream ended on node 0");
    for i in 4..7 {
        publish(&c.url(0), "/es/none", json!(i)).await;
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 3 && tokio::time::Instant::now() < deadline {
        let (_, r) = post_json(&c.url(1), &es_connect(&id)).await;
        got.extend(r.as_array().into_iter().flatten().filter_map(|m| m["data"].as_i64()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered = got.len() >= 3;
    assert!(delivered, "what was queued after the stream went arrives by connect: {got:?}");
    assert_eq!(got, vec![4, 5, 6]);
}

/// The ids and outcomes of the publish replies to `channel` in `frames`, in order.
fn publish_replies(frames: &[Value], channel: &str) -> Vec<(Value, Value)> {
    frames
        .iter()
        .flat_map(|f| f.as_array().cloned().unwrap_or_else(|| vec![f.clone()]))
        .filter(|m| m["channel"] == channel && m.get("data").is_none())
        .map(|m| (m["id"].clone(), m["successful"].clone()))
        .collect()
}

// A publisher with many publishes in flight is not held to one per Redis round trip: a
// publish lets the socket's next frame, or its batch's next message, start once it is sent
// to Redis, which runs commands in the order they were sent, so the order holds. Redis is
// 25 ms away each way here (a round trip of 50 ms): one after the other, 20 publishes
// would take a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_flight_share_redis_round_trips_and_keep_their_order() {
    let proxy = crier_tests::delaying_proxy(redis().port, Duration::from_millis(25)).await;
    let c = Cluster::start_url(&format!("redis://127.0.0.1:{proxy}"), 1, 10).await;
    let (_, mut sub) = socket_subscriber(&c.nodes[0], "/ordered").await;
    let id = connected_client(&c.url(0)).await;
    let publish = |n: u32| json!({"channel":"/ordered","clientId":id,"data":n,"id":format!("p{n}")});
    let want = |r: std::ops::Range<u32>| r.map(|n| (json!(format!("p{n}")), json!(true))).collect::<Vec<_>>();

    // Over a WebSocket, a frame per publish, as Faye's client sends them.
    let mut ws = RawWs::connect(&c.nodes[0].ws_url()).await;
    let start = std::time::Instant::now();
    for n in 0..20 {
        ws.send(&publish(n)).await;
    }
    let mut frames = Vec::new();
    while publish_replies(&frames, "/ordered").len() < 20 {
        frames.push(ws.recv(Duration::from_secs(10)).await.expect("publish replies"));
    }
    let over_socket = start.elapsed();
    let mut replies = publish_replies(&frames, "/ordered");
    replies.sort_by_key(|(id, _)| id.as_str().and_then(|s| s[1..].parse::<u32>().ok()));
    assert_eq!(replies, want(0..20));

    // Over long-polling, one batch: its replies in the batch's order.
    let start = std::time::Instant::now();
    let (status, body) = post_json(&c.url(0), &Value::Array((20..40).map(publish).collect())).await;
    let in_a_batch = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(publish_replies(&[body], "/ordered"), want(20..40));

    assert_eq!(read_data(&mut sub, "/ordered", 40).await, (0..40).map(|n| json!(n)).collect::<Vec<_>>());
    for (how, took) in [("frames on a socket", over_socket), ("a batch", in_a_batch)] {
        // (One after the other they cannot take less than 1 s; together about 110 ms.)
        assert!(took < Duration::from_millis(700), "20 publishes as {how} took {took:?}");
    }

    // A batch has at most 32 messages in flight: 100 publishes need four round trips, so
    // they cannot take less than three (150 ms); all at once would take about one.
    let start = std::time::Instant::now();
    let (status, body) = post_json(&c.url(0), &Value::Array((40..140).map(publish).collect())).await;
    let took = start.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(publish_replies(&[body], "/ordered"), want(40..140));
    assert!(took >= Duration::from_millis(150), "100 publishes in a batch took {took:?}: more than 32 at once?");
    assert_eq!(read_data(&mut sub, "/ordered", 100).await, (40..140).map(|n| json!(n)).collect::<Vec<_>>());
}
