//! The HTTP adapter on the wire: body formats, CORS, JSONP, transport-level errors, reply
//! headers, sub-paths and the browser client file. faye-behaviour.md §6.3 items 27–34, and
//! divergences (g) and (i).

mod common;

use common::{header, poll, raw_get, raw_post, send1, server, server_with, subscriber};
use crier_server::ServerConfig;
use crier_tests::http;
use serde_json::{Value, json};

fn form(message: &Value) -> String {
    form_encode(&message.to_string())
}

fn form_encode(s: &str) -> String {
    let mut out = String::from("message=");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn json_body(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

// §6.3 item 27: JSON, form, text/plain form and untyped form bodies are all processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_post_body_format_is_processed() {
    let s = server(3).await;
    let url = s.url();
    let id = subscriber(&url, "/fmt").await;
    let cases: [(Option<&str>, String); 5] = [
        (Some("application/json"), json!({"channel":"/fmt","data":"json"}).to_string()),
        (Some("application/json; charset=utf-8"), json!([{"channel":"/fmt","data":"json-array"}]).to_string()),
        (Some("application/x-www-form-urlencoded"), form(&json!({"channel":"/fmt","data":"form"}))),
        (Some("text/plain;charset=UTF-8"), form(&json!({"channel":"/fmt","data":"text"}))),
        (None, form(&json!({"channel":"/fmt","data":"untyped"}))),
    ];
    for (ct, body) in cases {
        let (status, h, text) = raw_post(&url, ct, body.clone()).await;
        assert_eq!(status, 200, "{ct:?} {body}: {text}");
        assert_eq!(header(&h, "content-type"), "application/json; charset=utf-8");
        assert_eq!(json_body(&text), json!([{"channel":"/fmt","successful":true}]), "{ct:?}");
    }
    let got: Vec<Value> = poll(&url, &id).await.into_iter().map(|m| m["data"].clone()).collect();
    assert_eq!(got, vec![json!("json"), json!("json-array"), json!("form"), json!("text"), json!("untyped")]);
}

// §6.3 item 28.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_on_post_only_with_origin() {
    let s = server(3).await;
    let body = json!({"channel":"/c","data":1});
    let r = http().post(s.url()).header("origin", "https://app.example").json(&body).send().await.expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), "https://app.example");
    assert_eq!(header(r.headers(), "access-control-allow-credentials"), "true");
    let r = http().post(s.url()).json(&body).send().await.expect("POST");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert!(r.headers().get("access-control-allow-credentials").is_none());
}

fn assert_preflight(status: u16, h: &reqwest::header::HeaderMap, body: &str, origin: &str) {
    assert_eq!(status, 200);
    assert_eq!(body, "");
    assert_eq!(header(h, "access-control-allow-credentials"), "true");
    assert_eq!(
        header(h, "access-control-allow-headers"),
        "Accept, Authorization, Content-Type, Pragma, X-Requested-With"
    );
    assert_eq!(header(h, "access-control-allow-methods"), "POST, GET");
    assert_eq!(header(h, "access-control-allow-origin"), origin);
    assert_eq!(header(h, "access-control-max-age"), "86400");
}

// Crier's optional Origin allow-list (`server.allowed_origins`; Faye has none): other
// origins get 403 on every Bayeux route, requests without an Origin are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allow_list() {
    let s = server_with(ServerConfig { allowed_origins: vec!["https://ok.example".into()], ..ServerConfig::default() })
        .await;
    let body = json!({"channel":"/c","data":1});
    let r = http().post(s.url()).header("origin", "https://ok.example").json(&body).send().await.expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), "https://ok.example");
    let r = http().post(s.url()).json(&body).send().await.expect("POST");
    assert_eq!(r.status(), 200);
    for method in [reqwest::Method::POST, reqwest::Method::OPTIONS, reqwest::Method::GET] {
        let r = http()
            .request(method.clone(), s.url())
            .header("origin", "https://evil.example")
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 403, "{method}");
        assert!(r.headers().get("access-control-allow-origin").is_none(), "{method}");
        assert_eq!(r.text().await.unwrap_or_default(), "Forbidden: origin not allowed");
    }
    // WebSocket upgrades are checked the same way.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    for (origin, allowed) in [("https://ok.example", true), ("https://evil.example", false)] {
        let mut req = s.ws_url().into_client_request().expect("request");
        req.headers_mut().insert("origin", origin.parse().expect("header"));
        let result = tokio_tungstenite::connect_async(req).await;
        match (allowed, result) {
            (true, Ok(_)) => {}
            (false, Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => assert_eq!(resp.status(), 403),
            (_, other) => panic!("{origin}: unexpected {:?}", other.map(|_| ())),
        }
    }
}

