//! Channel names and subscription patterns, as Faye's grammar defines them.
//!
//! A *name* is `/`-separated segments, each one or more of `[A-Za-z0-9]` or
//! `- _ ! ~ ( ) $ @`. A *pattern* is zero or more name segments followed by a last
//! segment that is exactly `*` (one segment) or `**` (one or more segments).

use std::fmt;

/// Why a string is not a valid channel name or pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The string does not follow the channel grammar.
    #[error("invalid channel")]
    Invalid,
    /// The string is a valid pattern, but a plain name was required (e.g. to publish).
    #[error("wildcard channel where a plain name is required")]
    Wildcard,
}

/// What a channel (or pattern) is by its first segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// `/meta/...`: protocol channels, handled by the server itself.
    Meta,
    /// `/service/...`: request/response channels that remote clients may not subscribe to.
    Service,
    /// Everything else.
    Broadcast,
}

/// The longest channel name or pattern accepted, in bytes. Faye sets no limit, but a
/// publish expands its channel into one name per ancestor ([`ChannelName::expand`]), which
/// costs O(depth × length) in memory and hashing: unbounded, a single 200 KB publish to
/// `/a/a/a/...` allocated gigabytes. Longer names are invalid channels (405).
pub const MAX_CHANNEL_LEN: usize = 1024;

/// The most segments a channel name or pattern may have (same reason as
/// [`MAX_CHANNEL_LEN`]: it bounds the expansion of a publish to 66 names).
pub const MAX_CHANNEL_DEPTH: usize = 64;

fn valid_segment_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'!' | b'~' | b'(' | b')' | b'$' | b'@')
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(valid_segment_char)
}

fn kind_of(s: &str) -> ChannelKind {
    let first = s[1..].split('/').next().unwrap_or("");
    match first {
        "meta" => ChannelKind::Meta,
        "service" => ChannelKind::Service,
        _ => ChannelKind::Broadcast,
    }
}

