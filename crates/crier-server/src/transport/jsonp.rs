//! callback-polling: JSONP over GET, `?message=<json>&jsonp=<callback>`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use crier_engine::{Transport, encode_outgoing};

use super::{PollGuard, check_http_sessions, decode, reply_headers};
use crate::cors::add_cors;
use crate::error::ServerError;
use crate::request::context;
use crate::state::AppState;

const DEFAULT_CALLBACK: &str = "jsonpcallback";

/// `/^[a-z_\$][a-z0-9_\$]*(\.[a-z_\$][a-z0-9_\$]*)*$/i`: a dotted JavaScript identifier path,
/// so the callback cannot inject script.
fn valid_callback(cb: &str) -> bool {
    cb.split('.').all(|part| {
        let mut chars = part.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    })
}

pub(crate) async fn handle(state: Arc<AppState>, req: Request, remote: Option<SocketAddr>) -> Response {
    let headers = req.headers().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("");
    let mut message = None;
    let mut callback = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "message" => message = Some(v.into_owned()),
            "jsonp" => callback = Some(v.into_owned()),
            _ => {}
        }
    }
    let callback = callback.unwrap_or_else(|| DEFAULT_CALLBACK.to_owned());
    if !valid_callback(&callback) {
        state.metrics.reject();
        return ServerError::BadCallback.into_response();
    }
    let Some(message) = message else {
        state.metrics.reject();
        return ServerError::MissingMessage.into_response();
    };
    let mut batch = match decode(&state, message.as_bytes()) {
        Ok(b) => b,
        Err(e) => {
            state.metrics.reject();
            return ServerError::Decode(e).into_response();
        }
    };
    check_http_sessions(&state, &mut batch);
    let ctx = context(Transport::CallbackPolling, &headers, remote, &path);
    let _guard = PollGuard::new(&state);
    let replies = state.engine.process(batch, &ctx).await;
    // U+2028 and U+2029 are valid in JSON but end a line in older JavaScript.
    let json = encode_outgoing(&replies).replace('\u{2028}', "\\u2028").replace('\u{2029}', "\\u2029");
    // The leading comment and the attachment header are Faye's Rosetta-Flash mitigation.
    let mut resp = format!("/**/{callback}({json});").into_response();
    reply_headers(&mut resp, "text/javascript; charset=utf-8");
    resp.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=f.txt"));
    add_cors(&headers, &mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::valid_callback;

    #[test]
    fn callback_grammar() {
        for ok in ["cb", "__jsonp1__", "$", "a.b.c", "A_9$"] {
            assert!(valid_callback(ok), "{ok}");
        }
        for bad in ["", "42", "alert(1)", "a..b", "a.", ".a", "a-b", "a b"] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }
}
