//! A run, phase by phase: set up subscribers, then publishers; publish for the duration;
//! drain until every expected delivery has arrived (or the drain time is up); stop every
//! client; count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::args::{Args, Mode, PubTransport, SubTransport};
use crate::client::{self, Ctx, PubSpec, PubTally, SubSpec, Tally};
use crate::loopback;
use crate::probe;
use crate::report::{Idle, RedisCommands, Report, Rss};
use crate::stats::now_us;
use crate::target::{self, Target};
use crate::wire;

/// Extra time on top of every phase's own bound before the whole run is abandoned.
const MARGIN: Duration = Duration::from_secs(30);
/// Time allowed for clients to say goodbye once stopped.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs the load described by `args` and reports what it measured. Every phase is
/// bounded, so this returns within about setup-timeout + duration + 2 × drain + settle
/// + 45 s whatever the server does.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    args.validate()?;
    let sub_urls = if args.sub_urls.is_empty() { &args.urls } else { &args.sub_urls };
    let pub_urls = if args.pub_urls.is_empty() { &args.urls } else { &args.pub_urls };
    let subs = targets(sub_urls)?;
    let pubs = targets(pub_urls)?;
    let redis = args.redis.as_deref().map(target::redis_addr).transpose()?;
    let bound = args.setup_timeout() + args.duration() + args.drain() * 2 + args.settle() + STOP_GRACE + MARGIN;
    let work = async {
        match args.mode {
            Mode::Idle => idle_run(&args, subs).await,
            Mode::Loopback => {
                let report = base_report(&args, &[], &[]);
                tokio::task::spawn_blocking(move || loopback::run(&args, report)).await?
            }
            _ => load_run(&args, subs, pubs, redis).await,
        }
    };
    tokio::time::timeout(bound, work).await.context("the run exceeded its time bound")?
}

fn targets(urls: &[String]) -> anyhow::Result<Vec<Arc<Target>>> {
    anyhow::ensure!(!urls.is_empty(), "no endpoint given");
    urls.iter().map(|u| Target::parse(u).map(Arc::new)).collect()
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::FanOut => "fan-out",
        Mode::FanIn => "fan-in",
        Mode::Wildcard => "wildcard",
        Mode::Idle => "idle",
        Mode::Loopback => "loopback",
    }
}

fn transport_name(t: SubTransport) -> &'static str {
    match t {
        SubTransport::Ws => "websocket",
        SubTransport::LongPolling => "long-polling",
    }
}

fn pub_transport_name(t: PubTransport) -> &'static str {
    match t {
        PubTransport::Ws => "websocket",
        PubTransport::Http => "http",
    }
}

/// Collects readiness answers until `n` arrived or `deadline`; marks `ready[i]`.
async fn wait_ready(
    rx: &mut mpsc::Receiver<(usize, bool)>,
    n: usize,
    deadline: Instant,
    ready: &mut [bool],
    what: &str,
) {
    let (mut answered, started) = (0, Instant::now());
    let mut progress = started + Duration::from_secs(5);
    while answered < n {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((i, ok)) => {
                    answered += 1;
                    if let Some(r) = ready.get_mut(i) {
                        *r = ok;
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(progress) => {
                let ok = ready.iter().filter(|r| **r).count();
                eprintln!("crier-bench: {what}: {ok} ready, {answered}/{n} answered after {:.0} s", started.elapsed().as_secs_f64());
                progress += Duration::from_secs(5);
            }
        }
    }
}

fn rss_all(pids: &[u32]) -> Vec<Option<u64>> {
    pids.iter().map(|p| probe::rss_kib(*p)).collect()
}

fn rss_report(pids: &[u32], before: &[Option<u64>], after: &[Option<u64>]) -> Vec<Rss> {
    pids.iter()
        .zip(before.iter().zip(after))
        .map(|(pid, (b, a))| Rss { pid: *pid, before_kib: *b, after_kib: *a })
        .collect()
}

/// Stops every client and collects what each saw (clients that do not finish in time
/// are aborted and count as nothing received).
async fn collect<T: Default>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let deadline = Instant::now() + STOP_GRACE;
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(deadline, h).await {
            Ok(Ok(t)) => out.push(t),
            Ok(Err(_)) => out.push(T::default()),
            Err(_) => {
                abort.abort();
                out.push(T::default());
            }
        }
    }
    out
}