/// A validated plain channel name such as `/chat/room1` (no wildcards).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Parses a plain channel name; wildcard patterns are refused with [`ChannelError::Wildcard`].
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        let p = ChannelPattern::parse(s)?;
        if p.is_wildcard() {
            return Err(ChannelError::Wildcard);
        }
        Ok(ChannelName(p.0))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a `/meta`, `/service` or broadcast channel.
    pub fn kind(&self) -> ChannelKind {
        kind_of(&self.0)
    }

    /// Number of segments (`/a/b/c` has 3).
    pub fn depth(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'/').count()
    }

    /// Every subscription name that can match this channel, in Faye's order:
    /// `/**`, the name itself, its `/*` sibling pattern, then `/**` at each ancestor.
    /// For `/a/b/c`: `/**`, `/a/b/c`, `/a/b/*`, `/a/**`, `/a/b/**` (depth + 2 names).
    pub fn expand(&self) -> Vec<ChannelPattern> {
        let segments: Vec<&str> = self.0[1..].split('/').collect();
        let mut out = Vec::with_capacity(segments.len() + 2);
        out.push(ChannelPattern("/**".to_owned()));
        out.push(ChannelPattern(self.0.clone()));
        let last_slash = self.0.rfind('/').unwrap_or(0);
        out.push(ChannelPattern(format!("{}/*", &self.0[..last_slash])));
        let mut prefix = String::with_capacity(self.0.len());
        for seg in &segments[..segments.len() - 1] {
            prefix.push('/');
            prefix.push_str(seg);
            out.push(ChannelPattern(format!("{prefix}/**")));
        }
        out
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A validated subscription: a plain name or a pattern ending in `*` or `**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelPattern(String);

impl ChannelPattern {
    /// Parses a channel name or a wildcard pattern (at most [`MAX_CHANNEL_LEN`] bytes and
    /// [`MAX_CHANNEL_DEPTH`] segments).
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        if !s.starts_with('/') || s.len() < 2 || s.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::Invalid);
        }
        let segments: Vec<&str> = s[1..].split('/').collect();
        if segments.len() > MAX_CHANNEL_DEPTH {
            return Err(ChannelError::Invalid);
        }
        let (last, init) = segments.split_last().ok_or(ChannelError::Invalid)?;
        if !init.iter().all(|seg| valid_segment(seg)) {
            return Err(ChannelError::Invalid);
        }
        if *last == "*" || *last == "**" || valid_segment(last) {
            Ok(ChannelPattern(s.to_owned()))
        } else {
            Err(ChannelError::Invalid)
        }
    }

    /// The pattern as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the last segment is `*` or `**`.
    pub fn is_wildcard(&self) -> bool {
        self.0.ends_with("/*") || self.0.ends_with("/**")
    }

    /// Whether this is a `/meta`, `/service` or broadcast pattern (by its first segment;
    /// `/**` and `/*` are broadcast patterns).
    pub fn kind(&self) -> ChannelKind {
        kind_of(&self.0)
    }

    /// Whether a message published to `name` reaches a subscriber of this pattern.
    pub fn matches(&self, name: &ChannelName) -> bool {
        let n = name.as_str();
        if let Some(prefix) = self.0.strip_suffix("/**") {
            n.len() > prefix.len() + 1 && n.starts_with(prefix) && n.as_bytes()[prefix.len()] == b'/'
        } else if let Some(prefix) = self.0.strip_suffix("/*") {
            n.len() > prefix.len() + 1
                && n.starts_with(prefix)
                && n.as_bytes()[prefix.len()] == b'/'
                && !n[prefix.len() + 1..].contains('/')
        } else {
            self.0 == n
        }
    }

    /// The pattern as a plain name, if it has no wildcard.
    pub fn as_name(&self) -> Option<ChannelName> {
        (!self.is_wildcard()).then(|| ChannelName(self.0.clone()))
    }

    fn shape(&self) -> Shape<'_> {
        if let Some(p) = self.0.strip_suffix("/**") {
            Shape::Many(p)
        } else if let Some(p) = self.0.strip_suffix("/*") {
            Shape::One(p)
        } else {
            Shape::Exact(&self.0)
        }
    }

    /// Whether every channel `other` matches is matched by `self` too (a token or rule for
    /// `self` then also covers a subscription to `other`): `/a/**` covers `/a/b`, `/a/*` and
    /// `/a/b/**`; `/a/*` covers `/a/b` and itself; a plain name covers only itself.
    pub fn covers(&self, other: &ChannelPattern) -> bool {
        match (self.shape(), other.shape()) {
            (Shape::Exact(e), Shape::Exact(s)) => e == s,
            (Shape::Exact(_), _) => false,
            (Shape::One(p), Shape::Exact(s)) => parent(s) == p,
            (Shape::One(p), Shape::One(q)) => p == q,
            (Shape::One(_), Shape::Many(_)) => false,
            (Shape::Many(p), Shape::Exact(s)) => under(s, p),
            (Shape::Many(p), Shape::One(q) | Shape::Many(q)) => q == p || under(q, p),
        }
    }

    /// Whether some channel is matched by both patterns (a subscription to one would
    /// receive messages meant for the other).
    pub fn overlaps(&self, other: &ChannelPattern) -> bool {
        match (self.shape(), other.shape()) {
            (Shape::Exact(a), Shape::Exact(b)) => a == b,
            (Shape::Exact(a), _) => other.matches(&ChannelName(a.to_owned())),
            (_, Shape::Exact(b)) => self.matches(&ChannelName(b.to_owned())),
            (Shape::One(p), Shape::One(q)) => p == q,
            (Shape::One(p), Shape::Many(q)) | (Shape::Many(q), Shape::One(p)) => p == q || under(p, q),
            (Shape::Many(p), Shape::Many(q)) => p == q || under(p, q) || under(q, p),
        }
    }
}

/// A pattern as its prefix and what may follow it.
enum Shape<'a> {
    /// A plain name.
    Exact(&'a str),
    /// `prefix/*`: one more segment.
    One(&'a str),
    /// `prefix/**`: one or more segments.
    Many(&'a str),
}

/// Whether `s` lies strictly below `prefix` (`""` is the root, above everything).
fn under(s: &str, prefix: &str) -> bool {
    s.len() > prefix.len() + 1 && s.starts_with(prefix) && s.as_bytes()[prefix.len()] == b'/'
}

/// `/a/b` → `/a`; `/a` → `` (the root).
fn parent(s: &str) -> &str {
    &s[..s.rfind('/').unwrap_or(0)]
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ChannelPattern {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<ChannelName> for ChannelPattern {
    fn from(n: ChannelName) -> Self {
        ChannelPattern(n.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn pat(s: &str) -> ChannelPattern {
        ChannelPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn grammar_accepts_faye_names() {
        for ok in ["/a", "/foo/bar", "/a-_!~()$@/B9", "/meta/connect", "/service/x"] {
            assert!(ChannelName::parse(ok).is_ok(), "{ok}");
        }
        for ok in ["/*", "/**", "/foo/*", "/foo/**", "/meta/**"] {
            assert!(ChannelPattern::parse(ok).is_ok(), "{ok}");
            assert_eq!(ChannelName::parse(ok), Err(ChannelError::Wildcard), "{ok}");
        }
    }

    #[test]
    fn grammar_rejects_what_faye_rejects() {
        for bad in
            ["", "/", "foo", "//a", "/a/", "/a b", "/a.b", "/a/**/b", "/a/***", "/*/a", "/a%20", "/ü", "/a//b", "/a/*b"]
        {
            assert_eq!(ChannelPattern::parse(bad), Err(ChannelError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn length_and_depth_are_bounded() {
        let deepest = "/a".repeat(MAX_CHANNEL_DEPTH);
        assert!(ChannelName::parse(&deepest).is_ok());
        assert!(ChannelPattern::parse(&format!("{}/**", "/a".repeat(MAX_CHANNEL_DEPTH - 1))).is_ok());
        assert_eq!(ChannelName::parse(&format!("{deepest}/a")), Err(ChannelError::Invalid));
        assert_eq!(ChannelPattern::parse(&format!("{deepest}/*")), Err(ChannelError::Invalid));
        let longest = format!("/{}", "x".repeat(MAX_CHANNEL_LEN - 1));
        assert!(ChannelName::parse(&longest).is_ok());
        assert_eq!(ChannelName::parse(&format!("{longest}x")), Err(ChannelError::Invalid));
    }

    #[test]
    fn expand_matches_faye_order() {
        let got: Vec<String> = name("/a/b/c").expand().iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["/**", "/a/b/c", "/a/b/*", "/a/**", "/a/b/**"]);
        let got: Vec<String> = name("/a").expand().iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["/**", "/a", "/*"]);
    }

    #[test]
    fn routing_scenario_22() {
        let n = name("/messages/foo");
        assert!(pat("/messages/*").matches(&n));
        assert!(pat("/messages/**").matches(&n));
        assert!(pat("/**").matches(&n));
        assert!(!pat("/*").matches(&n));
        assert!(!pat("/messages/bar").matches(&n));
        assert!(!pat("/messages/foo/*").matches(&n));
        assert!(!pat("/messagesx/**").matches(&n));
    }

    #[test]
    fn kinds() {
        assert_eq!(pat("/meta/**").kind(), ChannelKind::Meta);
        assert_eq!(pat("/service/x").kind(), ChannelKind::Service);
        assert_eq!(pat("/**").kind(), ChannelKind::Broadcast);
        assert_eq!(pat("/metadata").kind(), ChannelKind::Broadcast);
        assert_eq!(name("/a/b").depth(), 2);
    }
}
