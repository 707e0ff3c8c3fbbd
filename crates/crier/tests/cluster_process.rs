//! Real `crier` processes on one real Redis behind a load balancer (a TCP proxy in this
//! test): a node killed with SIGKILL while WebSocket clients (the real Faye client) are
//! subscribed through it. The balancer moves them to the surviving node, and they receive the
//! messages published meanwhile: at least once, nothing lost (duplicates are allowed after
//! a crash: positions of WebSocket sessions are stored about once a second).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Crier;
use crier_redis::testing::{RedisServer, unique_prefix};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};

fn node(redis: &RedisServer, prefix: &str) -> Crier {
    common::start(
        &["--timeout", "10", "--redis", &redis.url()],
        &[("CRIER_REDIS__PREFIX", prefix), ("CRIER_REDIS__CURSOR_FLUSH_MS", "200")],
    )
}

/// A load balancer: forwards each new connection to the current target.
async fn balancer(target: Arc<Mutex<String>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = target.lock().expect("lock").clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

async fn publish(addr: &str, channel: &str, n: i64) -> Value {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let r = client
        .post(format!("http://{addr}/faye"))
        .json(&json!({"channel": channel, "data": {"n": n}}))
        .send()
        .await
        .expect("publish");
    r.json().await.expect("JSON reply")
}

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_of_a_killed_node_resume_on_another_without_loss() {
    let redis = RedisServer::start();
    let prefix = unique_prefix("sigkill");
    let mut a = node(&redis, &prefix);
    let b = node(&redis, &prefix);
    let target = Arc::new(Mutex::new(a.addr.clone()));
    let lb = balancer(target.clone()).await;

    assert!(interop_dir().join("node_modules").exists(), "run `npm ci` in tests/interop (scripts/test does)");
    const CLIENTS: usize = 3;
    let channel = "/crash/room";
    let mut followers = Vec::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    for i in 0..CLIENTS {
        let mut child = tokio::process::Command::new("node")
            .current_dir(interop_dir())
            .args(["follow.js", &format!("http://{lb}/faye"), channel])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().expect("stdout");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send((i, l));
            }
        });
        followers.push(child);
    }
    let mut received: Vec<BTreeMap<i64, usize>> = vec![BTreeMap::new(); CLIENTS];
    let mut ready = 0;
    let mut on_websocket = 0;
    let wait_ready = tokio::time::timeout(Duration::from_secs(30), async {
        while ready < CLIENTS || on_websocket < CLIENTS {
            let Some((_, l)) = rx.recv().await else { break };
            if l == "READY" {
                ready += 1;
            } else if l == "TRANSPORT websocket" {
                on_websocket += 1;
            }
        }
    })
    .await;
    assert!(wait_ready.is_ok(), "clients subscribed over WebSocket ({ready} ready, {on_websocket} on websocket)");

    // Before the crash, through the surviving node.
    for n in 0..20 {
        assert_eq!(publish(&b.addr, channel, n).await[0]["successful"], json!(true));
    }
    // Let positions of what was sent reach Redis, as they would in steady state.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = a.child.kill();
    let _ = a.child.wait();
    *target.lock().expect("lock") = b.addr.clone();
    // While the clients are away.
    for n in 20..40 {
        assert_eq!(publish(&b.addr, channel, n).await[0]["successful"], json!(true));
    }
    let done = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            if received.iter().all(|r| (0..40).all(|n| r.contains_key(&n))) {
                break;
            }
            let Some((i, l)) = rx.recv().await else { break };
            if let Some(n) = l.strip_prefix("MSG ").and_then(|n| n.parse::<i64>().ok()) {
                *received[i].entry(n).or_default() += 1;
            }
        }
    })
    .await;
    for (i, r) in received.iter().enumerate() {
        let missing: Vec<i64> = (0..40).filter(|n| !r.contains_key(n)).collect();
        assert!(done.is_ok() && missing.is_empty(), "client {i} missed {missing:?}");
    }
    // After the move, delivery is live again.
    for n in 40..45 {
        publish(&b.addr, channel, n).await;
    }
    let live = tokio::time::timeout(Duration::from_secs(10), async {
        while !received.iter().all(|r| (40..45).all(|n| r.contains_key(&n))) {
            let Some((i, l)) = rx.recv().await else { break };
            if let Some(n) = l.strip_prefix("MSG ").and_then(|n| n.parse::<i64>().ok()) {
                *received[i].entry(n).or_default() += 1;
            }
        }
    })
    .await;
    assert!(live.is_ok(), "live delivery after the move: {received:?}");
    let doubled: usize = received.iter().map(|r| r.values().filter(|c| **c > 1).count()).sum();
    eprintln!("after SIGKILL: every message delivered; {doubled} duplicates across {CLIENTS} clients");
    drop(followers);
}
