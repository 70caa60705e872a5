//! Cassettes: a cache exported as JSONL — one entry per line, the canonical request and the
//! response as JSON, sorted by key so it diffs well in git — and imported back. Response
//! headers are kept by allowlist only, and export refuses (naming the entry) anything that looks
//! like a provider key. This is how a team commits its eval answers and runs CI with no keys.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::cache::Cache;
use crate::cache::entry::{Stored, keep_header};
use crate::cache::key::{CacheKey, cache_key, write_canonical};

/// One cassette line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteLine {
    /// The cache key (64 hex digits).
    pub key: String,
    /// Cache namespace.
    pub namespace: String,
    /// Route (client-facing model name).
    pub route: String,
    /// `chat` or `embeddings`.
    pub endpoint: String,
    /// Unix seconds when stored.
    pub created: u64,
    /// Provider that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Upstream model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The request's counted fields, canonical.
    pub request: Box<RawValue>,
    /// The answer.
    pub response: CassetteResponse,
}

/// The answer part of a cassette line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CassetteResponse {
    /// HTTP status.
    pub status: u16,
    /// Allowlisted headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A plain answer's body, exactly as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<RawValue>>,
    /// A streamed answer's chunk payloads, exactly as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<Box<RawValue>>>,
}

/// Why a cassette could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CassetteError {
    /// An entry contains something that looks like a provider key.
    #[error(
        "entry {key} contains what looks like a provider key ({pattern}...) in its {place}; export refused"
    )]
    Secret {
        /// The entry.
        key: String,
        /// The matched prefix.
        pattern: &'static str,
        /// `request` or `response`.
        place: &'static str,
    },
    /// A line does not parse, or its key does not match its request.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store failed.
    #[error("{0}")]
    Store(String),
}

/// Prefixes of provider keys, and how many key characters must follow to count as one.
const KEY_PATTERNS: &[(&str, usize)] = &[("sk-ant-", 20), ("gsk_", 20), ("sk-", 20), ("AIza", 30)];

fn key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The prefix of the first thing in `text` that looks like a provider key.
pub fn find_secret(text: &str) -> Option<&'static str> {
    let bytes = text.as_bytes();
    for (prefix, min_tail) in KEY_PATTERNS {
        let mut from = 0;
        while let Some(at) = text[from..].find(prefix) {
            let start = from + at;
            let boundary = start == 0 || !key_char(bytes[start - 1]);
            let tail = bytes[start + prefix.len()..]
                .iter()
                .take_while(|b| key_char(**b))
                .count();
            if boundary && tail >= *min_tail {
                return Some(prefix);
            }
            from = start + prefix.len();
        }
    }
    None
}

fn canonical_raw(value: &Value) -> Box<RawValue> {
    let mut out = Vec::new();
    write_canonical(value, &mut out).expect("writing to a Vec cannot fail");
    RawValue::from_string(String::from_utf8(out).expect("canonical JSON is UTF-8"))
        .expect("canonical JSON is JSON")
}

