//! The cache key is a pure function of the fields that can change the answer: for any request,
//! field order, whitespace and number spelling do not change it; any change to a counted field
//! does; changes to excluded fields do not (ARCHITECTURE.md, invariant 3).

use proptest::prelude::*;
use serde_json::{Map, Value};
use spillway::cache::key::{EXCLUDED_FIELDS, cache_key, write_canonical};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| Value::from((f * 1000.0).round() / 1000.0)),
        "[a-zA-Z0-9 _\\-\u{e9}\u{4e2d}\"\\\\]{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request() -> impl Strategy<Value = Map<String, Value>> {
    (
        proptest::collection::btree_map("[a-z_]{1,8}", value(), 1..6),
        "[a-z]{1,8}",
    )
        .prop_map(|(m, text)| {
            let mut body: Map<String, Value> = m.into_iter().collect();
            body.insert("model".into(), Value::from("route"));
            body.insert(
                "messages".into(),
                serde_json::json!([{"role": "user", "content": text}]),
            );
            body
        })
}

/// Writes `v` as JSON text with keys in a shuffled order, random whitespace, and integral
/// numbers spelled variously (`3`, `3.0`, `3e0`).
fn next(seed: &mut u64) -> usize {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 33) as usize
}

fn respell(v: &Value, seed: &mut u64, out: &mut String) {
    let ws = [" ", "", "\n  ", "\t"];
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            for i in (1..keys.len()).rev() {
                keys.swap(i, next(seed) % (i + 1));
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws[next(seed) % 4]);
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(ws[next(seed) % 4]);
                out.push(':');
                respell(&m[*k], seed, out);
            }
            out.push_str(ws[next(seed) % 4]);
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws[next(seed) % 4]);
                respell(item, seed, out);
            }
            out.push(']');
        }
        Value::Number(n) => match n.as_i64() {
            Some(i) => match next(seed) % 3 {
                0 => out.push_str(&i.to_string()),
                1 => out.push_str(&format!("{i}.0")),
                _ => out.push_str(&format!("{i}e0")),
            },
            None => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn order_whitespace_and_number_spelling_never_change_the_key(body in request(), seed in any::<u64>()) {
        let mut text = String::new();
        let mut s = seed;
        respell(&Value::Object(body.clone()), &mut s, &mut text);
        let reparsed: Map<String, Value> = serde_json::from_str(&text).expect("respelled JSON parses");
        prop_assert_eq!(cache_key("chat", "r", "", &body), cache_key("chat", "r", "", &reparsed), "{}", text);
    }

    #[test]
    fn changing_a_counted_field_changes_the_key(body in request(), pick in any::<usize>(), new in value()) {
        let counted: Vec<String> = body.keys().filter(|k| !EXCLUDED_FIELDS.contains(&k.as_str())).cloned().collect();
        let field = &counted[pick % counted.len()];
        prop_assume!(canonical(&body[field]) != canonical(&new));
        let mut changed = body.clone();
        changed.insert(field.clone(), new);
        prop_assert_ne!(cache_key("chat", "r", "", &body), cache_key("chat", "r", "", &changed));
        let mut added = body.clone();
        added.insert("a_field_nobody_knew".into(), Value::Null);
        prop_assert_ne!(cache_key("chat", "r", "", &body), cache_key("chat", "r", "", &added));
    }

    #[test]
    fn excluded_fields_never_change_the_key(body in request(), pick in any::<usize>(), new in value()) {
        let field = EXCLUDED_FIELDS[pick % EXCLUDED_FIELDS.len()];
        let mut changed = body.clone();
        changed.insert(field.into(), new);
        prop_assert_eq!(cache_key("chat", "r", "", &body), cache_key("chat", "r", "", &changed));
    }
}
