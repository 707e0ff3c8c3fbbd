//! The batches one WebSocket is handling at once, and the order they run in.
//!
//! Frames are handled concurrently, so that a held `/meta/connect` does not delay the
//! frames behind it. Every other frame still takes effect in the order they came: Faye's
//! WebSocket transport sends each message in a frame of its own, so a publisher's messages
//! reach their channel in the order it sent them only if a publish that waits (publish
//! backpressure, an authorising webhook) cannot be overtaken by the next frame's. Each
//! in-order frame starts once the one before passed its [`Turn`]: a publish passes it when
//! the backend has sent it, anything else when it is done. So a publisher with many
//! publishes in flight is not held to one per backend round trip. A frame holding a
//! connect alone runs beside them (its hold lasts up to the timeout); a connect batched
//! with other messages is answered at once, so its frame takes its turn like the rest.

use std::pin::Pin;

use crier_engine::{Passed, SocketReplies, Turn};
use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};

/// What a handled frame gives back: whether the batch was empty, and its replies.
pub(super) type Done = (bool, SocketReplies);

type Task = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Nothing while the socket is idle (one pointer in every idle socket's task); made when a
/// frame comes and dropped once everything in it is done.
#[derive(Default)]
pub(super) struct InFlight(Option<Box<Set>>);

#[derive(Default)]
struct Set {
    tasks: FuturesUnordered<Task>,
    /// Resolves once the last in-order frame pushed has passed its turn.
    last: Option<Passed>,
}

impl InFlight {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.tasks.len())
    }

    /// Runs `task` beside everything else.
    pub(super) fn push(&mut self, task: impl Future<Output = Done> + Send + 'static) {
        self.0.get_or_insert_default().tasks.push(Box::pin(task));
    }

    /// Runs `task` once the in-order task pushed before it has passed its turn; `task` gets
    /// the turn the next one waits for.
    pub(super) fn push_in_order<F>(&mut self, task: impl FnOnce(Turn) -> F + Send + 'static)
    where
        F: Future<Output = Done> + Send + 'static,
    {
        let set = self.0.get_or_insert_default();
        let (turn, next) = Turn::pair();
        let before = set.last.replace(next);
        set.tasks.push(Box::pin(async move {
            if let Some(before) = before {
                before.await;
            }
            task(turn).await
        }));
    }

    /// The next task done; waits forever while there is none (a `select!` branch).
    pub(super) async fn next(&mut self) -> Done {
        match self.finish_next().await {
            Some(done) => done,
            None => std::future::pending().await,
        }
    }

    /// The next task done, or `None` once there is none left.
    pub(super) async fn finish_next(&mut self) -> Option<Done> {
        let set = self.0.as_mut()?;
        let done = set.tasks.next().await;
        if set.tasks.is_empty() {
            self.0 = None;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// Logs `n` after `wait_ms`; with `pass_after_ms`, drops its turn (as a publish the
    /// backend has sent does) after that long instead of when done.
    fn task(
        log: &Arc<Mutex<Vec<u32>>>,
        n: u32,
        wait_ms: u64,
        pass_after_ms: Option<u64>,
    ) -> impl FnOnce(Turn) -> std::pin::Pin<Box<dyn Future<Output = Done> + Send>> + Send + 'static {
        let log = log.clone();
        move |turn| {
            Box::pin(async move {
                let mut turn = Some(turn);
                if let Some(ms) = pass_after_ms {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    turn = None;
                }
                tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                log.lock().expect("log").push(n);
                drop(turn);
                (false, SocketReplies::Now(Vec::new()))
            })
        }
    }

    async fn run_all(set: &mut InFlight, n: usize) {
        for _ in 0..n {
            let _done = set.finish_next().await.expect("a task");
        }
        assert_eq!(set.len(), 0);
        assert!(set.0.is_none(), "dropped once empty");
        assert!(set.finish_next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn in_order_tasks_run_one_after_the_other_and_others_beside_them() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut set = InFlight::default();
        // The first in-order task waits longest; the ones after it must still wait for it.
        set.push_in_order(task(&log, 1, 30, None));
        set.push_in_order(task(&log, 2, 0, None));
        set.push(task(&log, 9, 10, None)(Turn::none()));
        set.push_in_order(task(&log, 3, 0, None));
        assert_eq!(set.len(), 4);
        run_all(&mut set, 4).await;
        assert_eq!(*log.lock().expect("log"), vec![9, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_in_order_task_starts_once_the_one_before_passed_its_turn() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut set = InFlight::default();
        let start = tokio::time::Instant::now();
        // Each passes its turn after 5 ms and is done 100 ms later: they overlap.
        for n in 1..=3 {
            set.push_in_order(task(&log, n, 100, Some(5)));
        }
        run_all(&mut set, 3).await;
        assert_eq!(*log.lock().expect("log"), vec![1, 2, 3]);
        assert_eq!(start.elapsed(), Duration::from_millis(115), "3 turns of 5 ms, then the last one's 100");
    }
}
