//! Contract tests of how the proxy reads its providers' answers, dialect by dialect (groq,
//! openai, cerebras, anthropic), with each answer scripted in a wiremock server: the cases the
//! behavioural mock does not model.
//!
//! - **Rate-limit headers.** Each dialect's header names and reset spellings (Go durations,
//!   float seconds, RFC 3339 timestamps) make the key's limits known in `/metrics`, in the
//!   right window, and usage the provider reports that the proxy did not send is counted until
//!   exactly the reset the provider names (a reset longer than the window: for the window at
//!   least, and no longer than the reset).
//! - **`retry-after` on a 429**, in every form a provider writes it (and some it should not):
//!   the limited key is held back for the stated time while the other key serves, and a value
//!   that cannot be read holds it back briefly, never for good and never with a panic.
//! - **Error bodies by dialect**: OpenAI's out-of-credit 429, Anthropic's error shape, its 529.
//! - **Echoed keys**: a provider that copies the key or the whole `Authorization` header into
//!   its answer never gets it to the client, whatever the status.
//! - **Answers that are not JSON** move the request to the next target, or end it with the
//!   documented error, and never hang.
//!
//! Everything is judged from outside the proxy: what the client receives (status, body,
//! `x-spillway-*`, `retry-after`, `x-ratelimit-*`), the `/metrics` gauges, and which key each
//! attempt reached wiremock with. Keys are compared by alias and never printed: a failure
//! message shows a leaked key as `<key p#1>`.
//!
//! Tests that depend on time run on a manual clock that only the test moves, so a reset of
//! `1h2m3s` is checked to the millisecond without waiting for it; the others run on the real
//! clock. Every exchange is bounded by a timeout.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use spillway_clock::Clock;
use spillway_tests::{Proxy, chat_body, data_events, text_of};
use wiremock::matchers::{self, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The upstream model every target serves.
const MODEL: &str = "contract-model";

/// Every provider key the tests configure: alias, environment variable, value.
const KEYS: [(&str, &str, &str); 3] = [
    ("p#1", "P1", "sk-contract-first-3f9a1c0b7d2e4f6a"),
    ("p#2", "P2", "sk-contract-second-8b1d4e7f0a3c6b9d"),
    ("q#1", "Q1", "sk-contract-fallback-5c2e8a1f4b7d0e3a"),
];

/// Where the proxy sends chat requests: its `base_url` is the server's `/v1`.
const CHAT: &str = "/v1/chat/completions";

/// The longest any one exchange with the proxy may take.
const BOUND: Duration = Duration::from_secs(10);

/// What one scripted answer's `usage` says it cost: the proxy counts this much as its own.
const OWN_PROMPT: u64 = 10;
const OWN_COMPLETION: u64 = 5;
const OWN: u64 = OWN_PROMPT + OWN_COMPLETION;

/// Outages in a row that open a target's circuit (the default `failures_to_open`).
const FAILURES_TO_OPEN: usize = 3;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// The proxy, its providers and what they received
// ---------------------------------------------------------------------------------------------

/// A provider block: `name` at `server` in `dialect`, with the keys from these variables.
///
/// The in-flight cap for keys whose limits are unknown is off, so that which key serves a
/// request depends only on the answers scripted here, not on how the cap grows and shrinks.
fn provider(name: &str, server: &MockServer, dialect: &str, vars: &[&str]) -> String {
    let keys = vars
        .iter()
        .map(|v| format!("\"env:{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[[providers]]
name = "{name}"
base_url = "{}/v1"
keys = [{keys}]
dialect = "{dialect}"
unknown_limits_in_flight = 0
# A stream that stops sending ends well within a test's bound.
stream_idle_timeout = "2s"
"#,
        server.uri()
    )
}

/// A route `chat` over provider `p` (keys p#1 and p#2, in `dialect`), then, when given,
/// provider `q` (one key, q#1) as its fallback target.
///
/// `max_wait = "0s"`: a request goes to a key that is free now or is answered at once, so no
/// request ever waits on a manual clock that only the test moves. No cache: every request
/// reaches a provider, and a proxy starts without making a store.
fn config(p: &MockServer, dialect: &str, q: Option<(&MockServer, &str)>) -> String {
    let mut toml = provider("p", p, dialect, &["P1", "P2"]);
    let mut targets = vec![format!(r#"{{ provider = "p", model = "{MODEL}" }}"#)];
    if let Some((q, q_dialect)) = q {
        toml.push_str(&provider("q", q, q_dialect, &["Q1"]));
        targets.push(format!(r#"{{ provider = "q", model = "{MODEL}" }}"#));
    }
    toml.push_str(&format!(
        "\n[[routes]]\nmodel = \"chat\"\ntargets = [{}]\nmax_wait = \"0s\"\n\n[cache]\nmode = \"off\"\n",
        targets.join(", ")
    ));
    toml
}

async fn start(toml: &str, clock: Clock) -> Proxy {
    let env: Vec<(&str, &str)> = KEYS.iter().map(|(_, var, value)| (*var, *value)).collect();
    Proxy::start(toml, &env, clock).await
}

/// The value of the key with this alias.
fn key(alias: &str) -> &'static str {
    KEYS.iter()
        .find(|(a, _, _)| *a == alias)
        .map(|(_, _, value)| *value)
        .expect("a configured alias")
}

/// Matches an attempt sent with the key `alias`.
fn sent_with(alias: &str) -> matchers::HeaderExactMatcher {
    matchers::header("authorization", format!("Bearer {}", key(alias)).as_str())
}

/// The alias of the key an attempt was sent with.
fn alias_of(request: &Request) -> &'static str {
    let auth = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    KEYS.iter()
        .find(|(_, _, value)| auth.strip_prefix("Bearer ") == Some(*value))
        .map_or("no configured key", |(alias, _, _)| *alias)
}

/// The keys `server` received attempts with, in order.
async fn attempts(server: &MockServer) -> Vec<&'static str> {
    server
        .received_requests()
        .await
        .expect("wiremock records requests")
        .iter()
        .map(alias_of)
        .collect()
}

/// `text` with every key value replaced by its alias, so that a failure message never shows
/// a key.
fn redacted(text: &str) -> String {
    KEYS.iter().fold(text.to_string(), |t, (alias, _, value)| {
        t.replace(value, &format!("<key {alias}>"))
    })
}

// ---------------------------------------------------------------------------------------------
// Scripted answers
// ---------------------------------------------------------------------------------------------

fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-contract",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": OWN_PROMPT, "completion_tokens": OWN_COMPLETION, "total_tokens": OWN},
    })
}

