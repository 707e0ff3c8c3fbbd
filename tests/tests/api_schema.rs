//! The server API against its own OpenAPI document, property-based: schemathesis (PyPI,
//! installed by `scripts/test` into `target/schemathesis-venv`) reads `/api/openapi.json`
//! from a live node and sends it generated requests, valid and invalid, with and without the
//! key; every check must pass: no 5xx, every status code, content type, header and body as
//! documented, invalid input refused, valid input accepted, 401 without the key, 405 with
//! an `Allow` header for an undocumented method. Once on a memory node and once on a Redis
//! node, each holding a few real sessions (two with a user bound by a JWT), whose user and
//! channels the document's examples name, so the generated requests also reach real data.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crier_auth::{AuthConfig, JwtConfig};
use crier_engine::EngineConfig;
use crier_redis::testing::RedisServer;
use crier_server::{ApiConfig, ServerConfig};
use crier_tests::{Cluster, Options, TestServer, http, post_json, subscribe};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const KEY: &str = "schemathesis-api-key-0123456789";
const SECRET: &str = "jwt-secret-for-api-schema-tests";
/// Long enough that the sessions made before the run outlive it (they never connect again).
const TIMEOUT_SECS: u64 = 600;
/// Generated cases per operation and phase; with the seed, the requests are the same every
/// time (`CRIER_SCHEMATHESIS_SEED` picks another seed, to explore further).
const MAX_EXAMPLES: &str = "60";
const SEED: &str = "20240601";
/// The whole run's limit; each takes 25-60 s on two cores (the two tests run side by side).
const WALL_CLOCK: Duration = Duration::from_secs(300);

/// The `st` command of the virtualenv `scripts/test` makes (or `$CRIER_SCHEMATHESIS_VENV`).
fn st() -> PathBuf {
    let venv = std::env::var_os("CRIER_SCHEMATHESIS_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("schemathesis-venv")
    });
    let st = venv.join("bin").join("st");
    assert!(
        st.exists(),
        "{} is missing: run scripts/test (it installs schemathesis into target/schemathesis-venv), \
         or `python3 -m venv target/schemathesis-venv && target/schemathesis-venv/bin/pip install 'schemathesis==4.32.5'`",
        st.display()
    );
    st
}

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 3600;
    let claims = json!({"sub": user, "exp": exp});
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
}

fn options() -> Options {
    let jwt = JwtConfig { secret: Some(SECRET.to_owned()), required: false, ..JwtConfig::default() };
    let auth = AuthConfig { jwt: Some(jwt), ..AuthConfig::default() };
    let api = ApiConfig { keys: vec![KEY.to_owned()], ..ApiConfig::default() };
    Options {
        server: Some(ServerConfig { api, ..ServerConfig::default() }),
        engine: Some(EngineConfig { timeout_secs: TIMEOUT_SECS, stats_interval_secs: 1, ..EngineConfig::default() }),
        extensions: crier_auth::policies(&auth).expect("policies"),
        ..Options::default()
    }
}

