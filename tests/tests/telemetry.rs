//! `/metrics` as Prometheus text: every line parses, the key series move when traffic flows,
//! no series carries per-client or per-channel labels; and the optional internal port.

use std::collections::HashMap;
use std::time::Duration;

use crier_server::ServerConfig;
use crier_tests::{Options, RawWs, TestServer, connected_client, eventually, http, post_json, subscribe};
use serde_json::json;

/// Parses Prometheus text exposition strictly enough to catch malformed output: returns
/// series (name with labels) → value.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(rest.starts_with("HELP ") || rest.starts_with("TYPE "), "comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad name: {line}"
        );
        // Only histogram buckets carry a label; nothing per client or channel.
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with("{le=\"") && labels.ends_with("\"}"), "unexpected labels: {line}");
        }
        out.insert(series.to_owned(), value);
    }
    out
}

async fn scrape(url: &str) -> HashMap<String, f64> {
    let r = http().get(url).send().await.expect("scrape");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap_or_default().starts_with("text/plain; version=0.0.4"));
    parse(&r.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_series_move_when_traffic_flows() {
    let s = TestServer::start().await;
    let before = scrape(&s.at("/metrics")).await;
    for key in [
        "crier_handshakes_total",
        "crier_messages_published_total",
        "crier_messages_delivered_total",
        "crier_websocket_connections",
        "crier_delivery_latency_seconds_count",
        "crier_limit_publishes_refused_total",
        "crier_queue_dropped_total",
        "crier_subscriptions",
    ] {
        assert!(before.contains_key(key), "{key} exposed");
    }
    let id = connected_client(&s.url()).await;
    subscribe(&s.url(), &id, "/m").await;
    let _ws = RawWs::connect(&s.ws_url()).await;
    for i in 0..5 {
        post_json(&s.url(), &json!({"channel":"/m","data":i})).await;
    }
    let (_, r) =
        post_json(&s.url(), &json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"})).await;
    assert_eq!(r.as_array().map(Vec::len), Some(6), "{r}");
    let moved = eventually(Duration::from_secs(5), || async {
        let after = scrape(&s.at("/metrics")).await;
        let d = |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
        d("crier_handshakes_total") >= 1.0
            && d("crier_messages_published_total") >= 5.0
            && d("crier_messages_delivered_total") >= 5.0
            && d("crier_delivery_latency_seconds_count") >= 5.0
            && after.get("crier_websocket_connections").copied() == Some(1.0)
            && d("crier_subscriptions") == 1.0
            && after.get("crier_delivery_latency_seconds_bucket{le=\"+Inf\"}").copied()
                == after.get("crier_delivery_latency_seconds_count").copied()
    })
    .await;
    assert!(moved, "series moved: {:?}", scrape(&s.at("/metrics")).await);
}

#[tokio::test]
async fn health_and_metrics_on_the_internal_port_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let internal = format!("127.0.0.1:{port}");
    let server = ServerConfig { internal_listen: Some(internal.clone()), ..ServerConfig::default() };
    let s = TestServer::start_with(Options { server: Some(server), ..Options::default() }).await;
    let up = eventually(Duration::from_secs(5), || async {
        http()
            .get(format!("http://{internal}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(up, "internal /readyz answers");
    let m = scrape(&format!("http://{internal}/metrics")).await;
    assert!(m.contains_key("crier_handshakes_total"));
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = http().get(s.at(path)).send().await.expect("get");
        assert_eq!(r.status().as_u16(), 404, "{path} not on the public port");
    }
}
