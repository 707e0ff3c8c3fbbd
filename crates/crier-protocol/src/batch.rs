//! Decoding a request body or WebSocket frame into messages, and encoding replies.
//!
//! Faye accepts one message object, an array of them, `null` or `[]`; primitives at the
//! top level are a transport error (HTTP 400). Array elements that are not objects are
//! kept as empty messages, which the engine answers as a publish with no data
//! (`402:data:Missing required parameter`), as Faye does; `null` elements are dropped.

use serde_json::Value;

use crate::message::Message;

/// Limits applied while decoding, before any message is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Deepest nesting of arrays and objects allowed in the whole document.
    pub max_depth: usize,
    /// Most messages allowed in one batch.
    pub max_messages: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_depth: 64, max_messages: 1000 }
    }
}

/// Why a body could not be decoded. Each maps to an HTTP 400 (or an ignored frame).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or not UTF-8).
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but a string, number or boolean at the top level.
    #[error("a message must be a JSON object or an array of objects")]
    NotAnObject,
    /// Nested deeper than [`DecodeLimits::max_depth`].
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    /// More messages than [`DecodeLimits::max_messages`].
    #[error("batch of {got} messages exceeds the limit of {limit}")]
    TooMany {
        /// The number of messages in the batch.
        got: usize,
        /// The limit.
        limit: usize,
    },
}

/// Checks nesting depth in one pass over the bytes, without allocating, so a hostile
/// document is refused before the parser recurses into it.
fn check_depth(bytes: &[u8], max: usize) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for &b in bytes {
        if in_str {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(DecodeError::TooDeep(max));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes a batch. See the module documentation for the accepted shapes.
pub fn decode_batch(bytes: &[u8], limits: &DecodeLimits) -> Result<Vec<Message>, DecodeError> {
    check_depth(bytes, limits.max_depth)?;
    let value: Value = serde_json::from_slice(bytes)?;
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => return Ok(vec![Message(m)]),
        Value::Array(items) => items,
        _ => return Err(DecodeError::NotAnObject),
    };
    if items.len() > limits.max_messages {
        return Err(DecodeError::TooMany { got: items.len(), limit: limits.max_messages });
    }
    Ok(items
        .into_iter()
        .filter_map(|v| match v {
            Value::Null => None,
            Value::Object(m) => Some(Message(m)),
            _ => Some(Message::new()),
        })
        .collect())
}

/// Encodes replies as the JSON array Faye always answers with.
pub fn encode_batch(messages: &[Message]) -> String {
    serde_json::to_string(messages).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Vec<Message>, DecodeError> {
        decode_batch(s.as_bytes(), &DecodeLimits::default())
    }

    #[test]
    fn shapes() {
        assert_eq!(dec("null").map(|v| v.len()).ok(), Some(0));
        assert_eq!(dec("[]").map(|v| v.len()).ok(), Some(0));
        assert_eq!(dec("[null]").map(|v| v.len()).ok(), Some(0));
        assert_eq!(dec(r#"{"channel":"/a"}"#).map(|v| v.len()).ok(), Some(1));
        assert_eq!(dec(r#"[{"channel":"/a"},1,[2]]"#).map(|v| v.len()).ok(), Some(3));
        assert!(matches!(dec("1"), Err(DecodeError::NotAnObject)));
        assert!(matches!(dec("\"x\""), Err(DecodeError::NotAnObject)));
        assert!(matches!(dec("{"), Err(DecodeError::Json(_))));
        assert!(matches!(decode_batch(b"[\xff]", &DecodeLimits::default()), Err(DecodeError::Json(_))));
    }

    #[test]
    fn depth_limit_ignores_brackets_in_strings() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(dec(&deep), Err(DecodeError::TooDeep(64))));
        let s = format!(r#"{{"channel":"/a","data":"{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert_eq!(dec(&s).map(|v| v.len()).ok(), Some(1));
    }

    #[test]
    fn batch_length_limit() {
        let limits = DecodeLimits { max_depth: 64, max_messages: 2 };
        assert!(matches!(decode_batch(b"[{},{},{}]", &limits), Err(DecodeError::TooMany { got: 3, limit: 2 })));
    }
}