fn ok(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(text))
}

/// A streamed answer of `parts`, with usage in its last chunk, ending `data: [DONE]`.
fn stream_of(parts: &[&str]) -> String {
    let mut body = String::new();
    for part in parts {
        let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": null}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let last = json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": OWN_PROMPT, "completion_tokens": OWN_COMPLETION}});
    body.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    body
}

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

/// An error body in the dialect's shape: Anthropic's `{"type":"error","error":{"type",...}}`,
/// or OpenAI's (also Groq's and Cerebras's) `{"error":{"message","type","code"}}`.
fn error_body(dialect: &str, kind: &str, message: &str) -> Value {
    if dialect == "anthropic" {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        json!({"error": {"message": message, "type": kind, "code": kind, "param": null}})
    }
}

/// Every answer `server` gives is `answer` from now on.
async fn always(server: &MockServer, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(CHAT))
        .respond_with(answer)
        .with_priority(10)
        .mount(server)
        .await;
}

/// The next answer to the key `alias` is `answer` (once, before any other answer).
async fn once_to(server: &MockServer, alias: &str, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(CHAT))
        .and(sent_with(alias))
        .respond_with(answer)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(server)
        .await;
}

/// Every answer to the key `alias` is `answer` (before the server's other answers).
async fn always_to(server: &MockServer, alias: &str, answer: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(CHAT))
        .and(sent_with(alias))
        .respond_with(answer)
        .with_priority(2)
        .mount(server)
        .await;
}

// ---------------------------------------------------------------------------------------------
// Talking to the proxy
// ---------------------------------------------------------------------------------------------

/// What the client received.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {}", redacted(&self.body)))
    }

    /// Status, every header and the body, as one text (to search for leaked keys).
    fn everything(&self) -> String {
        let mut all = format!("{}\n", self.status);
        for (name, value) in &self.headers {
            all.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        all.push_str(&self.body);
        all
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.everything()))
    }
}

/// A client for the proxy on 127.0.0.1: plain HTTP, no proxy from the environment, and no
/// trust store to load (which would cost more than the exchange itself).
fn local_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(Vec::<reqwest::Certificate>::new())
        .timeout(BOUND)
        .build()
        .expect("a client")
}

/// Sends a chat request for the route `chat` and reads the whole answer, within [`BOUND`].
async fn ask(proxy: &Proxy, body: &Value) -> Reply {
    let url = format!("{}/chat/completions", proxy.url());
    let exchange = async {
        let resp = local_client()
            .post(url)
            .json(body)
            .send()
            .await
            .expect("the proxy answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.expect("a readable body");
        Reply {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .expect("the proxy answers, whole, within the bound")
}

/// A plain question (no `temperature`: never cached, so every one reaches a provider).
fn question(text: &str) -> Value {
    chat_body("chat", text, 10)
}

fn streamed(text: &str) -> Value {
    let mut body = question(text);
    body["stream"] = json!(true);
    body
}

/// Asks, and checks the answer came from the key `alias` after `tries` attempts.
async fn served_by(proxy: &Proxy, text: &str, alias: &str, tries: u32) -> Reply {
    let reply = ask(proxy, &question(text)).await;
    assert_eq!(reply.status, 200, "{text}: {reply:?}");
    assert_eq!(reply.header("x-spillway-key"), alias, "{text}: {reply:?}");
    assert_eq!(
        reply.header("x-spillway-provider"),
        alias.split('#').next().unwrap_or(""),
        "{text}"
    );
    assert_eq!(
        reply.header("x-spillway-attempts"),
        tries.to_string(),
        "{text}"
    );
    reply
}

async fn metrics(proxy: &Proxy) -> String {
    let text = tokio::time::timeout(BOUND, async {
        local_client()
            .get(format!("{}/metrics", proxy.base()))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    })
    .await
    .expect("metrics within the bound");
    assert!(
        KEYS.iter().all(|(_, _, value)| !text.contains(value)),
        "/metrics names a key: {}",
        redacted(&text)
    );
    text
}

/// A per-key gauge of `/metrics` (`spillway_headroom_limit`, `spillway_headroom_remaining`)
/// for the key `alias` and `window` (`rpm`, `tpm`, `itpm`, `otpm`, `rpd`, `tpd`).
fn gauge(metrics: &str, name: &str, alias: &str, window: &str) -> Option<u64> {
    let provider = alias.split('#').next().unwrap_or("");
    let prefix = format!(
        "{name}{{provider=\"{provider}\",key=\"{alias}\",model=\"{MODEL}\",window=\"{window}\"}} "
    );
    metrics.lines().find_map(|line| {
        line.strip_prefix(&prefix)
            .map(|v| v.trim().parse().expect("a whole-number gauge"))
    })
}

/// A counter of `/metrics` with exactly these labels, 0 when absent.
fn counter(metrics: &str, name_and_labels: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name_and_labels} ")))
        .map_or(0, |v| v.trim().parse().expect("a whole-number counter"))
}

/// A calendar time (since the Unix epoch) as an HTTP date, in whole seconds rounded down.
fn http_date(unix: Duration) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + unix)
}

/// A calendar time (since the Unix epoch) as an RFC 3339 timestamp in whole seconds rounded
/// down, as Anthropic writes its resets.
fn rfc3339(unix: Duration) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + unix).to_string()
}

/// Moves a manual clock to `at` after its origin (never back).
fn move_to(clock: &Clock, at: Duration) {
    let now = clock.now();
    assert!(at >= now, "the checks run in time order");
    clock.advance(at - now);
}

// ---------------------------------------------------------------------------------------------
// Rate-limit headers, dialect by dialect
// ---------------------------------------------------------------------------------------------

