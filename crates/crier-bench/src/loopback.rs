//! `--mode loopback`: the machine's own floor for fan-out latency, with no server.
//!
//! It opens `--subscribers` TCP connections over loopback inside this process. Writer
//! threads play a server that does nothing but write: at `--rate`, each writes one
//! WebSocket text frame, the bytes of a delivery as Crier sends it, to every connection it
//! owns, from a plain blocking loop. Reader threads play the clients: each waits on epoll
//! for its connections, reads, splits the frames and parses the JSON for the send time,
//! as `crier-bench` itself does. There is one writer and one reader thread per core.
//!
//! What is left is the kernel's loopback path (a write, the receive processing it
//! triggers, the wake-up, the read) and the scheduling of those threads on the machine's
//! cores. No server can deliver the same messages to the same clients faster on this
//! machine, so this is where the latency of a real run should be compared.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::args::Args;
use crate::report::Report;
use crate::stats::{Latency, now_us};
use crate::wire::{self, BenchData};

/// How long a reader waits in epoll before it checks whether the run is over.
const POLL_TICK: Duration = Duration::from_millis(50);

/// What the writer threads report back.
struct Written {
    /// Messages written to every connection of the thread.
    messages: u64,
    /// Writes that failed (the connection is then left out).
    errors: u64,
}

/// Runs the loopback floor described by `args` (blocking; call it off the async runtime).
pub(crate) fn run(args: &Args, mut report: Report) -> anyhow::Result<Report> {
    anyhow::ensure!(args.rate > 0.0, "--mode loopback needs --rate (messages per second)");
    let n = args.subscriber_count();
    let threads = thread::available_parallelism().map_or(2, |p| p.get()).min(n);
    let padding = "x".repeat(args.size);

    let setup = Instant::now();
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a loopback port")?;
    let addr = listener.local_addr()?;
    let (mut servers, mut clients) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let client = TcpStream::connect(addr).context("connect over loopback (open-file limit?)")?;
        let (server, _) = listener.accept()?;
        // As every server socket in Crier (and Node's): no Nagle delay.
        server.set_nodelay(true)?;
        client.set_nonblocking(true)?;
        servers.push(server);
        clients.push(client);
    }
    report.setup_secs = setup.elapsed().as_secs_f64();
    report.sub_urls = vec![format!("tcp://{addr}")];
    report.pub_urls = report.sub_urls.clone();
    report.transport = "tcp".into();
    report.pub_transport = "tcp".into();
    report.subscribers = n;
    report.subscribers_ready = n;
    report.publishers = threads;
    report.publishers_ready = threads;

    let latency = Arc::new(Latency::new());
    let delivered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let shares = shares(n, threads);
    let mut readers = Vec::with_capacity(threads);
    let mut clients = clients.into_iter();
    for (i, &share) in shares.iter().enumerate() {
        let socks: Vec<TcpStream> = clients.by_ref().take(share).collect();
        let (latency, delivered, done) = (latency.clone(), delivered.clone(), done.clone());
        readers.push(
            thread::Builder::new()
                .name(format!("reader-{i}"))
                .spawn(move || read_loop(socks, i, &latency, &delivered, &done))?,
        );
    }

    let start = Instant::now() + Duration::from_millis(100);
    let (duration, rate) = (args.duration(), args.rate);
    let mut writers = Vec::with_capacity(threads);
    let mut servers_left = servers.drain(..);
    for (i, &share) in shares.iter().enumerate() {
        let socks: Vec<TcpStream> = servers_left.by_ref().take(share).collect();
        let padding = padding.clone();
        writers.push(
            thread::Builder::new()
                .name(format!("writer-{i}"))
                .spawn(move || write_loop(socks, start, duration, rate, &padding))?,
        );
    }
    drop(servers_left);

    let mut sent = 0;
    let mut write_errors = 0;
    let mut expected = 0;
    for (i, w) in writers.into_iter().enumerate() {
        let w = w.join().map_err(|_| anyhow::anyhow!("writer thread {i} panicked"))?;
        sent = sent.max(w.messages);
        write_errors += w.errors;
        expected += w.messages * shares[i] as u64;
    }
    // The readers stop once everything arrived, or after the drain time.
    let deadline = Instant::now() + args.drain();
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let finished = Instant::now();
    done.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for (i, r) in readers.into_iter().enumerate() {
        errors += r.join().map_err(|_| anyhow::anyhow!("reader thread {i} panicked"))?;
    }

    let got = delivered.load(Ordering::Relaxed);
    let elapsed = finished.saturating_duration_since(start).as_secs_f64().max(f64::EPSILON);
    report.sent = sent;
    report.published = sent;
    report.publish_rate = sent as f64 / duration.as_secs_f64().max(f64::EPSILON);
    report.expected = expected;
    report.delivered = got;
    report.elapsed_secs = elapsed;
    report.deliveries_per_sec = got as f64 / elapsed;
    report.lost = expected.saturating_sub(got);
    report.latency = latency.percentiles();
    if write_errors > 0 {
        report.errors.insert("write".into(), write_errors);
    }
    if errors > 0 {
        report.errors.insert("read".into(), errors);
    }
    Ok(report)
}

