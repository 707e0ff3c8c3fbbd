//! The real `crier` binary: configuration errors, `print-config`, `serve` and SIGTERM drain.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Crier, post};
use serde_json::json;

fn crier() -> Command {
    common::command()
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

/// Starts `crier serve` on an ephemeral port (30 s connect timeout, 5 s grace).
fn serve_env(extra: &[&str], env: &[(&str, &str)]) -> Crier {
    let mut args = vec!["--timeout", "30"];
    args.extend_from_slice(extra);
    let mut env = env.to_vec();
    env.push(("CRIER_SERVER__SHUTDOWN_GRACE_SECS", "5"));
    common::start(&args, &env)
}

fn serve(extra: &[&str]) -> Crier {
    serve_env(extra, &[])
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
