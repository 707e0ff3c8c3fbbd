//! The write deadline of every accepted connection (`server.write_timeout_secs`): a peer
//! that stops reading is cut off once a write has made no progress for that long.
//!
//! At the socket, not in each transport, because the transports cannot all see their
//! writes: hyper stops asking an EventSource stream or a long-poll answer for more while
//! its socket is full, and then nothing in the handler runs. Without this, a client that
//! stops reading (its receive window closed, the kernel probing it for good) would hold
//! its descriptor, its task and its place under `limits.max_connections` forever. An
//! upgraded WebSocket keeps this socket, so its writes are bound the same way.
//!
//! "No progress", not "the whole write": a large answer to a slow but reading client goes
//! on as long as bytes keep leaving. Once a deadline has passed every later write fails,
//! so the rest of a cut-off frame is never sent after the fact (a WebSocket batch that was
//! not written goes back to its session's queue, and a peer that read half of it and then
//! the rest would have it twice).

use std::error::Error;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The error a write gets once the deadline has passed; found again in the error chain by
/// [`is_write_stall`], to count it.
#[derive(Debug, thiserror::Error)]
#[error("the peer read nothing for {0} s; closing")]
pub(crate) struct WriteStalled(u32);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The last write went through (or there was none).
    No,
    /// A write found the socket full; the timer runs.
    Waiting,
    /// The timer ran out while waiting: the connection is done writing.
    Expired,
}

/// An accepted socket whose writes fail once they have waited `limit_secs` without progress.
///
/// Part of every connection (an upgraded WebSocket keeps it in a box of its own), so kept
/// small: the timer is made the first time a write waits, which most connections never do.
pub(crate) struct WriteDeadline<T> {
    io: T,
    timer: Option<Pin<Box<Sleep>>>,
    limit_secs: u32,
    stall: Stall,
}

impl<T> WriteDeadline<T> {
    /// `limit` is `server.write_timeout_secs`, at least 1 and at most a day (validated).
    pub(crate) fn new(io: T, limit: Duration) -> Self {
        let limit_secs = u32::try_from(limit.as_secs()).unwrap_or(u32::MAX).max(1);
        WriteDeadline { io, timer: None, limit_secs, stall: Stall::No }
    }

    fn expired(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, WriteStalled(self.limit_secs))
    }

    /// After the inner write returned `Pending`: starts the timer if this is the first wait
    /// since the last progress, and fails the write once it has run out. The timer is polled
    /// so the task wakes at the deadline even if the socket never becomes writable again.
    fn wait<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.stall == Stall::No {
            let deadline = Instant::now() + Duration::from_secs(u64::from(self.limit_secs));
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.stall = Stall::Waiting;
        }
        if let Some(timer) = &mut self.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            self.stall = Stall::Expired;
            tracing::debug!(limit_secs = self.limit_secs, "closing a connection whose peer does not read");
            return Poll::Ready(Err(self.expired()));
        }
        Poll::Pending
    }

    /// Runs one write-side poll of the inner socket under the deadline: refused once it has
    /// passed, progress clears a wait, `Pending` starts or checks one.
    fn guarded<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut T, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if self.stall == Stall::Expired {
            return Poll::Ready(Err(self.expired()));
        }
        match poll(&mut self.io, cx) {
            Poll::Pending => self.wait(cx),
            ready => {
                self.stall = Stall::No;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.guarded(cx, |io, cx| Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guarded(cx, |io, cx| Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guarded(cx, |io, cx| Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sends nothing but the end of the stream, which the kernel queues behind what is
        // unsent: allowed after the deadline, so the socket still closes in order.
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether `e`, or an error it was caused by, is a write that ran out of time here.
pub(crate) fn is_write_stall(e: &(dyn Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<WriteStalled>()
            || e.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<WriteStalled>())
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A duplex pipe with a 1 KiB buffer stands for a socket whose peer stops reading.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_fails_at_the_deadline_and_every_write_after_it() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = WriteDeadline::new(near, Duration::from_secs(5));
        let started = Instant::now();
        let chunk = vec![7u8; 4096];
        let err = io.write_all(&chunk).await.expect_err("the peer reads nothing");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(is_write_stall(&err), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // The peer reads again: the connection is still done writing.
        let mut buf = vec![0u8; 4096];
        let n = far.read(&mut buf).await.expect("read");
        assert!(n > 0);
        assert!(io.write_all(b"more").await.is_err_and(|e| is_write_stall(&e)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = WriteDeadline::new(near, Duration::from_secs(5));
        // Reads 512 bytes every 3 s: each wait is shorter than the limit, the whole write
        // (64 KiB, over 6 minutes) far longer.
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 512];
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let started = Instant::now();
        io.write_all(&vec![1u8; 64 * 1024]).await.expect("progress all along");
        assert!(started.elapsed() > Duration::from_secs(300), "{:?}", started.elapsed());
        io.shutdown().await.expect("shutdown");
        drop(io);
        assert_eq!(reader.await.expect("reader"), 64 * 1024);
    }

    #[test]
    fn the_stall_is_found_through_wrapping_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let io = WriteDeadline::new((), Duration::from_secs(3));
        let outer = Outer(io.expired());
        assert!(is_write_stall(&outer));
        assert!(!is_write_stall(&Outer(io::Error::from(io::ErrorKind::TimedOut))));
    }
}
