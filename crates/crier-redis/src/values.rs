//! Reading fred's untyped script and stream replies.

use fred::types::Value;

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn array(v: Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) => Some(a),
        Value::Null => None,
        _ => None,
    }
}

/// A hash reply as pairs of strings: a flat `[k1, v1, k2, v2, ...]` (from scripts and
/// streams) or a map (fred turns a direct HGETALL into one).
pub(crate) fn pairs(v: Value) -> Vec<(String, String)> {
    match v {
        Value::Map(m) => m.inner().into_iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), text(&v)?))).collect(),
        other => {
            let items = array(other).unwrap_or_default();
            items.chunks(2).filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?))).collect()
        }
    }
}

/// One stream entry `[id, [field, value, ...]]` as its id and fields.
pub(crate) fn entry(v: Value) -> Option<(String, Vec<(String, String)>)> {
    let mut parts = array(v)?.into_iter();
    let id = text(&parts.next()?)?;
    Some((id, pairs(parts.next()?)))
}
