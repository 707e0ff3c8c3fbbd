//! The real npm `faye` and `cometd` clients against a real Crier server, over WebSocket and
//! long-polling (scripts in tests/interop/, checked against the reference Faye server too).

use crier_tests::{TestServer, run_node};

async fn run(script: &str, transport: &str) {
    let server = TestServer::start().await;
    let (ok, out) = run_node(script, &server.url(), transport, &[]).await;
    assert!(ok, "{script} over {transport} failed:\n{out}");
    // The scripts print one line per scenario; make sure they ran some.
    assert!(out.contains("\"ok\":true"), "no scenario ran:\n{out}");
    assert!(!out.contains("\"ok\":false"), "{out}");
    server.stop().await.expect("clean stop");
}

/// The Faye client re-sends a publish whose reply a proxy dropped (same message id); the
/// subscriber gets it once (Faye's server delivers it twice: faye-behaviour.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_faye_client_re_sends_is_delivered_once() {
    let server = TestServer::start().await;
    for transport in ["websocket", "long-polling"] {
        let (ok, out) = run_node("resend.js", &server.url(), transport, &[]).await;
        assert!(ok && out.contains("delivered once"), "subscriber over {transport}:\n{out}");
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faye_client_over_websocket() {
    run("faye.js", "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faye_client_over_long_polling() {
    run("faye.js", "long-polling").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cometd_client_over_websocket() {
    run("cometd.mjs", "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cometd_client_over_long_polling() {
    run("cometd.mjs", "long-polling").await;
}