/// One limit a scripted answer reports, and what the proxy must make of it.
struct Learned {
    /// Its window as `/metrics` labels it.
    window: &'static str,
    /// The limit the headers state.
    limit: u64,
    /// What is left right after the answer, when that does not depend on the proxy's own
    /// estimate of the request (request counts do not; token counts do).
    left_now: Option<u64>,
    /// When the usage the provider reported beyond the proxy's own leaves, if it reported any.
    leaves: Option<Leaves>,
}

/// The provider's usage still counts at `held_at`, and has left at `free_at`, where only the
/// proxy's own usage counts: `left_after` is left.
struct Leaves {
    held_at: Duration,
    free_at: Duration,
    left_after: u64,
}

/// A limit the answer states, with no usage beyond the proxy's own.
fn known(window: &'static str, limit: u64, left_now: Option<u64>) -> Learned {
    Learned {
        window,
        limit,
        left_now,
        leaves: None,
    }
}

/// A limit the answer states, with usage beyond the proxy's own that leaves at its reset.
fn resets(
    window: &'static str,
    limit: u64,
    left_now: Option<u64>,
    (held_at, free_at): (Duration, Duration),
    left_after: u64,
) -> Learned {
    Learned {
        leaves: Some(Leaves {
            held_at,
            free_at,
            left_after,
        }),
        ..known(window, limit, left_now)
    }
}

/// A scripted answer's rate-limit headers, and what the key learns from them.
struct HeaderCase {
    name: &'static str,
    dialect: &'static str,
    headers: Vec<(&'static str, String)>,
    learned: Vec<Learned>,
    /// Windows the dialect does not report: no gauge may appear for them.
    unreported: &'static [&'static str],
    /// The pool's headers on the client's answer, in Groq's meaning (requests per day, tokens
    /// per minute); `None`: absent, since no key knows that window.
    pool_requests_limit: Option<&'static str>,
    pool_tokens_limit: Option<&'static str>,
}

/// A reset of `d`, checked 5 ms either side.
fn around(d: Duration) -> (Duration, Duration) {
    (d - ms(5), d + ms(5))
}

/// Sends one request on a manual clock, answered with the case's headers, then checks the
/// limits `/metrics` shows, the pool's headers on the answer, and that the reported usage
/// leaves exactly at its reset.
async fn check_headers(case: HeaderCase, clock: Clock) {
    let HeaderCase {
        name,
        dialect,
        headers,
        learned,
        unreported,
        pool_requests_limit,
        pool_tokens_limit,
    } = case;
    let server = MockServer::start().await;
    let mut answer = ok("hello");
    for (header, value) in &headers {
        answer = answer.insert_header(*header, value.as_str());
    }
    always(&server, answer).await;
    let proxy = start(&config(&server, dialect, None), clock.clone()).await;

    let reply = served_by(&proxy, name, "p#1", 1).await;
    let pool = |h: &str| Some(reply.header(h)).filter(|v| !v.is_empty());
    assert_eq!(
        pool("x-ratelimit-limit-requests"),
        pool_requests_limit,
        "{name}: the pool's requests per day"
    );
    assert_eq!(
        pool("x-ratelimit-limit-tokens"),
        pool_tokens_limit,
        "{name}: the pool's tokens per minute"
    );

    let now = metrics(&proxy).await;
    for l in &learned {
        assert_eq!(
            gauge(&now, "spillway_headroom_limit", "p#1", l.window),
            Some(l.limit),
            "{name}: the {} limit is known",
            l.window
        );
        if let Some(left) = l.left_now {
            assert_eq!(
                gauge(&now, "spillway_headroom_remaining", "p#1", l.window),
                Some(left),
                "{name}: what is left of {} right after the answer",
                l.window
            );
        }
    }
    for window in unreported {
        assert_eq!(
            gauge(&now, "spillway_headroom_limit", "p#1", window),
            None,
            "{name}: the dialect reports no {window} limit"
        );
    }

    // Checked in time order, since the clock only moves forward.
    let mut leaves: Vec<(&str, &Leaves)> = learned
        .iter()
        .filter_map(|l| Some((l.window, l.leaves.as_ref()?)))
        .collect();
    leaves.sort_by_key(|(_, l)| l.free_at);
    for (window, l) in leaves {
        move_to(&clock, l.held_at);
        let held = gauge(
            &metrics(&proxy).await,
            "spillway_headroom_remaining",
            "p#1",
            window,
        );
        assert!(
            held.is_some_and(|left| left < l.left_after),
            "{name}: the provider's usage still counts in {window} at {:?}: {held:?} left",
            l.held_at
        );
        move_to(&clock, l.free_at);
        let after = gauge(
            &metrics(&proxy).await,
            "spillway_headroom_remaining",
            "p#1",
            window,
        );
        assert_eq!(
            after,
            Some(l.left_after),
            "{name}: the provider's usage in {window} has left at {:?}",
            l.free_at
        );
    }
    assert_eq!(attempts(&server).await, ["p#1"], "{name}");
}

fn values(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(h, v)| (*h, v.to_string())).collect()
}

#[tokio::test]
async fn groq_requests_are_per_day_and_tokens_per_minute_with_go_duration_resets() {
    let cases = [
        HeaderCase {
            name: "groq: 2m59.56s and 7.66s",
            dialect: "groq",
            headers: values(&[
                ("x-ratelimit-limit-requests", "14400"),
                ("x-ratelimit-remaining-requests", "14370"),
                ("x-ratelimit-reset-requests", "2m59.56s"),
                ("x-ratelimit-limit-tokens", "18000"),
                ("x-ratelimit-remaining-tokens", "12000"),
                ("x-ratelimit-reset-tokens", "7.66s"),
            ]),
            learned: vec![
                resets("rpd", 14400, Some(14370), around(ms(179_560)), 14399),
                resets("tpm", 18000, None, around(ms(7_660)), 18000 - OWN),
            ],
            unreported: &["rpm", "tpd", "itpm", "otpm"],
            pool_requests_limit: Some("14400"),
            pool_tokens_limit: Some("18000"),
        },
        HeaderCase {
            name: "groq: 1h2m3s and 450ms",
            dialect: "groq",
            headers: values(&[
                ("x-ratelimit-limit-requests", "1000"),
                ("x-ratelimit-remaining-requests", "990"),
                ("x-ratelimit-reset-requests", "1h2m3s"),
                ("x-ratelimit-limit-tokens", "6000"),
                ("x-ratelimit-remaining-tokens", "3000"),
                ("x-ratelimit-reset-tokens", "450ms"),
            ]),
            learned: vec![
                resets(
                    "rpd",
                    1000,
                    Some(990),
                    around(Duration::from_secs(3723)),
                    999,
                ),
                resets("tpm", 6000, None, around(ms(450)), 6000 - OWN),
            ],
            unreported: &["rpm", "tpd"],
            pool_requests_limit: Some("1000"),
            pool_tokens_limit: Some("6000"),
        },
    ];
    for case in cases {
        check_headers(case, Clock::manual()).await;
    }
}

