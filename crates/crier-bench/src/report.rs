//! The result of a run: a text summary, or one JSON line (`--json`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Send-to-receive latency, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Deliveries measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// A server process's resident memory.
#[derive(Debug, Clone, Serialize)]
pub struct Rss {
    /// The process id.
    pub pid: u32,
    /// VmRSS before the clients connected, KiB (`None`: could not be read).
    pub before_kib: Option<u64>,
    /// VmRSS at the measuring point (idle: after the ramp and settling), KiB.
    pub after_kib: Option<u64>,
}

/// Commands Redis executed while messages were published (INFO commandstats).
#[derive(Debug, Clone, Serialize)]
pub struct RedisCommands {
    /// All commands counted between the reset and the end of the drain.
    pub total: u64,
    /// `total` divided by acknowledged publishes.
    pub per_publish: f64,
    /// Calls by command name (`evalsha`, `publish`, ...).
    pub by_command: BTreeMap<String, u64>,
}

/// Idle-mode figures.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// Clients asked for.
    pub clients: usize,
    /// Clients that completed handshake and first connect.
    pub connected: usize,
    /// Clients still connected at the end of the hold.
    pub connected_at_end: u64,
    /// Seconds the ramp took.
    pub ramp_secs: f64,
    /// Handshakes (with first connect) completed per second during the ramp.
    pub handshakes_per_sec: f64,
    /// Server memory growth per connected client over all `--server-pid`s, bytes.
    pub server_bytes_per_conn: Option<f64>,
    /// This process's memory per connected client, bytes.
    pub bench_bytes_per_conn: Option<f64>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `--label`.
    pub label: String,
    /// `fan-out`, `fan-in`, `wildcard` or `idle`.
    pub mode: String,
    /// Subscriber transport.
    pub transport: String,
    /// Publisher transport.
    pub pub_transport: String,
    /// Subscriber endpoints.
    pub sub_urls: Vec<String>,
    /// Publisher endpoints.
    pub pub_urls: Vec<String>,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Subscribers whose handshake, connect and subscribe succeeded.
    pub subscribers_ready: usize,
    /// Publishers asked for.
    pub publishers: usize,
    /// Publishers that were ready.
    pub publishers_ready: usize,
    /// Channels.
    pub channels: usize,
    /// Seconds the setup (connecting and subscribing every client) took.
    pub setup_secs: f64,
    /// Offered rate (`--rate`, 0: as fast as acknowledgements allow).
    pub offered_rate: f64,
    /// Seconds from the start of publishing to the last delivery (or the last
    /// acknowledgement, whichever is later).
    pub elapsed_secs: f64,
    /// Publishes sent.
    pub sent: u64,
    /// Publishes acknowledged with `successful: true`.
    pub published: u64,
    /// Publishes answered with `successful: false`.
    pub publish_failed: u64,
    /// Publishes never answered by the end of the drain.
    pub publish_unanswered: u64,
    /// Acknowledged publishes per second over the publishing time.
    pub publish_rate: f64,
    /// Deliveries expected: each acknowledged publish times the ready subscribers whose
    /// subscription matches its channel.
    pub expected: u64,
    /// Distinct deliveries received.
    pub delivered: u64,
    /// `delivered / elapsed_secs`.
    pub deliveries_per_sec: f64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries received more than once (each extra copy counts one).
    pub duplicated: u64,
    /// Deliveries of publishes that were never acknowledged (not an error: counted apart).
    pub unacknowledged_delivered: u64,
    /// Send-to-receive latency.
    pub latency: Option<Percentiles>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Up to five error messages.
    pub error_examples: Vec<String>,
    /// Server memory (`--server-pid`).
    pub server_rss: Vec<Rss>,
    /// Redis commands (`--redis`).
    pub redis: Option<RedisCommands>,
    /// Idle mode.
    pub idle: Option<Idle>,
}

impl Report {
    /// The number of errors of every kind.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"report: {e}"}}"#))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = if self.label.is_empty() { String::new() } else { format!(" [{}]", self.label) };
        writeln!(f, "crier-bench {}{label}", self.mode)?;
        writeln!(f, "  subscribers    {} via {}", self.sub_urls.join(" "), self.transport)?;
        if let Some(i) = &self.idle {
            writeln!(
                f,
                "  clients        {} asked, {} connected, {} still connected at the end",
                i.clients, i.connected, i.connected_at_end
            )?;
            writeln!(f, "  ramp           {:.2} s, {:.0} handshakes/s", i.ramp_secs, i.handshakes_per_sec)?;
            if let Some(b) = i.server_bytes_per_conn {
                writeln!(f, "  server memory  {:.1} KiB per connection", b / 1024.0)?;
            }
            if let Some(b) = i.bench_bytes_per_conn {
                writeln!(f, "  bench memory   {:.1} KiB per connection", b / 1024.0)?;
            }
        } else {
            writeln!(f, "  publishers     {} via {}", self.pub_urls.join(" "), self.pub_transport)?;
            writeln!(
                f,
                "  clients        {}/{} subscribers, {}/{} publishers ready, {} channel(s), setup {:.2} s",
                self.subscribers_ready,
                self.subscribers,
                self.publishers_ready,
                self.publishers,
                self.channels,
                self.setup_secs
            )?;
            let offered = if self.offered_rate > 0.0 {
                format!("{} msg/s offered", self.offered_rate)
            } else {
                "ack-paced".into()
            };
            writeln!(
                f,
                "  published      {} acknowledged of {} sent ({} failed, {} unanswered), {:.0} msg/s, {offered}",
                self.published, self.sent, self.publish_failed, self.publish_unanswered, self.publish_rate
            )?;
            writeln!(
                f,
                "  delivered      {} of {} expected in {:.2} s: {:.0} deliveries/s",
                self.delivered, self.expected, self.elapsed_secs, self.deliveries_per_sec
            )?;
            writeln!(
                f,
                "  lost           {}   duplicated {}   (delivered but unacknowledged: {})",
                self.lost, self.duplicated, self.unacknowledged_delivered
            )?;
            if let Some(l) = &self.latency {
                writeln!(
                    f,
                    "  latency ms     p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  mean {:.2}",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
                )?;
            }
        }
        for r in &self.server_rss {
            let kib = |v: Option<u64>| v.map_or("?".to_owned(), |v| format!("{:.1} MiB", v as f64 / 1024.0));
            writeln!(f, "  server {:<7} RSS {} -> {}", r.pid, kib(r.before_kib), kib(r.after_kib))?;
        }
        if let Some(r) = &self.redis {
            let top: Vec<String> = r.by_command.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "  redis          {} commands, {:.2} per publish ({})", r.total, r.per_publish, top.join(" "))?;
        }
        write!(f, "  errors         {}", self.error_total())?;
        for (k, v) in &self.errors {
            write!(f, "  {k}={v}")?;
        }
        for e in &self.error_examples {
            write!(f, "\n    {e}")?;
        }
        Ok(())
    }
}
