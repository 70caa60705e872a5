//! The five fuzzing properties of the reliability plan, as proptests bounded to run in CI with
//! the workspace's `cargo test` (the same properties are `cargo fuzz` targets in `fuzz/`, for
//! longer runs; see `fuzz/README.md`):
//!
//! 1. Request bytes are read as the proxy reads them (`chat_job`, `embeddings_job`) without a
//!    panic; a body that parses has a canonical form that is JSON and a fixed point, and a key
//!    that re-serialising the same value does not change.
//! 2. Rate-limit headers in every dialect, Go durations and 429 messages are read without a
//!    panic, and a duration read is never negative or NaN.
//! 3. An SSE stream gives the same events, usage, `[DONE]`, error and invalid chunk however its
//!    bytes are split, and a configured key never reaches an event.
//! 4. Any bytes, even behind a checksum that holds, decode to an error or an answer, never a
//!    panic; a real record with one byte changed never decodes to a different answer.
//! 5. A value-log segment with any tail: reopening the log and scanning it never panics and
//!    returns exactly the whole frames, up to the first one that is cut short or fails its CRC.
//!
//! What fuzzing found is pinned by the named tests at the end of the file (each failed before
//! its fix).

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use spillway::cache::entry::{self, Stored};
use spillway::cache::key::{CacheKey, EXCLUDED_FIELDS, cache_key, canonical_request};
use spillway::cache::key::{key_of_canonical, write_canonical};
use spillway::limits::headers::{self, Dialect, parse_go_duration, parse_limit_message};
use spillway::server::request::{chat_job, embeddings_job};
use spillway::upstream::scrub::Scrubber;
use spillway::upstream::sse::SseWatch;
use spillway::{AppState, Clock};
use spillway_store::vlog::{FRAME_HEADER, Frame, SEGMENT_HEADER, Scanned, ValueLog};

// ---------------------------------------------------------------------------------------------
// 1. Request parsing and the canonical key
// ---------------------------------------------------------------------------------------------

/// A proxy's state with one route, `m`, and the cache off: what `chat_job` and `embeddings_job`
/// read a request against.
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
        let env: HashMap<String, String> =
            HashMap::from([("FUZZ_KEY".to_string(), "fuzz-key-0123456789".to_string())]);
        let config = spillway::config::parse(toml, "fuzz.toml", &env).expect("a valid config");
        AppState::new(config, Clock::manual()).expect("state")
    })
}

/// Checks property 1 on `raw`: reading it never panics (a panic fails the test), and whatever
/// parses as a JSON object keys canonically.
fn check_request(raw: &[u8]) -> Result<(), TestCaseError> {
    let state = state();
    for (endpoint, job) in [
        ("chat", chat_job(state, Bytes::copy_from_slice(raw))),
        (
            "embeddings",
            embeddings_job(state, Bytes::copy_from_slice(raw)),
        ),
    ] {
        if let Ok(job) = job {
            // What the handler keys on is the body it parsed, exactly.
            let parsed: Value = serde_json::from_slice(raw).expect("a job's body is JSON");
            prop_assert_eq!(&Value::Object(job.body.clone()), &parsed);
            check_canonical(endpoint, &job.body)?;
        }
    }
    if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(raw) {
        check_canonical("chat", &body)?;
    }
    Ok(())
}

