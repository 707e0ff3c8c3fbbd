//! A client's messages take effect in the order it sent them, without each waiting for the
//! one before to be answered.
//!
//! Faye's WebSocket transport sends every message in a frame of its own, and a publisher's
//! subscribers expect its messages in the order it sent them. Handling a frame only once
//! the one before it is answered keeps that order, but it holds a publisher to one publish
//! per backend round trip (on Redis, one per network round trip to Redis, however many the
//! client has in flight). A [`Turn`] is the finer rule: the next message starts once this
//! one's effects are fixed in order, which for a publish is when the backend has sent it
//! (see [`crate::Backend::publish_sends_at_once`]), and for anything else when it is done.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

/// Held while a message is handled; the next message of the same client starts once it is
/// passed ([`Turn::pass`]) or dropped, whichever comes first. A message that cannot tell
/// when its effects are in order never passes it early: it is dropped when its handling
/// ends.
#[derive(Debug, Default)]
pub struct Turn(Option<oneshot::Sender<()>>);

/// Resolves once its [`Turn`] is passed or dropped.
#[derive(Debug)]
pub struct Passed(oneshot::Receiver<()>);

impl Turn {
    /// A turn, and what the message after it waits on.
    pub fn pair() -> (Turn, Passed) {
        let (tx, rx) = oneshot::channel();
        (Turn(Some(tx)), Passed(rx))
    }

    /// A turn nothing waits on (a message handled on its own).
    pub fn none() -> Turn {
        Turn(None)
    }

    /// Lets the next message start.
    pub(crate) fn pass(&mut self) {
        self.0 = None;
    }
}

impl Future for Passed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Nothing is ever sent: the sender dropped (Err) is the signal.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Awaits `fut`, passing `turn` (if any) as soon as `fut` has been polled once without
/// finishing: for a backend future that sends its commands on its first poll
/// ([`crate::Backend::publish_sends_at_once`]), the point from which a later publish is
/// ordered after it. (A plain struct, not an async block: a publish's future is part of
/// every held long-poll's, which is kept small.)
pub(crate) fn pass_after_first_poll<F: Future + Unpin>(fut: F, turn: Option<&mut Turn>) -> PassAfterFirstPoll<'_, F> {
    PassAfterFirstPoll { fut, turn }
}

/// See [`pass_after_first_poll`].
pub(crate) struct PassAfterFirstPoll<'t, F> {
    fut: F,
    /// Until the first poll.
    turn: Option<&'t mut Turn>,
}

impl<F: Future + Unpin> Future for PassAfterFirstPoll<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.fut).poll(cx);
        if let Some(turn) = this.turn.take()
            && polled.is_pending()
        {
            turn.pass();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn passed_resolves_when_the_turn_is_passed_or_dropped() {
        let (mut turn, passed) = Turn::pair();
        let waiting = tokio::spawn(passed);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "not before");
        turn.pass();
        tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("passed").expect("task");

        let (turn, passed) = Turn::pair();
        drop(turn);
        tokio::time::timeout(Duration::from_secs(1), passed).await.expect("dropped counts as passed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_turn_passes_after_a_first_poll_that_did_not_finish() {
        let start = Instant::now();
        let (mut turn, passed) = Turn::pair();
        let slow = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            7
        });
        let (out, passed_at) = tokio::join!(pass_after_first_poll(slow, Some(&mut turn)), async {
            passed.await;
            Instant::now()
        });
        assert_eq!(out, 7);
        assert_eq!(passed_at, start, "passed while the slow future still ran");

        // A future done on its first poll leaves the turn to its holder.
        let (mut turn, passed) = Turn::pair();
        assert_eq!(pass_after_first_poll(std::future::ready(8), Some(&mut turn)).await, 8);
        let waiting = tokio::spawn(passed);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "still held");
        drop(turn);
        tokio::time::timeout(Duration::from_secs(1), waiting).await.expect("passed").expect("task");
    }
}
