//! A browser tab played by the real Faye client (`tests/interop/tab.js`), driven line by
//! line: commands on its stdin, events read from its stdout into a shared log.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

use crate::{eventually, interop_dir};

/// A running `tab.js`; killed when dropped.
pub struct Tab {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tab {
    /// Starts a tab on `url` (`transport`: `websocket` or `long-polling`) with an optional
    /// JWT for its handshake, subscribed to `subs`; returns once it is READY (30 s at most).
    pub async fn open(url: &str, transport: &str, jwt: Option<&str>, subs: &[&str]) -> Tab {
        let mut cmd = tokio::process::Command::new("node");
        cmd.current_dir(interop_dir()).arg("tab.js").arg(url).arg("--transport").arg(transport);
        if let Some(t) = jwt {
            cmd.arg("--jwt").arg(t);
        }
        if !subs.is_empty() {
            cmd.arg("--sub").arg(subs.join(","));
        }
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("node runs tab.js");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                sink.lock().push(l);
            }
        });
        let tab = Tab { child, stdin, lines };
        assert!(tab.wait(Duration::from_secs(30), |l| l == "READY").await, "tab not ready: {:?}", tab.log());
        tab
    }

    /// Everything the tab printed so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().clone()
    }

    /// Whether a line matching `pred` appears within `limit`.
    pub async fn wait(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
        eventually(limit, || {
            let found = self.lines.lock().iter().any(|l| pred(l));
            async move { found }
        })
        .await
    }

    /// The data of every message received on `channel`, as JSON text, in order.
    pub fn messages(&self, channel: &str) -> Vec<String> {
        let prefix = format!("MSG {channel} ");
        self.lines.lock().iter().filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned)).collect()
    }

    /// The client ids the tab has had, in order.
    pub fn client_ids(&self) -> Vec<String> {
        self.lines.lock().iter().filter_map(|l| l.strip_prefix("CLIENT ").map(str::to_owned)).collect()
    }

    /// The current client id (waits up to 10 s for the first).
    pub async fn client_id(&self) -> String {
        assert!(self.wait(Duration::from_secs(10), |l| l.starts_with("CLIENT ")).await, "{:?}", self.log());
        self.client_ids().pop().unwrap_or_default()
    }

    /// Sends one command line (`away`, `online`, `sub CH`, `disconnect`).
    pub async fn send(&mut self, command: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            stdin.write_all(format!("{command}\n").as_bytes()).await.expect("write to tab");
            stdin.flush().await.expect("flush");
        }
    }

    /// Ends the process without a disconnect, as a closed laptop would: the session is
    /// left to expire.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