#[tokio::test]
async fn openai_reports_both_families_per_minute() {
    let case = HeaderCase {
        name: "openai: 20ms and 6m0s",
        dialect: "openai",
        headers: values(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "480"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "20000"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]),
        learned: vec![
            resets("rpm", 500, Some(480), around(ms(20)), 499),
            // A reset longer than the window: the usage counts at least until the minute is
            // over and no longer than the stated six minutes (the proxy's own usage has left
            // by then too).
            resets(
                "tpm",
                30000,
                None,
                (ms(59_990), Duration::from_secs(360) + ms(5)),
                30000,
            ),
        ],
        unreported: &["rpd", "tpd"],
        // The pool's requests header means requests per day: no key knows that here.
        pool_requests_limit: None,
        pool_tokens_limit: Some("30000"),
    };
    check_headers(case, Clock::manual()).await;
}

#[tokio::test]
async fn cerebras_reports_requests_per_day_and_tokens_per_minute_in_float_seconds() {
    let case = HeaderCase {
        name: "cerebras: float seconds",
        dialect: "cerebras",
        headers: values(&[
            ("x-ratelimit-limit-requests-day", "14400"),
            ("x-ratelimit-remaining-requests-day", "14300"),
            ("x-ratelimit-reset-requests-day", "33011.382867097855"),
            ("x-ratelimit-limit-tokens-minute", "60000"),
            ("x-ratelimit-remaining-tokens-minute", "50000"),
            ("x-ratelimit-reset-tokens-minute", "12.25"),
        ]),
        learned: vec![
            resets(
                "rpd",
                14400,
                Some(14300),
                around(Duration::from_micros(33_011_382_867)),
                14399,
            ),
            resets("tpm", 60000, None, around(ms(12_250)), 60000 - OWN),
        ],
        unreported: &["rpm", "tpd"],
        pool_requests_limit: Some("14400"),
        pool_tokens_limit: Some("60000"),
    };
    check_headers(case, Clock::manual()).await;
}

/// Anthropic's resets are timestamps in whole seconds: a reset stated as `now + n s` (rounded
/// down) falls in the last second before it.
fn anthropic_reset(n: u64) -> (Duration, Duration) {
    (Duration::from_secs(n - 1), Duration::from_secs(n) + ms(1))
}

#[tokio::test]
async fn anthropic_reports_four_families_per_minute_with_rfc3339_resets() {
    let clock = Clock::manual();
    let at = |n: u64| rfc3339(clock.unix_now() + Duration::from_secs(n));
    // Requests and tokens used elsewhere; input and output tokens reported as untouched.
    let everything = HeaderCase {
        name: "anthropic: requests and tokens",
        dialect: "anthropic",
        headers: vec![
            ("anthropic-ratelimit-requests-limit", "50".into()),
            ("anthropic-ratelimit-requests-remaining", "40".into()),
            ("anthropic-ratelimit-requests-reset", at(20)),
            ("anthropic-ratelimit-tokens-limit", "100000".into()),
            ("anthropic-ratelimit-tokens-remaining", "90000".into()),
            ("anthropic-ratelimit-tokens-reset", at(30)),
            ("anthropic-ratelimit-input-tokens-limit", "80000".into()),
            ("anthropic-ratelimit-input-tokens-remaining", "80000".into()),
            ("anthropic-ratelimit-input-tokens-reset", at(40)),
            ("anthropic-ratelimit-output-tokens-limit", "20000".into()),
            (
                "anthropic-ratelimit-output-tokens-remaining",
                "20000".into(),
            ),
            ("anthropic-ratelimit-output-tokens-reset", at(50)),
        ],
        learned: vec![
            resets("rpm", 50, Some(40), anthropic_reset(20), 49),
            resets("tpm", 100000, None, anthropic_reset(30), 100000 - OWN),
        ],
        unreported: &["rpd", "tpd"],
        pool_requests_limit: None,
        pool_tokens_limit: Some("100000"),
    };
    check_headers(everything, clock).await;

    let clock = Clock::manual();
    let at = |n: u64| rfc3339(clock.unix_now() + Duration::from_secs(n));
    let input = HeaderCase {
        name: "anthropic: input tokens",
        dialect: "anthropic",
        headers: vec![
            ("anthropic-ratelimit-input-tokens-limit", "80000".into()),
            ("anthropic-ratelimit-input-tokens-remaining", "70000".into()),
            ("anthropic-ratelimit-input-tokens-reset", at(40)),
            ("anthropic-ratelimit-output-tokens-limit", "20000".into()),
            (
                "anthropic-ratelimit-output-tokens-remaining",
                "20000".into(),
            ),
            ("anthropic-ratelimit-output-tokens-reset", at(50)),
        ],
        learned: vec![
            resets("itpm", 80000, None, anthropic_reset(40), 80000 - OWN_PROMPT),
            // Only the proxy's own output counts: the provider reported none beyond it.
            known("otpm", 20000, Some(20000 - OWN_COMPLETION)),
        ],
        unreported: &["rpm", "tpm", "rpd", "tpd"],
        pool_requests_limit: None,
        pool_tokens_limit: None,
    };
    check_headers(input, clock).await;
}