fn spawn_subscriber(
    ctx: &Arc<Ctx>,
    args: &Args,
    spec: SubSpec,
    http: &[reqwest::Client],
    tx: &mpsc::Sender<(usize, bool)>,
) -> JoinHandle<Tally> {
    let (ctx, tx) = (ctx.clone(), tx.clone());
    match args.transport {
        SubTransport::Ws => tokio::spawn(client::ws_subscriber(ctx, spec, tx)),
        SubTransport::LongPolling => {
            let http = http[spec.index % http.len()].clone();
            tokio::spawn(client::lp_subscriber(ctx, spec, http, tx))
        }
    }
}

fn base_report(args: &Args, subs: &[Arc<Target>], pubs: &[Arc<Target>]) -> Report {
    Report {
        label: args.label.clone(),
        mode: mode_name(args.mode).into(),
        transport: transport_name(args.transport).into(),
        pub_transport: pub_transport_name(args.pub_transport).into(),
        sub_urls: subs.iter().map(|t| t.http.clone()).collect(),
        pub_urls: pubs.iter().map(|t| t.http.clone()).collect(),
        subscribers: 0,
        subscribers_ready: 0,
        publishers: 0,
        publishers_ready: 0,
        channels: args.channel_count(),
        setup_secs: 0.0,
        offered_rate: args.rate,
        elapsed_secs: 0.0,
        sent: 0,
        published: 0,
        publish_failed: 0,
        publish_unanswered: 0,
        publish_rate: 0.0,
        expected: 0,
        delivered: 0,
        deliveries_per_sec: 0.0,
        lost: 0,
        duplicated: 0,
        unacknowledged_delivered: 0,
        latency: None,
        errors: BTreeMap::new(),
        error_examples: Vec::new(),
        server_rss: Vec::new(),
        redis: None,
        idle: None,
    }
}

