//! The real `crier` binary exports `handshake`, `publish` and `deliver` spans over
//! OTLP/HTTP when `log.otlp_endpoint` is set, as the service `log.service_name`, and
//! flushes them on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Crier, post};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Starts `crier serve` (30 s connect timeout, 5 s grace); the environment holds only what
/// the test sets (no CRIER_* or OTEL_* from the developer's shell).
fn serve_env(env: &[(&str, &str)]) -> Crier {
    let mut env = env.to_vec();
    env.push(("CRIER_SERVER__SHUTDOWN_GRACE_SECS", "5"));
    common::start(&["--timeout", "30"], &env)
}

/// One received OTLP request: its path and body.
type Request = (String, Vec<u8>);

/// A minimal OTLP/HTTP receiver: answers every request with an empty `200` (a valid empty
/// `ExportTraceServiceResponse`) and sends the request's path and body to the test.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("receiver addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(connection(stream, tx.clone()));
        }
    });
    (format!("http://{addr}"), rx)
}

/// Serves HTTP/1.1 requests with a `content-length` body on one connection until it closes.
async fn connection(stream: TcpStream, tx: mpsc::UnboundedSender<Request>) {
    let mut stream = AsyncBufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let _ = tx.send((path, body));
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if stream.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn spans_are_exported_over_otlp_and_flushed_on_sigterm() {
    let (endpoint, mut requests) = receiver().await;
    let mut server = serve_env(&[
        ("CRIER_LOG__OTLP_ENDPOINT", endpoint.as_str()),
        ("CRIER_LOG__SERVICE_NAME", "crier-otlp-test-service"),
    ]);
    let url = format!("http://{}/faye", server.addr);

    let hs =
        post(&url, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}))
            .await;
    let id = hs[0]["clientId"].as_str().expect("client id").to_owned();
    let connect = json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"});
    let first = post(&url, connect.clone()).await;
    assert_eq!(first[0]["successful"], json!(true));
    let sub = post(&url, json!({"channel":"/meta/subscribe","clientId":id,"subscription":"/news"})).await;
    assert_eq!(sub[0]["successful"], json!(true));
    let publish = post(&url, json!({"channel":"/news","clientId":id,"data":{"text":"hi"}})).await;
    assert_eq!(publish[0]["successful"], json!(true));
    // The message is already queued, so this connect returns it at once.
    let delivered = post(&url, connect).await;
    assert!(delivered.as_array().is_some_and(|a| a.iter().any(|m| m["data"]["text"] == json!("hi"))), "{delivered}");

    // SIGTERM: the server drains and the batch exporter flushes what it holds.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());

    // The service name is the resource's `service.name`, a string in the protobuf body.
    let mut missing: Vec<&str> = vec!["handshake", "publish", "deliver", "crier-otlp-test-service"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !missing.is_empty() {
        let (path, body) = tokio::time::timeout_at(deadline, requests.recv())
            .await
            .unwrap_or_else(|_| panic!("spans {missing:?} not exported within 20 s"))
            .expect("receiver running");
        assert_eq!(path, "/v1/traces");
        missing.retain(|name| !contains(&body, name.as_bytes()));
    }

    let exited = tokio::task::spawn_blocking(move || {
        let status = server.child.wait();
        (server, status)
    });
    let (_server, status) = tokio::time::timeout(Duration::from_secs(20), exited)
        .await
        .expect("crier exited within 20 s of SIGTERM")
        .expect("wait task");
    assert!(status.expect("exit status").success());
}