#[tokio::test]
async fn anthropic_output_tokens_used_elsewhere_count_against_output_tokens() {
    let clock = Clock::manual();
    let at = |n: u64| rfc3339(clock.unix_now() + Duration::from_secs(n));
    let case = HeaderCase {
        name: "anthropic: output tokens used elsewhere",
        dialect: "anthropic",
        headers: vec![
            ("anthropic-ratelimit-input-tokens-limit", "80000".into()),
            ("anthropic-ratelimit-input-tokens-remaining", "80000".into()),
            ("anthropic-ratelimit-input-tokens-reset", at(40)),
            ("anthropic-ratelimit-output-tokens-limit", "20000".into()),
            (
                "anthropic-ratelimit-output-tokens-remaining",
                "12000".into(),
            ),
            ("anthropic-ratelimit-output-tokens-reset", at(50)),
        ],
        learned: vec![
            // 8,000 output tokens are spent elsewhere until the reset: about 12,000 are left.
            resets(
                "otpm",
                20000,
                None,
                anthropic_reset(50),
                20000 - OWN_COMPLETION,
            ),
            // No input tokens were reported used beyond the proxy's own.
            known("itpm", 80000, Some(80000 - OWN_PROMPT)),
        ],
        unreported: &["rpm", "tpm", "rpd", "tpd"],
        pool_requests_limit: None,
        pool_tokens_limit: None,
    };
    check_headers(case, clock).await;
}

// ---------------------------------------------------------------------------------------------
// `retry-after` on a 429, in every form
// ---------------------------------------------------------------------------------------------

/// A 429 to p#1, and how long p#1 must then be held back.
struct Hold {
    name: &'static str,
    /// The 429's headers, given the clock's calendar time (for HTTP dates).
    headers: fn(Duration) -> Vec<(&'static str, String)>,
    /// What follows "Rate limit reached for model `contract-model`." in the 429's message.
    message: &'static str,
    /// p#1 is still held back at this time after the 429 (the other key serves)...
    held_at: Duration,
    /// ...and takes requests again at this one (`None`: not within any time a test waits).
    free_at: Option<Duration>,
}

/// How long a 429 that states no readable time holds a key back is the proxy's choice; it is
/// brief, and a minute is far beyond it.
const BRIEFLY: Option<Duration> = Some(Duration::from_secs(60));

fn hold_cases() -> Vec<Hold> {
    vec![
        Hold {
            name: "retry-after in whole seconds",
            headers: |_| vec![("retry-after", "2".into())],
            message: "",
            held_at: ms(1_995),
            free_at: Some(ms(2_005)),
        },
        Hold {
            name: "retry-after in fractional seconds",
            headers: |_| vec![("retry-after", "1.5".into())],
            message: "",
            held_at: ms(1_495),
            free_at: Some(ms(1_505)),
        },
        Hold {
            // Whole seconds, rounded down: the key frees in the last second before the date.
            name: "retry-after as an HTTP date 30 s ahead",
            headers: |now| vec![("retry-after", http_date(now + Duration::from_secs(30)))],
            message: "",
            held_at: ms(28_995),
            free_at: Some(ms(30_005)),
        },
        Hold {
            name: "retry-after-ms before retry-after",
            headers: |_| {
                vec![
                    ("retry-after-ms", "1500".into()),
                    ("retry-after", "30".into()),
                ]
            },
            message: "",
            held_at: ms(1_495),
            free_at: Some(ms(1_505)),
        },
        Hold {
            name: "an unreadable retry-after-ms falls back to retry-after",
            headers: |_| {
                vec![
                    ("retry-after-ms", "soon".into()),
                    ("retry-after", "2".into()),
                ]
            },
            message: "",
            held_at: ms(1_995),
            free_at: Some(ms(2_005)),
        },
        Hold {
            name: "no retry-after, the message says 1m2.5s",
            headers: |_| Vec::new(),
            message: " Please try again in 1m2.5s.",
            held_at: ms(62_495),
            free_at: Some(ms(62_505)),
        },
        Hold {
            name: "no retry-after, the message says 450ms",
            headers: |_| Vec::new(),
            message: " Please try again in 450ms.",
            held_at: ms(445),
            free_at: Some(ms(455)),
        },
        Hold {
            name: "a malformed retry-after",
            headers: |_| vec![("retry-after", "in a while".into())],
            message: "",
            held_at: Duration::ZERO,
            free_at: BRIEFLY,
        },
        Hold {
            name: "a negative retry-after",
            headers: |_| vec![("retry-after", "-5".into())],
            message: "",
            held_at: Duration::ZERO,
            free_at: BRIEFLY,
        },
        Hold {
            name: "a negative retry-after-ms",
            headers: |_| vec![("retry-after-ms", "-250".into())],
            message: "",
            held_at: Duration::ZERO,
            free_at: BRIEFLY,
        },
        Hold {
            // 2^64 s is more than a duration holds: as unreadable as a word.
            name: "a retry-after of 2^64 seconds",
            headers: |_| vec![("retry-after", "18446744073709551616".into())],
            message: "",
            held_at: Duration::ZERO,
            free_at: BRIEFLY,
        },
        Hold {
            // Representable, and obeyed: about 3,000 years.
            name: "a retry-after of 10^11 seconds",
            headers: |_| vec![("retry-after", "100000000000".into())],
            message: "",
            held_at: Duration::from_secs(86_400),
            free_at: None,
        },
    ]
}

/// Runs every [`Hold`] case against a provider in `dialect`: a 429 to p#1, then the first
/// request is served by p#2, p#1 is left alone until the stated time and takes requests again
/// after it.
async fn check_holds(dialect: &str) {
    for case in hold_cases() {
        let name = format!("{dialect}: {}", case.name);
        let clock = Clock::manual();
        let server = MockServer::start().await;
        let message = format!("Rate limit reached for model `{MODEL}`.{}", case.message);
        let mut refusal = ResponseTemplate::new(429).set_body_json(error_body(
            dialect,
            limit_type(dialect),
            &message,
        ));
        for (header, value) in (case.headers)(clock.unix_now()) {
            refusal = refusal.insert_header(header, value.as_str());
        }
        once_to(&server, "p#1", refusal).await;
        always(&server, ok("hello")).await;
        let proxy = start(&config(&server, dialect, None), clock.clone()).await;

        served_by(&proxy, &format!("{name}, limited"), "p#2", 2).await;
        move_to(&clock, case.held_at);
        served_by(&proxy, &format!("{name}, held back"), "p#2", 1).await;
        let mut expected = vec!["p#1", "p#2", "p#2"];
        if let Some(free_at) = case.free_at {
            move_to(&clock, free_at);
            served_by(&proxy, &format!("{name}, free again"), "p#1", 1).await;
            expected.push("p#1");
        }
        assert_eq!(attempts(&server).await, expected, "{name}");
        let m = metrics(&proxy).await;
        assert_eq!(
            counter(
                &m,
                r#"spillway_upstream_rate_limited_total{provider="p",key="p#1"}"#
            ),
            1,
            "{name}"
        );
    }
}

/// The error type a provider gives a rate-limit refusal.
fn limit_type(dialect: &str) -> &'static str {
    if dialect == "anthropic" {
        "rate_limit_error"
    } else {
        "rate_limit_exceeded"
    }
}

