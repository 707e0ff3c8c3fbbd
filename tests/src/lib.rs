//! The test harness: start a real Crier server in-process on `127.0.0.1:0`, talk to it
//! with raw HTTP and raw WebSocket frames, run the Node interop scripts, and wait for
//! conditions with bounded [`eventually`] instead of sleeps.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod proxy;
mod tab;

pub use proxy::delaying_proxy;
pub use tab::Tab;

use crier_engine::{Backend, Engine, EngineConfig, Extension, MemoryBackend};
use crier_server::ServerConfig;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The engine behind it.
    pub engine: Engine,
    /// The mount path.
    pub mount: String,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), crier_server::ServeError>>>,
}

/// Options for [`TestServer::start_with`].
#[derive(Default)]
pub struct Options {
    /// Engine settings (default: 5 s timeout).
    pub engine: Option<EngineConfig>,
    /// Server settings.
    pub server: Option<ServerConfig>,
    /// Extensions to install.
    pub extensions: Vec<Arc<dyn Extension>>,
    /// The backend (default: a fresh memory backend).
    pub backend: Option<Arc<dyn Backend>>,
}

impl TestServer {
    /// A server with a 5 s connect timeout and default limits.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A server with the given options.
    pub async fn start_with(o: Options) -> Self {
        let engine_cfg = o.engine.unwrap_or(EngineConfig { timeout_secs: 5, ..EngineConfig::default() });
        let server_cfg = o.server.unwrap_or_default();
        let backend = o.backend.unwrap_or_else(|| Arc::new(MemoryBackend::new()));
        let mut b = Engine::builder(engine_cfg, backend);
        for e in o.extensions {
            b = b.extension(e);
        }
        let engine = b.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let mount = server_cfg.mount.clone();
        let task =
            tokio::spawn(crier_server::serve(listener, engine.clone(), server_cfg, stop.clone().cancelled_owned()));
        TestServer { addr, engine, mount, stop, task: Some(task) }
    }

    /// `http://127.0.0.1:PORT/faye`
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.mount)
    }

    /// `ws://127.0.0.1:PORT/faye`
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, self.mount)
    }

    /// `http://127.0.0.1:PORT` + `path`
    pub fn at(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown and waits for the server to stop (bounded).
    pub async fn stop(mut self) -> Result<(), crier_server::ServeError> {
        self.stop.cancel();
        match self.task.take() {
            Some(t) => tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("server stops within 20 s")
                .expect("server task"),
            None => Ok(()),
        }
    }

    /// Starts shutdown without waiting.
    pub fn begin_shutdown(&self) {
        self.stop.cancel();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Nodes of one cluster: servers on ephemeral ports sharing one Redis under one key prefix.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<TestServer>,
    /// The key prefix they share.
    pub prefix: String,
}

impl Cluster {
    /// Starts `n` nodes on `redis` with a fresh key prefix and a `timeout_secs` connect timeout.
    pub async fn start(redis: &crier_redis::testing::RedisServer, n: usize, timeout_secs: u64) -> Self {
        Self::start_url(&redis.url(), n, timeout_secs).await
    }

    /// Starts `n` nodes on the Redis at `url` (standalone, cluster or sentinel).
    pub async fn start_url(url: &str, n: usize, timeout_secs: u64) -> Self {
        let prefix = crier_redis::testing::unique_prefix("cluster");
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(Self::node(url, &prefix, timeout_secs).await);
        }
        Cluster { nodes, prefix }
    }

    /// Starts `n` nodes on `redis` with a fresh key prefix; `options` gives each node's
    /// settings and extensions (its backend is replaced by the cluster's Redis, and its
    /// engine timeout by `timeout_secs`).
    pub async fn start_with(
        redis: &crier_redis::testing::RedisServer,
        n: usize,
        timeout_secs: u64,
        options: impl Fn() -> Options,
    ) -> Self {
        let prefix = crier_redis::testing::unique_prefix("cluster");
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            let o = options();
            let engine = EngineConfig { timeout_secs, ..o.engine.clone().unwrap_or_default() };
            let backend = Self::backend(&redis.url(), &prefix, &engine).await;
            nodes.push(TestServer::start_with(Options { engine: Some(engine), backend: Some(backend), ..o }).await);
        }
        Cluster { nodes, prefix }
    }

    async fn backend(url: &str, prefix: &str, engine: &EngineConfig) -> Arc<dyn Backend> {
        let config = crier_redis::RedisConfig {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            command_timeout_ms: 2000,
            ping_interval_secs: 1,
            ..crier_redis::RedisConfig::default()
        };
        Arc::new(crier_redis::RedisBackend::connect(config, engine.session_lifetime()).await.expect("node connects"))
    }

    /// One more node of the cluster.
    pub async fn node(url: &str, prefix: &str, timeout_secs: u64) -> TestServer {
        let engine = EngineConfig { timeout_secs, ..EngineConfig::default() };
        let backend = Self::backend(url, prefix, &engine).await;
        TestServer::start_with(Options { engine: Some(engine), backend: Some(backend), ..Options::default() }).await
    }

    /// Node `i`'s Bayeux URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }
}

/// Waits until `check` returns true, polling every 20 ms, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw HTTP client for wire tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("reqwest client")
}

/// Whether a publish to `url`, over a new connection, is answered HTTP 200 (a node at its
/// connection limit answers 503).
pub async fn publish_served(url: &str) -> bool {
    http()
        .post(url)
        .json(&json!({"channel":"/x","data":1}))
        .send()
        .await
        .map(|r| r.status().as_u16() == 200)
        .unwrap_or(false)
}

