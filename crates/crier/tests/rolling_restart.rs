//! A rolling restart behind nginx: three real `crier` processes on one real Redis, nginx in
//! front of them with the proxy settings of `deploy/nginx.conf`, real Faye clients
//! (WebSocket and long-polling subscribers, a publisher publishing every 20 ms) talking
//! only to nginx. Each node in turn is drained with SIGTERM, replaced by a new process on a
//! new port, and nginx is reloaded with the new upstream list once the replacement is
//! ready. Every subscriber must receive every acknowledged publish, once.
//!
//! nginx must be installed (`.ci/run` installs it); without it the test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Crier;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crier_redis::testing::{RedisServer, unique_prefix};
use tokio::io::AsyncBufReadExt;

/// Drain grace of the nodes; a drained node must exit well within it.
const GRACE_SECS: u64 = 3;

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop")
}

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// The nginx binary: on PATH, or where Debian installs it (/usr/sbin may not be on a
/// non-root PATH).
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).find(|f| f.is_file()))
        .unwrap_or_default();
    match on_path
        .or_else(|| ["/usr/sbin/nginx", "/usr/local/sbin/nginx"].map(PathBuf::from).into_iter().find(|f| f.is_file()))
    {
        Some(p) => p,
        None => panic!(
            "nginx is not installed: this test runs nginx as the load balancer. Install it \
             (Debian: `apt-get install nginx`; .ci/run does this) and run the test again"
        ),
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).stderr(Stdio::null()).status();
}