#[tokio::test]
async fn every_retry_after_form_holds_a_groq_key_for_its_stated_time() {
    check_holds("groq").await;
}

#[tokio::test]
async fn every_retry_after_form_holds_an_openai_key_for_its_stated_time() {
    check_holds("openai").await;
}

#[tokio::test]
async fn every_retry_after_form_holds_a_cerebras_key_for_its_stated_time() {
    check_holds("cerebras").await;
}

#[tokio::test]
async fn every_retry_after_form_holds_an_anthropic_key_for_its_stated_time() {
    check_holds("anthropic").await;
}

#[tokio::test]
async fn with_every_key_held_back_the_client_is_told_when_the_first_frees() {
    let clock = Clock::manual();
    let server = MockServer::start().await;
    let limited = |secs: &str| {
        ResponseTemplate::new(429)
            .insert_header("retry-after", secs)
            .set_body_json(error_body(
                "groq",
                "rate_limit_exceeded",
                "Rate limit reached.",
            ))
    };
    once_to(&server, "p#1", limited("20")).await;
    once_to(&server, "p#2", limited("7")).await;
    always(&server, ok("hello")).await;
    let proxy = start(&config(&server, "groq", None), clock.clone()).await;

    let reply = ask(&proxy, &question("both limited")).await;
    assert_eq!(reply.status, 429, "{reply:?}");
    assert_eq!(reply.header("retry-after"), "7", "{reply:?}");
    assert_eq!(reply.header("retry-after-ms"), "7000", "{reply:?}");
    assert_eq!(reply.header("x-should-retry"), "true", "{reply:?}");
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(attempts(&server).await, ["p#1", "p#2"]);

    move_to(&clock, ms(7_005));
    served_by(&proxy, "p#2 frees first", "p#2", 1).await;
}

// ---------------------------------------------------------------------------------------------
// Error bodies, dialect by dialect
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_openai_key_out_of_credit_is_set_aside_not_held_for_its_retry_after() {
    let clock = Clock::manual();
    let server = MockServer::start().await;
    let quota = ResponseTemplate::new(429)
        .insert_header("retry-after", "1")
        .set_body_json(json!({"error": {
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}));
    once_to(&server, "p#1", quota).await;
    always(&server, ok("hello")).await;
    let proxy = start(&config(&server, "openai", None), clock.clone()).await;

    served_by(&proxy, "out of credit", "p#2", 2).await;
    // Long past the 429's retry-after, p#1 is still set aside (until its key_retry).
    move_to(&clock, Duration::from_secs(120));
    served_by(&proxy, "still set aside", "p#2", 1).await;
    assert_eq!(attempts(&server).await, ["p#1", "p#2", "p#2"]);
    let m = metrics(&proxy).await;
    assert_eq!(
        counter(
            &m,
            r#"spillway_key_refused{provider="p",key="p#1",reason="429 insufficient_quota"}"#
        ),
        1,
        "{m}"
    );
}

#[tokio::test]
async fn anthropic_error_bodies_are_read_by_their_type() {
    // 401 authentication_error: the key is set aside, and the reason names Anthropic's type.
    let server = MockServer::start().await;
    let refused = ResponseTemplate::new(401).set_body_json(error_body(
        "anthropic",
        "authentication_error",
        "invalid x-api-key",
    ));
    always_to(&server, "p#1", refused).await;
    always(&server, ok("hello")).await;
    let proxy = start(&config(&server, "anthropic", None), Clock::real()).await;
    served_by(&proxy, "key refused", "p#2", 2).await;
    served_by(&proxy, "set aside", "p#2", 1).await;
    assert_eq!(attempts(&server).await, ["p#1", "p#2", "p#2"]);
    let m = metrics(&proxy).await;
    assert_eq!(
        counter(
            &m,
            r#"spillway_key_refused{provider="p",key="p#1",reason="401 authentication_error"}"#
        ),
        1,
        "{m}"
    );

    // 400 invalid_request_error: the client's own mistake, given back unchanged, not retried.
    let server = MockServer::start().await;
    let invalid = error_body(
        "anthropic",
        "invalid_request_error",
        "max_tokens: Field required",
    );
    always(&server, ResponseTemplate::new(400).set_body_json(&invalid)).await;
    let proxy = start(&config(&server, "anthropic", None), Clock::real()).await;
    let reply = ask(&proxy, &question("invalid")).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.json(), invalid);
    assert_eq!(attempts(&server).await, ["p#1"]);
}

#[tokio::test]
async fn anthropic_529_overloaded_moves_the_request_to_the_next_target() {
    let (p, q) = (MockServer::start().await, MockServer::start().await);
    let overloaded = ResponseTemplate::new(529).set_body_json(error_body(
        "anthropic",
        "overloaded_error",
        "Overloaded",
    ));
    always(&p, overloaded).await;
    always(&q, ok("from q")).await;
    let proxy = start(
        &config(&p, "anthropic", Some((&q, "anthropic"))),
        Clock::real(),
    )
    .await;

    let reply = ask(&proxy, &question("overloaded")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("x-spillway-key"), "q#1", "{reply:?}");
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "from q");
    assert_eq!(
        attempts(&p).await.len(),
        1,
        "one failed attempt moves the request on"
    );
    // Each request tries p once more until its circuit opens; then p is skipped.
    for i in 1..FAILURES_TO_OPEN {
        served_by(&proxy, &format!("overloaded again {i}"), "q#1", 2).await;
    }
    let at_p = attempts(&p).await.len();
    assert_eq!(at_p, FAILURES_TO_OPEN);
    let m = metrics(&proxy).await;
    assert_eq!(
        counter(
            &m,
            r#"spillway_upstream_attempts_total{provider="p",status="529"}"#
        ),
        at_p as u64,
        "{m}"
    );
    served_by(&proxy, "p cools down", "q#1", 1).await;
    assert_eq!(
        attempts(&p).await.len(),
        at_p,
        "the open circuit is skipped"
    );
}

