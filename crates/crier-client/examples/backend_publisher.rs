//! A backend publishing a stream of events through one batching [`Publisher`]: many
//! publishes, few requests (up to `max_batch` messages per POST or WebSocket frame), each
//! publish still acknowledged on its own.
//!
//! Usage:
//! `cargo run -p crier-client --example backend_publisher -- http://127.0.0.1:8000/faye [COUNT] [SECRET]`
//!
//! With SECRET, every message carries `ext: {"password": SECRET}` for a server whose
//! `auth.publish_secret` guards publishing (`auth.secret_field` names the key; `password`
//! by default). Prints how many were acknowledged and the rate.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crier_client::{Publisher, Transport};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: backend_publisher URL [COUNT] [SECRET]");
        return ExitCode::from(2);
    };
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let secret = args.next();

    let mut builder = Publisher::builder(url)
        .transport(Transport::WebSocket)
        .max_batch(200)
        .linger(Duration::from_millis(2))
        .max_in_flight(2);
    if let Some(s) = secret {
        builder = builder.ext(json!({ "password": s }));
    }
    let publisher = match builder.build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot start the publisher: {e}");
            return ExitCode::FAILURE;
        }
    };

    let start = Instant::now();
    // Publishes are queued at once; each future resolves to the server's reply.
    let acks: Vec<_> =
        (0..count).map(|i| publisher.publish("/activity/orders", json!({ "order": i, "status": "paid" }))).collect();
    let mut failed = 0;
    for ack in acks {
        if let Err(e) = ack.await {
            failed += 1;
            if failed == 1 {
                eprintln!("first failure: {e}");
            }
        }
    }
    publisher.close().await;
    let secs = start.elapsed().as_secs_f64();
    println!("{} acknowledged, {failed} failed, {:.0} publishes/s", count - failed, count as f64 / secs);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