// §6.3 item 29: the preflight answer, with the origin taken from Origin, else the whole
// Referer, else `*`; a POST carrying Access-Control-Request-Method gets it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight() {
    let s = server(3).await;
    let url = s.url();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("origin", "https://o.example"), ("referer", "https://r.example/page")], "https://o.example"),
        (&[("referer", "https://r.example/page?q=1")], "https://r.example/page?q=1"),
        (&[], "*"),
    ];
    for (headers, want) in cases {
        let mut req = http().request(reqwest::Method::OPTIONS, &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("OPTIONS");
        let (status, h) = (r.status().as_u16(), r.headers().clone());
        assert_preflight(status, &h, &r.text().await.unwrap_or_default(), want);
    }
    let r = http()
        .post(format!("{url}/sub"))
        .header("access-control-request-method", "POST")
        .header("origin", "https://o.example")
        .json(&json!({"channel":"/x","data":1}))
        .send()
        .await
        .expect("POST");
    let (status, h) = (r.status().as_u16(), r.headers().clone());
    assert_preflight(status, &h, &r.text().await.unwrap_or_default(), "https://o.example");
}

// §6.3 item 30: JSONP over GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonp_callback_polling() {
    let s = server(3).await;
    let url = s.url();
    let msg =
        json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["callback-polling"],"id":"1"});
    let q = form(&msg);
    let (status, h, body) = raw_get(&format!("{url}?{q}&jsonp=cb"), &[("origin", "https://o.example")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&h, "content-disposition"), "attachment; filename=f.txt");
    assert_eq!(header(&h, "cache-control"), "no-cache, no-store");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "access-control-allow-origin"), "https://o.example");
    let inner = body.strip_prefix("/**/cb(").and_then(|b| b.strip_suffix(");")).unwrap_or_else(|| panic!("{body}"));
    let reply = json_body(inner);
    assert_eq!(reply[0]["successful"], json!(true), "{reply}");
    assert_eq!(reply[0]["id"], "1");

    // Default callback name, and U+2028/2029 escaped for old JavaScript parsers.
    let id = subscriber(&url, "/jsonp").await;
    common::publish(&url, "/jsonp", json!("a\u{2028}b\u{2029}c")).await;
    let connect =
        json!({"channel":"/meta/connect","clientId":id,"connectionType":"callback-polling","advice":{"timeout":0}});
    let (status, _, body) = raw_get(&format!("{url}?{}", form(&connect)), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("/**/jsonpcallback([") && body.ends_with("]);"), "{body}");
    assert!(body.contains(r"a\u2028b\u2029c") && !body.contains('\u{2028}'), "{body}");

    for bad in ["42", "alert(1)", "a-b"] {
        let (status, h, body) =
            raw_get(&format!("{url}?{q}&jsonp={}", form_encode(bad).trim_start_matches("message=")), &[]).await;
        assert_eq!(status, 400, "jsonp={bad}: {body}");
        assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8");
        assert!(body.starts_with("Bad request"), "{body}");
    }
}

