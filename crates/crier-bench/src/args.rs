//! Command-line options. The library takes the same [`Args`], so a test describes a run
//! exactly as a person would type it (`Args::try_parse_from([...])`).

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The longest run the tool agrees to (every phase is bounded; this bounds the whole).
pub const MAX_DURATION_SECS: f64 = 3600.0;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// S subscribers spread over C channels (`/bench/cN`), P publishers, publisher `i`
    /// on channel `i mod C`.
    FanOut,
    /// Many publishers, one subscriber (defaults: 50 publishers, 1 subscriber, 1 channel).
    FanIn,
    /// Every subscriber subscribes to `/bench/*` while publishers publish to `/bench/cN`.
    Wildcard,
    /// Hold N connected clients; report the handshake rate and the server's memory per
    /// connection.
    Idle,
    /// No server: the machine's floor. S TCP connections over loopback in this process,
    /// a delivery frame written to each at `--rate` by plain writer threads and read by
    /// epoll reader threads (one of each per core). `--url` is not used.
    Loopback,
}

/// How subscribers (and idle clients) talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubTransport {
    /// One WebSocket per client; handshake, connects and subscribes over the socket.
    Ws,
    /// HTTP POST long-polling (`connectionType: long-polling`).
    LongPolling,
}

/// How publishers talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PubTransport {
    /// A Bayeux session over a WebSocket; each publish is acknowledged on the socket.
    Ws,
    /// Session-less HTTP POSTs, as a backend publishes (one message per request).
    Http,
}

/// A bounded load run against one or more Bayeux endpoints on this machine.
#[derive(Debug, Clone, Parser)]
#[command(name = "crier-bench", version, about, long_about = None)]
pub struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "fan-out")]
    pub mode: Mode,

    /// Bayeux endpoint(s) for every client (`http://` or `ws://`, loopback only); clients
    /// are spread round-robin. Repeatable.
    #[arg(long = "url", default_value = "http://127.0.0.1:8000/faye")]
    pub urls: Vec<String>,

    /// Endpoint(s) for subscribers and idle clients only (default: --url). Repeatable.
    #[arg(long = "sub-url")]
    pub sub_urls: Vec<String>,

    /// Endpoint(s) for publishers only (default: --url). Repeatable.
    #[arg(long = "pub-url")]
    pub pub_urls: Vec<String>,

    /// Subscriber and idle-client transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: SubTransport,

    /// Publisher transport.
    #[arg(long = "pub-transport", value_enum, default_value = "ws")]
    pub pub_transport: PubTransport,

    /// Subscribers (default: 100; fan-in: 1).
    #[arg(short = 's', long)]
    pub subscribers: Option<usize>,

    /// Publishers (default: 1; fan-in: 50).
    #[arg(short = 'p', long)]
    pub publishers: Option<usize>,

    /// Channels `/bench/c0` ... (default: 1).
    #[arg(short = 'c', long)]
    pub channels: Option<usize>,

    /// Idle mode: connections to hold.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,

    /// Idle mode: also subscribe each client to `/bench/idle/N` (N = client mod --channels).
    #[arg(long)]
    pub idle_subscribe: bool,

    /// Total publish rate in messages per second over all publishers; 0 publishes as fast
    /// as acknowledgements allow (each publisher keeps --inflight unacknowledged).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,

    /// Most unacknowledged publishes per publisher.
    #[arg(long, default_value_t = 16)]
    pub inflight: usize,

    /// Stop each publisher after this many messages (the duration still applies).
    #[arg(long)]
    pub messages: Option<u64>,

    /// Extra payload bytes per message (a string of `x`).
    #[arg(long, default_value_t = 0)]
    pub size: usize,

    /// Seconds of publishing (idle mode: seconds to hold the connections after the ramp).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seconds to wait after publishing for acknowledgements and deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,

    /// Seconds allowed for connecting and subscribing every client.
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout: f64,

    /// Idle mode: seconds to wait after the ramp before sampling the server's memory.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,

    /// Clients connecting at the same time during setup.
    #[arg(long, default_value_t = 200)]
    pub ramp: usize,

    /// Local source addresses 127.0.0.1..=127.0.0.N to spread connections over (each
    /// holds about 28,000 ephemeral ports); 0 picks one per 20,000 clients.
    #[arg(long, default_value_t = 0)]
    pub source_ips: u8,

    /// Server process to sample memory (VmRSS) from, before and after. Repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,

    /// A Redis (`host:port` or `redis://host:port`, loopback) whose INFO commandstats are
    /// reset before publishing and read after: commands per publish.
    #[arg(long)]
    pub redis: Option<String>,

    /// A label copied into the report (e.g. `crier` or `faye`).
    #[arg(long, default_value = "")]
    pub label: String,

    /// Print one JSON line instead of the text report.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Subscribers for this mode.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.unwrap_or(match self.mode {
            Mode::FanIn => 1,
            _ => 100,
        })
    }

    /// Publishers for this mode.
    pub fn publisher_count(&self) -> usize {
        self.publishers.unwrap_or(match self.mode {
            Mode::FanIn => 50,
            _ => 1,
        })
    }

    /// Channels for this mode (at least 1).
    pub fn channel_count(&self) -> usize {
        self.channels.unwrap_or(1).max(1)
    }

    pub(crate) fn duration(&self) -> Duration {
        secs(self.duration)
    }

    pub(crate) fn drain(&self) -> Duration {
        secs(self.drain)
    }

    pub(crate) fn setup_timeout(&self) -> Duration {
        secs(self.setup_timeout)
    }

    pub(crate) fn settle(&self) -> Duration {
        secs(self.settle)
    }

    /// Rejects settings that would make a run unbounded or meaningless.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        let finite = |name: &str, v: f64, max: f64| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("--{name} must be between 0 and {max} (got {v})"))
            }
        };
        finite("duration", self.duration, MAX_DURATION_SECS)?;
        finite("drain", self.drain, 600.0)?;
        finite("setup-timeout", self.setup_timeout, 3600.0)?;
        finite("settle", self.settle, 600.0)?;
        finite("rate", self.rate, 10_000_000.0)?;
        anyhow::ensure!(self.inflight >= 1, "--inflight must be at least 1");
        anyhow::ensure!(self.ramp >= 1, "--ramp must be at least 1");
        anyhow::ensure!(self.size <= 1 << 20, "--size is at most 1 MiB");
        if self.mode != Mode::Idle {
            anyhow::ensure!(self.publisher_count() >= 1, "at least one publisher");
            anyhow::ensure!(self.subscriber_count() >= 1, "at least one subscriber");
        }
        Ok(())
    }
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::ZERO)
}
