//! The cache key: blake3 over a versioned, unambiguous encoding of the endpoint, the route, the
//! namespace and the request in canonical JSON — every field except a short exclusion list of
//! fields that cannot change the answer (ARCHITECTURE.md, invariant 3).
//!
//! Canonical: object keys sorted, no insignificant whitespace, numbers written by value (`1`,
//! `1.0` and `1e0` are the same), strings byte-exact. An unknown field is counted, so a new
//! parameter can never make two different requests share an entry.

use std::io::Write;

use serde_json::{Map, Value};

/// Part of every key's hash input: bump it to change the scheme without serving old entries.
pub const KEY_VERSION: &str = "spillway-cache-key/1";

/// Top-level request fields that cannot change the answer, so are left out of the key:
/// - `stream`, `stream_options`: how the answer is delivered, not what it is (streamed and
///   plain requests share one entry);
/// - `user`, `metadata`: caller bookkeeping the model never sees;
/// - `store`: whether the provider keeps a copy;
/// - `service_tier`: which queue serves the request, not what it answers.
pub const EXCLUDED_FIELDS: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
];

/// A cache key: 32 bytes of blake3, shown as 64 hex digits; the store's own key type.
pub use spillway_store::Key as CacheKey;

fn write_number(n: &serde_json::Number, out: &mut impl Write) -> std::io::Result<()> {
    if let Some(i) = n.as_i64() {
        return write!(out, "{i}");
    }
    if let Some(u) = n.as_u64() {
        return write!(out, "{u}");
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
        // Integral values are written as integers: 1.0 and 1 are the same number.
        write!(out, "{}", f as i64)
    } else if f.abs() >= 1.0e16 {
        // Shortest digits with an exponent: written positionally, a large float is a long
        // integer that reads back as another number.
        write!(out, "{f:e}")
    } else {
        // Rust prints the shortest representation that reads back to the same value.
        write!(out, "{f}")
    }
}

/// Writes `value` as canonical JSON.
pub fn write_canonical(value: &Value, out: &mut impl Write) -> std::io::Result<()> {
    match value {
        Value::Null => out.write_all(b"null"),
        Value::Bool(b) => out.write_all(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => serde_json::to_writer(&mut *out, s).map_err(std::io::Error::other),
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => write_object(map.iter(), out),
    }
}

fn write_object<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut sorted: Vec<(&String, &Value)> = entries.collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.write_all(b"{")?;
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, k).map_err(std::io::Error::other)?;
        out.write_all(b":")?;
        write_canonical(v, out)?;
    }
    out.write_all(b"}")
}

/// The request's counted fields (all but [`EXCLUDED_FIELDS`]) as canonical JSON.
pub fn canonical_request(body: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_object(
        body.iter()
            .filter(|(k, _)| !EXCLUDED_FIELDS.contains(&k.as_str())),
        &mut out,
    )
    .expect("writing to a Vec cannot fail");
    out
}

/// The key of a request to `endpoint` on `route` in `namespace`.
pub fn cache_key(
    endpoint: &str,
    route: &str,
    namespace: &str,
    body: &Map<String, Value>,
) -> CacheKey {
    key_of_canonical(endpoint, route, namespace, &canonical_request(body))
}

/// The key of a request to `endpoint` on `route` in `namespace` whose counted fields, as
/// canonical JSON, are `canonical` (from [`canonical_request`]): the same key
/// [`cache_key`] gives, for a caller that keeps the canonical bytes too.
pub fn key_of_canonical(
    endpoint: &str,
    route: &str,
    namespace: &str,
    canonical: &[u8],
) -> CacheKey {
    let parts = [KEY_VERSION, endpoint, route, namespace];
    let mut prefix = Vec::with_capacity(parts.iter().map(|p| 8 + p.len()).sum());
    for part in parts {
        // Length-prefixed, so no two different part lists encode alike.
        prefix.extend_from_slice(&(part.len() as u64).to_le_bytes());
        prefix.extend_from_slice(part.as_bytes());
    }
    // Two updates rather than one per part: each update has a fixed cost, and the parts are
    // short.
    let mut hasher = blake3::Hasher::new();
    hasher.update(&prefix);
    hasher.update(canonical);
    CacheKey(*hasher.finalize().as_bytes())
}

