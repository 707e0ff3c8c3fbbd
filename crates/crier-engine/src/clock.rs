//! The engine's clock: wall-clock milliseconds that advance with tokio's (pausable) time.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::backend::Millis;

/// Milliseconds since the Unix epoch, measured as the wall time at start plus tokio's
/// monotonic elapsed time. Tests that pause tokio time therefore control it too.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_ms: Millis,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        let start_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        Clock { start: Instant::now(), start_ms }
    }

    /// Now, in milliseconds.
    pub fn now(&self) -> Millis {
        self.start_ms + self.start.elapsed().as_millis() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
