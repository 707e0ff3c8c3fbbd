//! Log offsets and the pub/sub payload.
//!
//! A payload is `offset \n message-id \n channel \n json`: the json is the delivery encoded
//! once by the publishing node (compact JSON has no raw newlines, channel names have none),
//! so the receiving node neither re-encodes nor copies per subscriber.

use std::sync::Arc;

use crier_engine::{Delivery, LogPosition};
use crier_protocol::{ChannelName, ChannelPattern, Message};

/// A stream id `ms-seq`.
pub(crate) type Offset = (u64, u64);

pub(crate) const ZERO: Offset = (0, 0);

pub(crate) fn parse_offset(s: &str) -> Option<Offset> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

pub(crate) fn format_offset(o: Offset) -> String {
    format!("{}-{}", o.0, o.1)
}

/// Builds a delivery from its parts as stored in a log entry or a payload. `None` if any
/// part is malformed (written by something else than Crier): it is skipped, not fatal.
pub(crate) fn delivery(
    name: &ChannelPattern,
    offset: Offset,
    id: &str,
    channel: &str,
    json: &str,
) -> Option<Arc<Delivery>> {
    let seq = id.parse().ok()?;
    let channel = ChannelName::parse(channel).ok()?;
    let message: Message = serde_json::from_str(json).ok()?;
    Some(Delivery::from_backend(
        seq,
        channel,
        message,
        Arc::from(json),
        Some(LogPosition { name: name.clone(), offset }),
        // The log offset is the Redis server's clock (ms) when the message was logged.
        offset.0,
    ))
}

/// Decodes a pub/sub payload received on `name`'s channel.
pub(crate) fn decode_payload(name: &ChannelPattern, payload: &str) -> Option<Arc<Delivery>> {
    let mut it = payload.splitn(4, '\n');
    let offset = parse_offset(it.next()?)?;
    let (id, channel, json) = (it.next()?, it.next()?, it.next()?);
    delivery(name, offset, id, channel, json)
}

/// Whether messages were lost between a session's position `from`, whose log entry was
/// trimmed away, and the first entry left, given that entry's fields: each entry records
/// the id of the one before it (`b`). If that is the session's position (or older), nothing
/// was lost: a quiet name's last entry is trimmed by age with nothing after it. "0-0" means
/// the log began afresh after the old one expired, long after any session that could read
/// it ended. An entry without the field (written before it existed) cannot tell, and
/// counts as a loss.
pub(crate) fn lost_before(fields: &[(String, String)], from: Offset) -> bool {
    match fields.iter().find(|(k, _)| k == "b").map(|(_, v)| parse_offset(v)) {
        Some(Some(before)) => before != ZERO && before > from,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_position_is_a_loss_only_when_entries_after_it_are_gone() {
        let b = |v: &str| vec![("p".to_owned(), "1".to_owned()), ("b".to_owned(), v.to_owned())];
        assert!(!lost_before(&b("10-0"), (10, 0)), "the first entry left follows the position");
        assert!(lost_before(&b("11-0"), (10, 0)), "the entry after the position is gone too");
        assert!(!lost_before(&b("0-0"), (10, 0)), "a log begun afresh");
        assert!(lost_before(&[("p".to_owned(), "1".to_owned())], (10, 0)), "an entry that cannot tell");
        assert!(lost_before(&b("junk"), (10, 0)));
    }

    #[test]
    fn offsets_and_payloads() {
        assert_eq!(parse_offset("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(parse_offset("x-3"), None);
        assert_eq!(format_offset((5, 0)), "5-0");
        let name = ChannelPattern::parse("/a/*").expect("valid");
        let d = decode_payload(&name, "12-1\n42\n/a/b\n{\"channel\":\"/a/b\",\"data\":\"x\\ny\"}").expect("decodes");
        assert_eq!(d.seq, 42);
        assert_eq!(d.channel.as_str(), "/a/b");
        assert_eq!(d.position.as_ref().map(|p| p.offset), Some((12, 1)));
        assert!(decode_payload(&name, "12-1\n42\n/a/b").is_none());
        assert!(decode_payload(&name, "12-1\nnope\n/a/b\n{}").is_none());
        assert!(decode_payload(&name, "12-1\n1\nbad channel\n{}").is_none());
    }
}
