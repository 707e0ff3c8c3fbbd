//! The configuration reference and the example file, generated from the settings types
//! (their doc comments and defaults), so the docs cannot drift from the code: a test
//! compares `docs/configuration.md` (between markers) and `docs/crier.example.toml` with what
//! this renders, and rewrites them when `CRIER_UPDATE_DOCS=1`.

use serde_json::Value;

use crate::settings::Settings;

/// Flags that override a key.
const FLAGS: [(&str, &str); 5] = [
    ("listen", "--listen"),
    ("server.mount", "--mount"),
    ("engine.timeout_secs", "--timeout"),
    ("server.client_js", "--client-js"),
    ("redis.url", "--redis"),
];

/// One setting.
struct Entry {
    key: String,
    default: Value,
    doc: String,
    /// In a section that is off unless configured (`auth.jwt`, `auth.webhook`).
    optional: bool,
}

fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => root.get("$defs").and_then(|d| d.get(name)).unwrap_or(v),
        None => v,
    }
}

/// An optional section (`Option<Struct>`): the struct's schema.
fn optional_struct<'a>(root: &'a Value, v: &'a Value) -> Option<&'a Value> {
    let alts = v.get("anyOf").or_else(|| v.get("oneOf"))?.as_array()?;
    alts.iter().map(|a| resolve(root, a)).find(|s| s.get("properties").is_some())
}

fn one_line(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn walk(root: &Value, schema: &Value, defaults: &Value, prefix: &str, optional: bool, out: &mut Vec<Entry>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else { return };
    for (name, prop) in props {
        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let resolved = resolve(root, prop);
        let default = prop.get("default").cloned().unwrap_or(Value::Null);
        let default = if default.is_null() { defaults.get(name).cloned().unwrap_or(Value::Null) } else { default };
        if resolved.get("properties").is_some() {
            walk(root, resolved, &default, &key, optional, out);
        } else if let Some(inner) = optional_struct(root, prop) {
            // Off unless configured: its fields' defaults are the struct's own.
            walk(root, inner, &Value::Null, &key, true, out);
        } else {
            let doc = prop.get("description").or_else(|| resolved.get("description")).and_then(Value::as_str);
            out.push(Entry { key, default, doc: one_line(doc.unwrap_or("")), optional });
        }
    }
}

fn entries() -> Vec<Entry> {
    let schema = schemars::schema_for!(Settings);
    let root = schema.as_value();
    let defaults = serde_json::to_value(Settings::default()).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(root, root, &defaults, "", false, &mut out);
    // A table's own keys before its subtables (TOML allows each header once).
    out.sort_by(|a, b| {
        let split = |k: &str| {
            k.rsplit_once('.').map(|(t, n)| (t.to_owned(), n.to_owned())).unwrap_or((String::new(), k.to_owned()))
        };
        split(&a.key).cmp(&split(&b.key))
    });
    out
}

fn env_name(key: &str) -> String {
    format!("CRIER_{}", key.to_uppercase().replace('.', "__"))
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "unset".to_owned(),
        other => format!("`{}`", toml_value(other).unwrap_or_else(|| other.to_string())),
    }
}

fn toml_value(v: &Value) -> Option<String> {
    let t: toml::Value = serde_json::from_value(v.clone()).ok()?;
    Some(t.to_string())
}

/// The reference table (Markdown).
pub(crate) fn reference() -> String {
    let mut out = String::from("| Key | Env | Flag | Default | Meaning |\n|---|---|---|---|---|\n");
    for e in entries() {
        let flag = FLAGS.iter().find(|(k, _)| *k == e.key).map(|(_, f)| format!("`{f}`")).unwrap_or_default();
        let doc = e.doc.replace('|', "\\|");
        out.push_str(&format!("| `{}` | `{}` | {flag} | {} | {doc} |\n", e.key, env_name(&e.key), show(&e.default)));
    }
    out
}

/// A complete example file: every key with its doc and default; keys without a default, and
/// sections that are off unless configured, are commented out.
pub(crate) fn example() -> String {
    let mut out = String::from(
        "# Crier configuration: every setting with its default (generated from the code; see\n\
         # docs/configuration.md). Keys without a default are commented out.\n",
    );
    let mut section = String::new();
    for e in entries() {
        let (table, name) = match e.key.rsplit_once('.') {
            Some((t, n)) => (t.to_owned(), n.to_owned()),
            None => (String::new(), e.key.clone()),
        };
        // A section that is off unless configured is shown commented out.
        let off = if e.optional { "# " } else { "" };
        if table != section {
            out.push_str(&format!("\n{off}[{table}]\n"));
            section = table;
        }
        out.push_str(&format!("# {}\n", wrap(&e.doc)));
        match (&e.default, toml_value(&e.default)) {
            (Value::Null, _) | (_, None) => out.push_str(&format!("# {name} =\n")),
            (_, Some(v)) => out.push_str(&format!("{off}{name} = {v}\n")),
        }
    }
    out
}

/// Wraps a doc line for a TOML comment at about 96 columns.
fn wrap(doc: &str) -> String {
    let mut lines = vec![String::new()];
    for word in doc.split_whitespace() {
        let last = lines.last_mut().map(|l| l.len()).unwrap_or(0);
        if last > 0 && last + word.len() > 94 {
            lines.push(String::new());
        }
        if let Some(l) = lines.last_mut() {
            if !l.is_empty() {
                l.push(' ');
            }
            l.push_str(word);
        }
    }
    lines.join("\n# ")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const BEGIN: &str = "<!-- BEGIN GENERATED: settings reference (crates/crier/src/docs.rs) -->\n";
    const END: &str = "<!-- END GENERATED -->";

    fn docs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
    }

    /// Fails when the docs differ from the code; `CRIER_UPDATE_DOCS=1` rewrites them.
    #[test]
    fn configuration_docs_and_example_are_current() {
        let update = std::env::var("CRIER_UPDATE_DOCS").is_ok_and(|v| v == "1");
        let md_path = docs().join("configuration.md");
        let md = std::fs::read_to_string(&md_path).expect("docs/configuration.md");
        let (head, rest) = md.split_once(BEGIN).expect("the BEGIN marker in docs/configuration.md");
        let (_, tail) = rest.split_once(END).expect("the END marker in docs/configuration.md");
        let want_md = format!("{head}{BEGIN}{}{END}{tail}", reference());
        let ex_path = docs().join("crier.example.toml");
        let want_ex = example();
        if update {
            std::fs::write(&md_path, &want_md).expect("write");
            std::fs::write(&ex_path, &want_ex).expect("write");
        }
        assert!(
            md == want_md || update,
            "docs/configuration.md is stale: run CRIER_UPDATE_DOCS=1 cargo test -p crier docs"
        );
        let ex = std::fs::read_to_string(&ex_path).unwrap_or_default();
        assert!(
            ex == want_ex || update,
            "docs/crier.example.toml is stale: run CRIER_UPDATE_DOCS=1 cargo test -p crier docs"
        );
    }

    #[test]
    fn the_example_is_valid_and_is_the_defaults() {
        let f = figment::Figment::from(figment::providers::Serialized::defaults(Settings::default()))
            .merge(<figment::providers::Toml as figment::providers::Format>::string(&example()));
        let s = crate::settings::load(f).expect("the example loads");
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn every_setting_has_a_doc_line() {
        let missing: Vec<String> = entries().into_iter().filter(|e| e.doc.is_empty()).map(|e| e.key).collect();
        assert!(missing.is_empty(), "settings without a doc comment: {missing:?}");
        assert!(entries().iter().any(|e| e.key == "auth.jwt.secret"), "optional sections are listed");
    }
}