// §6.3 item 31, divergence (i): transport-level failures are 400 text/plain
// "Bad request: <reason>" (Faye says just "Bad request").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_are_400_text_plain() {
    let s = server(3).await;
    let url = s.url();
    let cases: [(Option<&str>, &str); 7] = [
        (Some("application/json"), "{not json"),
        (Some("application/json"), "1"),
        (Some("application/json"), "\"str\""),
        (Some("application/json"), ""),
        (Some("application/x-www-form-urlencoded"), "message=1"),
        (Some("application/x-www-form-urlencoded"), "other=1"),
        (None, ""),
    ];
    for (ct, body) in cases {
        let (status, h, text) = raw_post(&url, ct, body.to_owned()).await;
        assert_eq!(status, 400, "{ct:?} {body:?}: {text}");
        assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8", "{ct:?} {body:?}");
        assert!(text.starts_with("Bad request: "), "{ct:?} {body:?}: {text}");
    }
    // GET without a message, and an unsupported method.
    let (status, _, text) = raw_get(&url, &[]).await;
    assert_eq!((status, text.as_str()), (400, "Bad request: missing 'message' parameter"));
    let r = http().put(&url).body("{}").send().await.expect("PUT");
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap_or_default(), "Bad request: unsupported method");
}

// §6.3 item 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_headers_and_content_length() {
    let s = server(3).await;
    let r = http()
        .post(s.url())
        .json(&json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(header(&h, "cache-control"), "no-cache, no-store");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "content-type"), "application/json; charset=utf-8");
    let declared: usize = header(&h, "content-length").parse().expect("a Content-Length header");
    let body = r.bytes().await.expect("body");
    assert_eq!(declared, body.len());
    assert!(body.starts_with(b"["));
}

// §6.3 item 33, divergence (g): every sub-path of the mount is the endpoint; anything
// else is 404 text/plain (Faye's Node adapter leaves it hanging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_paths_and_foreign_paths() {
    let s = server(3).await;
    let msg = json!({"channel":"/p","data":1});
    for path in ["/faye", "/faye/", "/faye/foo/bar", "/faye/abc.json"] {
        let r = send1(&s.at(path), msg.clone()).await;
        assert_eq!(r["successful"], json!(true), "{path}: {r}");
    }
    for path in ["/fayefoo", "/", "/bayeux", "/other/faye"] {
        let (status, h, body) = raw_post(&s.at(path), Some("application/json"), msg.to_string()).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&h, "content-type"), "text/plain; charset=utf-8", "{path}");
        assert!(body.contains("/faye"), "{path}: {body}");
        let (status, _, _) = raw_get(&s.at(path), &[]).await;
        assert_eq!(status, 404, "GET {path}");
    }
}

// §6.3 item 34: the browser client from `server.client_js`, with an ETag, 304s, and 404 for
// other script names or when none is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_js_is_served_with_etag() {
    let path = std::env::temp_dir().join(format!("crier-wire-client-{}.js", std::process::id()));
    let content = "/* test bundle */ window.Faye = {};\n";
    std::fs::write(&path, content).expect("write temp client.js");
    let s = server_with(ServerConfig { client_js: Some(path.clone()), ..ServerConfig::default() }).await;
    let mut etag = String::new();
    for p in ["/faye.js", "/faye/client.js"] {
        let (status, h, body) = raw_get(&s.at(p), &[]).await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");
        assert_eq!(body, content);
        let e = header(&h, "etag").to_owned();
        assert!(e.len() == 42 && e.starts_with('"') && e.ends_with('"'), "SHA-1 ETag: {e}");
        assert!(!header(&h, "last-modified").is_empty());
        if !etag.is_empty() {
            assert_eq!(etag, e, "same file, same ETag");
        }
        etag = e;
    }
    let (status, h, body) = raw_get(&s.at("/faye/client.js"), &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.as_str()), (304, ""));
    let last_modified = header(&h, "last-modified").to_owned();
    let (status, _, _) = raw_get(&s.at("/faye.js"), &[("if-modified-since", &last_modified)]).await;
    assert_eq!(status, 304);
    let (status, _, _) = raw_get(&s.at("/faye.js"), &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, 200);
    let (status, _, _) = raw_get(&s.at("/faye/other.js"), &[]).await;
    assert_eq!(status, 404);
    let _ = std::fs::remove_file(&path);

    let plain = server(3).await;
    let (status, _, _) = raw_get(&plain.at("/faye/client.js"), &[]).await;
    assert_eq!(status, 404);
}
