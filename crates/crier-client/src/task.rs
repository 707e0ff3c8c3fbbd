//! Owned background tasks: a task handle that aborts the task when dropped, so a
//! client or connection that goes away never leaves a task running behind it.

use tokio::task::JoinHandle;

/// Aborts the wrapped task on drop.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
