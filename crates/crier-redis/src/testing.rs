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
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("crier-redis-{}-{port}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            let mut s = RedisServer { port, dir, child: None };
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
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

/// Whether a buffer holds one whole RESP reply (simple, error, integer or bulk string).
fn complete(b: &[u8]) -> bool {
    let Some(end) = b.windows(2).position(|w| w == b"\r\n") else { return false };
    match b.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&b[1..end]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
            len < 0 || b.len() >= end + 2 + len as usize + 2
        }
        _ => true,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
