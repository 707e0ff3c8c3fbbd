//! Serving the Faye browser client from a configured file, as Faye's static server does:
//! `<mount>.js` and `<mount>/client.js`, with an ETag and Last-Modified.

use std::path::Path;
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::state::AppState;

pub(crate) struct ClientJs {
    body: Bytes,
    etag: String,
    last_modified: Option<String>,
}

impl ClientJs {
    /// Reads the file once at startup (a handler never touches the disk).
    pub(crate) fn load(path: &Path) -> std::io::Result<Self> {
        let body = std::fs::read(path)?;
        let modified = std::fs::metadata(path)?.modified().ok();
        let etag = format!("\"{}\"", sha1_smol::Sha1::from(&body).digest());
        Ok(ClientJs { body: Bytes::from(body), etag, last_modified: modified.map(http_date) })
    }
}

/// RFC 7231 IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86400) as i64;
    let (h, mi, s) = ((secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(m - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{mi:02}:{s:02} GMT")
}

pub(crate) fn serve(state: &AppState, path: &str, req: &HeaderMap) -> Response {
    let mount = state.config.mount.trim_end_matches('/');
    let is_client = path == format!("{mount}.js") || path == format!("{mount}/client.js");
    let Some(js) = state.client_js.as_ref().filter(|_| is_client) else {
        return (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "").into_response();
    };
    let fresh = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(js.etag.as_str())
        || (req.get(header::IF_NONE_MATCH).is_none()
            && js.last_modified.is_some()
            && req.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()) == js.last_modified.as_deref());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], js.body.clone()).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&js.etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(lm) = js.last_modified.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(header::LAST_MODIFIED, lm);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_http_dates() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
