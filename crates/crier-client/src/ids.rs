//! Message ids: a per-connection counter rendered in base 36, as the Faye client does
//! ("1", "2", ... "a", "b", ... "10").
//!
//! Over WebSocket replies are matched to requests by `id` alone, so ids must be unique
//! among the requests in flight on one connection; a counter shared by everything that
//! sends on the connection guarantees that.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// A thread-safe id counter. The first id is `"1"`.
#[derive(Debug, Default)]
pub(crate) struct IdGen(AtomicU64);

impl IdGen {
    /// The next id as a base-36 string.
    pub(crate) fn next(&self) -> String {
        base36(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Renders `n` in lowercase base 36 (JavaScript's `n.toString(36)`).
pub(crate) fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_owned();
    }
    let mut out = Vec::with_capacity(13);
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

/// The key a reply is matched on. The JSON text is used rather than the string value
/// because Faye echoes `id` with its original type: `5` and `"5"` are different ids.
pub(crate) fn id_key(id: &Value) -> String {
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_faye() {
        let g = IdGen::default();
        let ids: Vec<String> = (0..37).map(|_| g.next()).collect();
        assert_eq!(ids[0], "1");
        assert_eq!(ids[8], "9");
        assert_eq!(ids[9], "a");
        assert_eq!(ids[34], "z");
        assert_eq!(ids[35], "10");
        assert_eq!(ids[36], "11");
        assert_eq!(base36(0), "0");
        assert_eq!(base36(u64::from(u32::MAX)), "1z141z3");
    }

    #[test]
    fn keys_keep_json_type() {
        assert_ne!(id_key(&Value::from(5)), id_key(&Value::from("5")));
        assert_eq!(id_key(&Value::from("a")), id_key(&Value::from("a")));
    }
}
