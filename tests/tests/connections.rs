//! Connections that are slow, silent or idle: `server.read_timeout_secs` and
//! `server.idle_timeout_secs` close them, and `limits.max_connections` counts them (idle and
//! silent ones included), so they cannot hold a node's descriptors or its connection limit
//! for good.

mod common;

use std::time::{Duration, Instant};

use crier_engine::EngineConfig;
use crier_server::{ApiConfig, LimitsConfig, ServerConfig};
use crier_tests::{Options, RawWs, TestServer, eventually, http};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server whose `/metrics` is on an internal port of its own, so that reading them takes
/// no place on the public port.
struct Node {
    s: TestServer,
    internal: String,
}

impl std::ops::Deref for Node {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.s
    }
}

async fn server(server: ServerConfig, timeout_secs: u64) -> Node {
    server_with(server, EngineConfig { timeout_secs, ..EngineConfig::default() }).await
}

/// A server whose connect replies carry the whole queue however large
/// (`engine.max_batch_bytes` = 0): the answers of many MiB that the write deadline is for.
async fn unbatched(server: ServerConfig, timeout_secs: u64) -> Node {
    server_with(server, EngineConfig { timeout_secs, max_batch_bytes: 0, ..EngineConfig::default() }).await
}

async fn server_with(server: ServerConfig, engine: EngineConfig) -> Node {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let internal = format!("127.0.0.1:{port}");
    let s = TestServer::start_with(Options {
        engine: Some(engine),
        server: Some(ServerConfig { internal_listen: Some(internal.clone()), ..server }),
        ..Options::default()
    })
    .await;
    let node = Node { s, internal };
    assert!(eventually(Duration::from_secs(5), || async { scrape(&node, "crier_connections").await >= 0 }).await);
    node
}

fn timeouts(read: u64, idle: u64) -> ServerConfig {
    ServerConfig { read_timeout_secs: read, idle_timeout_secs: idle, ..ServerConfig::default() }
}

/// Reads until the server closes the connection; returns what it sent and when it closed
/// (`None` if it was still open after `limit`).
async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (String, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

async fn connect(s: &Node) -> TcpStream {
    TcpStream::connect(s.addr).await.expect("tcp connect")
}

fn post(s: &Node, body: &str) -> String {
    format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        s.mount,
        s.addr,
        body.len()
    )
}

/// One series from the internal port (-1 if absent or unreachable).
async fn scrape(n: &Node, name: &str) -> i64 {
    let Ok(r) = http().get(format!("http://{}/metrics", n.internal)).send().await else { return -1 };
    let text = r.text().await.unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse().ok()).unwrap_or(-1)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_read_timeout() {
    let s = server(timeouts(1, 60), 5).await;
    let opened = Instant::now();
    let mut tcp = connect(&s).await;
    let (sent, closed) = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    let closed = closed.expect("the server closes a silent connection");
    let after = closed - opened;
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the timeout");
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    assert_eq!(sent, "", "nothing is answered to a request never sent");
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_read_timeout() {
    let s = server(timeouts(1, 60), 5).await;
    let opened = Instant::now();
    let mut tcp = connect(&s).await;
    tcp.write_all(b"POST /faye HTTP/1.1\r\nhost: x\r\n").await.expect("start the request");
    // Slowloris: one header byte every 100 ms, never finishing the headers.
    let mut cut_at = None;
    for _ in 0..100 {
        if tcp.write_all(b"x").await.is_err() {
            cut_at = Some(Instant::now());
            break;
        }
        let mut b = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut b)).await {
            cut_at = Some(Instant::now());
            break;
        }
    }
    let after = cut_at.expect("the server cuts a request whose headers never end") - opened;
    assert!(after >= Duration::from_millis(900), "cut after {after:?}, before the timeout");
    assert!(after < Duration::from_secs(5), "cut after {after:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_held_requests_and_sockets_are_not() {
    let s = server(timeouts(1, 1), 3).await;
    // A long-poll held for most of engine.timeout_secs (3 s), three times either timeout:
    // they cover waiting for a request, not a request in progress.
    let hs = common::send1(
        &s.url(),
        json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}),
    )
    .await;
    let id = hs["clientId"].as_str().expect("clientId").to_owned();
    let mut tcp = connect(&s).await;
    let connect = json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}).to_string();
    tcp.write_all(post(&s, &connect).as_bytes()).await.expect("first connect");
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("answered").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "first connect answered at once");
    let sent = Instant::now();
    tcp.write_all(post(&s, &connect).as_bytes()).await.expect("held connect");
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.expect("answered").expect("read");
    let held = sent.elapsed();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(held >= Duration::from_secs(2), "the connect was held {held:?}, not cut by the header timeout");
    // Idle after its response, the same connection is closed once the timeout passes.
    let idle = Instant::now();
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    let after = closed.expect("an idle keep-alive connection is closed") - idle;
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    // A WebSocket is not an HTTP connection waiting for a request: it stays open.
    let mut ws = RawWs::connect(&s.ws_url()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ws.send(&json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}])).await;
    let r = ws.recv(Duration::from_secs(5)).await.expect("the socket still answers");
    assert_eq!(r[0]["successful"], json!(true), "{r}");
}

