//! Admission without false 429s and without false waits: a burst that names no `max_tokens`
//! waits for settlements instead of being refused; unknown limits are explored like a
//! congestion window; every answer carries the pool's own `x-ratelimit-*` headers; a route
//! that is limited somewhere answers 429 with that limit's honest `retry-after`, and one whose
//! targets are all down answers 503 at once.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use spillway_clock::Clock;
use spillway_mock::{Faults, Limits, MockProvider};
use spillway_tests::*;

const MODEL: &str = GROQ_MODEL;

/// The mock's defaults for `llama-3.1-8b-instant` (Groq's free tier), also in the proxy's
/// config, as proxy/examples/spillway-mock.toml gives them.
const FREE_TIER: &str = r#"
requests_per_minute = 30
requests_per_day = 14400
tokens_per_minute = 6000
tokens_per_day = 500000
"#;

fn two_keys(url: &str, route: &str) -> String {
    format!(
        r#"
[[providers]]
name = "groq"
base_url = "{url}"
keys = ["env:K1", "env:K2"]
[providers.limits."{MODEL}"]
{FREE_TIER}

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{MODEL}" }}]
{route}
"#
    )
}

fn no_max_tokens(i: usize) -> Value {
    json!({"model": "chat", "messages": [{"role": "user", "content": format!("eval question {i}: explain the water cycle")}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_without_max_tokens_is_served_whole_while_the_provider_has_room() {
    let mock = MockProvider::builder()
        .keys(["k1", "k2"])
        .limits(MODEL, Limits::groq_free_tier(MODEL))
        .faults(Faults {
            latency: Some(Duration::from_millis(500)),
            ..Faults::none()
        })
        .start()
        .await;
    let proxy = Proxy::start(
        &two_keys(&mock.url(), "max_wait = \"30s\""),
        &[("K1", "k1"), ("K2", "k2")],
        Clock::real(),
    )
    .await;
    let url = proxy.url();
    let statuses = tokio::time::timeout(
        Duration::from_secs(60),
        join_all((0..40).map(|i| {
            let url = url.clone();
            async move { chat(&url, &no_max_tokens(i)).await.status().as_u16() }
        })),
    )
    .await
    .expect("the burst finishes");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = mock.stats();
    assert_eq!(stats.responses(429), 0, "the provider refused nothing");
    assert_eq!(stats.admitted(), 40);
}

#[tokio::test]
async fn every_answer_carries_the_pools_rate_limit_headers_summed_over_its_keys() {
    let mock = MockProvider::builder()
        .keys(["k1", "k2"])
        .limits(MODEL, Limits::groq_free_tier(MODEL))
        .start()
        .await;
    let proxy = Proxy::start(
        &two_keys(&mock.url(), ""),
        &[("K1", "k1"), ("K2", "k2")],
        Clock::real(),
    )
    .await;
    let mut remaining = Vec::new();
    for i in 0..3 {
        let mut body = chat_body("chat", &format!("q{i}"), 20);
        body["temperature"] = json!(0);
        let resp = chat(&proxy.url(), &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-ratelimit-limit-requests"),
            "28800",
            "two keys' requests per day"
        );
        assert_eq!(
            header(&resp, "x-ratelimit-limit-tokens"),
            "12000",
            "two keys' tokens per minute"
        );
        assert!(!header(&resp, "x-ratelimit-reset-tokens").is_empty());
        assert!(!header(&resp, "x-ratelimit-reset-requests").is_empty());
        remaining.push(
            header(&resp, "x-ratelimit-remaining-requests")
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert!(
        remaining.windows(2).all(|w| w[1] < w[0]),
        "counts down: {remaining:?}"
    );
    assert_eq!(remaining[2], 28800 - 3);
    // A hit carries them too, and no key (the cache answered, no key was used).
    let mut body = chat_body("chat", "q0", 20);
    body["temperature"] = json!(0);
    let hit = chat(&proxy.url(), &body).await;
    assert_eq!(header(&hit, "x-spillway-cache"), "hit");
    assert!(hit.headers().get("x-spillway-key").is_none());
    assert_eq!(header(&hit, "x-ratelimit-limit-tokens"), "12000");
}

/// A route `chat` over `limited` (one request a minute, used up) then `down` (always 503).
async fn limited_then_down() -> (MockProvider, MockProvider, Proxy) {
    let limited = MockProvider::builder().key("k1").start().await;
    let down = MockProvider::builder()
        .key("k2")
        .faults(Faults::always_status(503))
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "limited"
base_url = "{}"
keys = ["env:K1"]
[providers.limits."{MODEL}"]
requests_per_minute = 1

[[providers]]
name = "down"
base_url = "{}"
keys = ["env:K2"]

[[routes]]
model = "chat"
targets = [{{ provider = "limited", model = "{MODEL}" }}, {{ provider = "down", model = "{MODEL}" }}]
max_wait = "1s"
"#,
        limited.url(),
        down.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1"), ("K2", "k2")], Clock::real()).await;
    (limited, down, proxy)
}

#[tokio::test]
async fn a_limited_target_beside_a_failing_one_answers_429_with_its_honest_retry_after() {
    let (_limited, down, proxy) = limited_then_down().await;
    assert_eq!(
        chat(&proxy.url(), &chat_body("chat", "first", 5))
            .await
            .status(),
        200
    );
    let resp = chat(&proxy.url(), &chat_body("chat", "second", 5)).await;
    assert_eq!(resp.status(), 429, "limited beats down: not a 502");
    let ms: u64 = header(&resp, "retry-after-ms").parse().unwrap();
    assert!(
        (55_000..=60_000).contains(&ms),
        "the limited key's own reset: {ms}"
    );
    assert_eq!(header(&resp, "x-spillway-cache"), "skip");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(down.stats().requests >= 1, "the failing target was tried");
}

#[tokio::test]
async fn every_target_down_answers_503_at_once_with_when_to_come_back() {
    let a = MockProvider::builder()
        .key("k1")
        .faults(Faults::always_status(503))
        .start()
        .await;
    let b = MockProvider::builder()
        .key("k2")
        .faults(Faults::always_status(502))
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:K1"]
cooldown = "20s"
failures_to_open = 1

[[providers]]
name = "b"
base_url = "{}"
keys = ["env:K2"]
cooldown = "20s"
failures_to_open = 1

[[routes]]
model = "chat"
targets = [{{ provider = "a", model = "{MODEL}" }}, {{ provider = "b", model = "{MODEL}" }}]
max_wait = "30s"
"#,
        a.url(),
        b.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1"), ("K2", "k2")], Clock::real()).await;
    let wall = Clock::real();
    for attempt in 0..2 {
        let started = wall.now();
        let resp = chat(&proxy.url(), &chat_body("chat", &format!("q{attempt}"), 5)).await;
        assert!(
            wall.now() - started < Duration::from_secs(2),
            "attempt {attempt}: no wait through a cooldown"
        );
        assert_eq!(resp.status(), 503, "attempt {attempt}");
        let secs: u64 = header(&resp, "retry-after").parse().unwrap();
        assert!((1..=20).contains(&secs), "from the circuits: {secs}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "service_unavailable");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("rate limit"),
            "{body}"
        );
    }
    assert_eq!(
        a.stats().requests + b.stats().requests,
        2,
        "the second request met two open circuits and was not sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_requests_per_minute_limit_is_learned_with_one_429_per_step() {
    // The provider reports no limits in its headers (Groq never reports requests per minute);
    // its 429 names the limit, once learned pacing takes over.
    let clock = Clock::scaled(60.0).expect("scale");
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(20))
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1"]

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{MODEL}" }}]
max_wait = "10m"
"#,
        mock.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1")], clock.clone()).await;
    let url = proxy.url();
    let statuses = tokio::time::timeout(
        Duration::from_secs(60),
        join_all((0..60).map(|i| {
            let url = url.clone();
            async move {
                chat(&url, &chat_body("chat", &format!("q{i}"), 5))
                    .await
                    .status()
                    .as_u16()
            }
        })),
    )
    .await
    .expect("the burst finishes");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // One step of learning: the 429s are the requests already on their way when the limit was
    // met (how many depends on how many were in flight then, which the machine's speed
    // decides), one run of them in arrival order; the first one named the limit, so after the
    // run pacing holds every request until the provider's window has room: no more 429s.
    let journal = mock.journal();
    let statuses: Vec<u16> = journal.iter().map(|e| e.status).collect();
    let first = statuses
        .iter()
        .position(|s| *s == 429)
        .expect("the limit was met");
    let last = statuses
        .iter()
        .rposition(|s| *s == 429)
        .expect("the limit was met");
    assert!(
        statuses[first..=last].iter().all(|s| *s == 429),
        "429s after the limit was learned: {statuses:?}"
    );
    assert!(
        last - first < 24,
        "at most the in-flight window's requests are refused: {statuses:?}"
    );
}
