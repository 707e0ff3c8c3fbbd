//! Endpoints: parsing, the loopback-only rule, and opening connections from a chosen
//! local source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Url;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client-side WebSocket over plain TCP (no TLS: targets are on this machine).
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Clients per local source address before another one is used (Linux gives each
/// source address about 28,000 ephemeral ports towards one server port).
const CLIENTS_PER_SOURCE: usize = 20_000;

/// One Bayeux endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `http://host:port/path`
    pub(crate) http: String,
    /// `ws://host:port/path`
    pub(crate) ws: String,
    /// The resolved (loopback) address.
    pub(crate) addr: SocketAddr,
}

impl Target {
    /// Parses `http://` or `ws://` URLs whose host resolves only to loopback addresses.
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        let url = Url::parse(s).with_context(|| format!("bad URL {s:?}"))?;
        match url.scheme() {
            "http" | "ws" => {}
            other => bail!("{s}: only http:// and ws:// endpoints are supported (got {other}://)"),
        }
        let addr = loopback_addr(&url, s)?;
        let mut http = url.clone();
        let mut ws = url;
        // Both are "special" schemes, so switching between them cannot fail.
        let _ = http.set_scheme("http");
        let _ = ws.set_scheme("ws");
        Ok(Target { http: http.into(), ws: ws.into(), addr })
    }
}

fn loopback_addr(url: &Url, s: &str) -> anyhow::Result<SocketAddr> {
    let host = url.host_str().with_context(|| format!("{s}: no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().with_context(|| format!("{s}: no port"))?;
    let addrs: Vec<SocketAddr> =
        (host, port).to_socket_addrs().with_context(|| format!("{s}: cannot resolve {host}"))?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("{s}: not a loopback address; crier-bench only sends load to this machine");
    }
    Ok(addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]))
}

/// Parses a Redis address (`host:port` or `redis://host:port`), loopback only.
pub(crate) fn redis_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let with_scheme = if s.contains("://") { s.to_owned() } else { format!("redis://{s}") };
    let url = Url::parse(&with_scheme).with_context(|| format!("bad Redis address {s:?}"))?;
    anyhow::ensure!(url.port().is_some(), "{s}: give the Redis port");
    loopback_addr(&url, s)
}

/// Local source addresses to spread `clients` connections over: `127.0.0.1..=127.0.0.N`
/// for an IPv4 target (`n` = 0 picks one per 20,000 clients), none for IPv6.
pub(crate) fn sources(target_is_v4: bool, n: u8, clients: usize) -> Vec<Option<IpAddr>> {
    if !target_is_v4 {
        return vec![None];
    }
    let n = if n == 0 { clients.div_ceil(CLIENTS_PER_SOURCE).clamp(1, 250) } else { usize::from(n) };
    if n == 1 {
        // The kernel's choice, as a normal client.
        return vec![None];
    }
    (1..=n).map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))).collect()
}

/// Small buffers: tungstenite allocates its read buffer eagerly, and 10,000 or more
/// idle sockets must fit in one process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// Opens a WebSocket to `target`, from `source` when given.
pub(crate) async fn open_ws(target: &Target, source: Option<IpAddr>, timeout: Duration) -> anyhow::Result<Ws> {
    let connect = async {
        let socket = if target.addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}"))?;
        }
        let stream = socket.connect(target.addr).await.with_context(|| format!("connect {}", target.addr))?;
        stream.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(target.ws.as_str(), stream, Some(ws_config()))
            .await
            .context("WebSocket upgrade")?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(timeout, connect).await.context("WebSocket connect timed out")?
}

/// One HTTP client per source address (reqwest binds a client, not a request).
pub(crate) fn http_clients(sources: &[Option<IpAddr>]) -> anyhow::Result<Vec<reqwest::Client>> {
    sources
        .iter()
        .map(|src| {
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .local_address(*src)
                .build()
                .context("HTTP client")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_ws_forms() {
        let t = Target::parse("http://127.0.0.1:8000/faye").expect("parse");
        assert_eq!(t.http, "http://127.0.0.1:8000/faye");
        assert_eq!(t.ws, "ws://127.0.0.1:8000/faye");
        let t = Target::parse("ws://localhost:9/b?x=1").expect("parse");
        assert_eq!(t.http, "http://localhost:9/b?x=1");
        assert!(t.addr.ip().is_loopback());
    }

    #[test]
    fn only_loopback() {
        assert!(Target::parse("http://192.0.2.1:80/faye").is_err());
        assert!(Target::parse("https://127.0.0.1/faye").is_err());
        assert!(redis_addr("127.0.0.1:7000").is_ok());
        assert!(redis_addr("10.0.0.1:6379").is_err());
    }

    #[test]
    fn sources_spread_large_runs() {
        assert_eq!(sources(true, 0, 10_000), vec![None]);
        assert_eq!(sources(true, 0, 50_000).len(), 3);
        assert_eq!(sources(false, 4, 50_000), vec![None]);
    }
}