/// The sum of one gauge over the nodes' `/metrics` (scraped directly, not through nginx).
async fn gauge_sum(nodes: &[Crier], name: &str) -> i64 {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let mut sum = 0;
    for n in nodes {
        let text = match client.get(format!("http://{}/metrics", n.addr)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
    }
    sum
}

/// Waits (bounded) until the WebSocket subscribers all hold a socket on the current nodes.
async fn wait_sockets(nodes: &[Crier], want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let open = gauge_sum(nodes, "crier_websocket_connections").await;
        if open == want || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `crier serve --redis` process; killed when dropped.
fn start_node(redis: &RedisServer, prefix: &str) -> Crier {
    common::start(
        &["--timeout", "10", "--redis", &redis.url()],
        &[
            ("CRIER_REDIS__PREFIX", prefix),
            ("CRIER_REDIS__CURSOR_FLUSH_MS", "200"),
            ("CRIER_SERVER__SHUTDOWN_GRACE_SECS", &GRACE_SECS.to_string()),
        ],
    )
}

/// Waits (bounded) until GET /readyz on `addr` answers 200.
async fn wait_ready(addr: &str) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client.get(format!("http://{addr}/readyz")).send().await.map(|r| r.status());
        if matches!(status, Ok(s) if s == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "node {addr} ready (/readyz 200) within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERMs a node and waits (bounded) for it to exit on its own, successfully.
async fn drain(node: &mut Crier) -> Duration {
    let sent = Instant::now();
    signal(node.child.id(), "-TERM");
    loop {
        if let Some(status) = node.child.try_wait().expect("wait") {
            let log = node.log.lock().expect("log lock").join("\n");
            assert!(status.success(), "drained node {} exited with {status}; log:\n{log}", node.addr);
            assert!(
                !log.contains("grace period over"),
                "node {} drained within its grace period, without cutting connections; log:\n{log}",
                node.addr
            );
            return sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(GRACE_SECS + 2),
            "node {} exited within its {GRACE_SECS} s grace period after SIGTERM",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// nginx as the load balancer, configured from `deploy/nginx.conf`, all files in a temp dir.
struct Nginx {
    child: Child,
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    template: String,
    reloads: usize,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Fast shutdown of the master and its workers; then, if any is left, the whole
        // process group (the master was started as its leader).
        let pid = self.child.id();
        signal(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(pid, "-KILL");
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `deploy/nginx.conf` with the upstream servers, the listen address, logs, pid and temp
/// paths replaced or added; every proxy setting kept. Panics (naming the line) if the
/// deployed file no longer has the shape this relies on.
fn nginx_conf(template: &str, dir: &Path, port: u16, upstreams: &[String]) -> String {
    let d = dir.display();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let mut out = String::new();
    // Workers run as the current user (root can name itself; others cannot switch user).
    if is_root {
        out.push_str("user root;\n");
    }
    out.push_str(&format!("pid {d}/nginx.pid;\nerror_log {d}/error.log notice;\n"));
    // Old workers keep proxied sockets after a reload until those close (the drained node
    // closes them); bound it anyway.
    out.push_str("worker_shutdown_timeout 10s;\n");
    let (mut servers, mut listen, mut http, mut logs) = (0, 0, 0, 0);
    for line in template.lines() {
        let t = line.trim_start();
        if t.starts_with("worker_processes") {
            out.push_str("worker_processes 1;\n");
        } else if t.starts_with("server ") && t.contains(':') {
            // `server crierN:8000 max_fails=1 fail_timeout=5s;`: one line per node, same
            // parameters.
            if servers == 0 {
                let params = t.split_once(' ').map(|(_, r)| r).unwrap_or("");
                let params = params.split_once(' ').map(|(_, r)| r).unwrap_or(";");
                for a in upstreams {
                    out.push_str(&format!("        server {a} {params}\n"));
                }
            }
            servers += 1;
        } else if t.starts_with("listen ") {
            out.push_str(&format!("        listen 127.0.0.1:{port};\n"));
            listen += 1;
        } else if t.starts_with("access_log ") {
            out.push_str(&format!("    access_log {d}/access.log;\n"));
            logs += 1;
        } else if t.starts_with("error_log ") {
            out.push_str(&format!("    error_log {d}/error.log notice;\n"));
            logs += 1;
        } else if t.starts_with("http {") {
            out.push_str(line);
            out.push('\n');
            for tmp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                out.push_str(&format!("    {tmp}_temp_path {d}/{tmp}_temp;\n"));
            }
            http += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(servers > 0, "deploy/nginx.conf has `server host:port ...` lines in its upstream");
    assert_eq!(listen, 1, "deploy/nginx.conf has one `listen` line");
    assert_eq!(http, 1, "deploy/nginx.conf has an `http {{` block");
    assert_eq!(logs, 2, "deploy/nginx.conf has an access_log and an error_log line");
    out
}

impl Nginx {
    fn start(upstreams: &[String]) -> Nginx {
        let bin = nginx_binary();
        let template = std::fs::read_to_string(repo_file("deploy/nginx.conf")).expect("read deploy/nginx.conf");
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
            let dir = std::env::temp_dir().join(format!("crier-nginx-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("nginx dir");
            std::fs::write(dir.join("nginx.conf"), nginx_conf(&template, &dir, port, upstreams)).expect("write conf");
            let child = Command::new(&bin)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("spawn nginx");
            let mut nginx = Nginx { child, bin: bin.clone(), dir, port, template: template.clone(), reloads: 0 };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return nginx;
                }
                if let Ok(Some(status)) = nginx.child.try_wait() {
                    let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                    assert!(attempt < 2 && log.contains("bind()"), "nginx exited with {status}:\n{log}");
                    break; // the port was taken meanwhile: try another
                }
                assert!(Instant::now() < deadline, "nginx listens on 127.0.0.1:{port} within 10 s");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        unreachable!("nginx started or the loop above failed")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/faye", self.port)
    }

    /// Rewrites the upstream list and reloads nginx; returns once the master has reread
    /// its configuration and started new workers.
    async fn set_upstreams(&mut self, upstreams: &[String]) {
        std::fs::write(self.dir.join("nginx.conf"), nginx_conf(&self.template, &self.dir, self.port, upstreams))
            .expect("write conf");
        let out = Command::new(&self.bin)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .args(["-s", "reload"])
            .output()
            .expect("nginx -s reload");
        assert!(out.status.success(), "nginx -s reload: {}", String::from_utf8_lossy(&out.stderr));
        self.reloads += 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            // After each "reconfiguring", the master logs the new workers it starts.
            let applied =
                log.split("reconfiguring").skip(1).filter(|after| after.contains("start worker process")).count();
            if applied >= self.reloads {
                return;
            }
            assert!(Instant::now() < deadline, "nginx applied reload {} within 10 s:\n{log}", self.reloads);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the Node clients reported, updated by a background task.
#[derive(Default)]
struct Seen {
    ready: usize,
    transports: BTreeMap<usize, String>,
    received: BTreeMap<usize, BTreeMap<i64, usize>>,
    acked: BTreeSet<i64>,
    nacked: Vec<String>,
    done: Option<String>,
    errors: Vec<String>,
}

fn spawn_node_script(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new("node")
        .current_dir(interop_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs")
}

/// Feeds every stdout line of `child` into `seen`, as client `i`.
fn collect(i: usize, child: &mut tokio::process::Child, seen: Arc<Mutex<Seen>>) {
    let stdout = child.stdout.take().expect("stdout");
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let mut s = seen.lock().expect("seen lock");
            if l == "READY" {
                s.ready += 1;
            } else if let Some(t) = l.strip_prefix("TRANSPORT ") {
                s.transports.insert(i, t.to_owned());
            } else if let Some(n) = l.strip_prefix("MSG ").and_then(|n| n.parse::<i64>().ok()) {
                *s.received.entry(i).or_default().entry(n).or_default() += 1;
            } else if let Some(n) = l.strip_prefix("ACK ").and_then(|n| n.parse::<i64>().ok()) {
                s.acked.insert(n);
            } else if let Some(rest) = l.strip_prefix("NACK ") {
                s.nacked.push(rest.to_owned());
            } else if let Some(rest) = l.strip_prefix("DONE ") {
                s.done = Some(rest.to_owned());
            } else {
                s.errors.push(format!("client {i}: {l}"));
            }
        }
    });
}

/// Polls `cond` on `seen` every 20 ms for at most `secs`; returns whether it held.
async fn wait_for(seen: &Arc<Mutex<Seen>>, secs: u64, cond: impl Fn(&Seen) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond(&seen.lock().expect("seen lock")) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_nginx_loses_no_acknowledged_message() {
    let nginx_bin = nginx_binary();
    assert!(
        interop_dir().join("node_modules/faye").exists(),
        "tests/interop/node_modules/faye is missing: run `npm ci` in tests/interop (scripts/test does)"
    );
    // The whole scenario, bounded; every process is killed when its owner drops.
    tokio::time::timeout(Duration::from_secs(85), scenario(nginx_bin))
        .await
        .expect("rolling restart scenario finished within 85 s");
}

async fn scenario(nginx_bin: PathBuf) {
    let started = Instant::now();
    let redis = RedisServer::start();
    let prefix = unique_prefix("rolling");
    let mut nodes: Vec<Crier> = (0..3).map(|_| start_node(&redis, &prefix)).collect();
    for n in &nodes {
        wait_ready(&n.addr).await;
    }
    let addrs = |nodes: &[Crier]| nodes.iter().map(|n| n.addr.clone()).collect::<Vec<_>>();
    let mut nginx = Nginx::start(&addrs(&nodes));
    assert_eq!(nginx.bin, nginx_bin);
    let url = nginx.url();
    eprintln!("nginx on {url} in front of {:?}", addrs(&nodes));

    let channel = "/rolling/room";
    let seen = Arc::new(Mutex::new(Seen::default()));
    // Subscribers: two on WebSocket, two on long-polling, all through nginx.
    let transports = ["websocket", "long-polling", "websocket", "long-polling"];
    let mut clients = Vec::new();
    for (i, t) in transports.iter().enumerate() {
        let mut child = spawn_node_script(&["follow.js", &url, channel, "--transport", t]);
        collect(i, &mut child, seen.clone());
        clients.push(child);
    }
    let subscribed = wait_for(&seen, 30, |s| {
        s.ready == transports.len()
            && transports.iter().enumerate().all(|(i, t)| s.transports.get(&i).map(String::as_str) == Some(*t))
    })
    .await;
    {
        let s = seen.lock().expect("seen lock");
        assert!(
            subscribed,
            "subscribers ready on their transports: {} ready, {:?}; {:?}",
            s.ready, s.transports, s.errors
        );
    }

    let ws_clients = transports.iter().filter(|t| **t == "websocket").count() as i64;
    let open = wait_sockets(&nodes, ws_clients).await;
    assert_eq!(open, ws_clients, "the WebSocket subscribers hold sockets on the first nodes");

    // The publisher (the real Faye client, long-polling through nginx), one publish per 20 ms.
    let publisher_id = transports.len();
    let mut publisher = spawn_node_script(&["steady_publisher.js", &url, channel, "--interval", "20"]);
    collect(publisher_id, &mut publisher, seen.clone());
    assert!(wait_for(&seen, 15, |s| s.acked.len() >= 10).await, "the publisher's first publishes acknowledged");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Rolling restart: each node in turn drains and is replaced on a new port.
    for i in 0..3 {
        let before = seen.lock().expect("seen lock").acked.len();
        let old = nodes[i].addr.clone();
        let took = drain(&mut nodes[i]).await;
        let fresh = start_node(&redis, &prefix);
        wait_ready(&fresh.addr).await;
        let new = fresh.addr.clone();
        nodes[i] = fresh;
        nginx.set_upstreams(&addrs(&nodes)).await;
        eprintln!("node {old} drained in {took:?}; replaced by {new}; nginx reloaded");
        // Publishing goes on through the new set of nodes.
        let going_on = wait_for(&seen, 15, |s| s.acked.len() >= before + 50).await;
        assert!(
            going_on,
            "publishes acknowledged after replacing {old}: {}",
            seen.lock().expect("seen lock").acked.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Stop publishing; the publisher waits for its outstanding publishes.
    drop(publisher.stdin.take());
    assert!(wait_for(&seen, 25, |s| s.done.is_some()).await, "publisher finished its outstanding publishes");
    let (acked, done, nacked) = {
        let s = seen.lock().expect("seen lock");
        (s.acked.clone(), s.done.clone().unwrap_or_default(), s.nacked.clone())
    };
    // Every subscriber gets every acknowledged message.
    let all = wait_for(&seen, 20, |s| {
        (0..transports.len()).all(|i| s.received.get(&i).is_some_and(|r| acked.iter().all(|n| r.contains_key(n))))
    })
    .await;
    // Late duplicates would come right after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = seen.lock().expect("seen lock").received.clone();
    let mut report = Vec::new();
    let mut lost = Vec::new();
    let mut doubled = Vec::new();
    for (i, t) in transports.iter().enumerate() {
        let r = received.get(&i).cloned().unwrap_or_default();
        let missing: Vec<i64> = acked.iter().filter(|n| !r.contains_key(n)).copied().collect();
        let duplicates: usize = r.values().map(|c| c - 1).sum();
        let unacked = r.keys().filter(|n| !acked.contains(n)).count();
        report.push(format!(
            "subscriber {i} ({t}): {} distinct, {} missing, {duplicates} duplicates, {unacked} not acknowledged",
            r.len(),
            missing.len()
        ));
        if !missing.is_empty() {
            lost.push((i, missing));
        }
        if duplicates > 0 {
            doubled.push((i, duplicates));
        }
    }
    eprintln!(
        "rolling restart in {:?}: publisher (sent acked nacked) {done}, {} acknowledged, {} refused {:?}",
        started.elapsed(),
        acked.len(),
        nacked.len(),
        nacked.iter().take(5).collect::<Vec<_>>()
    );
    for line in &report {
        eprintln!("{line}");
    }
    assert!(all && lost.is_empty(), "acknowledged messages lost (subscriber, messages): {lost:?}");
    // A drain is normal operation: sessions leave with their positions stored, and a
    // publish the client re-sends after a lost reply is recognised.
    assert!(doubled.is_empty(), "messages delivered twice (subscriber, duplicates): {doubled:?}");
    // The WebSocket subscribers, whose sockets were all on drained nodes, are back on
    // sockets to the replacements.
    let open = wait_sockets(&nodes, ws_clients).await;
    assert_eq!(open, ws_clients, "the WebSocket subscribers hold sockets on the replacement nodes");
    for mut c in clients {
        drop(c.stdin.take());
        let _ = c.kill().await;
    }
}