/// Fan-out, fan-in and wildcard runs.
async fn load_run(
    args: &Args,
    subs: Vec<Arc<Target>>,
    pubs: Vec<Arc<Target>>,
    redis: Option<SocketAddr>,
) -> anyhow::Result<Report> {
    let (ns, np, nc) = (args.subscriber_count(), args.publisher_count(), args.channel_count());
    let ctx = Arc::new(Ctx::new(args.ramp));
    let mut report = base_report(args, &subs, &pubs);
    report.subscribers = ns;
    report.publishers = np;
    let rss_before = rss_all(&args.server_pids);
    let sources = target::sources(subs[0].addr.is_ipv4(), args.source_ips, ns + np);
    let http = target::http_clients(&sources)?;
    let wildcard = args.mode == Mode::Wildcard;
    // Subscriber i listens on channel i mod C (or on every channel), publisher j
    // publishes on channel j mod C.
    let matches = |s: usize, p: usize| wildcard || s % nc == p % nc;

    let setup_start = Instant::now();
    let deadline = setup_start + args.setup_timeout();
    let (tx, mut rx) = mpsc::channel(ns.max(1));
    let mut sub_handles = Vec::with_capacity(ns);
    for i in 0..ns {
        let subscription = if wildcard { "/bench/*".to_owned() } else { wire::channel(i, nc) };
        let spec = SubSpec {
            index: i,
            target: subs[i % subs.len()].clone(),
            source: sources[i % sources.len()],
            subscription: Some(subscription),
            publishers: np,
        };
        sub_handles.push(spawn_subscriber(&ctx, args, spec, &http, &tx));
    }
    drop(tx);
    let mut sub_ready = vec![false; ns];
    wait_ready(&mut rx, ns, deadline, &mut sub_ready, "subscribers").await;

    let (tx, mut rx) = mpsc::channel(np.max(1));
    let padding: Arc<str> = "x".repeat(args.size).into();
    let per_pub_rate = args.rate / np as f64;
    let mut pub_handles = Vec::with_capacity(np);
    for j in 0..np {
        let spec = PubSpec {
            index: j,
            target: pubs[j % pubs.len()].clone(),
            source: sources[(ns + j) % sources.len()],
            channel: wire::channel(j, nc),
            rate: per_pub_rate,
            // Evenly spread: together the publishers offer one message every 1/rate
            // seconds, not bursts of one message from each at once.
            offset: if args.rate > 0.0 { Duration::from_secs_f64(j as f64 / args.rate) } else { Duration::ZERO },
            inflight: args.inflight,
            max_messages: args.messages.unwrap_or(u64::MAX),
            duration: args.duration(),
            drain: args.drain(),
            padding: padding.clone(),
        };
        let (ctx, tx) = (ctx.clone(), tx.clone());
        pub_handles.push(match args.pub_transport {
            PubTransport::Ws => tokio::spawn(client::ws_publisher(ctx, spec, tx)),
            PubTransport::Http => tokio::spawn(client::http_publisher(ctx, spec, http[j % http.len()].clone(), tx)),
        });
    }
    drop(tx);
    let mut pub_ready = vec![false; np];
    wait_ready(&mut rx, np, deadline, &mut pub_ready, "publishers").await;
    report.setup_secs = setup_start.elapsed().as_secs_f64();
    report.subscribers_ready = sub_ready.iter().filter(|r| **r).count();
    report.publishers_ready = pub_ready.iter().filter(|r| **r).count();

    let can_publish = report.subscribers_ready > 0 && report.publishers_ready > 0;
    if can_publish {
        if let Some(addr) = redis {
            probe::redis_reset(addr).await?;
        }
    }
    // Publish (publishers stop by themselves after the duration and their drain).
    let start = Instant::now();
    let start_us = now_us();
    let _ = ctx.start.set(start);
    if can_publish {
        ctx.go.cancel();
    } else {
        ctx.stop.cancel();
    }
    let pub_bound = start + args.duration() + args.drain() + Duration::from_secs(5);
    let mut tallies: Vec<PubTally> = Vec::with_capacity(np);
    for h in pub_handles {
        let abort = h.abort_handle();
        match tokio::time::timeout_at(pub_bound, h).await {
            Ok(Ok(t)) => tallies.push(t),
            Ok(Err(_)) => tallies.push(PubTally::default()),
            Err(_) => {
                abort.abort();
                tallies.push(PubTally::default());
            }
        }
    }
    // Drain: wait for every expected delivery, bounded.
    let expected: u64 = tallies
        .iter()
        .enumerate()
        .map(|(p, t)| t.acked.len() * (0..ns).filter(|s| sub_ready[*s] && matches(*s, p)).count() as u64)
        .sum();
    let drain_end = Instant::now() + args.drain();
    while ctx.shared.delivered() < expected && Instant::now() < drain_end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if can_publish {
        if let Some(addr) = redis {
            let by_command = probe::redis_commandstats(addr).await?;
            let total = by_command.values().sum();
            let published: u64 = tallies.iter().map(|t| t.acked.len()).sum();
            report.redis = Some(RedisCommands {
                total,
                per_publish: if published > 0 { total as f64 / published as f64 } else { 0.0 },
                by_command,
            });
        }
    }
    let rss_after = rss_all(&args.server_pids);
    ctx.stop.cancel();
    let sub_tallies = collect(sub_handles).await;

    // Count.
    report.expected = expected;
    report.sent = tallies.iter().map(|t| t.sent).sum();
    report.published = tallies.iter().map(|t| t.acked.len()).sum();
    report.publish_failed = tallies.iter().map(|t| t.failed).sum();
    report.publish_unanswered = tallies.iter().map(PubTally::unanswered).sum();
    let (mut misrouted, mut last_us) = (0u64, tallies.iter().map(|t| t.last_ack_us).max().unwrap_or(0));
    let last_ack_us = last_us;
    for (s, tally) in sub_tallies.iter().enumerate() {
        report.duplicated += tally.duplicates;
        last_us = last_us.max(tally.last_us);
        for (p, got) in tally.per_pub.iter().enumerate() {
            let acked = &tallies[p].acked;
            report.delivered += got.len();
            if matches(s, p) {
                if sub_ready[s] {
                    report.lost += got.missing_from(acked);
                }
                report.unacknowledged_delivered += got.extra_over(acked);
            } else {
                misrouted += got.len();
            }
        }
        if tally.foreign > 0 {
            ctx.shared
                .errors
                .add("foreign", format!("subscriber {s} got {} deliveries that are not the bench's", tally.foreign));
        }
    }
    if misrouted > 0 {
        ctx.shared
            .errors
            .add("misrouted", format!("{misrouted} deliveries on channels their subscriber did not subscribe to"));
    }
    let secs_since_start = |us: u64| if us > start_us { (us - start_us) as f64 / 1e6 } else { 0.0 };
    report.elapsed_secs = secs_since_start(last_us).max(1e-6);
    report.publish_rate = report.published as f64 / secs_since_start(last_ack_us).max(1e-6);
    report.deliveries_per_sec = report.delivered as f64 / report.elapsed_secs;
    report.latency = ctx.shared.latency.percentiles();
    (report.errors, report.error_examples) = ctx.shared.errors.snapshot();
    report.server_rss = rss_report(&args.server_pids, &rss_before, &rss_after);
    Ok(report)
}

