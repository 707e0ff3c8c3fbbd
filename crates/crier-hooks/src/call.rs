//! One `/service` call to the app: what is POSTed, how the answer is read, and how each
//! failure becomes a Bayeux error string (all in one place, [`CallError::to_bayeux`]).

use crier_engine::RequestContext;
use crier_protocol::{BayeuxError, ChannelName, ErrorCode, Message};
use serde_json::{Value, json};

/// Why a call produced no reply data.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The route already had `max_in_flight` calls in progress.
    #[error("too many calls in progress")]
    Busy,
    /// No complete answer within the route's `timeout_ms`.
    #[error("timed out")]
    Timeout,
    /// Connecting or sending failed (refused, reset, DNS...).
    #[error("unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The app answered with a non-2xx status.
    #[error("HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The answer was larger than `max_response_bytes`.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The answer was not `{"data": ...}` or `{"error": "..."}`.
    #[error("invalid answer: {0}")]
    Invalid(String),
    /// The app answered `{"error": "..."}`.
    #[error("the app refused: {0}")]
    App(String),
}

impl CallError {
    /// Classifies a reqwest failure (time-outs are reported as errors by reqwest too).
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() { CallError::Timeout } else { CallError::Unreachable(e) }
    }

    /// The error string returned to the publisher. Failures of the call itself are 500s
    /// with a short text (details go to the log, not to clients); an app's own error is
    /// passed through when it already is a Bayeux error (`403::Not allowed`), otherwise it
    /// becomes `407:<channel>:<text>` (Faye's "failed to publish").
    pub(crate) fn to_bayeux(&self, channel: &ChannelName) -> String {
        let text = match self {
            CallError::App(e) if is_bayeux_error(e) => return e.clone(),
            CallError::App(e) => {
                return BayeuxError::with_text(ErrorCode::PublishFailed, [channel.as_str()], e.as_str()).to_string();
            }
            CallError::Busy => "Service busy",
            CallError::Timeout => "Service timed out",
            CallError::Unreachable(_) | CallError::Status(_) => "Service unavailable",
            CallError::TooLarge(_) | CallError::Invalid(_) => "Invalid service answer",
        };
        BayeuxError::with_text(ErrorCode::ServerError, [channel.as_str()], text).to_string()
    }
}

/// Whether `s` looks like `<3 digits>:<params>:<text>`, the Bayeux error format.
fn is_bayeux_error(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 5 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b':' && s[4..].contains(':')
}

/// The JSON POSTed to the app for a publish. Absent fields are `null`, so the app sees one
/// shape; `user` is the identity bound to the session named by `clientId`, if any.
pub(crate) fn request_body(m: &Message, channel: &ChannelName, ctx: &RequestContext) -> Value {
    json!({
        "channel": channel.as_str(),
        "data": m.data(),
        "clientId": m.client_id(),
        "id": m.id(),
        "user": ctx.identity.as_ref().and_then(|i| i.user.as_deref()),
        "ext": m.ext(),
    })
}

/// Reads at most `max` bytes of a body; more is an error (the app cannot make the node
/// buffer an unbounded answer).
pub(crate) async fn read_limited(mut r: reqwest::Response, max: usize) -> Result<Vec<u8>, CallError> {
    if r.content_length().is_some_and(|n| n > max as u64) {
        return Err(CallError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(CallError::from_reqwest)? {
        if body.len() + chunk.len() > max {
            return Err(CallError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The reply data from the app's answer: `{"data": <any, null included>}`, or
/// `{"error": "<text>"}` (which wins if both are present).
pub(crate) fn parse_answer(body: &[u8]) -> Result<Value, CallError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| CallError::Invalid(e.to_string()))?;
    let Value::Object(mut answer) = v else {
        return Err(CallError::Invalid("not a JSON object".to_owned()));
    };
    match answer.remove("error") {
        None | Some(Value::Null) => {}
        Some(Value::String(e)) => return Err(CallError::App(e)),
        Some(_) => return Err(CallError::Invalid("error is not a string".to_owned())),
    }
    answer.remove("data").ok_or_else(|| CallError::Invalid("neither data nor error".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch() -> ChannelName {
        ChannelName::parse("/service/rpc/echo").expect("name")
    }

    #[test]
    fn answers_are_data_or_errors() {
        assert_eq!(parse_answer(br#"{"data":{"x":1}}"#).ok(), Some(json!({"x":1})));
        assert_eq!(parse_answer(br#"{"data":null}"#).ok(), Some(Value::Null), "null is data");
        assert_eq!(parse_answer(br#"{"data":1,"error":null}"#).ok(), Some(json!(1)));
        assert!(matches!(parse_answer(br#"{"error":"no","data":1}"#), Err(CallError::App(e)) if e == "no"));
        for bad in [&br#"{}"#[..], br#"[1]"#, br#"nope"#, br#"{"error":5}"#, b""] {
            assert!(matches!(parse_answer(bad), Err(CallError::Invalid(_))), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn errors_map_to_bayeux_strings() {
        let cases = [
            (CallError::App("403::Not yours".to_owned()), "403::Not yours"),
            (CallError::App("401:x,y:Who".to_owned()), "401:x,y:Who"),
            (CallError::App("No such user".to_owned()), "407:/service/rpc/echo:No such user"),
            (CallError::App("12:ab".to_owned()), "407:/service/rpc/echo:12:ab"),
            (CallError::Busy, "500:/service/rpc/echo:Service busy"),
            (CallError::Timeout, "500:/service/rpc/echo:Service timed out"),
            (CallError::Status(reqwest::StatusCode::BAD_GATEWAY), "500:/service/rpc/echo:Service unavailable"),
            (CallError::TooLarge(10), "500:/service/rpc/echo:Invalid service answer"),
            (CallError::Invalid("x".to_owned()), "500:/service/rpc/echo:Invalid service answer"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_bayeux(&ch()), want, "{e:?}");
        }
    }

    #[test]
    fn the_request_has_one_shape() {
        let mut m = Message::new();
        m.set("channel", "/service/rpc/echo");
        m.set("data", json!({"q": 1}));
        let body = request_body(&m, &ch(), &RequestContext::in_process());
        assert_eq!(
            body,
            json!({"channel":"/service/rpc/echo","data":{"q":1},"clientId":null,"id":null,"user":null,"ext":null})
        );
    }
}
