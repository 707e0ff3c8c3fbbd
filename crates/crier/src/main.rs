//! `crier`: a Faye-compatible Bayeux server.
//!
//! `crier serve` runs a complete single-node server on the in-memory engine with no other
//! setup; with `--redis URL` (or `redis.url`) nodes share sessions and messages through
//! Redis, so any node serves any client. `crier check-config` validates a configuration; `crier print-config` prints the
//! effective one.

mod docs;
mod open_files;
mod settings;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crier_engine::{Backend, Engine, MemoryBackend};
use crier_redis::RedisBackend;
use settings::{Overrides, Settings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exit code for invalid configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(name = "crier", version, about = "A horizontally scalable, Faye-compatible Bayeux pub/sub server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Address and port to listen on (overrides `listen`).
    #[arg(long)]
    listen: Option<String>,
    /// Bayeux mount path (overrides `server.mount`).
    #[arg(long)]
    mount: Option<String>,
    /// Bayeux connect timeout in seconds (overrides `engine.timeout_secs`).
    #[arg(long)]
    timeout: Option<u64>,
    /// The Faye browser client file to serve at `<mount>/client.js` (overrides `server.client_js`).
    #[arg(long)]
    client_js: Option<PathBuf>,
    /// Redis URL for a cluster of nodes (overrides `redis.url`): `redis://host:port`,
    /// `redis-cluster://host:port?node=...`, `redis-sentinel://host:port?sentinelServiceName=...`.
    #[arg(long)]
    redis: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ConfigArgs),
    /// Validate the configuration and exit (non-zero naming the bad key).
    CheckConfig(ConfigArgs),
    /// Print the effective configuration as TOML (secrets masked).
    PrintConfig(ConfigArgs),
    /// Print the reference of every setting (Markdown), or with `--example` a complete
    /// example configuration file.
    ConfigReference {
        /// Print an example file with every key, its doc and its default.
        #[arg(long)]
        example: bool,
    },
}

fn load(args: &ConfigArgs) -> Result<Settings, String> {
    let o = Overrides {
        listen: args.listen.clone(),
        mount: args.mount.clone(),
        timeout: args.timeout,
        client_js: args.client_js.clone(),
        redis: args.redis.clone(),
    };
    settings::load(settings::figment(args.config.as_deref(), settings::env(), &o))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn serve(s: Settings) -> anyhow::Result<()> {
    let files = open_files::raise();
    // A field left out is unlimited.
    tracing::info!(open_files_limit = files.limit, soft_limit_at_start = files.before, "open-file limit");
    if let Some(why) = open_files::shortfall(files.limit, s.limits.max_connections) {
        tracing::warn!("{why}");
    }
    if let Some(why) = s.engine.publish_retry_window_shortfall() {
        tracing::warn!("{why}");
    }
    let listener = tokio::net::TcpListener::bind(&s.listen).await.with_context(|| format!("binding {}", s.listen))?;
    let addr = listener.local_addr()?;
    let (backend, kind): (Arc<dyn Backend>, &str) = if s.redis.enabled() {
        let b = RedisBackend::connect(s.redis.clone(), s.engine.session_lifetime()).await?;
        (Arc::new(b), "redis")
    } else {
        (Arc::new(MemoryBackend::new()), "memory")
    };
    let node = backend.node_id();
    let hooks = crier_hooks::Hooks::new(&s.hooks)?;
    let mut builder = Engine::builder(s.engine.clone(), backend);
    for policy in crier_auth::policies(&s.auth)? {
        builder = builder.extension(policy);
    }
    // After the policies: a /service publish they refuse never reaches the app.
    for ext in hooks.extensions() {
        builder = builder.extension(ext);
    }
    let engine = builder.build();
    let hook_tasks = TaskTracker::new();
    let hook_stop = CancellationToken::new();
    if let Some(webhooks) = hooks.webhooks {
        webhooks.spawn(engine.events(), &node, &hook_tasks, hook_stop.clone());
    }
    hook_tasks.close();
    let mut server = s.server.clone();
    server.allowed_origins.extend(s.auth.allowed_origins.iter().cloned());
    server.limits = s.limits.clone();
    server.api = s.api.clone();
    tracing::info!(%addr, mount = %s.server.mount, timeout_secs = s.engine.timeout_secs, backend = kind, "crier listening");
    let served = crier_server::serve(listener, engine, server, shutdown_signal()).await;
    // Only once the server has drained: the webhooks then send what the drain produced
    // (disconnects) and stop by their own deadline; the margin covers a batch in flight.
    hook_stop.cancel();
    let flush = Duration::from_millis(s.hooks.events.shutdown_flush_ms) + Duration::from_secs(1);
    if tokio::time::timeout(flush, hook_tasks.wait()).await.is_err() {
        tracing::warn!("event webhooks did not stop in time");
    }
    served?;
    tracing::info!("crier stopped");
    Ok(())
}

/// jemalloc rather than the system allocator: measured smaller per idle connection (3.8
/// vs 4.2 KiB at 10,000) and no slower (docs/benchmarks.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::ConfigReference { example } = cli.command {
        print!("{}", if example { docs::example() } else { docs::reference() });
        return ExitCode::SUCCESS;
    }
    let (args, cmd) = match &cli.command {
        Command::Serve(a) => (a, "serve"),
        Command::CheckConfig(a) => (a, "check"),
        Command::PrintConfig(a) => (a, "print"),
        Command::ConfigReference { .. } => return ExitCode::SUCCESS,
    };
    let settings = match load(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("crier: invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cmd {
        "check" => {
            println!("configuration ok");
            ExitCode::SUCCESS
        }
        "print" => match toml::to_string_pretty(&settings.masked()) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("crier: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            let telemetry = match telemetry::init(&settings.log) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("crier: invalid configuration: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("crier: cannot start the runtime: {e}");
                    telemetry.shutdown();
                    return ExitCode::FAILURE;
                }
            };
            let code = match rt.block_on(serve(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "crier failed");
                    eprintln!("crier: {e:#}");
                    ExitCode::FAILURE
                }
            };
            // Outside the runtime: the exporter's client blocks while it sends the last spans.
            telemetry.shutdown();
            code
        }
    }
}
