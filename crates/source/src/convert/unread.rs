//! Finds the fields of an Istio `spec` that the model does not keep, so that none is dropped
//! silently: serde ignores a key the model has no field for, and a user who wrote
//! `tls.insecureSkipVerify` would otherwise never learn it changed nothing.
//!
//! The input spec is walked beside the model re-serialized: a key of an input mapping that the
//! serialized mapping lacks is not read. A key set to its empty value (null, false, 0, "", [],
//! {}) is passed over: the model drops empty fields when it serializes, and an empty value asks
//! for nothing, so ignoring it changes nothing (as proto3 treats a default value as unset).
//! Fields the model keeps as raw JSON serialize back whole, so they count as read.

use serde_json::Value;

/// The field paths (e.g. `spec.trafficPolicy.tls.caCrl`) present in `input` that `model`
/// (the same spec deserialized and serialized again) does not hold, in key order within each
/// mapping.
pub(super) fn unread_paths(input: &Value, model: &Value, at: &str) -> Vec<String> {
    let mut paths = Vec::new();
    walk(input, model, at, &mut paths);
    paths
}

fn walk(input: &Value, model: &Value, at: &str, paths: &mut Vec<String>) {
    match (input, model) {
        (Value::Object(input), Value::Object(model)) => {
            for (key, value) in input {
                let path = format!("{at}.{key}");
                match model.get(key) {
                    Some(kept) => walk(value, kept, &path, paths),
                    None if is_empty(value) => {}
                    None => paths.push(path),
                }
            }
        }
        // Element-wise, while both lists line up; a list the model rebuilt differently is taken
        // as read rather than guessed at.
        (Value::Array(input), Value::Array(model)) if input.len() == model.len() => {
            for (i, (value, kept)) in input.iter().zip(model).enumerate() {
                walk(value, kept, &format!("{at}[{i}]"), paths);
            }
        }
        // A scalar, or a value the model holds in another shape (a parsed duration, an enum):
        // the model read it.
        _ => {}
    }
}

/// A value that asks for nothing: what an absent field means.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_the_model_lacks_are_named_by_path_and_empty_ones_are_not() {
        let input = json!({
            "a": {"kept": 1, "extra": "x", "off": false},
            "list": [{"kept": 1}, {"kept": 2, "extra": true}],
            "raw": {"anything": 1},
        });
        let model = json!({
            "a": {"kept": 1},
            "list": [{"kept": 1}, {"kept": 2}],
            "raw": {"anything": 1},
        });
        assert_eq!(
            unread_paths(&input, &model, "spec"),
            ["spec.a.extra", "spec.list[1].extra"]
        );
    }
}