/// How many of `n` connections each of `threads` threads owns (they differ by at most one).
fn shares(n: usize, threads: usize) -> Vec<usize> {
    (0..threads).map(|i| n / threads + usize::from(i < n % threads)).collect()
}

/// One delivery as Crier frames it: a WebSocket text frame holding a one-message array.
fn frame(seq: u64, sent_us: u64, padding: &str) -> Vec<u8> {
    let pad = if padding.is_empty() { String::new() } else { format!(r#","x":"{padding}""#) };
    let json = format!(r#"[{{"channel":"/bench/c0","data":{{"s":{seq},"t":{sent_us},"p":0{pad}}}}}]"#);
    let mut out = Vec::with_capacity(json.len() + 10);
    out.push(0x81); // FIN, text
    match json.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(json.as_bytes());
    out
}

/// Writes message k at `start + k / rate` to every socket, until `duration` is over.
fn write_loop(mut socks: Vec<TcpStream>, start: Instant, duration: Duration, rate: f64, padding: &str) -> Written {
    let mut w = Written { messages: 0, errors: 0 };
    let mut alive = vec![true; socks.len()];
    loop {
        let at = start + Duration::from_secs_f64(w.messages as f64 / rate);
        if at >= start + duration {
            break;
        }
        let now = Instant::now();
        if at > now {
            thread::sleep(at - now);
        }
        let bytes = frame(w.messages, now_us(), padding);
        for (s, ok) in socks.iter_mut().zip(alive.iter_mut()) {
            if *ok && s.write_all(&bytes).is_err() {
                *ok = false;
                w.errors += 1;
            }
        }
        w.messages += 1;
    }
    w
}

/// A connection's unread bytes.
struct Conn {
    sock: MioStream,
    buf: Vec<u8>,
}

/// Reads every socket of this thread until `done`; returns the read errors.
fn read_loop(socks: Vec<TcpStream>, shard: usize, latency: &Latency, delivered: &AtomicU64, done: &AtomicBool) -> u64 {
    let mut errors = 0;
    let Ok(mut poll) = Poll::new() else { return 1 };
    let mut conns: Vec<Conn> = Vec::with_capacity(socks.len());
    for (i, s) in socks.into_iter().enumerate() {
        let mut sock = MioStream::from_std(s);
        if poll.registry().register(&mut sock, Token(i), Interest::READABLE).is_err() {
            errors += 1;
        }
        conns.push(Conn { sock, buf: Vec::new() });
    }
    let mut events = Events::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut lat = Vec::new();
    while !done.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(POLL_TICK)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return errors + 1;
            }
        }
        for ev in &events {
            let Some(c) = conns.get_mut(ev.token().0) else { continue };
            loop {
                match c.sock.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(k) => {
                        let rx = now_us();
                        c.buf.extend_from_slice(&chunk[..k]);
                        errors += take_frames(&mut c.buf, rx, &mut lat);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
        }
        if !lat.is_empty() {
            delivered.fetch_add(lat.len() as u64, Ordering::Relaxed);
            latency.record_all(shard, &lat);
            lat.clear();
        }
    }
    errors
}

/// Takes the complete frames off the front of `buf` and adds one latency per delivery;
/// returns how many frames could not be read.
fn take_frames(buf: &mut Vec<u8>, rx_us: u64, lat: &mut Vec<u64>) -> u64 {
    let mut errors = 0;
    let mut off = 0;
    while let Some((start, end)) = frame_bounds(&buf[off..]) {
        let payload = &buf[off + start..off + end];
        match std::str::from_utf8(payload).ok().and_then(|t| wire::parse_batch(t).ok()) {
            Some(batch) => {
                for d in batch.iter().filter_map(|m| m.data).filter_map(BenchData::read) {
                    lat.push(rx_us.saturating_sub(d.t));
                }
            }
            None => errors += 1,
        }
        off += end;
    }
    buf.drain(..off);
    errors
}

/// The payload's bounds in the first complete (unmasked) frame of `b`, if there is one.
fn frame_bounds(b: &[u8]) -> Option<(usize, usize)> {
    let (len, head): (usize, usize) = match *b.get(1)? & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize, 10),
        l => (l as usize, 2),
    };
    let end = head.checked_add(len)?;
    (b.len() >= end).then_some((head, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_has_one_owner() {
        for (n, threads) in [(5, 4), (1000, 2), (3, 3), (7, 2)] {
            let s = shares(n, threads);
            assert_eq!(s.len(), threads);
            assert_eq!(s.iter().sum::<usize>(), n, "{n} over {threads}: {s:?}");
            assert!(s.iter().max().unwrap_or(&0) - s.iter().min().unwrap_or(&0) <= 1, "{s:?}");
        }
    }

    #[test]
    fn frames_split_anywhere_are_read_whole() {
        let mut bytes = frame(1, 1_000, "");
        bytes.extend(frame(2, 2_000, &"y".repeat(300)));
        let mut lat = Vec::new();
        let mut buf = Vec::new();
        for piece in bytes.chunks(7) {
            buf.extend_from_slice(piece);
            assert_eq!(take_frames(&mut buf, 5_000, &mut lat), 0);
        }
        assert!(buf.is_empty());
        assert_eq!(lat, vec![4_000, 3_000]);
    }
}
