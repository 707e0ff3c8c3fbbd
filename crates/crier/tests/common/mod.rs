//! Shared by the tests that run the real `crier` binary: start it on an ephemeral port,
//! read its bound address from its log (kept for assertions), kill it when dropped.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// A running `crier serve`.
pub(crate) struct Crier {
    pub(crate) child: Child,
    /// `127.0.0.1:PORT`
    pub(crate) addr: String,
    /// Every log line so far.
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Crier {
    /// Whether any log line so far contains `text`.
    pub(crate) fn logged(&self, text: &str) -> bool {
        self.log.lock().expect("log lock").iter().any(|l| l.contains(text))
    }
}

impl Drop for Crier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with only `PATH` from the environment: no `CRIER_*` from the developer's shell.
pub(crate) fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crier"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// Starts `crier serve --listen 127.0.0.1:0 ARGS` with `ENV`, and waits (bounded) for the
/// address it logs.
pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Crier {
    spawn(command(), args, env)
}

/// As [`start`], with the open-file limits the shell sets first: `ulimit` arguments such as
/// `-Sn 256` (soft only) or `-n 128` (both).
pub(crate) fn start_with_ulimit(ulimit: &str, args: &[&str], env: &[(&str, &str)]) -> Crier {
    let mut sh = Command::new("sh");
    sh.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    sh.arg("-c").arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_crier"));
    spawn(sh, args, env)
}

fn spawn(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Crier {
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn crier");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let keep = log.clone();
    // A thread reads the log (and keeps draining it so the child never blocks on a full
    // pipe); the address arrives over a channel, waited for with a bound.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("addr=") {
                let _ = tx.send(line[pos + 5..].split_whitespace().next().unwrap_or("").to_owned());
            }
            keep.lock().expect("log lock").push(line);
        }
    });
    let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
        let status = child.try_wait();
        let _ = child.kill();
        panic!("crier logged no address within 20 s (exit: {status:?}); its log: {:?}", log.lock().expect("log lock"));
    };
    Crier { child, addr, log }
}

/// POSTs JSON and returns the JSON reply.
pub(crate) async fn post(url: &str, body: Value) -> Value {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(40)).build().expect("client");
    let r = client.post(url).json(&body).send().await.expect("POST");
    r.json().await.expect("JSON reply")
}