/// A long-polling session over raw HTTP, its user bound by a JWT if given, subscribed to
/// `subs`; returns its client id.
async fn session(url: &str, user: Option<&str>, subs: &[&str]) -> String {
    let mut hs = json!({"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]});
    if let Some(u) = user {
        hs["ext"] = json!({"jwt": token(u)});
    }
    let (_, r) = post_json(url, &hs).await;
    let id = r[0]["clientId"].as_str().unwrap_or_else(|| panic!("handshake: {r}")).to_owned();
    let (_, r) =
        post_json(url, &json!({"channel":"/meta/connect","clientId":id,"connectionType":"long-polling"})).await;
    assert_eq!(r[0]["successful"], json!(true), "first connect: {r}");
    for s in subs {
        subscribe(url, &id, s).await;
    }
    id
}

/// The sessions the node holds during the run: the user the document's examples name
/// (`alice`) twice, one on `/**` so that every channel's subscribers include a real session
/// and user (the document's links lead from there to `GET /sessions/{client_id}` and
/// `GET /users/{user}`), another user, and an anonymous session, on the example channels.
const SESSIONS: [(Option<&str>, &[&str]); 4] = [
    (Some("alice"), &["/**"]),
    (Some("alice"), &["/chat/room1", "/inbox"]),
    (Some("bob"), &["/chat/*", "/chat/room2"]),
    (None, &["/chat/room1", "/news/**"]),
];

/// Makes the sessions, then remakes each one the run ends (it sends real selectors to
/// `/disconnect` and `/unsubscribe`) while the run lasts, so later requests still reach real
/// data. Stops when dropped.
async fn keep_populated(node: &TestServer) -> tokio_util::sync::DropGuard {
    let (url, engine) = (node.url(), node.engine.clone());
    let mut ids = Vec::new();
    for (user, subs) in SESSIONS {
        ids.push(session(&url, user, subs).await);
    }
    let r = http().get(node.at("/api/users/alice")).bearer_auth(KEY).send().await.expect("GET /api/users/alice");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(2), "{v}");
    let stop = tokio_util::sync::CancellationToken::new();
    let done = stop.clone();
    tokio::spawn(async move {
        while !done.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for (id, (user, subs)) in ids.iter_mut().zip(SESSIONS) {
                let info = engine.api_session(id).await.ok().flatten();
                if info.is_none_or(|s| s.subscriptions.len() < subs.len()) {
                    let _ = engine
                        .api_disconnect(&crier_engine::Selector { client_ids: vec![id.clone()], ..Default::default() })
                        .await;
                    *id = session(&url, user, subs).await;
                }
            }
        }
    });
    stop.drop_guard()
}

/// Schemathesis hooks (Python). The one rule of the API that JSON Schema cannot state: a
/// user id is 1 to 256 *bytes* of UTF-8 (`crier_engine::MAX_USER_LEN`), and `maxLength`
/// counts characters. A generated id of at most 256 characters but more than 256 bytes
/// (e.g. a "Zalgo" string, which Hypothesis likes) is valid by the document and refused by
/// the server; these hooks cut such ids to 256 bytes. Ids longer than 256 characters (the
/// invalid ones the document describes) are left as they are.
const HOOKS: &str = r#"
import schemathesis

MAX_USER_BYTES = 256


def fit(user):
    if isinstance(user, str) and len(user) <= MAX_USER_BYTES:
        while len(user.encode("utf-8", "surrogatepass")) > MAX_USER_BYTES:
            user = user[:-1]
    return user


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and isinstance(body.get("users"), list):
        body = dict(body, users=[fit(u) for u in body["users"]])
    return body


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    if isinstance(path_parameters, dict) and "user" in path_parameters:
        path_parameters = dict(path_parameters, user=fit(path_parameters["user"]))
    return path_parameters
"#;

/// Runs schemathesis against `node` and fails with its output unless every check passed.
async fn run_schemathesis(node: &TestServer) {
    let st = st();
    let dir = std::env::temp_dir().join(format!("crier-api-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let hooks = dir.join("hooks.py");
    std::fs::write(&hooks, HOOKS).expect("write the hooks");
    let base = node.at("");
    let schema = node.at("/api/openapi.json");
    let seed = std::env::var("CRIER_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let mut cmd = tokio::process::Command::new(&st);
    cmd.arg("run")
        .arg(&schema)
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {KEY}")])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", &seed])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .current_dir(&dir)
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(WALL_CLOCK, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {WALL_CLOCK:?}"))
        .unwrap_or_else(|e| panic!("{} does not run: {e}", st.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis failed ({:?}, {:?}):\n{text}", out.status, started.elapsed());
    eprintln!("{text}\nschemathesis passed in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_matches_its_document_on_a_memory_node() {
    let node = TestServer::start_with(options()).await;
    let _sessions = keep_populated(&node).await;
    run_schemathesis(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_matches_its_document_on_a_redis_node() {
    let redis = RedisServer::start();
    let c = Cluster::start_with(&redis, 1, TIMEOUT_SECS, options).await;
    let _sessions = keep_populated(&c.nodes[0]).await;
    run_schemathesis(&c.nodes[0]).await;
}
