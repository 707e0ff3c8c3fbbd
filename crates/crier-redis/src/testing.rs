//! Test support (feature `test-util`): a real `redis-server` on a free loopback port, owned
//! by the test process and killed when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A `redis-server` process started for tests.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// Kills the server if this process goes away without dropping it (a server kept in a
    /// `static` is never dropped).
    watchdog: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A key prefix no other test in this process uses (and no other process: it carries the pid).
pub fn unique_prefix(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("t{}-{}-{label}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

impl RedisServer {
    /// Starts `redis-server` (from `PATH`) without persistence on a free port, and waits
    /// until it answers PING. Panics if it cannot: the test cannot run without it.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments (e.g.
    /// `--cluster-enabled yes`, `--replicaof HOST PORT`).
    pub fn start_with(extra: &[&str]) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("crier-redis-{}-{port}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let extra = extra.iter().map(|s| (*s).to_owned()).collect();
            let mut s = RedisServer { port, dir, child: None, extra, watchdog: None };
            if s.spawn() {
                return s;
            }
        }
        panic!("could not start redis-server (is it installed? .ci/run installs it)");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.watchdog = watchdog(child.id(), self.port);
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cmd(&["PING"]).is_some_and(|r| r.contains("PONG")) {
                return true;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): its data is gone, as after a crash without persistence.
    pub fn kill(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }

    /// Sends one command and returns the raw reply (RESP text), or `None` if the server
    /// does not answer. Enough for PING, INFO, CONFIG and counters in tests.
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if complete(&out) {
                break;
            }
        }
        String::from_utf8(out).ok()
    }

    /// How many times `command` ran since the last `CONFIG RESETSTAT` (INFO commandstats).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cmd(&["INFO", "commandstats"]).unwrap_or_default();
        let key = format!("cmdstat_{}:calls=", command.to_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// A Redis Cluster of primaries without replicas, on free ports.
pub struct RedisCluster {
    /// The shards.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `shards` cluster-enabled servers, joins them with `redis-cli --cluster create`
    /// (slots split evenly) and waits until the cluster reports `cluster_state:ok`.
    pub fn start(shards: usize) -> Self {
        let nodes: Vec<RedisServer> = (0..shards)
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]))
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs (package redis-tools)");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if nodes.iter().all(|n| n.cmd(&["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))) {
                return RedisCluster { nodes };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis cluster did not become ready");
    }

    /// `redis-cluster://first?node=second&node=third...`
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", n.port));
        }
        url
    }
}

/// A Sentinel group: a master, one replica and one sentinel (quorum 1) watching them.
pub struct RedisSentinel {
    /// The initial master.
    pub master: RedisServer,
    /// Its replica, promoted on failover.
    pub replica: RedisServer,
    /// The sentinel.
    pub sentinel: RedisServer,
}

/// The name the sentinel monitors.
pub const SENTINEL_SERVICE: &str = "crier";

impl RedisSentinel {
    /// Starts the group and waits until the replica is linked to the master and the sentinel
    /// knows it (so a failover has somewhere to go).
    pub fn start() -> Self {
        let master = RedisServer::start();
        let mport = master.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mport]);
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("crier-sentinel-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {mport} 1\n\
             sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
             sentinel failover-timeout {SENTINEL_SERVICE} 3000\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel runs");
        let sentinel =
            RedisServer { port, dir, watchdog: watchdog(child.id(), port), child: Some(child), extra: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let replicas = sentinel.cmd(&["SENTINEL", "REPLICAS", SENTINEL_SERVICE]).unwrap_or_default();
            let linked = replica.cmd(&["INFO", "replication"]).is_some_and(|i| i.contains("master_link_status:up"));
            if linked && replicas.contains(&replica.port.to_string()) && replicas.contains("slave") {
                return RedisSentinel { master, replica, sentinel };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sentinel did not discover the replica");
    }

    /// Waits until the replica has applied everything the master has written so far, by
    /// replication offsets; false if it did not within `timeout`. (`WAIT` would not do: it
    /// waits only for the writes of its own connection, so from a fresh connection it
    /// returns at once.)
    pub fn replica_caught_up(&self, timeout: Duration) -> bool {
        let field = |server: &RedisServer, name: &str| -> Option<u64> {
            let info = server.cmd(&["INFO", "replication"])?;
            info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok())
        };
        let Some(target) = field(&self.master, "master_repl_offset:") else { return false };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if field(&self.replica, "slave_repl_offset:").is_some_and(|applied| applied >= target) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis-sentinel://SENTINEL?sentinelServiceName=crier`
    pub fn url(&self) -> String {
        format!("redis-sentinel://127.0.0.1:{}?sentinelServiceName={SENTINEL_SERVICE}", self.sentinel.port)
    }

    /// The port of the master the sentinel currently names.
    pub fn master_port(&self) -> Option<u16> {
        let r = self.sentinel.cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE])?;
        r.lines().filter(|l| !l.starts_with(['*', '$'])).nth(1)?.trim().parse().ok()
    }
}

/// A shell loop that waits for this process to end, then kills the server `pid`, but only
/// if that pid is still a redis-server on `port` (a pid can be reused). Tests run on Linux
/// (`/proc`); elsewhere the loop just finds nothing to kill.
fn watchdog(pid: u32, port: u16) -> Option<Child> {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
         tr '\\0' ' ' < /proc/{pid}/cmdline 2>/dev/null | grep -q ':{port}' && kill -9 {pid}",
        parent = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Whether a buffer holds one whole RESP reply (simple, error, integer or bulk string).
fn complete(b: &[u8]) -> bool {
    parse_end(b, 0).is_some()
}

/// The end of the RESP value starting at `at`, if it is all there (arrays included).
fn parse_end(b: &[u8], at: usize) -> Option<usize> {
    let rest = b.get(at..)?;
    let end = at + rest.windows(2).position(|w| w == b"\r\n")?;
    let head: i64 = std::str::from_utf8(&b[at + 1..end]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    match b[at] {
        b'$' if head < 0 => Some(end + 2),
        b'$' => {
            let stop = end + 2 + head as usize + 2;
            (b.len() >= stop).then_some(stop)
        }
        b'*' => {
            let mut pos = end + 2;
            for _ in 0..head.max(0) {
                pos = parse_end(b, pos)?;
            }
            Some(pos)
        }
        _ => Some(end + 2),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