/// The canonical form is JSON, canonicalising it again gives the same bytes, and the key does
/// not change when the same value is written out again (compactly or pretty) and read back.
fn check_canonical(endpoint: &str, body: &Map<String, Value>) -> Result<(), TestCaseError> {
    let canonical = canonical_request(body);
    let reread: Value = match serde_json::from_slice(&canonical) {
        Ok(v) => v,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "the canonical form is not JSON ({e}): {}",
                String::from_utf8_lossy(&canonical)
            )));
        }
    };
    let Value::Object(reread) = reread else {
        return Err(TestCaseError::fail("the canonical form is not an object"));
    };
    prop_assert!(
        EXCLUDED_FIELDS.iter().all(|f| !reread.contains_key(*f)),
        "an excluded field is in the canonical form"
    );
    let again = canonical_request(&reread);
    prop_assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&canonical),
        "the canonical form is not a fixed point"
    );
    let key = cache_key(endpoint, "m", "", body);
    prop_assert_eq!(key, key_of_canonical(endpoint, "m", "", &canonical));
    for text in [
        serde_json::to_vec(body).expect("a map serializes"),
        serde_json::to_vec_pretty(body).expect("a map serializes"),
    ] {
        let same: Map<String, Value> =
            serde_json::from_slice(&text).expect("serde_json reads what it writes");
        prop_assert_eq!(
            cache_key(endpoint, "m", "", &same),
            key,
            "re-serialising changed the key: {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

/// Whitespace JSON allows between tokens.
fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", " ", "\n", "\t ", "\r\n"])
}

/// JSON number spellings, well-formed or not: big, tiny, long, negative zero, out of range.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        prop::sample::select(vec![
            "-0",
            "-0.0",
            "1e400",
            "-1e400",
            "1e-400",
            "4.9e-324",
            "2.2250738585072014e-308",
            "9007199254740993",
            "18446744073709551616",
            "-9223372036854775809",
            "01",
            "1.",
            ".5",
            "+1",
            "NaN",
            "Infinity",
            "0.1e1",
            "1E2",
        ])
        .prop_map(str::to_string),
    ]
}

/// JSON string literals: any text escaped, and hand-written escapes (some invalid: lone
/// surrogates, bad hex).
fn string_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| serde_json::to_string(&s).expect("a string serializes")),
        "\"([a-z \u{e9}\u{4e2d}\u{1f600}]|\\\\[nrtbf/\"\\\\]|\\\\u[0-9a-fA-F]{4}|\\\\u[dD][89abAB][0-9a-f]{2}){0,8}\"",
        "\"[^\"\\\\]{0,6}",
    ]
}

fn leaf_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_string),
        number_text(),
        string_text(),
    ]
}

/// Field names, often the ones the request path reads or excludes, sometimes repeated.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "model", "messages", "input", "stream", "stream_options", "user", "metadata",
            "store", "service_tier", "temperature", "seed", "max_tokens",
            "max_completion_tokens", "role", "content",
        ])
        .prop_map(|k| format!("\"{k}\"")),
        1 => string_text(),
    ]
}

/// JSON text (mostly well-formed) nested a few levels.
fn json_text() -> impl Strategy<Value = String> {
    leaf_text().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            (prop::collection::vec((inner.clone(), ws()), 0..5), ws()).prop_map(|(items, w)| {
                let items: Vec<String> =
                    items.into_iter().map(|(v, w)| format!("{w}{v}")).collect();
                format!("[{}{w}]", items.join(","))
            }),
            (
                prop::collection::vec((field_name(), ws(), inner), 0..5),
                ws()
            )
                .prop_map(|(fields, w)| {
                    let fields: Vec<String> = fields
                        .into_iter()
                        .map(|(k, w, v)| format!("{w}{k}{w}:{v}"))
                        .collect();
                    format!("{{{}{w}}}", fields.join(","))
                }),
        ]
    })
}

