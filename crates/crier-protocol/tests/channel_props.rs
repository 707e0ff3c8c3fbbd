//! Property tests for the channel grammar: expansion and matching agree.

#![allow(clippy::unwrap_used)] // proptest bodies are closures, outside `allow-unwrap-in-tests`

use crier_protocol::{ChannelName, ChannelPattern};
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_!~()$@-]{1,4}"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..5).prop_map(|segs| format!("/{}", segs.join("/")))
}

fn pattern() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..4), prop_oneof![Just(None), Just(Some("*")), Just(Some("**"))])
        .prop_filter_map("non-empty", |(segs, wild)| {
            let mut s = segs;
            match wild {
                Some(w) => s.push(w.to_owned()),
                None if s.is_empty() => return None,
                None => {}
            }
            Some(format!("/{}", s.join("/")))
        })
}

proptest! {
    #[test]
    fn generated_names_and_patterns_parse(n in name(), p in pattern()) {
        prop_assert!(ChannelName::parse(&n).is_ok());
        prop_assert!(ChannelPattern::parse(&p).is_ok());
    }

    #[test]
    fn pattern_matches_iff_in_expansion(n in name(), p in pattern()) {
        let n = ChannelName::parse(&n).unwrap();
        let p = ChannelPattern::parse(&p).unwrap();
        let expanded = n.expand();
        prop_assert_eq!(p.matches(&n), expanded.contains(&p), "{} vs {}", p, n);
    }

    #[test]
    fn expansion_has_depth_plus_two_distinct_names(n in name()) {
        let n = ChannelName::parse(&n).unwrap();
        let e = n.expand();
        prop_assert_eq!(e.len(), n.depth() + 2);
        let mut sorted = e.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), e.len());
        prop_assert!(e.iter().all(|p| p.matches(&n)));
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,40}") {
        let _ = ChannelPattern::parse(&s);
        let _ = ChannelName::parse(&s);
    }

    #[test]
    fn only_grammar_characters_are_accepted(s in "/[ -~]{1,12}") {
        if let Ok(p) = ChannelPattern::parse(&s) {
            prop_assert!(p.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_!~()$@*".contains(&b)));
            prop_assert!(!p.as_str().contains("//") && !p.as_str().ends_with('/'));
        }
    }
}

/// Every channel of up to 4 segments over a 2-letter alphabet: small enough to enumerate,
/// enough to tell every pattern shape apart.
fn universe() -> Vec<ChannelName> {
    let mut out = Vec::new();
    let mut level = vec![String::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for prefix in &level {
            for seg in ["a", "b"] {
                let n = format!("{prefix}/{seg}");
                out.push(ChannelName::parse(&n).unwrap());
                next.push(n);
            }
        }
        level = next;
    }
    out
}

fn small_pattern() -> impl Strategy<Value = ChannelPattern> {
    (prop::collection::vec(prop_oneof![Just("a"), Just("b")], 0..3), prop_oneof![Just(""), Just("*"), Just("**")])
        .prop_filter_map("non-empty", |(segs, wild)| {
            let mut s: Vec<&str> = segs;
            if !wild.is_empty() {
                s.push(wild);
            }
            (!s.is_empty()).then(|| ChannelPattern::parse(&format!("/{}", s.join("/"))).unwrap())
        })
}

proptest! {
    #[test]
    fn covers_means_every_match_of_the_other_matches(e in small_pattern(), s in small_pattern()) {
        let all = universe();
        let brute = all.iter().all(|n| !s.matches(n) || e.matches(n));
        prop_assert_eq!(e.covers(&s), brute, "{} covers {}", e, s);
    }

    #[test]
    fn overlaps_means_some_channel_matches_both(a in small_pattern(), b in small_pattern()) {
        let all = universe();
        let brute = all.iter().any(|n| a.matches(n) && b.matches(n));
        prop_assert_eq!(a.overlaps(&b), brute, "{} overlaps {}", a, b);
        prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
    }
}
