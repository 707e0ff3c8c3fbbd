//! Short runs against an in-process Crier server on `127.0.0.1:0`: every acknowledged
//! message reaches every matching subscriber exactly once, with sane latency figures.

use std::sync::Arc;

use clap::Parser;
use crier_bench::{Args, Report, run};
use crier_engine::{Engine, EngineConfig, MemoryBackend};
use crier_server::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A Crier server with a 5 s connect timeout; stops when the guard drops.
struct Server {
    url: String,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Server {
    let config = EngineConfig { timeout_secs: 5, ..EngineConfig::default() };
    let engine = Engine::builder(config, Arc::new(MemoryBackend::new())).build();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
    let url = format!("http://{}/faye", listener.local_addr().expect("local addr"));
    let stop = CancellationToken::new();
    tokio::spawn(crier_server::serve(listener, engine, ServerConfig::default(), stop.clone().cancelled_owned()));
    Server { url, stop }
}

async fn bench(server: &Server, extra: &[&str]) -> Report {
    let mut argv = vec!["crier-bench", "--url", &server.url, "--drain", "5", "--setup-timeout", "30"];
    argv.extend_from_slice(extra);
    let args = Args::try_parse_from(argv).expect("valid arguments");
    let report = run(args).await.expect("the run completes");
    // Round-trips as one JSON line.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("JSON report");
    assert_eq!(json["lost"], report.lost);
    report
}

/// Every expected delivery arrived once, nothing failed, latency is plausible.
fn assert_clean(r: &Report) {
    assert_eq!(r.error_total(), 0, "errors: {r}");
    assert_eq!(r.subscribers_ready, r.subscribers, "{r}");
    assert_eq!(r.publishers_ready, r.publishers, "{r}");
    assert!(r.published > 0, "{r}");
    assert_eq!(r.published, r.sent, "every publish acknowledged: {r}");
    assert_eq!((r.lost, r.duplicated), (0, 0), "{r}");
    assert_eq!(r.delivered, r.expected, "{r}");
    assert!(r.deliveries_per_sec > 0.0 && r.publish_rate > 0.0, "{r}");
    let l = r.latency.as_ref().expect("latency measured");
    assert_eq!(l.count, r.delivered, "one latency sample per delivery");
    assert!(l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms && l.p99_ms <= l.p999_ms && l.p999_ms <= l.max_ms, "{l:?}");
    assert!(l.max_ms < 5000.0, "a loopback delivery under 5 s: {l:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_fan_out_delivers_every_message_once() {
    let server = start().await;
    let r = bench(&server, &["-s", "20", "-p", "2", "-c", "2", "--duration", "1", "--rate", "400"]).await;
    assert_clean(&r);
    // 20 subscribers on 2 channels: each message reaches 10 of them.
    assert_eq!(r.expected, r.published * 10, "{r}");
    assert!(r.published >= 200, "about 400 msg/s for 1 s: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_paced_fan_in() {
    let server = start().await;
    let r = bench(&server, &["--mode", "fan-in", "-p", "10", "--duration", "1", "--inflight", "4"]).await;
    assert_clean(&r);
    assert_eq!(r.subscribers, 1);
    assert_eq!(r.expected, r.published, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_wildcard_with_http_publishers() {
    let server = start().await;
    let argv = [
        "--mode",
        "wildcard",
        "--transport",
        "long-polling",
        "--pub-transport",
        "http",
        "-s",
        "10",
        "-p",
        "3",
        "-c",
        "3",
    ];
    let r = bench(&server, &[&argv[..], &["--duration", "1", "--rate", "150", "--size", "100"]].concat()).await;
    assert_clean(&r);
    // Every subscriber matches every channel through /bench/*.
    assert_eq!(r.expected, r.published * 10, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_and_measured() {
    let server = start().await;
    let pid = std::process::id().to_string();
    let r = bench(
        &server,
        &["--mode", "idle", "--clients", "200", "--duration", "1", "--settle", "0.5", "--server-pid", &pid],
    )
    .await;
    assert_eq!(r.error_total(), 0, "{r}");
    let idle = r.idle.as_ref().expect("idle figures");
    assert_eq!((idle.connected, idle.connected_at_end), (200, 200), "{r}");
    assert!(idle.handshakes_per_sec > 0.0, "{r}");
    assert!(idle.server_bytes_per_conn.is_some() && idle.bench_bytes_per_conn.is_some(), "{r}");
    assert_eq!(r.server_rss.len(), 1);
}

#[tokio::test]
async fn refuses_targets_off_this_machine() {
    let args = Args::try_parse_from(["crier-bench", "--url", "http://192.0.2.1:8000/faye", "--duration", "1"])
        .expect("valid arguments");
    let err = run(args).await.expect_err("not a loopback address");
    assert!(err.to_string().contains("loopback"), "{err}");
}

/// The no-server floor: every frame written to every loopback connection is read back,
/// each with one latency sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_floor_reads_back_every_frame() {
    let args = Args::try_parse_from([
        "crier-bench",
        "--mode",
        "loopback",
        "-s",
        "50",
        "--rate",
        "40",
        "--duration",
        "1",
        "--size",
        "200",
    ])
    .expect("valid arguments");
    let r = run(args).await.expect("the run completes");
    assert_eq!(r.mode, "loopback");
    assert_eq!(r.error_total(), 0, "{r}");
    assert_eq!(r.subscribers, 50, "{r}");
    assert!(r.sent >= 30, "about 40 messages in 1 s: {r}");
    assert_eq!(r.expected, r.sent * 50, "{r}");
    assert_eq!((r.delivered, r.lost), (r.expected, 0), "{r}");
    let l = r.latency.as_ref().expect("latency measured");
    assert_eq!(l.count, r.delivered, "one latency sample per delivery");
    assert!(l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms && l.max_ms < 5000.0, "{l:?}");
}

#[tokio::test]
async fn loopback_floor_needs_a_rate() {
    let args = Args::try_parse_from(["crier-bench", "--mode", "loopback", "--duration", "1"]).expect("valid arguments");
    let err = run(args).await.expect_err("no --rate");
    assert!(err.to_string().contains("--rate"), "{err}");
}
