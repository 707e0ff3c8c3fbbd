//! The batches one WebSocket is handling at once, and the order they run in.
//!
//! Frames are handled concurrently, so that a held `/meta/connect` does not delay the
//! frames behind it. Every other frame still runs one after the other, in the order they
//! came: Faye's WebSocket transport sends each message in a frame of its own, so a
//! publisher's messages reach their channel in the order it sent them only if a publish
//! that waits (publish backpressure, an authorising webhook, a slow backend) cannot be
//! overtaken by the next frame's. A frame holding a connect alone runs beside them (its
//! hold lasts up to the timeout); a connect batched with other messages is answered at
//! once, so its frame takes its turn like the rest.

use std::pin::Pin;

use crier_engine::SocketReplies;
use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use tokio::sync::oneshot;

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
    /// Resolves once the last in-order frame pushed has been handled.
    last: Option<oneshot::Receiver<()>>,
}

impl InFlight {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.tasks.len())
    }

    /// Runs `task` beside everything else.
    pub(super) fn push(&mut self, task: impl Future<Output = Done> + Send + 'static) {
        self.0.get_or_insert_default().tasks.push(Box::pin(task));
    }

    /// Runs `task` once the in-order tasks pushed before it are done.
    pub(super) fn push_in_order(&mut self, task: impl Future<Output = Done> + Send + 'static) {
        let set = self.0.get_or_insert_default();
        let (done, next) = oneshot::channel::<()>();
        let before = set.last.replace(next);
        set.tasks.push(Box::pin(async move {
            if let Some(before) = before {
                // Err once that task is done (its sender dropped): the signal itself.
                let _ = before.await;
            }
            let out = task.await;
            drop(done);
            out
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

    fn task(log: &Arc<Mutex<Vec<u32>>>, n: u32, wait_ms: u64) -> impl Future<Output = Done> + Send + 'static {
        let log = log.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            log.lock().expect("log").push(n);
            (false, SocketReplies::Now(Vec::new()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn in_order_tasks_run_one_after_the_other_and_others_beside_them() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut set = InFlight::default();
        // The first in-order task waits longest; the ones after it must still wait for it.
        set.push_in_order(task(&log, 1, 30));
        set.push_in_order(task(&log, 2, 0));
        set.push(task(&log, 9, 10));
        set.push_in_order(task(&log, 3, 0));
        assert_eq!(set.len(), 4);
        for _ in 0..4 {
            let _done = set.finish_next().await.expect("a task");
        }
        assert_eq!(*log.lock().expect("log"), vec![9, 1, 2, 3]);
        assert_eq!(set.len(), 0);
        assert!(set.0.is_none(), "dropped once empty");
        assert!(set.finish_next().await.is_none());
    }
}
