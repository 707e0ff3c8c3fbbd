//! `crier-bench`: a load generator for Bayeux servers.
//!
//! It speaks plain Bayeux (handshake, a `/meta/connect` loop, subscribe, publish) over
//! WebSocket and HTTP long-polling, so it drives Crier and a stock Faye server alike, and
//! it only sends load to this machine (loopback endpoints). A run is bounded: set up
//! every client, publish for `--duration`, wait at most `--drain` for the deliveries,
//! stop every client, report.
//!
//! Every message carries its publisher, a per-publisher sequence number and its send
//! time, so each subscriber's deliveries are checked against what the server
//! acknowledged: deliveries per second, latency percentiles, lost and duplicated
//! messages, errors. The idle mode holds N connections and reports the handshake rate
//! and the server's memory per connection. The loopback mode runs no server: it measures
//! the machine's own floor for the same fan-out (plain threads writing frames to loopback
//! sockets and reading them back).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clap::Parser;
//! let args = crier_bench::Args::try_parse_from([
//!     "crier-bench", "--url", "http://127.0.0.1:8000/faye", "-s", "20", "--duration", "1",
//! ])?;
//! let report = crier_bench::run(args).await?;
//! assert_eq!(report.lost, 0);
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! Layout: `args` (the command line, shared by the library), `target` (endpoints, the
//! loopback rule, sockets), `wire` (Bayeux messages), `client` (one task per client:
//! subscribers, idle clients, publishers), `stats` (sequence sets, latency histogram,
//! errors), `loopback` (the no-server floor), `probe` (server memory, Redis command counts), `run` (the phases),
//! `report` (text and JSON).

mod args;
mod client;
mod loopback;
mod probe;
mod report;
mod run;
mod stats;
mod target;
mod wire;

pub use args::{Args, MAX_DURATION_SECS, Mode, PubTransport, SubTransport};
pub use report::{Idle, Percentiles, RedisCommands, Report, Rss};
pub use run::run;
