//! The process's open-file limit. Every connection is a file descriptor, and many systems
//! start services with a soft limit of 1,024 under a far higher hard limit (systemd's
//! default is 1,024 soft and 524,288 hard): a push server left at the soft limit stops
//! accepting at about a thousand connections.

/// Descriptors a node needs besides its clients' connections: listeners, Redis
/// connections, the webhooks' and telemetry exporters' HTTP clients, the runtime's own.
pub(crate) const RESERVE: u64 = 256;

/// The open-file limit after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenFiles {
    /// The soft limit found at start (`None`: unlimited, or not a Unix system).
    pub(crate) before: Option<u64>,
    /// The soft limit now in force.
    pub(crate) limit: Option<u64>,
}

/// The most macOS allows a process to set its soft limit to (`OPEN_MAX`), whatever the
/// hard limit says (usually unlimited there); Go's runtime caps its raise the same way.
const OPEN_MAX: u64 = 10_240;

/// Raises the soft limit to the hard one, as Go's runtime does for every program: only the
/// hard limit is the operator's choice; the soft one is a default that nobody picked for a
/// server. Where that is refused (macOS refuses an unlimited soft limit), to `OPEN_MAX`
/// if that is higher than what there is; a second refusal leaves the limit as it was.
#[cfg(unix)]
pub(crate) fn raise() -> OpenFiles {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return OpenFiles { before: current, limit: current };
    }
    if setrlimit(Resource::Nofile, Rlimit { current: maximum, maximum }).is_ok() {
        return OpenFiles { before: current, limit: maximum };
    }
    let capped = maximum.map_or(OPEN_MAX, |m| m.min(OPEN_MAX));
    if current.is_some_and(|c| c < capped) {
        match setrlimit(Resource::Nofile, Rlimit { current: Some(capped), maximum }) {
            Ok(()) => return OpenFiles { before: current, limit: Some(capped) },
            Err(error) => tracing::warn!(%error, "raising the open-file limit failed"),
        }
    }
    OpenFiles { before: current, limit: current }
}

/// No per-process descriptor limit to raise.
#[cfg(not(unix))]
pub(crate) fn raise() -> OpenFiles {
    OpenFiles { before: None, limit: None }
}

/// Why the limit is too low for `limits.max_connections`, if it is. Beyond the descriptor
/// limit a connection is not refused with HTTP 503: it waits, unaccepted, in the kernel's
/// backlog until another closes. With no connection limit (`max_connections` 0) the
/// descriptor limit is the limit, as the operator chose.
pub(crate) fn shortfall(limit: Option<u64>, max_connections: usize) -> Option<String> {
    let limit = limit?;
    let usable = limit.saturating_sub(RESERVE);
    if max_connections == 0 || max_connections as u64 <= usable {
        return None;
    }
    let or_lower = if usable > 0 { format!(" or set limits.max_connections at most {usable}") } else { String::new() };
    Some(format!(
        "the open-file limit ({limit}) is below limits.max_connections = {max_connections} plus {RESERVE} for \
         the node itself: beyond about {usable} connections new ones wait unaccepted instead of getting HTTP \
         503; raise the hard limit (ulimit -Hn, systemd's LimitNOFILE, the container runtime's nofile){or_lower}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_below_max_connections_plus_the_reserve_is_reported() {
        assert_eq!(shortfall(Some(1_000_000), 100_000), None);
        assert_eq!(shortfall(Some(100_256), 100_000), None);
        let short = shortfall(Some(100_255), 100_000).expect("one short");
        assert!(short.contains("limits.max_connections = 100000"), "{short}");
        assert!(short.contains("at most 99999"), "{short}");
        // No connection limit: the descriptor limit is the limit, nothing to warn about.
        assert_eq!(shortfall(Some(1024), 0), None);
        let small = shortfall(Some(1024), 1000).expect("a small limit");
        assert!(small.contains("about 768 connections"), "{small}");
        let tiny = shortfall(Some(200), 1000).expect("below the reserve");
        assert!(tiny.contains("about 0 connections") && !tiny.contains("at most"), "{tiny}");
        // Unlimited descriptors: nothing to say, whatever the connection limit.
        assert_eq!(shortfall(None, 0), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn raise_leaves_the_soft_limit_at_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // Lower this test process's soft limit first (always allowed), so that there is
        // something to raise; nextest runs each test in a process of its own.
        let hard = getrlimit(Resource::Nofile).maximum;
        let low = hard.map_or(64, |h| h.min(64));
        setrlimit(Resource::Nofile, Rlimit { current: Some(low), maximum: hard }).expect("lower the soft limit");
        let files = raise();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(files.before, Some(low));
        assert_eq!(files.limit, now.current);
        assert_eq!(now.current, now.maximum);
    }
}
