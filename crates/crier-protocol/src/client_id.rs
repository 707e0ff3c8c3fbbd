//! Client identifiers: 160 random bits in base 36, 31 characters of `[0-9a-z]`, as Faye makes them.

use std::fmt;
use std::sync::Arc;

/// The longest client id accepted from the network; Faye's are 31 characters.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// A client (session) id. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Builds an id from 20 random bytes (the caller supplies the randomness).
    pub fn from_random(bytes: [u8; 20]) -> Self {
        // Repeated division of the 160-bit big-endian number by 36.
        let mut num = bytes;
        let mut digits = Vec::with_capacity(31);
        for _ in 0..31 {
            let mut rem: u32 = 0;
            for b in num.iter_mut() {
                let cur = (rem << 8) | u32::from(*b);
                *b = (cur / 36) as u8;
                rem = cur % 36;
            }
            digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[rem as usize]);
        }
        digits.reverse();
        let s = String::from_utf8(digits).unwrap_or_default();
        ClientId(s.into())
    }

    /// Accepts an id from the network: 1..=64 characters of `[0-9a-z]`. Anything else is
    /// not an id this server could have issued, so it is refused before any lookup.
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty()
            && s.len() <= MAX_CLIENT_ID_LEN
            && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
        .then(|| ClientId(s.into()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_look_like_faye_ids() {
        let a = ClientId::from_random([0xff; 20]);
        assert_eq!(a.as_str().len(), 31);
        assert!(ClientId::parse(a.as_str()).is_some());
        let z = ClientId::from_random([0; 20]);
        assert_eq!(z.as_str(), "0".repeat(31));
        assert_ne!(ClientId::from_random([1; 20]), ClientId::from_random([2; 20]));
    }

    #[test]
    fn parse_refuses_foreign_ids() {
        for bad in ["", "__proto__", "ABC", "a b", &"a".repeat(65)] {
            assert!(ClientId::parse(bad).is_none(), "{bad}");
        }
    }
}