/// The JSON paths (`messages[0].content`, `temperature`) where two requests differ, compared
/// canonically; at most `limit` of them.
pub fn diff_paths(a: &Value, b: &Value, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    diff(a, b, String::new(), &mut out, limit);
    out
}

/// How far apart two requests are: over the fields where they differ, the sum of the edit
/// distances between the two values (a string's characters, any other value's canonical JSON),
/// a field on one side only counting its whole length. `None` once the sum passes `bound`, so a
/// scan for the nearest of many entries stops early on those already farther than its best.
pub fn distance(a: &Value, b: &Value, bound: usize) -> Option<usize> {
    let mut total = 0;
    add_distance(a, b, &mut total, bound).then_some(total)
}

/// Adds the distance between `a` and `b` to `total`; false once `total` passes `bound`.
fn add_distance(a: &Value, b: &Value, total: &mut usize, bound: usize) -> bool {
    let one_side = |v: &Value, total: &mut usize| {
        *total += leaf_text(v).chars().count();
        *total <= bound
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let within = match y.get(k) {
                    Some(vb) => add_distance(va, vb, total, bound),
                    None => one_side(va, total),
                };
                if !within {
                    return false;
                }
            }
            y.iter()
                .filter(|(k, _)| !x.contains_key(*k))
                .all(|(_, vb)| one_side(vb, total))
        }
        (Value::Array(x), Value::Array(y)) => {
            (0..x.len().max(y.len())).all(|i| match (x.get(i), y.get(i)) {
                (Some(va), Some(vb)) => add_distance(va, vb, total, bound),
                (Some(v), None) | (None, Some(v)) => one_side(v, total),
                (None, None) => true,
            })
        }
        _ => {
            let (ta, tb) = (leaf_text(a), leaf_text(b));
            if ta == tb {
                return true;
            }
            match edit_distance(&ta, &tb, bound.saturating_sub(*total)) {
                Some(d) => {
                    *total += d;
                    true
                }
                None => false,
            }
        }
    }
}

/// A value as the text its distance is measured on: a string's own characters (so a typo
/// counts one), anything else its canonical JSON (so `1.0` and `1` are the same).
fn leaf_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => String::from_utf8_lossy(&canonical_bytes(other)).into_owned(),
    }
}

/// Longest stretch of characters, after the common prefix and suffix, compared one by one; two
/// texts that differ over more count as wholly different (their longer length), which keeps a
/// scan over many long prompts quick and still ranks a typo first.
const EDIT_WINDOW: usize = 2_000;

/// Levenshtein distance in characters between `a` and `b`, or `None` when it passes `bound`.
fn edit_distance(a: &str, b: &str, bound: usize) -> Option<usize> {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = (a.iter().rev())
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > bound {
        return None;
    }
    if short.is_empty() || long.len() > EDIT_WINDOW {
        return (long.len() <= bound).then_some(long.len());
    }
    let mut row: Vec<usize> = (0..=short.len()).collect();
    for (i, lc) in long.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        let mut lowest = row[0];
        for (j, sc) in short.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(lc != sc))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
            lowest = lowest.min(row[j + 1]);
        }
        if lowest > bound {
            return None;
        }
    }
    let d = row[short.len()];
    (d <= bound).then_some(d)
}

fn canonical_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out).expect("writing to a Vec cannot fail");
    out
}

fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff(va, vb, p, out, limit),
                    _ => {
                        if out.len() < limit {
                            out.push(p);
                        }
                    }
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => diff(va, vb, p, out, limit),
                    _ => {
                        if out.len() < limit {
                            out.push(p);
                        }
                    }
                }
            }
        }
        _ => {
            if canonical_bytes(a) != canonical_bytes(b) && out.len() < limit {
                out.push(if path.is_empty() {
                    "(body)".into()
                } else {
                    path
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).expect("an object")
    }

    fn key(s: &str) -> CacheKey {
        cache_key("chat", "r", "", &obj(s))
    }

    #[test]
    fn order_whitespace_and_number_spelling_do_not_matter() {
        let a = key(r#"{"model":"m","temperature":1,"messages":[{"role":"user","content":"hi"}]}"#);
        let b = key(
            r#"{ "messages" : [ { "content":"hi", "role":"user" } ], "temperature": 1.0, "model":"m" }"#,
        );
        let c =
            key(r#"{"temperature":1e0,"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn excluded_fields_do_not_matter_and_others_do() {
        let base = key(r#"{"model":"m","max_tokens":5}"#);
        assert_eq!(
            base,
            key(r#"{"model":"m","max_tokens":5,"stream":true,"user":"u1"}"#)
        );
        assert_ne!(base, key(r#"{"model":"m","max_tokens":6}"#));
        assert_ne!(
            base,
            key(r#"{"model":"m","max_tokens":5,"some_future_field":1}"#)
        );
    }

    #[test]
    fn endpoint_route_and_namespace_are_part_of_the_key() {
        let body = obj(r#"{"model":"m"}"#);
        let k = cache_key("chat", "r", "", &body);
        assert_ne!(k, cache_key("embeddings", "r", "", &body));
        assert_ne!(k, cache_key("chat", "r2", "", &body));
        assert_ne!(k, cache_key("chat", "r", "run-2", &body));
        // Length prefixes keep parts apart.
        assert_ne!(
            cache_key("chat", "ab", "c", &body),
            cache_key("chat", "a", "bc", &body)
        );
    }

    #[test]
    fn diffs_name_the_paths() {
        let a: Value = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"ho"}],"temperature":0.0,"seed":1}"#,
        )
        .unwrap();
        assert_eq!(diff_paths(&a, &b, 10), vec!["messages[0].content", "seed"]);
    }

    #[test]
    fn distance_counts_edits_in_the_fields_that_differ() {
        let v = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
        let a = v(r#"{"messages":[{"role":"user","content":"what is a weir?"}],"temperature":0}"#);
        let typo =
            v(r#"{"messages":[{"role":"user","content":"what is a wier?"}],"temperature":0.0}"#);
        let other = v(r#"{"messages":[{"role":"user","content":"name a delta"}],"temperature":0}"#);
        let seeded = v(
            r#"{"messages":[{"role":"user","content":"what is a weir?"}],"temperature":0,"seed":12}"#,
        );
        assert_eq!(distance(&a, &a, 0), Some(0));
        assert_eq!(distance(&a, &typo, usize::MAX), Some(2));
        assert_eq!(distance(&a, &seeded, usize::MAX), Some(2));
        assert!(distance(&a, &other, usize::MAX).unwrap() > 8);
        // Past the bound, the answer is None, not a number.
        assert_eq!(distance(&a, &other, 3), None);
        assert_eq!(distance(&a, &typo, 1), None);
    }

    #[test]
    fn edit_distance_is_levenshtein_in_characters() {
        for (a, b, d) in [
            ("", "", 0),
            ("kitten", "sitting", 3),
            ("flaw", "lawn", 2),
            ("héllo", "hello", 1),
            ("abc", "", 3),
        ] {
            assert_eq!(edit_distance(a, b, usize::MAX), Some(d), "{a} {b}");
            assert_eq!(edit_distance(b, a, usize::MAX), Some(d), "{b} {a}");
            assert_eq!(edit_distance(a, b, d), Some(d), "{a} {b} at its bound");
            if d > 0 {
                assert_eq!(edit_distance(a, b, d - 1), None, "{a} {b} under its bound");
            }
        }
    }

    #[test]
    fn the_key_scheme_is_stable() {
        // Entries stored by earlier versions must still be found: this is the key
        // `spillway-cache-key/1` gives this request.
        let body = obj(
            r#"{"model":"m","messages":[{"role":"user","content":"héllo \"q\""}],"temperature":0.5,"max_tokens":7,"stream":true}"#,
        );
        let key = cache_key("chat", "route", "ns", &body);
        assert_eq!(
            key.to_hex(),
            "7971ef953c5b6b8625d7010f4226d386660a3e62e3008d29595b47659c566c3a"
        );
        assert_eq!(
            key_of_canonical("chat", "route", "ns", &canonical_request(&body)),
            key
        );
    }

    #[test]
    fn keys_read_back_from_hex() {
        let k = key(r#"{"model":"m"}"#);
        assert_eq!(CacheKey::from_hex(&k.to_hex()), Some(k));
        assert_eq!(CacheKey::from_hex("zz"), None);
    }
}