#[tokio::test]
async fn an_idle_connection_outlives_the_read_timeout_until_the_idle_timeout() {
    // The read timeout (1 s) is for a new connection's first request and for bodies; a
    // keep-alive connection between requests waits for the idle timeout (60 s) instead.
    let s = server(timeouts(1, 60), 5).await;
    let publish = post(&s, r#"{"channel":"/x","data":1}"#);
    let mut tcp = connect(&s).await;
    let mut buf = [0u8; 2048];
    for round in 0..2 {
        tcp.write_all(publish.as_bytes()).await.expect("request");
        let n =
            tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("answered").expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "round {round}");
        let (_, closed) = read_until_closed(&mut tcp, Duration::from_millis(2000)).await;
        assert!(closed.is_none(), "round {round}: closed while idle for less than the idle timeout");
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_and_the_connection_closed() {
    let s = server(timeouts(1, 60), 5).await;
    let mut tcp = connect(&s).await;
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        s.mount, s.addr
    );
    tcp.write_all(head.as_bytes()).await.expect("headers");
    tcp.write_all(br#"[{"channel":"#).await.expect("part of the body");
    let sent = Instant::now();
    let (reply, closed) = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    let after = closed.expect("closed after the answer") - sent;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("the body did not arrive within 1 s"), "{reply}");
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(5), "answered after {after:?}");
}

#[tokio::test]
async fn a_server_api_body_that_does_not_arrive_in_time_is_answered_408() {
    let api = ApiConfig { keys: vec!["connections-test-key-0123".to_owned()], ..ApiConfig::default() };
    let s = server(ServerConfig { api, ..timeouts(1, 60) }, 5).await;
    let mut tcp = connect(&s).await;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer connections-test-key-0123\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"channel\":",
        s.addr
    );
    tcp.write_all(head.as_bytes()).await.expect("headers and part of the body");
    let (reply, closed) = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#"{"error":"request timeout: the body did not arrive within 1 s"}"#), "{reply}");
    assert!(closed.is_some(), "closed after the answer");
}

#[tokio::test]
async fn an_eventsource_stream_outlives_the_idle_timeout() {
    let quiet = ServerConfig { eventsource_ping_secs: 60, ..timeouts(1, 1) };
    let s = server(quiet, 5).await;
    let url = s.url();
    let id = crier_tests::handshake(&url).await;
    crier_tests::subscribe(&url, &id, "/es").await;
    let resp = http().get(format!("{url}/{id}")).header("accept", "text/event-stream").send().await.expect("stream");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("first chunk").expect("chunk");
    assert!(String::from_utf8_lossy(&first).starts_with("retry:"));
    // Nothing flows for 2.5 s: more than either timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    common::send1(&url, json!({"channel":"/es","data":"late"})).await;
    let mut text = String::new();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("\"late\"") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "the stream stayed open and delivered: {text:?}");
}