/// POSTs a JSON body; returns status and parsed JSON (Null if not JSON).
pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let r = http().post(url).json(body).send().await.expect("POST");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Handshakes over HTTP; returns the client id.
pub async fn handshake(url: &str) -> String {
    let (_, r) = post_json(
        url,
        &json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling","websocket"]}),
    )
    .await;
    let id = r[0]["clientId"].as_str().unwrap_or_default().to_owned();
    assert_eq!(id.len(), 31, "handshake reply: {r}");
    id
}

/// Handshakes and makes the first (immediate) connect; returns the client id.
pub async fn connected_client(url: &str) -> String {
    let id = handshake(url).await;
    let (_, r) =
        post_json(url, &json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"})).await;
    assert_eq!(r[0]["successful"], json!(true), "first connect: {r}");
    id
}

/// A long-poll connect with an `advice.timeout` in ms: the data of the messages it carried,
/// and the connect reply.
pub async fn poll(url: &str, id: &str, timeout_ms: u64) -> (Vec<Value>, Value) {
    let (_, r) = post_json(
        url,
        &json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling","advice":{"timeout":timeout_ms}}),
    )
    .await;
    let items = r.as_array().cloned().unwrap_or_default();
    let reply = items.iter().find(|m| m["channel"] == "/meta/connect").cloned().unwrap_or(Value::Null);
    let data = items.into_iter().filter(|m| m["channel"] != "/meta/connect").map(|m| m["data"].clone()).collect();
    (data, reply)
}

/// Subscribes over HTTP and asserts success.
pub async fn subscribe(url: &str, id: &str, sub: &str) {
    let (_, r) = post_json(url, &json!({"channel":"/meta/subscribe","clientId":id,"subscription":sub})).await;
    assert_eq!(r[0]["successful"], json!(true), "subscribe {sub}: {r}");
}

/// One unlabelled series of `server`'s `/metrics` (0 if absent).
pub async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = http().get(server.at("/metrics")).send().await.expect("scrape").text().await.expect("metrics text");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(series, _)| *series == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A client on `server`'s WebSocket, handshaken over HTTP, subscribed to `channel`, with a
/// connect held (as the Faye client keeps one).
pub async fn socket_subscriber(server: &TestServer, channel: &str) -> (String, RawWs) {
    let id = handshake(&server.url()).await;
    let mut ws = RawWs::connect(&server.ws_url()).await;
    let connect = |n: &str| json!({"channel":"/meta/connect","clientId":id,"connectionType":"websocket","id":n});
    ws.send(&connect("c1")).await;
    let first = ws.recv(Duration::from_secs(10)).await.expect("first connect reply");
    assert_eq!(first[0]["successful"], json!(true), "{first}");
    ws.send(&json!({"channel":"/meta/subscribe","clientId":id,"subscription":channel,"id":"s1"})).await;
    let sub = ws.recv(Duration::from_secs(10)).await.expect("subscribe reply");
    assert_eq!(sub[0]["successful"], json!(true), "{sub}");
    ws.send(&connect("c2")).await;
    (id, ws)
}

/// A raw WebSocket: send JSON, receive parsed frames.
pub struct RawWs {
    inner: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl RawWs {
    /// Opens a socket to `url` (ws://...).
    pub async fn connect(url: &str) -> Self {
        let (inner, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
        RawWs { inner }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.inner.send(WsMessage::Text(text.into())).await.expect("ws send");
    }

    /// Sends a ping frame (at most 125 bytes of payload), without reading anything.
    pub async fn ping(&mut self, payload: Vec<u8>) -> bool {
        self.inner.send(WsMessage::Ping(payload.into())).await.is_ok()
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next text frame as JSON, or `None` on close/time-out.
    pub async fn recv(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.inner.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// What arrives within `limit`, in order: `Ok(json)` for a text frame, `Err(n)` for a
    /// ping whose payload is `n` (pongs are sent back by the socket itself). Stops early
    /// when the socket closes.
    pub async fn frames_and_pings(&mut self, limit: Duration) -> Vec<(Duration, Result<Value, String>)> {
        let start = tokio::time::Instant::now();
        let deadline = start + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let item = match tokio::time::timeout(left, self.inner.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => Ok(serde_json::from_str(t.as_str()).unwrap_or(Value::Null)),
                Ok(Some(Ok(WsMessage::Ping(p)))) => Err(String::from_utf8_lossy(&p).into_owned()),
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Ok(Some(Err(_))) | Err(_) => return got,
            };
            got.push((start.elapsed(), item));
        }
    }

    /// The close frame's code, if the server closes within `limit`.
    pub async fn close_code(&mut self, limit: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.inner.next()).await {
                Ok(Some(Ok(WsMessage::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The directory of the Node interop scripts.
pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Runs a Node interop script against `url`; returns (success, combined output).
pub async fn run_node(script: &str, url: &str, transport: &str, extra: &[&str]) -> (bool, String) {
    let dir = interop_dir();
    assert!(
        dir.join("node_modules").exists(),
        "tests/interop/node_modules is missing: run `npm ci` in tests/interop (the README's test command does)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&dir).arg(script).arg(url).arg("--transport").arg(transport).args(extra).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("interop script finishes within 120 s")
        .expect("node runs");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
