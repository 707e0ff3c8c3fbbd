//! A real HTTP app for the hooks to call: records every request and answers as the test
//! says. Not a test target (Cargo builds only the files directly under `tests/`).

#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;

/// How the app answers one request.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// Wait this long before answering.
    pub(crate) delay: Duration,
}

impl Reply {
    pub(crate) fn json(v: Value) -> Self {
        Reply { status: 200, body: v.to_string(), delay: Duration::ZERO }
    }

    pub(crate) fn status(status: u16) -> Self {
        Reply { status, body: String::new(), delay: Duration::ZERO }
    }

    pub(crate) fn after(self, delay: Duration) -> Self {
        Reply { delay, ..self }
    }
}

/// One request the app received.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) headers: HeaderMap,
    /// The body as JSON (`Null` if it was not JSON).
    pub(crate) body: Value,
    /// The status the app answered with.
    pub(crate) status: u16,
}

/// The running app.
pub(crate) struct App {
    pub(crate) url: String,
    pub(crate) requests: Arc<Mutex<Vec<Request>>>,
}

type Handler = Arc<dyn Fn(usize, &Value) -> Reply + Send + Sync>;

impl App {
    /// Starts the app on an ephemeral port; `handler(n, body)` answers the n-th request (0-based).
    pub(crate) async fn start(handler: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> App {
        let handler: Handler = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let handler = handler.clone();
            let recorded = recorded.clone();
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let reply = {
                    let mut seen = recorded.lock();
                    let reply = handler(seen.len(), &body);
                    seen.push(Request { headers, body, status: reply.status });
                    reply
                };
                tokio::time::sleep(reply.delay).await;
                (StatusCode::from_u16(reply.status).expect("status"), reply.body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        App { url: format!("http://{addr}/hook"), requests }
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().clone()
    }

    /// The requests the app answered 2xx.
    pub(crate) fn accepted(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }
}

/// A URL where nothing listens (connections are refused).
pub(crate) async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/hook")
}

/// A URL that accepts connections and never answers (the worst case: every call waits
/// for its time-out).
pub(crate) async fn black_hole_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}/hook")
}

/// Waits until `check` holds, polling every 10 ms, for at most `limit`.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
