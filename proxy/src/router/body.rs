//! The body sent to a target: the client's body with the top-level `model` replaced by the
//! target's model id.
//!
//! The client's bytes are kept and only the `model` value is swapped in place: one copy of the
//! body, instead of serializing the parsed request again for every attempt, and the provider sees
//! the client's fields in the client's order. When the bytes cannot be edited safely (a top-level
//! key written with escapes, or no top-level `model` at all) the parsed request is serialized
//! with the new model instead.

use std::ops::Range;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

/// `raw` (the client's body, which parsed as `body`) with every top-level `model` value set to
/// `model`.
pub fn with_model(
    raw: &[u8],
    body: &Map<String, Value>,
    model: &str,
) -> serde_json::Result<Vec<u8>> {
    match model_values(raw) {
        Some(spans) if !spans.is_empty() => {
            let mut out = Vec::with_capacity(raw.len() + model.len() + 2);
            let mut from = 0;
            for span in spans {
                out.extend_from_slice(&raw[from..span.start]);
                serde_json::to_writer(&mut out, model)?;
                from = span.end;
            }
            out.extend_from_slice(&raw[from..]);
            Ok(out)
        }
        _ => serde_json::to_vec(&WithModel { body, model }),
    }
}

/// The parsed request with `model` replaced (or added), serialized without copying the request.
struct WithModel<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
}

impl Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let has_model = self.body.contains_key("model");
        let mut map = serializer.serialize_map(Some(self.body.len() + usize::from(!has_model)))?;
        if !has_model {
            map.serialize_entry("model", self.model)?;
        }
        for (k, v) in self.body {
            if k == "model" {
                map.serialize_entry(k, self.model)?;
            } else {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

fn skip_space(raw: &[u8], mut at: usize) -> usize {
    while raw
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

/// The end (after the closing quote) of the string whose opening quote is at `at`, and whether
/// it holds an escape.
fn skip_string(raw: &[u8], at: usize) -> Option<(usize, bool)> {
    let mut i = at + 1;
    let mut escaped = false;
    loop {
        // Strings are most of a chat body: jump to the next quote or backslash.
        i += memchr::memchr2(b'"', b'\\', raw.get(i..)?)?;
        if raw[i] == b'"' {
            return Some((i + 1, escaped));
        }
        escaped = true;
        i += 2;
    }
}

/// The end of the value that starts at `at`.
fn skip_value(raw: &[u8], at: usize) -> Option<usize> {
    match raw.get(at)? {
        b'"' => skip_string(raw, at).map(|(end, _)| end),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            loop {
                match raw.get(i)? {
                    b'"' => {
                        i = skip_string(raw, i)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            // A number, `true`, `false` or `null`: up to the next delimiter.
            let len = raw[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))?;
            (len > 0).then_some(at + len)
        }
    }
}

/// Where the values of the top-level `model` keys are in `raw`, a JSON object; `None` when a
/// top-level key holds an escape (it might spell `model`) or the text is not what was expected.
fn model_values(raw: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut spans = Vec::new();
    let mut at = skip_space(raw, 0);
    if raw.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_space(raw, at + 1);
    if raw.get(at) == Some(&b'}') {
        return Some(spans);
    }
    loop {
        if raw.get(at) != Some(&b'"') {
            return None;
        }
        let (key_end, escaped) = skip_string(raw, at)?;
        if escaped {
            return None;
        }
        let key = &raw[at + 1..key_end - 1];
        at = skip_space(raw, key_end);
        if raw.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_space(raw, at + 1);
        let value_end = skip_value(raw, value_start)?;
        if key == b"model" {
            spans.push(value_start..value_end);
        }
        at = skip_space(raw, value_end);
        match raw.get(at)? {
            b',' => at = skip_space(raw, at + 1),
            b'}' => return Some(spans),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body sent for `raw` with model `m`, checked to say the same as the client's body
    /// with `model` replaced.
    fn sent(raw: &str) -> String {
        let body: Map<String, Value> = serde_json::from_str(raw).expect("a JSON object");
        let out = with_model(raw.as_bytes(), &body, "m\"2").expect("encodes");
        let mut expected = body.clone();
        expected.insert("model".into(), Value::from("m\"2"));
        let parsed: Map<String, Value> = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(parsed, expected, "for {raw}");
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn only_the_model_value_changes_and_the_rest_keeps_its_bytes() {
        assert_eq!(
            sent(
                r#"{"temperature":0, "model":"bench","messages":[{"role":"user","content":"hi"}]}"#
            ),
            r#"{"temperature":0, "model":"m\"2","messages":[{"role":"user","content":"hi"}]}"#
        );
        assert_eq!(
            sent(" {\n \"model\" : \"bench\" \n} "),
            " {\n \"model\" : \"m\\\"2\" \n} "
        );
    }

    #[test]
    fn nested_and_quoted_models_are_left_alone() {
        assert_eq!(
            sent(
                r#"{"metadata":{"model":"x"},"tools":[{"model":"y"}],"note":"\"model\":\"z\"","model":"bench"}"#
            ),
            r#"{"metadata":{"model":"x"},"tools":[{"model":"y"}],"note":"\"model\":\"z\"","model":"m\"2"}"#
        );
        assert_eq!(
            sent(r#"{"a":"}{[","model":null,"b":[1,{"c":"]"}],"d":-1.5e3,"e":true}"#),
            r#"{"a":"}{[","model":"m\"2","b":[1,{"c":"]"}],"d":-1.5e3,"e":true}"#
        );
    }

    #[test]
    fn every_top_level_model_is_replaced() {
        assert_eq!(
            sent(r#"{"model":"a","x":1,"model":{"deep":"b"}}"#),
            r#"{"model":"m\"2","x":1,"model":"m\"2"}"#
        );
    }

    #[test]
    fn escaped_keys_and_missing_models_fall_back_to_serializing() {
        // `mod\u0065l` is `model`: the bytes cannot tell, so the parsed request is written.
        let out = sent(r#"{"mod\u0065l":"bench","n":1}"#);
        assert!(!out.contains("bench"), "{out}");
        let out = sent(r#"{"messages":[]}"#);
        assert!(out.contains(r#""model":"m\"2""#), "{out}");
        assert_eq!(model_values(br#"{"a":1"#), None);
        assert_eq!(model_values(b"[1]"), None);
        assert_eq!(model_values(b"{}"), Some(vec![]));
    }
}
