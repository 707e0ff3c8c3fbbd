//! Counting: sequence-number sets (loss and duplicates), the latency histogram, errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::report::Percentiles;

/// Highest sequence number tracked (bounds a set at 32 MiB if a server sends garbage).
pub(crate) const MAX_SEQ: u64 = 1 << 28;

/// Microseconds since the Unix epoch. Wall clock, not monotonic, so that a publisher and
/// a subscriber in different processes on this machine agree.
pub(crate) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A set of sequence numbers from 0, as a bitmap.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was already there (or is out of range).
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        if seq >= MAX_SEQ {
            return false;
        }
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        if self.words[w] & bit != 0 {
            return false;
        }
        self.words[w] |= bit;
        self.len += 1;
        true
    }

    /// How many numbers are in the set.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// How many of `expected`'s numbers are not in `self`.
    pub(crate) fn missing_from(&self, expected: &SeqSet) -> u64 {
        expected
            .words
            .iter()
            .enumerate()
            .map(|(i, e)| u64::from((e & !self.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// How many of `self`'s numbers are not in `expected`.
    pub(crate) fn extra_over(&self, expected: &SeqSet) -> u64 {
        expected.missing_from(self)
    }
}

/// Send-to-receive latency in microseconds, sharded so subscribers on different worker
/// threads rarely meet on one lock.
pub(crate) struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

const LATENCY_SHARDS: usize = 16;
/// One hour in microseconds: the histogram's upper bound (a run is at most that long).
const LATENCY_MAX_US: u64 = 3_600_000_000;

impl Latency {
    pub(crate) fn new() -> Self {
        let shards = (0..LATENCY_SHARDS).map(|_| Mutex::new(new_histogram())).collect();
        Latency { shards }
    }

    /// Records a batch of latencies under one lock.
    pub(crate) fn record_all(&self, shard: usize, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        let mut h = self.shards[shard % LATENCY_SHARDS].lock();
        for v in values {
            h.saturating_record((*v).max(1));
        }
    }

    /// Merges the shards into percentiles; `None` if nothing was recorded.
    pub(crate) fn percentiles(&self) -> Option<Percentiles> {
        let mut all = new_histogram();
        for s in &self.shards {
            // Same bounds, so adding cannot fail.
            let _ = all.add(&*s.lock());
        }
        if all.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Percentiles {
            count: all.len(),
            mean_ms: all.mean() / 1000.0,
            p50_ms: ms(all.value_at_quantile(0.50)),
            p90_ms: ms(all.value_at_quantile(0.90)),
            p99_ms: ms(all.value_at_quantile(0.99)),
            p999_ms: ms(all.value_at_quantile(0.999)),
            max_ms: ms(all.max()),
        })
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("1 µs to an hour at 3 significant figures is valid")
}

/// Errors by kind, with the first few messages kept as examples.
#[derive(Default)]
pub(crate) struct Errors {
    inner: Mutex<ErrorsInner>,
}

#[derive(Default)]
struct ErrorsInner {
    counts: BTreeMap<&'static str, u64>,
    examples: Vec<String>,
}

const MAX_EXAMPLES: usize = 5;

impl Errors {
    /// Counts one error of `kind`.
    pub(crate) fn add(&self, kind: &'static str, detail: impl std::fmt::Display) {
        let mut e = self.inner.lock();
        *e.counts.entry(kind).or_default() += 1;
        if e.examples.len() < MAX_EXAMPLES {
            e.examples.push(format!("{kind}: {detail}"));
        }
    }

    /// Counts by kind, and example messages.
    pub(crate) fn snapshot(&self) -> (BTreeMap<String, u64>, Vec<String>) {
        let e = self.inner.lock();
        (e.counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(), e.examples.clone())
    }
}

/// What every client task shares.
pub(crate) struct Shared {
    /// Unique deliveries so far (the drain phase waits for the expected count).
    pub(crate) delivered: AtomicU64,
    pub(crate) latency: Latency,
    pub(crate) errors: Errors,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared { delivered: AtomicU64::new(0), latency: Latency::new(), errors: Errors::default() }
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_counts_missing_and_duplicates() {
        let mut sent = SeqSet::default();
        let mut got = SeqSet::default();
        for s in 0..200 {
            sent.insert(s);
        }
        for s in (0..200).filter(|s| s % 10 != 3) {
            assert!(got.insert(s));
        }
        assert!(!got.insert(5), "a duplicate");
        assert!(got.insert(500), "one that was not acknowledged");
        assert_eq!(got.missing_from(&sent), 20);
        assert_eq!(got.extra_over(&sent), 1);
        assert_eq!(sent.len(), 200);
        assert!(!got.insert(MAX_SEQ));
    }

    #[test]
    fn percentiles_from_shards() {
        let l = Latency::new();
        l.record_all(0, &(1..=1000).map(|v| v * 1000).collect::<Vec<_>>());
        l.record_all(5, &[2_000_000]);
        let p = l.percentiles().expect("recorded");
        assert_eq!(p.count, 1001);
        assert!((p.p50_ms - 500.0).abs() < 2.0, "{p:?}");
        assert!((p.max_ms - 2000.0).abs() < 5.0, "{p:?}");
        assert!(Latency::new().percentiles().is_none());
    }
}