/// Writes every valid entry as a cassette line, in key order; returns how many. Answers still
/// queued for the cache's writer are stored first, so everything answered so far is exported.
pub fn export(cache: &Cache, out: &mut impl Write) -> Result<usize, CassetteError> {
    let Some(store) = cache.store() else {
        return Ok(0);
    };
    cache.flush();
    let mut keys = store
        .keys()
        .map_err(|e| CassetteError::Store(e.to_string()))?;
    keys.sort();
    let mut written = 0;
    for key in keys {
        let Some((stored, request)) = cache.lookup_full(&key) else {
            continue;
        };
        let request = canonical_raw(&request);
        let hex = key.to_hex();
        if let Some(pattern) = find_secret(request.get()) {
            return Err(CassetteError::Secret {
                key: hex,
                pattern,
                place: "request",
            });
        }
        let response_texts = stored
            .body
            .iter()
            .map(|b| b.get())
            .chain(stored.chunks.iter().flatten().map(|c| c.get()));
        for text in response_texts {
            if let Some(pattern) = find_secret(text) {
                return Err(CassetteError::Secret {
                    key: hex,
                    pattern,
                    place: "response",
                });
            }
        }
        let line = CassetteLine {
            key: hex,
            namespace: stored.namespace,
            route: stored.route,
            endpoint: stored.endpoint,
            created: stored.created,
            provider: stored.provider,
            model: stored.model,
            request,
            response: CassetteResponse {
                status: stored.status,
                headers: stored
                    .headers
                    .into_iter()
                    .filter(|(k, _)| keep_header(k))
                    .collect(),
                body: stored.body,
                chunks: stored.chunks,
            },
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

/// Reads cassette lines into the store; every line's key must match its request. Returns how
/// many entries were imported.
pub fn import(cache: &Cache, input: impl BufRead) -> Result<usize, CassetteError> {
    let mut imported = 0;
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| CassetteError::Line {
            line: line_no,
            message,
        };
        let entry: CassetteLine = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let request: Map<String, Value> =
            serde_json::from_str(entry.request.get()).map_err(|e| bad(format!("request: {e}")))?;
        let key = cache_key(&entry.endpoint, &entry.route, &entry.namespace, &request);
        let claimed = CacheKey::from_hex(&entry.key)
            .ok_or_else(|| bad("key: expected 64 hex digits".into()))?;
        if key != claimed {
            return Err(bad(format!(
                "key {} does not match its request (which keys to {key}): the cassette was edited or made by another key version",
                entry.key
            )));
        }
        if entry.response.body.is_none() && entry.response.chunks.is_none() {
            return Err(bad("response: needs a body or chunks".into()));
        }
        let stored = Stored {
            created: entry.created,
            namespace: entry.namespace,
            route: entry.route,
            endpoint: entry.endpoint,
            provider: entry.provider,
            model: entry.model,
            status: entry.response.status,
            headers: entry
                .response
                .headers
                .into_iter()
                .filter(|(k, _)| keep_header(k))
                .collect(),
            body: entry.response.body,
            chunks: entry.response.chunks,
        };
        let mut canonical = Vec::new();
        write_canonical(&Value::Object(request), &mut canonical)?;
        cache.save(&key, &stored, &canonical);
        imported += 1;
    }
    cache.flush();
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_key_patterns_are_found_and_ordinary_text_is_not() {
        assert_eq!(
            find_secret("key gsk_abcdefghijklmnopqrstuvwxyz123 here"),
            Some("gsk_")
        );
        assert_eq!(find_secret("sk-proj-abcdefghijklmnopqrstuvwx"), Some("sk-"));
        assert_eq!(
            find_secret("\"sk-ant-api03-abcdefghijklmnopqrstuv\""),
            Some("sk-ant-")
        );
        assert_eq!(
            find_secret("AIzaSyA1234567890abcdefghijklmnopqrstu"),
            Some("AIza")
        );
        assert_eq!(find_secret("a risk-free task-force plan"), None);
        assert_eq!(
            find_secret("ask-me-anything-about-rivers-and-lakes"),
            None,
            "sk- inside a word"
        );
        assert_eq!(find_secret("gsk_short"), None);
    }

    use crate::config::cache::DEFAULT_HOT_MEMORY;

    #[test]
    fn export_refuses_an_entry_carrying_a_key_and_names_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = crate::cache::testing::open(&dir, DEFAULT_HOT_MEMORY);
        let request: Map<String, Value> = serde_json::from_str(r#"{"model":"r"}"#).unwrap();
        let key = cache_key("chat", "r", "", &request);
        let stored = crate::cache::testing::stored(
            r#"{"content":"your key is gsk_abcdefghijklmnopqrstuvwxyz0123"}"#,
        );
        cache.save(&key, &stored, br#"{"model":"r"}"#);
        let mut out = Vec::new();
        match export(&cache, &mut out) {
            Err(CassetteError::Secret {
                key: named,
                pattern,
                place,
            }) => {
                assert_eq!((named, pattern, place), (key.to_hex(), "gsk_", "response"));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(out.is_empty(), "nothing written");
    }

    #[test]
    fn import_refuses_a_line_whose_key_does_not_match_its_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = crate::cache::testing::open(&dir, DEFAULT_HOT_MEMORY);
        let line = format!(
            r#"{{"key":"{}","namespace":"","route":"r","endpoint":"chat","created":0,"request":{{"model":"r"}},"response":{{"status":200,"headers":{{}},"body":{{}}}}}}"#,
            "0".repeat(64)
        );
        match import(&cache, line.as_bytes()) {
            Err(CassetteError::Line { line: 1, message }) => {
                assert!(message.contains("does not match"), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