/// A request body: usually an object naming the route `m` with messages or input, so that it
/// reaches the canonical key; then maybe one byte changed, inserted or cut.
fn request_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fields = prop::collection::vec((field_name(), json_text()), 0..6);
    let head = prop::sample::select(vec![
        "",
        "\"model\":\"m\",",
        "\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],",
        "\"model\":\"m\",\"input\":\"hi\",",
        "\"model\":\"m\",\"messages\":[],",
        "\"model\":7,",
    ]);
    let object = (head, fields, ws()).prop_map(|(head, fields, w)| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{w}{k}:{v}"))
            .collect();
        let mut text = format!("{{{head}{}", fields.join(","));
        if text.ends_with(',') {
            text.pop();
        }
        text.push('}');
        text.into_bytes()
    });
    let shaped = prop_oneof![
        6 => object,
        1 => json_text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ];
    (shaped, 0u8..4, any::<Index>(), any::<u8>()).prop_map(|(mut bytes, how, at, byte)| {
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            match how {
                1 => bytes[i] = byte,
                2 => bytes.insert(i, byte),
                3 => bytes.truncate(i),
                _ => {}
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_request_bytes_are_read_without_a_panic_and_a_body_keys_canonically(
        raw in request_bytes()
    ) {
        check_request(&raw)?;
    }

    #[test]
    fn any_json_value_has_a_canonical_form_that_is_json_and_a_fixed_point(
        value in json_text()
    ) {
        // Values below the top level, canonicalised on their own.
        if let Ok(value) = serde_json::from_str::<Value>(&value) {
            let mut first = Vec::new();
            write_canonical(&value, &mut first).expect("a Vec takes any write");
            let reread: Value = serde_json::from_slice(&first).expect("canonical JSON reads back");
            let mut second = Vec::new();
            write_canonical(&reread, &mut second).expect("a Vec takes any write");
            prop_assert_eq!(String::from_utf8_lossy(&second), String::from_utf8_lossy(&first));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Rate-limit headers, Go durations and 429 messages
// ---------------------------------------------------------------------------------------------

const DIALECTS: [Dialect; 4] = [
    Dialect::Groq,
    Dialect::OpenAi,
    Dialect::Cerebras,
    Dialect::Anthropic,
];

/// Every header name a dialect reads, and a few it does not.
const HEADER_NAMES: &[&str] = &[
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-requests-day",
    "x-ratelimit-remaining-requests-day",
    "x-ratelimit-reset-requests-day",
    "x-ratelimit-limit-tokens-minute",
    "x-ratelimit-remaining-tokens-minute",
    "x-ratelimit-reset-tokens-minute",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-",
    "content-type",
];

/// Go durations as providers write them, and broken or huge ones.
fn go_duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "([0-9]{1,4}(\\.[0-9]{1,3})?(h|m|s|ms|us|\u{b5}s|ns)){1,4}",
        "[0-9.]{0,30}(h|m|s|ms|us|\u{b5}s|ns|x|)([0-9.]{0,8}(h|m|s|ms|))?",
        "[ 0-9a-z.\u{b5}+-]{0,16}",
    ]
}

/// Counts and seconds: integers, decimals, exponents, signs, the words for NaN and infinity.
fn seconds_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+-]?[0-9]{0,22}(\\.[0-9]{0,10})?([eE][+-]?[0-9]{1,3})?",
        prop::sample::select(vec![
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinity",
            "-0",
            "-0.0",
            "1e308",
            "1e309",
            "18446744073709551615",
            "18446744073709551616",
            "5e-324",
        ])
        .prop_map(str::to_string),
    ]
}

/// Timestamps: RFC 3339 (Anthropic), HTTP dates (`retry-after`), near-misses.
fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
        (0u64..=253_402_300_799).prop_map(|s| {
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(s))
        }),
        "(Mon|Sun), [0-9]{2} (Jan|Feb|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => go_duration_text().prop_map(String::into_bytes),
        2 => seconds_text().prop_map(String::into_bytes),
        1 => date_text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn header_map() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        4 => prop::sample::select(HEADER_NAMES).prop_map(str::to_string),
        1 => "[a-zA-Z0-9-]{1,40}",
    ];
    prop::collection::vec((name, header_value()), 0..12).prop_map(|pairs| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                headers.append(name, value);
            }
        }
        headers
    })
}

/// 429 messages as Groq and OpenAI word them, cut and changed, and any text.
fn limit_message() -> impl Strategy<Value = String> {
    let tag = prop::sample::select(vec![
        "(RPM)", "(TPM)", "(RPD)", "(TPD)", "(ITPM)", "(OTPM)", "(",
    ]);
    prop_oneof![
        (
            tag,
            ":?",
            " {0,2}",
            "(Limit )?",
            "[0-9]{0,30}",
            "[, a-zA-Z0-9]{0,12}"
        )
            .prop_map(|(tag, colon, space, limit, digits, rest)| {
                format!("Rate limit reached on requests {tag}{colon}{space}{limit}{digits}{rest}")
            }),
        any::<String>(),
    ]
}

/// Runs `f`; any panic fails the case.
fn no_panic<T>(f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("panicked: {message}"))
    })
}