#[tokio::test]
async fn an_anthropic_error_event_read_before_anything_reached_the_client_fails_the_attempt() {
    // The error arrives with the first content event, before the proxy has answered: the
    // attempt failed while the request can still move on. With no other target, the client
    // gets an unavailable answer naming the provider's reason, not half a story. (An error
    // event after the client has events ends its stream with `stream_interrupted`: the
    // streaming and reliability suites cut real streams midway.)
    let server = MockServer::start().await;
    let first = json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": "Once upon"}, "finish_reason": null}]});
    let error = error_body("anthropic", "overloaded_error", "Overloaded");
    always(
        &server,
        sse(format!("data: {first}\n\nevent: error\ndata: {error}\n\n")),
    )
    .await;
    let proxy = start(&config(&server, "anthropic", None), Clock::real()).await;

    let reply = ask(&proxy, &streamed("a story")).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("Overloaded"),
        "the provider's reason is passed on: {reply:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Error bodies that echo the key
// ---------------------------------------------------------------------------------------------

/// A provider that answers every attempt with `status`, copying the key it was sent, and the
/// whole `Authorization` header, into its message and into a header.
struct EchoKey {
    status: u16,
    dialect: &'static str,
}

impl Respond for EchoKey {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let key = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_string();
        let message =
            format!("Incorrect API key provided: {key}. You sent `Authorization: {auth}`.");
        let stream = request
            .body_json::<Value>()
            .is_ok_and(|b| b["stream"] == json!(true));
        let answer = ResponseTemplate::new(self.status)
            .insert_header("x-echo-authorization", auth.as_str())
            .insert_header("x-request-id", format!("req-{key}").as_str());
        match (self.status, stream) {
            (200, true) => answer.set_body_raw(stream_of(&[&message]), "text/event-stream"),
            (200, false) => answer.set_body_json(completion(&message)),
            _ => answer.set_body_json(error_body(self.dialect, "invalid_request_error", &message)),
        }
    }
}