/// Idle connections: ramp up, settle, sample memory, hold, stop.
async fn idle_run(args: &Args, subs: Vec<Arc<Target>>) -> anyhow::Result<Report> {
    let n = args.clients;
    let ctx = Arc::new(Ctx::new(args.ramp));
    let mut report = base_report(args, &subs, &[]);
    report.subscribers = n;
    let rss_before = rss_all(&args.server_pids);
    let own_before = probe::own_rss_kib();
    let sources = target::sources(subs[0].addr.is_ipv4(), args.source_ips, n);
    let http = target::http_clients(&sources)?;

    let ramp_start = Instant::now();
    let (tx, mut rx) = mpsc::channel(n.max(1));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let subscription = args.idle_subscribe.then(|| format!("/bench/idle/{}", i % args.channel_count()));
        let spec = SubSpec {
            index: i,
            target: subs[i % subs.len()].clone(),
            source: sources[i % sources.len()],
            subscription,
            publishers: 0,
        };
        handles.push(spawn_subscriber(&ctx, args, spec, &http, &tx));
    }
    drop(tx);
    let mut ready = vec![false; n];
    wait_ready(&mut rx, n, ramp_start + args.setup_timeout(), &mut ready, "clients").await;
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let connected = ready.iter().filter(|r| **r).count();
    report.subscribers_ready = connected;
    report.setup_secs = ramp_secs;

    let hold_end = Instant::now() + args.duration().max(args.settle());
    tokio::time::sleep(args.settle()).await;
    let rss_after = rss_all(&args.server_pids);
    let own_after = probe::own_rss_kib();
    tokio::time::sleep_until(hold_end).await;
    let connected_at_end = ctx.alive.load(std::sync::atomic::Ordering::Relaxed);
    ctx.stop.cancel();
    let _ = collect(handles).await;

    let per_conn = |before: Option<u64>, after: Option<u64>| {
        let (b, a) = (before?, after?);
        (connected > 0).then(|| (a.saturating_sub(b) as f64 * 1024.0) / connected as f64)
    };
    let sum = |v: &[Option<u64>]| v.iter().copied().sum::<Option<u64>>();
    let server = if args.server_pids.is_empty() { None } else { per_conn(sum(&rss_before), sum(&rss_after)) };
    report.idle = Some(Idle {
        clients: n,
        connected,
        connected_at_end,
        ramp_secs,
        handshakes_per_sec: connected as f64 / ramp_secs.max(1e-6),
        server_bytes_per_conn: server,
        bench_bytes_per_conn: per_conn(own_before, own_after),
    });
    (report.errors, report.error_examples) = ctx.shared.errors.snapshot();
    report.server_rss = rss_report(&args.server_pids, &rss_before, &rss_after);
    Ok(report)
}