fn check_duration(d: Duration) -> Result<(), TestCaseError> {
    let secs = d.as_secs_f64();
    prop_assert!(secs.is_finite() && secs >= 0.0, "{d:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_rate_limit_headers_are_read_in_every_dialect_without_a_panic(
        headers in header_map(),
        now_secs in prop_oneof![Just(0u64), 1_600_000_000u64..1_900_000_000, any::<u64>()],
        now_nanos in 0u32..1_000_000_000,
    ) {
        let now = Duration::new(now_secs, now_nanos);
        for dialect in DIALECTS {
            let snapshot = no_panic(|| headers::parse(dialect, &headers, now))?;
            for reading in &snapshot.readings {
                prop_assert!(
                    reading.limit.is_some() || reading.remaining.is_some() || reading.reset.is_some()
                );
                if let Some(reset) = reading.reset {
                    check_duration(reset)?;
                }
            }
            if let Some(retry) = snapshot.retry_after {
                check_duration(retry)?;
            }
        }
    }

    #[test]
    fn any_go_duration_is_read_without_a_panic_and_never_negative_or_nan(
        text in prop_oneof![go_duration_text(), seconds_text(), any::<String>()]
    ) {
        if let Some(d) = no_panic(|| parse_go_duration(&text))? {
            check_duration(d)?;
        }
    }

    #[test]
    fn any_429_message_is_read_without_a_panic_and_a_limit_it_finds_is_written_in_it(
        message in limit_message()
    ) {
        if let Some((_, limit)) = parse_limit_message(&message) {
            prop_assert!(message.contains("Limit "), "{message:?}");
            let written = limit.to_string();
            prop_assert!(message.contains(&written), "{limit} is not in {message:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. SSE streams split anywhere
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "gsk_fuzz_secret_0123456789";
const SECRET_PART: &str = "gsk_fuzz_secret";

fn scrubber() -> Scrubber {
    Scrubber::new([SECRET, SECRET_PART])
}

/// Everything a stream's reading shows: the events, usage, `[DONE]`, error, invalid chunk.
type SseView = (
    Vec<String>,
    Option<(u64, u64)>,
    bool,
    Option<String>,
    Option<String>,
);

fn watch(pieces: &[&[u8]]) -> SseView {
    let scrub = scrubber();
    let mut w = SseWatch::default();
    let mut events = Vec::new();
    for piece in pieces {
        w.feed(piece, &scrub, &mut events);
    }
    (events, w.usage, w.done, w.error, w.invalid)
}

/// `bytes` cut at `cuts` (positions, in any order, repeats allowed).
fn split_at<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}

/// Lines as providers send them, broken ones among them.
fn sse_line() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        "[a-z \u{e9}]{0,8}".prop_map(|s| s),
        Just(SECRET.to_string()),
        Just(format!("x{SECRET_PART}y")),
    ];
    let chunk = prop_oneof![
        text.clone().prop_map(|t| {
            serde_json::json!({"choices": [{"delta": {"content": t}}]}).to_string()
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(p, c)| {
            serde_json::json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}})
                .to_string()
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(p, c)| {
            serde_json::json!({"choices": [], "x_groq": {"id": "r", "usage": {"prompt_tokens": p, "completion_tokens": c}}})
                .to_string()
        }),
        text.clone().prop_map(|t| serde_json::json!({"x_groq": {"error": t}}).to_string()),
        text.prop_map(|t| serde_json::json!({"error": {"message": t, "type": "x"}}).to_string()),
        Just(r#"{"usage":null,"error":null}"#.to_string()),
        Just(r#"{"usage":"#.to_string()),
        Just(r#"{"cut":"#.to_string()),
        json_text(),
    ];
    prop_oneof![
        6 => (prop::sample::select(vec!["data: ", "data:", "data:  "]), chunk)
            .prop_map(|(prefix, c)| format!("{prefix}{c}").into_bytes()),
        1 => Just(b"data: [DONE]".to_vec()),
        1 => Just(b"event: error".to_vec()),
        1 => prop::sample::select(vec![": keep-alive", "", "event: message", "id: 1", "data"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| [b"data: ".as_slice(), &b].concat()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let end = prop::sample::select(vec!["\n", "\n\n", "\r\n", "\r\n\r\n", "\r"]);
    (
        prop::collection::vec((sse_line(), end), 0..10),
        any::<bool>(),
    )
        .prop_map(|(lines, cut)| {
            let mut out = Vec::new();
            for (line, end) in lines {
                out.extend_from_slice(&line);
                out.extend_from_slice(end.as_bytes());
            }
            if cut {
                out.pop();
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn an_sse_stream_reads_the_same_however_its_bytes_are_split_and_keys_never_reach_an_event(
        stream in sse_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let whole = watch(&[&stream]);
        let pieces = split_at(&stream, &cuts);
        prop_assert_eq!(&watch(&pieces), &whole, "split at {:?}", pieces);
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&watch(&bytes), &whole, "fed one byte at a time");
        for event in &whole.0 {
            prop_assert!(!event.contains(SECRET_PART), "a key reached an event: {event}");
            prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(event).is_ok());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Cache records
// ---------------------------------------------------------------------------------------------

/// What a decoded answer says, comparably.
type StoredView = (
    u64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    u16,
    BTreeMap<String, String>,
    Option<String>,
    Option<Vec<String>>,
);

fn view(s: &Stored) -> StoredView {
    (
        s.created,
        s.namespace.clone(),
        s.route.clone(),
        s.endpoint.clone(),
        s.provider.clone(),
        s.model.clone(),
        s.status,
        s.headers.clone(),
        s.body.as_ref().map(|b| b.get().to_string()),
        s.chunks
            .as_ref()
            .map(|c| c.iter().map(|c| c.get().to_string()).collect()),
    )
}

/// A JSON text that is valid (so a record of it decodes).
fn valid_json() -> impl Strategy<Value = String> {
    json_text().prop_filter("valid JSON", |t| {
        serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()
    })
}

/// A real answer and its canonical request, as the cache stores them.
fn stored_and_request() -> impl Strategy<Value = (Stored, Vec<u8>)> {
    let body = prop_oneof![
        Just((None, None)),
        // A plain answer's body is an object; a body of `null` would read back as none.
        valid_json()
            .prop_filter("not null", |b| !serde_json::from_str::<Value>(b)
                .is_ok_and(|v| v.is_null()))
            .prop_map(|b| (Some(b), None)),
        prop::collection::vec(valid_json(), 0..4).prop_map(|c| (None, Some(c))),
    ];
    let headers = prop::collection::btree_map(
        prop::sample::select(vec![
            "content-type",
            "x-request-id",
            "retry-after",
            "x-ratelimit-remaining-tokens",
        ])
        .prop_map(str::to_string),
        any::<String>(),
        0..3,
    );
    (
        (
            any::<u64>(),
            any::<String>(),
            "[a-z0-9./-]{0,12}",
            prop::sample::select(vec!["chat", "embeddings"]),
        ),
        (
            prop::option::of(any::<String>()),
            prop::option::of("[a-z0-9-]{0,12}"),
            headers,
            body,
        ),
        json_text(),
    )
        .prop_map(
            |((created, namespace, route, endpoint), (provider, model, headers, body), request)| {
                let stored = Stored {
                    created,
                    namespace,
                    route,
                    endpoint: endpoint.to_string(),
                    provider,
                    model,
                    status: 200,
                    headers,
                    body: body
                        .0
                        .map(|b| RawValue::from_string(b).expect("valid JSON")),
                    chunks: body.1.map(|c| {
                        c.into_iter()
                            .map(|c| RawValue::from_string(c).expect("valid JSON"))
                            .collect()
                    }),
                };
                let request = match serde_json::from_str::<Value>(&request) {
                    Ok(Value::Object(m)) => canonical_request(&m),
                    _ => b"{}".to_vec(),
                };
                (stored, request)
            },
        )
}

/// `bytes` made into a record whose checksum holds: format 3 (CRC-32) or 2 (blake3), by the
/// first byte.
fn with_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
    match bytes.first() {
        Some(3) if bytes.len() >= 9 => {
            let crc = crc32fast::hash(&bytes[5..]);
            bytes[1..5].copy_from_slice(&crc.to_le_bytes());
        }
        Some(2) if bytes.len() >= 37 => {
            let hash = blake3::hash(&bytes[33..]);
            bytes[1..33].copy_from_slice(hash.as_bytes());
        }
        _ => {}
    }
    bytes
}

/// Record bytes: any, or a format byte, room for a checksum, a length and a small lz4 block
/// that may claim any size.
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    let lz4_block = (any::<u32>(), prop::collection::vec(any::<u8>(), 0..48))
        .prop_map(|(size, block)| [size.to_le_bytes().as_slice(), &block].concat());
    let compressed = || valid_json().prop_map(|t| lz4_flex::compress_prepend_size(t.as_bytes()));
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (any::<u32>(), prop_oneof![lz4_block.clone(), compressed()]).prop_map(|(len, block)| [
            [3u8; 5].as_slice(),
            &len.to_le_bytes(),
            &block
        ]
        .concat()),
        (0u32..64, lz4_block, compressed()).prop_map(|(len, a, b)| {
            [
                [2u8; 33].as_slice(),
                &(a.len() as u32).min(len).to_le_bytes(),
                &a,
                &b,
            ]
            .concat()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_decode_to_an_error_or_an_answer_never_a_panic_even_behind_a_checksum_that_holds(
        bytes in record_bytes()
    ) {
        let _ = entry::decode(&bytes);
        let _ = entry::decode_full(&bytes);
        let fixed = with_checksum(bytes);
        let _ = entry::decode(&fixed);
        let _ = entry::decode_full(&fixed);
    }

    #[test]
    fn a_real_record_with_any_one_byte_changed_never_decodes_to_a_different_answer(
        (stored, request) in stored_and_request(),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let record = entry::encode(&stored, &request);
        let (original, original_request) = entry::decode_full(&record).expect("a real record reads");
        prop_assert_eq!(view(&original), view(&stored));
        let mut damaged = record.clone();
        let i = at.index(damaged.len());
        damaged[i] ^= flip;
        if let Ok(s) = entry::decode(&damaged) {
            prop_assert_eq!(view(&s), view(&original), "byte {} changed", i);
        }
        if let Ok((s, r)) = entry::decode_full(&damaged) {
            prop_assert_eq!(view(&s), view(&original), "byte {} changed", i);
            prop_assert_eq!(r, original_request.clone(), "byte {} changed", i);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Value-log segments with any tail
// ---------------------------------------------------------------------------------------------

/// A frame as the log writes it (the layout in `vlog.rs`'s documentation).
fn frame_bytes(key: &CacheKey, created: u64, record: &[u8]) -> Vec<u8> {
    let len = record.len() as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&key.0);
    crc.update(&created.to_le_bytes());
    crc.update(record);
    [
        len.to_le_bytes().as_slice(),
        &crc.finalize().to_le_bytes(),
        &key.0,
        &created.to_le_bytes(),
        record,
    ]
    .concat()
}

/// What a scan must return for a segment's bytes: every whole frame whose CRC holds, up to the
/// first that is cut short or does not (an independent reading of the layout).
fn expected_scan(segment: u32, file: &[u8]) -> Vec<Scanned> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER as usize;
    while file.len() - at >= FRAME_HEADER {
        let head = &file[at..at + FRAME_HEADER];
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if file.len() - at - FRAME_HEADER < len as usize {
            break;
        }
        let key = CacheKey(head[8..40].try_into().expect("32 bytes"));
        let created = u64::from_le_bytes(head[40..48].try_into().expect("8 bytes"));
        let record = &file[at + FRAME_HEADER..at + FRAME_HEADER + len as usize];
        if frame_bytes(&key, created, record)[4..8] != head[4..8] {
            break;
        }
        out.push(if created == u64::MAX {
            Scanned::Removal(key)
        } else {
            Scanned::Record {
                key,
                created,
                loc: spillway_store::vlog::Location {
                    segment,
                    offset: at as u64,
                    len,
                },
            }
        });
        at += FRAME_HEADER + len as usize;
    }
    out
}

/// One frame's worth of a tail: a real frame, maybe damaged or cut, or any bytes (which may
/// claim any length).
fn tail_piece() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        any::<u8>(),
        prop_oneof![any::<u64>(), Just(u64::MAX)],
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(k, created, record)| frame_bytes(&CacheKey([k; 32]), created, &record));
    prop_oneof![
        3 => frame.clone(),
        1 => (frame.clone(), any::<Index>(), 1u8..=255).prop_map(|(mut f, at, flip)| {
            let i = at.index(f.len());
            f[i] ^= flip;
            f
        }),
        1 => (frame, any::<Index>()).prop_map(|(mut f, at)| {
            f.truncate(at.index(f.len()));
            f
        }),
        1 => prop::collection::vec(any::<u8>(), 0..80),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_segment_with_any_tail_reopens_and_scans_to_exactly_its_whole_frames_whose_crc_holds(
        written in prop::collection::vec(
            (any::<u8>(), any::<u64>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..32))),
            0..4,
        ),
        tail in prop::collection::vec(tail_piece(), 0..5),
    ) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let segment = {
            let (log, _) = ValueLog::open(dir.path()).expect("opens");
            log.begin(0).expect("begins");
            let keys: Vec<CacheKey> = written.iter().map(|(k, ..)| CacheKey([*k; 32])).collect();
            let frames: Vec<Frame<'_>> = written
                .iter()
                .zip(&keys)
                .map(|((_, created, record), key)| Frame { key, created: *created, record: record.as_deref() })
                .collect();
            log.append_all(&frames).expect("appends");
            log.sync().expect("syncs");
            log.segments().1
        };
        let path = dir.path().join(format!("values-{segment:08}.log"));
        OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("the segment exists")
            .write_all(&tail.concat())
            .expect("appends the tail");
        let file = std::fs::read(&path).expect("reads the segment");

        let (log, set_aside) = ValueLog::open(dir.path()).expect("reopens");
        prop_assert!(set_aside.files.is_empty(), "its own segment was set aside");
        let mut seen = Vec::new();
        log.scan(&mut |s| seen.push(s)).expect("scans");
        let expected = expected_scan(segment, &file);
        prop_assert!(expected.len() >= written.len(), "what was written is whole");
        prop_assert_eq!(&seen, &expected);
        for s in &seen {
            if let Scanned::Record { key, loc, .. } = s {
                let record = log.read(*loc, key).expect("a scanned record reads").expect("present");
                let at = (loc.offset as usize) + FRAME_HEADER;
                prop_assert_eq!(&record[..], &file[at..at + loc.len as usize]);
                // A record of the cache's own: it decodes or errors, never panics.
                let _ = entry::decode(&record);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Found by fuzzing, not fixed yet: each test says what should hold, and fails today.
// ---------------------------------------------------------------------------------------------

/// The canonical form of `body` (a JSON object's text), and that form canonicalised again.
fn canonical_twice(body: &str) -> (String, Result<String, String>) {
    let body: Map<String, Value> = serde_json::from_str(body).expect("an object");
    let first = canonical_request(&body);
    let again = serde_json::from_slice::<Map<String, Value>>(&first)
        .map(|m| String::from_utf8(canonical_request(&m)).expect("UTF-8"))
        .map_err(|e| e.to_string());
    (String::from_utf8(first).expect("UTF-8"), again)
}

#[test]
fn the_canonical_form_of_a_large_float_is_a_fixed_point() {
    for body in [
        r#"{"t":4400100031E53}"#,
        r#"{"t":0.017883005E50}"#,
        r#"{"t":1.7976931348623157e308}"#,
    ] {
        let (first, again) = canonical_twice(body);
        assert_eq!(again.as_deref(), Ok(first.as_str()), "{body}");
    }
}

#[test]
fn writing_a_body_out_again_with_serde_json_keeps_its_key() {
    // serde_json reads `20190e43` as 2.019e47, writes that as `2.019e+47`, and reads it back
    // as 2.0190000000000003e47; likewise `35030e269`.
    for body in [r#"{"t":20190e43}"#, r#"{"t":35030e269}"#] {
        let body: Map<String, Value> = serde_json::from_str(body).expect("an object");
        let again: Map<String, Value> =
            serde_json::from_slice(&serde_json::to_vec(&body).expect("serializes")).expect("reads");
        assert_eq!(
            cache_key("chat", "r", "", &again),
            cache_key("chat", "r", "", &body),
            "{body:?} written again as {again:?}"
        );
    }
}

#[test]
fn a_cassette_of_a_request_with_a_large_float_imports_back() {
    use spillway::cache::Cache;
    use spillway::cache::cassette::{export, import};
    use spillway::config::cache::CacheConfig;

    let open = |dir: &tempfile::TempDir| {
        let config = CacheConfig {
            path: dir.path().join("cache"),
            ..CacheConfig::default()
        };
        Cache::open(config, Clock::manual()).expect("opens")
    };
    let request: Map<String, Value> =
        serde_json::from_str(r#"{"model":"r","messages":[],"logit_scale":4400100031E53}"#)
            .expect("an object");
    let (from, to) = (
        tempfile::tempdir().expect("a dir"),
        tempfile::tempdir().expect("a dir"),
    );
    let cache = open(&from);
    let stored = Stored {
        created: 0,
        namespace: String::new(),
        route: "r".into(),
        endpoint: "chat".into(),
        provider: None,
        model: None,
        status: 200,
        headers: BTreeMap::new(),
        body: Some(RawValue::from_string(r#"{"id":"x"}"#.into()).expect("JSON")),
        chunks: None,
    };
    // As the proxy stores an answer: its key and canonical request.
    cache.save(
        &cache_key("chat", "r", "", &request),
        &stored,
        &canonical_request(&request),
    );
    let mut cassette = Vec::new();
    assert_eq!(export(&cache, &mut cassette).expect("exports"), 1);
    let imported = import(&open(&to), cassette.as_slice());
    assert!(matches!(imported, Ok(1)), "{imported:?}");
}

#[test]
fn a_reset_or_retry_after_beyond_u64_seconds_is_read_without_a_panic() {
    let mut panics = Vec::new();
    let mut check = |what: String, f: &dyn Fn()| {
        if catch_unwind(AssertUnwindSafe(f)).is_err() {
            panics.push(what);
        }
    };
    for text in [
        "18446744073709551616",
        "1e20",
        "5124095576030432h",
        "99999999999999999999s",
    ] {
        check(format!("parse_go_duration({text:?})"), &|| {
            let _ = parse_go_duration(text);
        });
    }
    for (dialect, name, value) in [
        (Dialect::Groq, "x-ratelimit-reset-tokens", "1e20"),
        (
            Dialect::OpenAi,
            "x-ratelimit-reset-requests",
            "5124095576030432h",
        ),
        (Dialect::Cerebras, "x-ratelimit-reset-requests-day", "1e20"),
        (Dialect::Groq, "retry-after", "1e20"),
        (Dialect::Groq, "retry-after-ms", "1e23"),
    ] {
        check(format!("{dialect:?} {name}: {value}"), &|| {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            let _ = headers::parse(dialect, &headers, Duration::ZERO);
        });
    }
    assert!(panics.is_empty(), "panicked: {panics:#?}");
}

/// The most memory this process has held, from Linux's `/proc/self/status`.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_scan_of_a_tail_claiming_a_4_gib_frame_does_not_allocate_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let segment = {
        let (log, _) = ValueLog::open(dir.path()).expect("opens");
        log.begin(0).expect("begins");
        log.append(&CacheKey([1; 32]), 1, b"a record")
            .expect("appends");
        log.segments().1
    };
    // After the last whole frame: a frame header whose length is all ones, and nothing else.
    let mut tail = vec![0xff; 4];
    tail.extend_from_slice(&[0; FRAME_HEADER - 4]);
    OpenOptions::new()
        .append(true)
        .open(dir.path().join(format!("values-{segment:08}.log")))
        .expect("the segment exists")
        .write_all(&tail)
        .expect("appends");
    let (log, _) = ValueLog::open(dir.path()).expect("reopens");
    let before = peak_rss_bytes().expect("Linux");
    let mut seen = 0;
    log.scan(&mut |_| seen += 1).expect("scans");
    let grew = peak_rss_bytes().expect("Linux").saturating_sub(before);
    assert_eq!(seen, 1);
    assert!(
        grew < 64 << 20,
        "the scan's peak memory grew by {} MiB",
        grew >> 20
    );
}

/// The most address space this process has held, from Linux's `/proc/self/status`.
fn peak_virtual_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmPeak:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn a_record_whose_lz4_block_claims_4_gib_is_refused_without_reserving_it() {
    // Format 3: the format, a CRC-32 of the rest, the answer's length, then the lz4 block with
    // its size prefix: here 4 GiB - 1, for a block of 3 bytes (lz4 expands at most ~255-fold).
    let mut record = vec![3, 0, 0, 0, 0, 2, 0, 0, 0];
    record.extend_from_slice(&u32::MAX.to_le_bytes());
    record.extend_from_slice(&[0x20, b'{', b'}']);
    let crc = crc32fast::hash(&record[5..]);
    record[1..5].copy_from_slice(&crc.to_le_bytes());
    let before = peak_virtual_bytes().expect("Linux");
    assert!(entry::decode(&record).is_err());
    let grew = peak_virtual_bytes().expect("Linux").saturating_sub(before);
    assert!(grew < 1 << 30, "decoding reserved {} MiB", grew >> 20);
}
