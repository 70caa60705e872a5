//! Request parsing and the canonical cache key. Any bytes are read as the proxy reads a chat
//! and an embeddings request body (`chat_job`, `embeddings_job`, against a state with one route
//! `m`), never panicking; a body they accept is exactly the JSON that was sent. Every body that
//! parses as a JSON object (accepted or not: the key does not depend on validation) has a
//! canonical form that is itself a JSON object without the excluded fields, is a fixed point
//! (canonicalising it again gives the same bytes), and keys the same as the same value written
//! out again by serde_json (compact or pretty) and read back.
//!
//! `chat_job` is what the handler calls on the bytes it read; `canonical_request` and
//! `key_of_canonical` are what `cache::serve::handle` then keys the job's body with. Fuzzing the
//! two through the jobs exercises the real request path: the JSON parser and the validation of
//! `model`, `messages`, `input`, `stream` and the token limits.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use spillway::cache::key::{EXCLUDED_FIELDS, cache_key, canonical_request, key_of_canonical};
use spillway::server::request::{chat_job, embeddings_job};
use spillway::{AppState, Clock};

fn state() -> &'static Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE.get_or_init(|| {
        let toml = r#"
            [[providers]]
            name = "p"
            base_url = "http://127.0.0.1:9/v1"
            keys = ["env:FUZZ_KEY"]

            [[routes]]
            model = "m"
            targets = [{ provider = "p", model = "m" }]

            [cache]
            mode = "off"
        "#;
        let env = HashMap::from([("FUZZ_KEY".to_string(), "fuzz-key-0123456789".to_string())]);
        let config = spillway::config::parse(toml, "fuzz.toml", &env).expect("a valid config");
        AppState::new(config, Clock::manual()).expect("state")
    })
}

fn check(endpoint: &str, body: &Map<String, Value>) {
    let canonical = canonical_request(body);
    let reread: Map<String, Value> = serde_json::from_slice(&canonical).unwrap_or_else(|e| {
        panic!(
            "the canonical form is not a JSON object ({e}): {}",
            String::from_utf8_lossy(&canonical)
        )
    });
    assert!(
        EXCLUDED_FIELDS.iter().all(|f| !reread.contains_key(*f)),
        "an excluded field is in the canonical form"
    );
    let key = cache_key(endpoint, "m", "", body);
    assert_eq!(key, key_of_canonical(endpoint, "m", "", &canonical));
    assert_eq!(
        String::from_utf8_lossy(&canonical_request(&reread)),
        String::from_utf8_lossy(&canonical),
        "the canonical form is not a fixed point"
    );
    for text in [
        serde_json::to_vec(body).expect("a map serializes"),
        serde_json::to_vec_pretty(body).expect("a map serializes"),
    ] {
        let same: Map<String, Value> =
            serde_json::from_slice(&text).expect("serde_json reads what it writes");
        assert_eq!(
            cache_key(endpoint, "m", "", &same),
            key,
            "re-serialising changed the key: {}",
            String::from_utf8_lossy(&text)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let state = state();
    let parsed = serde_json::from_slice::<Value>(data);
    for (endpoint, job) in [
        ("chat", chat_job(state, Bytes::copy_from_slice(data))),
        (
            "embeddings",
            embeddings_job(state, Bytes::copy_from_slice(data)),
        ),
    ] {
        if let Ok(job) = job {
            assert_eq!(
                Some(&Value::Object(job.body.clone())),
                parsed.as_ref().ok(),
                "a job's body is what was sent"
            );
            check(endpoint, &job.body);
        }
    }
    if let Ok(Value::Object(body)) = &parsed {
        check("chat", body);
    }
});