#[tokio::test]
async fn shutdown_closes_idle_and_half_sent_connections_within_the_grace_period() {
    let s = server(ServerConfig { shutdown_grace_secs: 2, ..ServerConfig::default() }, 5).await;
    let mut idle = connect(&s).await;
    idle.write_all(post(&s, r#"{"channel":"/x","data":1}"#).as_bytes()).await.expect("request");
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.expect("answered").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut half = connect(&s).await;
    half.write_all(b"POST /faye HTTP/1.1\r\nhost: x\r\n").await.expect("half a request");
    let started = Instant::now();
    let Node { s, internal: _ } = s;
    let stop = tokio::spawn(s.stop());
    let (_, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    let (_, half_closed) = read_until_closed(&mut half, Duration::from_secs(10)).await;
    let idle_after = idle_closed.expect("idle connection closed") - started;
    let half_after = half_closed.expect("half-sent connection closed") - started;
    assert!(idle_after < Duration::from_secs(1), "an idle connection closes at once: {idle_after:?}");
    assert!(half_after < Duration::from_secs(4), "by the end of the grace period (2 s): {half_after:?}");
    let stopped = stop.await.expect("join");
    assert!(stopped.is_ok(), "{stopped:?}");
}

#[tokio::test]
async fn at_most_64_connections_beyond_the_limit_wait_for_an_answer_and_each_at_most_5_s() {
    let limits = LimitsConfig { max_connections: 1, ..LimitsConfig::default() };
    let s = server(ServerConfig { limits, ..ServerConfig::default() }, 5).await;
    let admitted = connect(&s).await;
    assert!(eventually(Duration::from_secs(5), || async { connections(&s).await == 1 }).await);
    let opened = Instant::now();
    let mut waiting = Vec::new();
    for _ in 0..64 {
        waiting.push(connect(&s).await);
    }
    let refused = || async { scrape(&s, "crier_limit_connections_refused_total").await };
    assert!(eventually(Duration::from_secs(5), || async { refused().await == 64 }).await);
    // The 65th gets no answer: it is closed at once.
    let mut more = connect(&s).await;
    more.write_all(post(&s, r#"{"channel":"/x","data":1}"#).as_bytes()).await.expect("request");
    let (reply, closed) = read_until_closed(&mut more, Duration::from_secs(3)).await;
    assert_eq!(reply, "", "closed unanswered");
    assert!(closed.is_some(), "closed at accept");
    assert_eq!(refused().await, 65);
    // The 64 silent ones go after 5 s, though the read timeout is 30 s.
    for (i, tcp) in waiting.iter_mut().enumerate() {
        let (_, closed) = read_until_closed(tcp, Duration::from_secs(10)).await;
        let after = closed.unwrap_or_else(|| panic!("connection {i} beyond the limit still open")) - opened;
        assert!(after >= Duration::from_millis(4500) && after < Duration::from_secs(9), "{i}: {after:?}");
    }
    // Then a refused request is answered 503 again.
    let mut again = connect(&s).await;
    again.write_all(post(&s, r#"{"channel":"/x","data":1}"#).as_bytes()).await.expect("request");
    let (reply, _) = read_until_closed(&mut again, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    drop(admitted);
}

#[tokio::test]
async fn a_connection_beyond_the_limit_that_does_not_read_its_answer_goes_after_5_s() {
    // A large answer (the browser client file, here 16 MiB) that the loopback buffers cannot
    // hold, asked for over a connection beyond the limit whose peer never reads.
    let big = std::env::temp_dir().join(format!("crier-big-client-{}.js", std::process::id()));
    std::fs::write(&big, vec![b'/'; 16 * 1024 * 1024]).expect("write the file");
    let limits = LimitsConfig { max_connections: 1, ..LimitsConfig::default() };
    let s = server(ServerConfig { limits, client_js: Some(big.clone()), ..ServerConfig::default() }, 5).await;
    let admitted = connect(&s).await;
    assert!(eventually(Duration::from_secs(5), || async { connections(&s).await == 1 }).await);
    let mut stalled = connect(&s).await;
    let opened = Instant::now();
    stalled.write_all(b"GET /faye/client.js HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("request");
    // Not read for 7 s: the answer cannot have been written whole.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    let _ = std::fs::remove_file(&big);
    assert_eq!(closed, Ok(true), "closed after {:?}", opened.elapsed());
    assert!(got < 16 * 1024 * 1024, "the answer was cut off ({got} bytes), not written whole");
    drop(admitted);
}

#[tokio::test]
async fn a_websocket_that_answers_no_pings_is_closed() {
    let s = server(ServerConfig { ws_ping_secs: 1, ..ServerConfig::default() }, 5).await;
    // A client that reads answers pings (tungstenite replies while reading): it stays.
    let mut live = RawWs::connect(&s.ws_url()).await;
    // One that never reads answers none.
    let mut silent = RawWs::connect(&s.ws_url()).await;
    assert!(eventually(Duration::from_secs(5), || async { connections(&s).await == 2 }).await);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        // `recv` reads (and so answers pings) until a text frame or the time is up.
        let _ = live.recv(Duration::from_millis(500)).await;
    }
    assert!(
        eventually(Duration::from_secs(3), || async { connections(&s).await == 1 }).await,
        "the silent socket was closed after two unanswered pings"
    );
    let _ = silent.recv(Duration::from_secs(1)).await;
    live.send(&json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}])).await;
    let r = live.recv(Duration::from_secs(5)).await.expect("the answering socket is still served");
    assert_eq!(r[0]["successful"], json!(true), "{r}");
}

#[tokio::test]
async fn a_websocket_whose_peer_stops_reading_is_closed_after_the_write_timeout() {
    let quiet = ServerConfig { ws_ping_secs: 0, write_timeout_secs: 1, ..ServerConfig::default() };
    let s = server(quiet, 5).await;
    let (id, stalled) = crier_tests::socket_subscriber(&s, "/firehose").await;
    assert!(eventually(Duration::from_secs(5), || async { connections(&s).await == 1 }).await);
    // Far more than the loopback socket buffers hold (some MiB), to a peer that reads none.
    let pad = "z".repeat(256 * 1024);
    for n in 0..120 {
        let (status, _) =
            crier_tests::post_json(&s.url(), &json!({"channel":"/firehose","data":{"n":n,"pad":pad}})).await;
        assert_eq!(status, 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || async { connections(&s).await == 0 }).await,
        "the stalled socket was closed"
    );
    assert_eq!(scrape(&s, "crier_write_timeouts_total").await, 1);
    // What was not written waits for the session's next connections, once each: at most
    // `engine.max_batch_bytes` (1 MiB, four of these messages) per reply, each reply at once.
    let mut ns: Vec<i64> = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let (status, reply) = crier_tests::post_json(
            &s.url(),
            &json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}),
        )
        .await;
        assert_eq!(status, 200);
        let batch: Vec<i64> = reply
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["channel"] == "/firehose")
            .filter_map(|m| m["data"]["n"].as_i64())
            .collect();
        assert!(!batch.is_empty() && batch.len() <= 4, "a reply of at most 1 MiB: {batch:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "answered at once");
        ns.extend(batch);
        if ns.contains(&119) {
            break;
        }
    }
    assert!(ns.contains(&119), "the last message is delivered on the next connections: {ns:?}");
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order, none twice: {ns:?}");
    drop(stalled);
}

#[tokio::test]
async fn a_websocket_peer_that_sends_pings_but_reads_no_pongs_is_closed_after_the_write_timeout() {
    // The server's pongs are written from its read path: a stall found there is a write
    // timeout too, not a bad frame.
    let quiet = ServerConfig { ws_ping_secs: 0, write_timeout_secs: 1, ..ServerConfig::default() };
    let s = server(quiet, 5).await;
    let mut ws = RawWs::connect(&s.ws_url()).await;
    assert!(eventually(Duration::from_secs(5), || async { connections(&s).await == 1 }).await);
    // Pings until the pongs fill every buffer between the two (some MiB) and the server
    // stops reading; then this send waits too, until the server closes.
    let pinger = tokio::spawn(async move {
        for _ in 0..1_000_000 {
            if !ws.ping(vec![b'p'; 125]).await {
                break;
            }
        }
    });
    assert!(
        eventually(Duration::from_secs(20), || async { connections(&s).await == 0 }).await,
        "the socket whose peer reads no pongs was closed"
    );
    assert_eq!(scrape(&s, "crier_write_timeouts_total").await, 1);
    assert_eq!(scrape(&s, "crier_websocket_bad_frames_total").await, 0);
    pinger.abort();
}

/// A session subscribed to `/firehose` with `n` messages of 256 KiB queued (some MiB, far
/// more than the loopback socket buffers hold).
async fn session_with_a_large_queue(s: &Node, n: usize) -> String {
    let url = s.url();
    let id = crier_tests::connected_client(&url).await;
    crier_tests::subscribe(&url, &id, "/firehose").await;
    publish_large(s, n).await;
    id
}

async fn publish_large(s: &Node, n: usize) {
    let pad = "z".repeat(256 * 1024);
    for n in 0..n {
        let (status, _) =
            crier_tests::post_json(&s.url(), &json!({"channel":"/firehose","data":{"n":n,"pad":pad}})).await;
        assert_eq!(status, 200);
    }
}

fn connect_request(s: &Node, id: &str) -> String {
    post(s, &json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"}).to_string())
}

#[tokio::test]
async fn a_long_poll_answer_to_a_peer_that_stops_reading_is_cut_off_at_the_write_timeout() {
    let s = unbatched(ServerConfig { write_timeout_secs: 3, ..ServerConfig::default() }, 5).await;
    let id = session_with_a_large_queue(&s, 120).await;
    let mut tcp = connect(&s).await;
    tcp.write_all(connect_request(&s, &id).as_bytes()).await.expect("connect request");
    // The answer (30 MiB) fills the socket buffers; this client reads none of it. Not closed
    // as soon as the write waits, but once it has waited the write timeout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(connections(&s).await, 1, "still open within the write timeout");
    assert!(
        eventually(Duration::from_secs(10), || async { connections(&s).await == 0 }).await,
        "the connection of the client that stopped reading was closed"
    );
    assert_eq!(scrape(&s, "crier_write_timeouts_total").await, 1);
    drop(tcp);
}

#[tokio::test]
async fn an_eventsource_stream_to_a_peer_that_stops_reading_is_closed_at_the_write_timeout() {
    let s = server(ServerConfig { write_timeout_secs: 1, ..ServerConfig::default() }, 5).await;
    let url = s.url();
    let id = crier_tests::handshake(&url).await;
    crier_tests::subscribe(&url, &id, "/firehose").await;
    let mut tcp = connect(&s).await;
    let head = format!("GET {}/{id} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n", s.mount, s.addr);
    tcp.write_all(head.as_bytes()).await.expect("stream request");
    assert!(
        eventually(Duration::from_secs(5), || async { scrape(&s, "crier_eventsource_connections").await == 1 }).await
    );
    publish_large(&s, 120).await;
    assert!(
        eventually(Duration::from_secs(10), || async { connections(&s).await == 0 }).await,
        "the stream of the client that stopped reading was closed"
    );
    assert_eq!(scrape(&s, "crier_eventsource_connections").await, 0);
    assert_eq!(scrape(&s, "crier_write_timeouts_total").await, 1);
    drop(tcp);
}

#[tokio::test]
async fn a_slow_client_that_keeps_reading_gets_a_large_answer_whole() {
    let s = unbatched(ServerConfig { write_timeout_secs: 2, ..ServerConfig::default() }, 5).await;
    let id = session_with_a_large_queue(&s, 120).await;
    let mut tcp = connect(&s).await;
    tcp.write_all(connect_request(&s, &id).as_bytes()).await.expect("connect request");
    // 1 MiB every 200 ms: the whole answer (30 MiB) takes several times the write timeout,
    // every wait of the server's far less (about 400 ms: the kernel reports the socket
    // writable only once a third of its send buffer has drained).
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let complete = loop {
        let mut this_turn = 0;
        while this_turn < 1024 * 1024 {
            match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {
                    got.extend_from_slice(&buf[..n]);
                    this_turn += n;
                }
                _ => break,
            }
            if let Some(total) = answer_length(&got)
                && got.len() >= total
            {
                break;
            }
        }
        if let Some(total) = answer_length(&got)
            && got.len() >= total
        {
            break true;
        }
        if this_turn == 0 {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(complete, "the answer arrived whole ({} bytes)", got.len());
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "it took longer than the write timeout: {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&got);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let reply: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
    let delivered = reply.as_array().into_iter().flatten().filter(|m| m["channel"] == "/firehose").count();
    assert_eq!(delivered, 120);
    assert_eq!(scrape(&s, "crier_write_timeouts_total").await, 0);
}

/// Head and body length of an HTTP answer once its head is in `got`.
fn answer_length(got: &[u8]) -> Option<usize> {
    let head_end = got[..got.len().min(4096)].windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&got[..head_end]).ok()?.to_ascii_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:"))?.trim().parse::<usize>().ok()?;
    Some(head_end + length)
}

#[tokio::test]
async fn timeouts_of_zero_leave_silent_connections_open() {
    let s = server(timeouts(0, 0), 5).await;
    let mut tcp = connect(&s).await;
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_millis(1500)).await;
    assert!(closed.is_none(), "no header timeout: the connection stays open");
    tcp.write_all(post(&s, r#"{"channel":"/x","data":1}"#).as_bytes()).await.expect("request");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("answered").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn silent_connections_count_against_the_connection_limit_until_they_time_out() {
    let limits = LimitsConfig { max_connections: 2, ..LimitsConfig::default() };
    // 5 s: the checks below must finish before the silent connections time out.
    let s = server(ServerConfig { limits, read_timeout_secs: 5, ..ServerConfig::default() }, 5).await;
    let silent = [connect(&s).await, connect(&s).await];
    assert!(
        eventually(Duration::from_secs(5), || async { connections(&s).await == 2 }).await,
        "two silent connections counted"
    );
    let mut third = connect(&s).await;
    third.write_all(post(&s, r#"{"channel":"/x","data":1}"#).as_bytes()).await.expect("request");
    let (reply, closed) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("connection limit (2) reached"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    assert!(closed.is_some(), "a connection beyond the limit is closed after its answer");
    assert_eq!(scrape(&s, "crier_limit_connections_refused_total").await, 1);
    // Whatever a connection beyond the limit asks for, it is closed after the answer (and
    // counted when accepted).
    let mut fourth = connect(&s).await;
    fourth.write_all(b"GET /elsewhere HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("request");
    let (reply, closed) = read_until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(closed.is_some(), "closed after a non-Bayeux answer too");
    assert_eq!(connections(&s).await, 2, "connections beyond the limit are not counted");
    assert_eq!(scrape(&s, "crier_limit_connections_refused_total").await, 2);
    // The silent ones time out (5 s) and their places come free.
    let ok = eventually(Duration::from_secs(15), || publishes(&s)).await;
    assert!(ok, "served again once the silent connections were closed");
    drop(silent);
}

async fn connections(n: &Node) -> i64 {
    scrape(n, "crier_connections").await
}

#[tokio::test]
async fn a_connection_admitted_before_the_node_filled_up_keeps_being_served() {
    let limits = LimitsConfig { max_connections: 1, ..LimitsConfig::default() };
    let s = server(ServerConfig { limits, ..ServerConfig::default() }, 5).await;
    let publish = post(&s, r#"{"channel":"/x","data":1}"#);
    let mut admitted = connect(&s).await;
    let mut buf = [0u8; 2048];
    for round in 0..3 {
        admitted.write_all(publish.as_bytes()).await.expect("request");
        let n = tokio::time::timeout(Duration::from_secs(5), admitted.read(&mut buf))
            .await
            .expect("answered")
            .expect("read");
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(reply.starts_with("HTTP/1.1 200"), "round {round}: {reply}");
        // Meanwhile a new connection is refused: the node is full.
        let mut other = connect(&s).await;
        other.write_all(publish.as_bytes()).await.expect("request");
        let (reply, _) = read_until_closed(&mut other, Duration::from_secs(5)).await;
        assert!(reply.starts_with("HTTP/1.1 503"), "round {round}: {reply}");
    }
    // A WebSocket holds its place for as long as it is open, after its upgrade request.
    drop(admitted);
    assert!(eventually(Duration::from_secs(5), || async { connections(&s).await == 0 }).await, "the place came free");
    let mut ws = RawWs::connect(&s.ws_url()).await;
    // A round trip on the socket: by then hyper has let go of it (and of its own copy).
    ws.send(&json!([{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}])).await;
    ws.recv(Duration::from_secs(5)).await.expect("handshake reply");
    let mut other = connect(&s).await;
    other.write_all(publish.as_bytes()).await.expect("request");
    let (reply, _) = read_until_closed(&mut other, Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert_eq!(connections(&s).await, 1, "the WebSocket counts once");
    // A WebSocket upgrade beyond the limit is refused with the same 503.
    match tokio_tungstenite::connect_async(s.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 503),
        other => panic!("upgrade beyond the limit: {:?}", other.map(|(_, r)| r.status())),
    }
    drop(ws);
    assert!(
        eventually(Duration::from_secs(5), || async { connections(&s).await == 0 }).await,
        "the socket's place came free"
    );
    assert!(publishes(&s).await);
}

/// Whether a publish over a new connection is served.
async fn publishes(s: &Node) -> bool {
    crier_tests::publish_served(&s.url()).await
}
