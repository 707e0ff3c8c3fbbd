//! Outside measurements: a process's resident memory (`/proc/PID/status`) and Redis's
//! command counters (INFO commandstats, over a plain TCP connection).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// VmRSS of `pid` in KiB, or `None` if the process or the field is not there.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// VmRSS of this process in KiB.
pub(crate) fn own_rss_kib() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Sends one inline command and reads the whole reply (a simple string or a bulk string).
async fn redis_command(addr: SocketAddr, command: &str) -> anyhow::Result<String> {
    let io = async {
        let mut s = TcpStream::connect(addr).await.with_context(|| format!("connect to Redis at {addr}"))?;
        s.write_all(format!("{command}\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        loop {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "Redis closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(reply) = complete_reply(&buf)? {
                return Ok(reply);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), io).await.context("Redis did not answer in 5 s")?
}

/// The reply if `buf` holds a whole one.
fn complete_reply(buf: &[u8]) -> anyhow::Result<Option<String>> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let head = String::from_utf8_lossy(&buf[..eol]).into_owned();
    match head.as_bytes().first() {
        Some(b'+') => Ok(Some(head[1..].to_owned())),
        Some(b'-') => anyhow::bail!("Redis: {}", &head[1..]),
        Some(b'$') => {
            let len: usize = head[1..].parse().context("bulk length")?;
            let body = &buf[eol + 2..];
            if body.len() < len { Ok(None) } else { Ok(Some(String::from_utf8_lossy(&body[..len]).into_owned())) }
        }
        _ => anyhow::bail!("unexpected Redis reply {head:?}"),
    }
}

/// `CONFIG RESETSTAT`.
pub(crate) async fn redis_reset(addr: SocketAddr) -> anyhow::Result<()> {
    redis_command(addr, "CONFIG RESETSTAT").await.map(drop)
}

/// Calls per command from `INFO commandstats`, leaving out the bench's own `info` and
/// `config` calls.
pub(crate) async fn redis_commandstats(addr: SocketAddr) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(parse_commandstats(&redis_command(addr, "INFO commandstats").await?))
}

fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "config|resetstat" | "config"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\nVmSwap: 0 kB\n"), Some(12345));
        assert!(own_rss_kib().is_some_and(|k| k > 0));
    }

    #[test]
    fn commandstats() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=5,usec_per_call=0.4,rejected_calls=0,failed_calls=0\r\n\
                    cmdstat_info:calls=1,usec=1\r\ncmdstat_config|resetstat:calls=1,usec=1\r\ncmdstat_spublish:calls=3,usec=2\r\n";
        let m = parse_commandstats(info);
        assert_eq!(m.into_iter().collect::<Vec<_>>(), vec![("evalsha".into(), 12), ("spublish".into(), 3)]);
    }

    #[test]
    fn replies() {
        assert_eq!(complete_reply(b"+OK\r\n").expect("ok"), Some("OK".into()));
        assert_eq!(complete_reply(b"$5\r\nab").expect("partial"), None);
        assert_eq!(complete_reply(b"$5\r\nabcde\r\n").expect("bulk"), Some("abcde".into()));
        assert!(complete_reply(b"-ERR no\r\n").is_err());
    }
}
