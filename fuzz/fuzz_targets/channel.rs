//! Channel parsing never panics; accepted names and patterns agree with the grammar's
//! relations (a name's expansion matches it; a pattern covers and overlaps itself).
#![no_main]

use crier_protocol::{ChannelName, ChannelPattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (a, b) = text.split_once('\n').unwrap_or((text, "/x"));
    if let Ok(n) = ChannelName::parse(a) {
        let expanded = n.expand();
        assert_eq!(expanded.len(), n.depth() + 2);
        assert!(expanded.iter().all(|p| p.matches(&n)));
    }
    if let (Ok(p), Ok(q)) = (ChannelPattern::parse(a), ChannelPattern::parse(b)) {
        assert!(p.covers(&p) && p.overlaps(&p));
        assert_eq!(p.overlaps(&q), q.overlaps(&p));
        if p.covers(&q) {
            assert!(p.overlaps(&q));
        }
    }
});
