//! The real `crier` binary and its open-file limit: it raises the soft limit to the hard
//! one, warns when the limit cannot hold `limits.max_connections`, and keeps serving
//! through running out of descriptors. Linux only: the limits are read from `/proc`.
#![cfg(target_os = "linux")]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Crier, post};
use serde_json::json;

/// The soft and hard "Max open files" of a process, from `/proc/PID/limits`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files line");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().expect("soft limit"), numbers.next().expect("hard limit"))
}

/// Descriptors the process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Waits (bounded) until `what` holds.
fn eventually(within: Duration, mut what: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    what()
}

fn handshake_body() -> serde_json::Value {
    json!([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}])
}

async fn handshakes(crier: &Crier) -> bool {
    let url = format!("http://{}/faye", crier.addr);
    let reply = post(&url, handshake_body()).await;
    reply[0]["successful"] == json!(true)
}

#[tokio::test]
async fn serve_raises_a_low_soft_limit_to_the_hard_limit_and_says_so() {
    let (_, hard) = open_file_limits(std::process::id());
    // Room for the 100 connections below and the 256 reserve, so that nothing is reported.
    assert!(hard >= 356, "this test needs a hard open-file limit of at least 356 (it is {hard})");
    // The connection limit fits the hard limit: no warning.
    let crier = common::start_with_ulimit("-Sn 256", &[], &[("CRIER_LIMITS__MAX_CONNECTIONS", "100")]);
    let pid = crier.child.id();
    assert_eq!(open_file_limits(pid), (hard, hard), "the soft limit is raised to the hard one");
    assert!(crier.logged(&format!("open_files_limit={hard}")), "{:?}", crier.log);
    assert!(crier.logged("soft_limit_at_start=256"), "{:?}", crier.log);
    assert!(!crier.logged("open-file limit ("), "no shortfall to report: {:?}", crier.log);
    assert!(handshakes(&crier).await);
}

#[tokio::test]
async fn a_limit_too_low_for_max_connections_is_reported_at_start() {
    let crier = common::start_with_ulimit("-n 512", &[], &[("CRIER_LIMITS__MAX_CONNECTIONS", "1000")]);
    assert_eq!(open_file_limits(crier.child.id()), (512, 512));
    // The warning names the setting and the most that fits (512 less the 256 reserve).
    assert!(crier.logged("the open-file limit (512) is below limits.max_connections = 1000"), "{:?}", crier.log);
    assert!(crier.logged("set limits.max_connections at most 256"), "{:?}", crier.log);
    assert!(handshakes(&crier).await);
}

/// Running out of descriptors stalls new connections only: the node stays up, and serves
/// new clients as soon as others close.
#[tokio::test]
async fn connections_beyond_the_descriptor_limit_wait_and_are_served_once_others_close() {
    const LIMIT: usize = 64;
    let mut crier = common::start_with_ulimit(&format!("-n {LIMIT}"), &[], &[("CRIER_LIMITS__MAX_CONNECTIONS", "0")]);
    let pid = crier.child.id();
    // No connection limit: the descriptor limit is the limit, with nothing to warn about.
    assert!(!crier.logged("open-file limit ("), "{:?}", crier.log);
    let baseline = open_fds(pid);
    // More connections than the server has descriptors; the kernel completes them all into
    // the listen backlog (or they wait), and the server accepts until it runs out.
    let addr: std::net::SocketAddr = crier.addr.parse().expect("address");
    let flood: Vec<TcpStream> =
        (0..LIMIT + 16).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()).collect();
    assert!(flood.len() > LIMIT, "connected {} of {}", flood.len(), LIMIT + 16);
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) >= LIMIT),
        "the server reached its descriptor limit ({} open)",
        open_fds(pid)
    );
    assert!(crier.child.try_wait().expect("wait").is_none(), "the server is still running");
    // axum's accept loop reports it (and retries a second later), as docs/operations.md says.
    assert!(eventually(Duration::from_secs(5), || crier.logged("accept error")), "{:?}", crier.log);
    drop(flood);
    // Bounded: the accept loop retries a second after running out, and each closed
    // connection frees a descriptor.
    let served = tokio::time::timeout(Duration::from_secs(15), handshakes(&crier)).await;
    assert_eq!(served, Ok(true), "a new client is served once the flood has closed");
    // The handshake's own connection may still be open (keep-alive), and nothing more.
    assert!(
        eventually(Duration::from_secs(10), || open_fds(pid) <= baseline + 2),
        "the flood's descriptors were released ({} open, {baseline} before)",
        open_fds(pid)
    );
}
