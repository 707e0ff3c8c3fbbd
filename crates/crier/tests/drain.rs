//! The drain of the real `crier` binary on SIGTERM (memory engine), seen by a long-polling
//! client and a WebSocket client (a minimal RFC 6455 client over a TCP socket), each
//! holding a `/meta/connect`:
//!
//! - both held connects are answered within 1 s, successfully, with `reconnect: "retry"`;
//! - the WebSocket then gets a close frame with code 1001 (going away), then the end of the
//!   stream;
//! - `/readyz` never answers 200 once the drain has begun. In practice the listener stops
//!   accepting as the drain starts (the held replies prove it started), so a new request is
//!   refused; a 503 would be accepted too. The test prints which it saw;
//! - the process exits successfully within `server.shutdown_grace_secs`, without the grace
//!   period running out.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Crier, post};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GRACE_SECS: u64 = 4;

fn serve() -> Crier {
    common::start(&["--timeout", "30"], &[("CRIER_SERVER__SHUTDOWN_GRACE_SECS", &GRACE_SECS.to_string())])
}

async fn handshake(url: &str, transport: &str) -> String {
    let hs =
        post(url, json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":[transport]})).await;
    hs[0]["clientId"].as_str().expect("client id").to_owned()
}

/// The `/meta/connect` reply in a batch.
fn connect_reply(batch: &Value) -> Option<&Value> {
    batch.as_array()?.iter().find(|m| m["channel"] == "/meta/connect")
}

/// A client side of RFC 6455, just enough for this test: unfragmented frames, masked sends.
struct Ws {
    io: tokio::io::BufReader<TcpStream>,
}

impl Ws {
    async fn connect(addr: &str, path: &str) -> Ws {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut io = tokio::io::BufReader::new(stream);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        io.get_mut().write_all(req.as_bytes()).await.expect("write upgrade");
        let mut status = String::new();
        io.read_line(&mut status).await.expect("read status");
        assert!(status.starts_with("HTTP/1.1 101"), "WebSocket upgrade accepted: {status}");
        loop {
            let mut line = String::new();
            io.read_line(&mut line).await.expect("read header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Ws { io }
    }

    async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.io.get_mut().write_all(&frame).await.expect("write frame");
    }

    /// The next frame as (opcode, payload); `None` at end of stream.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 2];
        self.io.read_exact(&mut head).await.ok()?;
        assert!(head[0] & 0x80 != 0, "unfragmented frames only");
        assert!(head[1] & 0x80 == 0, "server frames are not masked");
        let len = match head[1] & 0x7f {
            126 => u64::from(self.io.read_u16().await.ok()?),
            127 => self.io.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("frame length")];
        self.io.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    }

    /// The next text frame as JSON, skipping pings and pongs; panics on anything else.
    async fn json(&mut self) -> Value {
        loop {
            match self.frame().await {
                Some((0x1, text)) => return serde_json::from_slice(&text).expect("JSON text frame"),
                Some((0x9 | 0xa, _)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_held_connects_closes_sockets_and_exits_within_grace() {
    tokio::time::timeout(Duration::from_secs(40), scenario()).await.expect("drain scenario finished within 40 s");
}

async fn scenario() {
    let mut server = serve();
    let addr = server.addr.clone();
    let url = format!("http://{addr}/faye");
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.expect("GET /readyz");
    assert_eq!(ready.status(), 200, "ready before the drain");

    // Long-polling: the first connect returns at once, the second is held (30 s timeout).
    let lp_id = handshake(&url, "long-polling").await;
    let first = post(&url, json!({"channel":"/meta/connect","clientId":lp_id,"connectionType":"long-polling"})).await;
    assert_eq!(first[0]["successful"], json!(true), "{first}");
    let held_url = url.clone();
    let held_lp = tokio::spawn(async move {
        let r =
            post(&held_url, json!({"channel":"/meta/connect","clientId":lp_id,"connectionType":"long-polling"})).await;
        (r, Instant::now())
    });

    // WebSocket: the same, over the socket.
    let ws_id = handshake(&url, "websocket").await;
    let mut ws = Ws::connect(&addr, "/faye").await;
    let connect = |n: u32| {
        json!([{"channel":"/meta/connect","clientId":ws_id,"connectionType":"websocket","id":n.to_string()}])
            .to_string()
    };
    ws.send_text(&connect(1)).await;
    let first =
        tokio::time::timeout(Duration::from_secs(10), ws.json()).await.expect("first WebSocket connect answered");
    assert_eq!(connect_reply(&first).map(|r| r["successful"].clone()), Some(json!(true)), "{first}");
    ws.send_text(&connect(2)).await;
    let held_ws = tokio::spawn(async move {
        let r = ws.json().await;
        let at = Instant::now();
        // After the reply: a close frame, then the end of the stream.
        let mut close = None;
        while let Some((op, payload)) = ws.frame().await {
            match op {
                0x9 | 0xa => continue,
                0x8 => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned();
                    // Then the server ends the stream.
                    let eof = matches!(tokio::time::timeout(Duration::from_secs(2), ws.frame()).await, Ok(None));
                    close = Some((code, reason, Instant::now(), eof));
                    break;
                }
                other => panic!("after the connect reply, expected a close frame; got opcode {other}"),
            }
        }
        (r, at, close)
    });

    // Both connects are held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held_lp.is_finished(), "long-poll connect is held");
    assert!(!held_ws.is_finished(), "WebSocket connect is held");

    let sent = Instant::now();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());

    let (lp_reply, lp_at) = tokio::time::timeout(Duration::from_secs(1), held_lp)
        .await
        .expect("held long-poll connect answered within 1 s of SIGTERM")
        .expect("task");
    // The drain has begun (it answered the held connect): readiness must not say 200 now.
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let readyz = match probe.get(format!("http://{addr}/readyz")).send().await {
        Ok(r) => {
            assert_eq!(r.status(), 503, "/readyz while draining");
            "503 (listener still accepting)".to_owned()
        }
        Err(e) => format!("refused, listener closed ({e})"),
    };
    let (ws_reply, ws_at, close) = tokio::time::timeout(Duration::from_secs(2), held_ws)
        .await
        .expect("WebSocket answered and closed within 2 s of SIGTERM")
        .expect("task");

    let lp = connect_reply(&lp_reply).expect("long-poll connect reply");
    assert_eq!(lp["successful"], json!(true), "{lp_reply}");
    assert_eq!(lp["advice"]["reconnect"], json!("retry"), "{lp_reply}");
    assert!(lp_at - sent < Duration::from_secs(1), "long-poll answered {:?} after SIGTERM", lp_at - sent);

    let w = connect_reply(&ws_reply).expect("WebSocket connect reply");
    assert_eq!(w["successful"], json!(true), "{ws_reply}");
    assert_eq!(w["advice"]["reconnect"], json!("retry"), "{ws_reply}");
    assert_eq!(w["id"], json!("2"), "the reply is to the held connect: {ws_reply}");
    assert!(ws_at - sent < Duration::from_secs(1), "WebSocket connect answered {:?} after SIGTERM", ws_at - sent);
    let (code, reason, closed_at, eof) = close.expect("a close frame after the connect reply");
    assert_eq!(code, Some(1001), "close code going away (reason {reason:?})");
    assert!(eof, "the server ended the stream after its close frame");

    // The process exits on its own, successfully, within the grace period.
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(sent.elapsed() < Duration::from_secs(GRACE_SECS), "crier exited within the {GRACE_SECS} s grace");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = sent.elapsed();
    // The log reader thread sees the last lines once the pipe closes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = server.log.lock().expect("log lock").join("\n");
    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(!log.contains("grace period over"), "drain finished before the grace period ran out; log:\n{log}");
    eprintln!(
        "drain: long-poll answered after {:?}, WebSocket after {:?}, close 1001 after {:?}, /readyz {readyz}, \
         exit after {exited:?} (grace {GRACE_SECS} s)",
        lp_at - sent,
        ws_at - sent,
        closed_at - sent
    );
}