#[tokio::test]
async fn a_key_echoed_back_in_any_answer_never_reaches_the_client() {
    // What the client gets when both keys answer with the status: the provider's own body for
    // the client's mistakes, the proxy's 503 when every key is refused, its 502 or 503 when
    // the target keeps failing, and the answer itself on a success.
    let table: [(u16, &[u16]); 7] = [
        (200, &[200]),
        (400, &[400]),
        (422, &[422]),
        (401, &[503]),
        (403, &[503]),
        (500, &[502, 503]),
        (503, &[502, 503]),
    ];
    for dialect in ["groq", "openai", "cerebras", "anthropic"] {
        for (status, expected) in table {
            let passed_through = (400..500).contains(&status) && expected == [status];
            let name = format!("{dialect} {status}");
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path(CHAT))
                .respond_with(EchoKey { status, dialect })
                .mount(&server)
                .await;
            let proxy = start(&config(&server, dialect, None), Clock::real()).await;
            for reply in [
                ask(&proxy, &question("echo")).await,
                ask(&proxy, &streamed("echo")).await,
            ] {
                assert!(expected.contains(&reply.status), "{name}: {reply:?}");
                let everything = reply.everything();
                assert!(
                    KEYS.iter().all(|(_, _, value)| !everything.contains(value)),
                    "{name}: a key reached the client: {reply:?}"
                );
                if passed_through {
                    assert!(
                        reply.body.contains("Incorrect API key provided: ***")
                            && reply.body.contains("Authorization: Bearer ***"),
                        "{name}: the provider's body, masked: {reply:?}"
                    );
                }
            }
            if status == 200 {
                let plain = ask(&proxy, &question("echo again")).await;
                let streamed = ask(&proxy, &streamed("echo again")).await;
                for text in [
                    plain.json()["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    text_of(&data_events(&streamed.body)),
                ] {
                    assert!(
                        text.starts_with(
                            "Incorrect API key provided: ***. You sent `Authorization: Bearer ***`"
                        ),
                        "{name}: the answer, masked: {}",
                        redacted(&text)
                    );
                }
            }
            // Checks /metrics for keys too.
            metrics(&proxy).await;
            assert!(
                attempts(&server)
                    .await
                    .iter()
                    .all(|a| *a != "no configured key"),
                "{name}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Answers that are not JSON, or not an answer at all
// ---------------------------------------------------------------------------------------------

/// Makes a scripted answer (a fresh one for each server it is mounted on).
type Scripted = fn() -> ResponseTemplate;

/// A first target's answer that cannot be used.
struct Garbage {
    name: &'static str,
    answer: Scripted,
    /// Asked for as a stream.
    stream: bool,
}

fn garbage_cases() -> Vec<Garbage> {
    const HTML: &str = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>";
    vec![
        Garbage {
            name: "a 200 whose JSON body is not JSON",
            answer: || {
                ResponseTemplate::new(200).set_body_raw("this is not json {", "application/json")
            },
            stream: false,
        },
        Garbage {
            name: "a 200 with an HTML page",
            answer: || ResponseTemplate::new(200).set_body_raw(HTML, "text/html"),
            stream: false,
        },
        Garbage {
            name: "a 200 with an empty body",
            answer: || ResponseTemplate::new(200),
            stream: false,
        },
        Garbage {
            name: "a 200 with a truncated JSON body",
            answer: || {
                let whole = completion("cut").to_string();
                ResponseTemplate::new(200)
                    .set_body_raw(whole[..whole.len() / 2].to_string(), "application/json")
            },
            stream: false,
        },
        Garbage {
            name: "an HTML 502",
            answer: || ResponseTemplate::new(502).set_body_raw(HTML, "text/html"),
            stream: false,
        },
        Garbage {
            name: "an HTML 502 to a stream",
            answer: || ResponseTemplate::new(502).set_body_raw(HTML, "text/html"),
            stream: true,
        },
        Garbage {
            name: "a stream whose first event is not JSON",
            answer: || sse("data: {\"choices\": [oops\n\ndata: [DONE]\n\n".into()),
            stream: true,
        },
        Garbage {
            name: "a stream with no event at all",
            answer: || sse("<html>not a stream</html>\n".into()),
            stream: true,
        },
        Garbage {
            name: "a stream that is only [DONE]",
            answer: || sse("data: [DONE]\n\n".into()),
            stream: true,
        },
    ]
}

#[tokio::test]
async fn an_answer_that_is_not_json_moves_the_request_to_the_next_target() {
    for dialect in ["groq", "openai", "cerebras", "anthropic"] {
        for case in garbage_cases() {
            let name = format!("{dialect}: {}", case.name);
            let (p, q) = (MockServer::start().await, MockServer::start().await);
            always(&p, (case.answer)()).await;
            if case.stream {
                always(&q, sse(stream_of(&["from ", "q"]))).await;
            } else {
                always(&q, ok("from q")).await;
            }
            let proxy = start(&config(&p, dialect, Some((&q, "groq"))), Clock::real()).await;
            let body = if case.stream {
                streamed(&name)
            } else {
                question(&name)
            };
            let reply = ask(&proxy, &body).await;
            assert_eq!(reply.status, 200, "{name}: {reply:?}");
            assert_eq!(reply.header("x-spillway-key"), "q#1", "{name}: {reply:?}");
            if case.stream {
                let events = data_events(&reply.body);
                assert_eq!(text_of(&events), "from q", "{name}: {reply:?}");
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{name}");
            } else {
                assert_eq!(
                    reply.json()["choices"][0]["message"]["content"],
                    "from q",
                    "{name}"
                );
            }
            let tried = attempts(&p).await;
            assert!(
                (1..=FAILURES_TO_OPEN).contains(&tried.len()),
                "{name}: p is tried, at most until its circuit opens: {tried:?}"
            );
            assert_eq!(
                reply.header("x-spillway-attempts"),
                (tried.len() + 1).to_string(),
                "{name}: {tried:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_answer_that_is_not_json_with_no_other_target_ends_with_the_documented_error() {
    for case in garbage_cases() {
        let name = case.name;
        let server = MockServer::start().await;
        always(&server, (case.answer)()).await;
        let proxy = start(&config(&server, "groq", None), Clock::real()).await;
        let body = if case.stream {
            streamed(name)
        } else {
            question(name)
        };
        let reply = ask(&proxy, &body).await;
        assert!([502, 503].contains(&reply.status), "{name}: {reply:?}");
        let error = reply.json();
        let code = error["error"]["code"].as_str().unwrap_or("");
        assert!(
            ["upstream_failed", "service_unavailable"].contains(&code),
            "{name}: {reply:?}"
        );
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("p#1")),
            "{name}: the attempts are listed: {reply:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_event_that_is_not_json_after_the_first_ends_the_clients_stream() {
    let server = MockServer::start().await;
    let first = json!({"id": "c", "object": "chat.completion.chunk", "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": "Once upon"}, "finish_reason": null}]});
    always(
        &server,
        sse(format!(
            "data: {first}\n\ndata: <html>oops</html>\n\ndata: [DONE]\n\n"
        )),
    )
    .await;
    let proxy = start(&config(&server, "openai", None), Clock::real()).await;

    let reply = ask(&proxy, &streamed("a story")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let events = data_events(&reply.body);
    assert_eq!(text_of(&events), "Once upon", "{reply:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{reply:?}");
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("JSON");
    assert_eq!(last["error"]["code"], "stream_interrupted", "{reply:?}");
    assert_eq!(attempts(&server).await, ["p#1"]);
}

#[tokio::test]
async fn one_failed_attempt_moves_the_request_to_the_next_target() {
    let failures: [(&str, Scripted); 4] = [
        ("an HTML 502", || {
            ResponseTemplate::new(502).set_body_raw("<html>502 Bad Gateway</html>", "text/html")
        }),
        ("a 500", || {
            ResponseTemplate::new(500).set_body_json(error_body(
                "anthropic",
                "api_error",
                "Internal server error",
            ))
        }),
        ("a 529", || {
            ResponseTemplate::new(529).set_body_json(error_body(
                "anthropic",
                "overloaded_error",
                "Overloaded",
            ))
        }),
        ("a 200 that is not JSON", || {
            ResponseTemplate::new(200).set_body_raw("not json", "application/json")
        }),
    ];
    for (name, failure) in failures {
        let (p, q) = (MockServer::start().await, MockServer::start().await);
        always(&p, failure()).await;
        always(&q, ok("from q")).await;
        let proxy = start(&config(&p, "anthropic", Some((&q, "groq"))), Clock::real()).await;
        let reply = ask(&proxy, &question(name)).await;
        assert_eq!(reply.status, 200, "{name}: {reply:?}");
        assert_eq!(reply.header("x-spillway-key"), "q#1", "{name}: {reply:?}");
        assert_eq!(
            attempts(&p).await,
            ["p#1"],
            "{name}: one attempt at the failing target, then the next target"
        );
        assert_eq!(
            reply.header("x-spillway-attempts"),
            "2",
            "{name}: {reply:?}"
        );
    }
}

#[tokio::test]
async fn an_anthropic_stream_that_opens_with_an_overloaded_error_moves_to_the_next_target() {
    let (p, q) = (MockServer::start().await, MockServer::start().await);
    let error = error_body("anthropic", "overloaded_error", "Overloaded");
    always(&p, sse(format!("event: error\ndata: {error}\n\n"))).await;
    always(&q, sse(stream_of(&["from ", "q"]))).await;
    let proxy = start(
        &config(&p, "anthropic", Some((&q, "anthropic"))),
        Clock::real(),
    )
    .await;
    let reply = ask(&proxy, &streamed("a story")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.header("x-spillway-key"),
        "q#1",
        "nothing of an answer reached the client before the error: {reply:?}"
    );
    let events = data_events(&reply.body);
    assert_eq!(text_of(&events), "from q", "{reply:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}
