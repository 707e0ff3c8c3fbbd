//! The real `crier` binary: configuration errors, `print-config`, `serve` and SIGTERM drain.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn crier() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crier"));
    // Only what the test sets: no CRIER_* from the developer's shell.
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn bad_file_key_exits_64_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("crier-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\nmount = \"/faye\"\nmax_body_byts = 5\n").expect("write");
    let out = crier().arg("check-config").arg("--config").arg(&file).output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_body_byts"), "{err}");
}

#[test]
fn bad_env_value_exits_64_naming_the_key() {
    let out = crier().arg("check-config").env("CRIER_ENGINE__TIMEOUT_SECS", "soon").output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout_secs"));
    let out = crier().arg("serve").arg("--mount").arg("faye").output().expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.mount"));
}

#[test]
fn print_config_shows_flags_env_and_defaults() {
    let out =
        crier().args(["print-config", "--timeout", "7"]).env("CRIER_SERVER__MOUNT", "/bayeux").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("timeout_secs = 7"), "{text}");
    assert!(text.contains("mount = \"/bayeux\""), "{text}");
    assert!(text.contains("max_queue = 1000"), "{text}");
    let check = crier().arg("check-config").output().expect("run");
    assert!(check.status.success());
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `crier serve` on an ephemeral port and reads the bound address from its log.
fn serve(extra: &[&str]) -> Server {
    serve_env(extra, &[])
}

fn serve_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = crier()
        .envs(env.iter().copied())
        .args(["serve", "--listen", "127.0.0.1:0", "--timeout", "30"])
        .args(extra)
        .env("CRIER_SERVER__SHUTDOWN_GRACE_SECS", "5")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn crier");
    let stderr = child.stderr.take().expect("stderr");
    // A thread reads the log (and keeps draining it so the child never blocks on a full
    // pipe); the address arrives over a channel, waited for with a bound.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(pos) = line.find("addr=") {
                let _ = tx.send(line[pos + 5..].split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("crier logged its address within 20 s");
    Server { child, addr }
}

async fn post(url: &str, body: Value) -> Value {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(40)).build().expect("client");
    let r = client.post(url).json(&body).send().await.expect("POST");
    r.json().await.expect("JSON reply")
}

#[tokio::test]
async fn serve_answers_and_drains_on_sigterm() {
    let mut server = serve(&[]);
    let url = format!("http://{}/faye", server.addr);
    let hs =
        post(&url, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}))
            .await;
    let id = hs[0]["clientId"].as_str().expect("client id").to_owned();
    let first = post(&url, json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"})).await;
    assert_eq!(first[0]["successful"], json!(true));
    // Hold a connect (30 s timeout), then SIGTERM the server.
    let held_url = url.clone();
    let held_id = id.clone();
    let held = tokio::spawn(async move {
        post(&held_url, json!({"channel":"/meta/connect","clientId":held_id,"connectionType":"long-polling"})).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "connect is held");
    let pid = server.child.id().to_string();
    let sent = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let r = tokio::time::timeout(Duration::from_secs(1), held)
        .await
        .expect("held connect answered within 1 s")
        .expect("task");
    assert_eq!(r[0]["successful"], json!(true));
    assert_eq!(r[0]["advice"]["reconnect"], json!("retry"));
    // The process exits within the grace period.
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(6), "exited within the grace period");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn auth_settings_from_the_environment_take_effect() {
    let server = serve_env(
        &[],
        &[("CRIER_AUTH__PUBLISH_SECRET", "s3"), ("CRIER_AUTH__ALLOWED_ORIGINS", "[\"https://ok.example\"]")],
    );
    let url = format!("http://{}/faye", server.addr);
    let r = post(&url, json!({"channel":"/news","data":1})).await;
    assert_eq!(r[0]["error"], json!("403::Password required"), "{r}");
    let r = post(&url, json!({"channel":"/news","data":1,"ext":{"password":"s3"}})).await;
    assert_eq!(r[0]["successful"], json!(true), "{r}");
    let client = reqwest::Client::new();
    let refused =
        client.post(&url).header("origin", "https://evil.example").json(&json!({})).send().await.expect("post");
    assert_eq!(refused.status(), 403);
}
