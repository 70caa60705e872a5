//! Pacing against real mock servers: bursts are spread so no key ever sees more than its limit,
//! unknown limits are learned, and an exhausted route says honestly when to come back.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::{Limits, MockProvider};
use spillway_tests::*;

const GROQ_MODEL: &str = "llama-3.1-8b-instant";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_is_paced_so_no_key_ever_sees_a_429() {
    let clock = Clock::scaled(60.0).expect("scale");
    let limits = Limits::rpm(30).with_tpm(3_000);
    let mock = MockProvider::builder()
        .keys(["k1", "k2"])
        .limits(GROQ_MODEL, limits)
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1", "env:K2"]
[providers.limits."{GROQ_MODEL}"]
requests_per_minute = 30
tokens_per_minute = 3000

[[routes]]
model = "fast"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]
max_wait = "10m"
"#,
        mock.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1"), ("K2", "k2")], clock.clone()).await;
    let url = proxy.url();
    let requests = (0..200).map(|i| {
        let url = url.clone();
        async move {
            // ~100 prompt tokens and up to 40 completion tokens: tokens per minute binds first.
            let prompt = format!(
                "question {i}: {}",
                "tell me about the river delta ".repeat(13)
            );
            chat(&url, &chat_body("fast", &prompt, 40))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = tokio::time::timeout(Duration::from_secs(60), join_all(requests))
        .await
        .expect("the burst finishes within a minute of wall time");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = mock.stats();
    assert_eq!(stats.responses(429), 0, "the mock sent 429s");
    for key in ["k1", "k2"] {
        let s = stats.key_model(key, GROQ_MODEL).expect("key used");
        let minute = &s.windows["minute"];
        assert!(minute.peak_requests <= 30, "{key}: {minute:?}");
        assert!(minute.peak_tokens <= 3_000, "{key}: {minute:?}");
        assert!(
            s.requests_admitted > 50,
            "both keys carry the load: {key} {s:?}"
        );
    }
    assert_eq!(stats.admitted(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_request_in_flight_while_unknown_limits_are_learned_with_at_most_one_429_per_key()
{
    let clock = Clock::scaled(60.0).expect("scale");
    let mock = MockProvider::builder()
        .keys(["k1", "k2"])
        .limits(GROQ_MODEL, Limits::rpm(10).with_tpm(50_000))
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1", "env:K2"]
# A fixed cap of one: the strictest way to learn (the adaptive default is tested in
# proxy_admission.rs).
unknown_limits_in_flight = 1

[[routes]]
model = "fast"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]
max_wait = "10m"
"#,
        mock.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1"), ("K2", "k2")], clock.clone()).await;
    let url = proxy.url();
    let requests = (0..50).map(|i| {
        let url = url.clone();
        async move {
            chat(&url, &chat_body("fast", &format!("q{i}"), 20))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = tokio::time::timeout(Duration::from_secs(60), join_all(requests))
        .await
        .expect("finishes");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = mock.stats();
    for key in ["k1", "k2"] {
        let s = stats.key_model(key, GROQ_MODEL).expect("key used");
        assert!(s.responses(429) <= 1, "{key} got {} 429s", s.responses(429));
        assert!(s.windows["minute"].peak_requests <= 10);
    }
    // Learned: tokens per minute from the headers, requests per minute from the 429 message.
    let metrics = client()
        .get(format!("{}/metrics", proxy.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("window=\"tpm\"} "), "{metrics}");
}

#[tokio::test]
async fn an_exhausted_route_answers_429_with_the_mocks_own_reset() {
    let clock = Clock::manual();
    let mock = MockProvider::builder()
        .keys(["k1"])
        .limits(GROQ_MODEL, Limits::rpm(2))
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1"]
[providers.limits."{GROQ_MODEL}"]
requests_per_minute = 2

[[routes]]
model = "fast"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]
max_wait = "0s"
"#,
        mock.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1")], clock.clone()).await;
    assert_eq!(
        chat(&proxy.url(), &chat_body("fast", "a", 10))
            .await
            .status(),
        200
    );
    clock.advance(Duration::from_millis(12_300));
    assert_eq!(
        chat(&proxy.url(), &chat_body("fast", "b", 10))
            .await
            .status(),
        200
    );
    clock.advance(Duration::from_millis(20_000));
    let refused = chat(&proxy.url(), &chat_body("fast", "c", 10)).await;
    assert_eq!(refused.status(), 429);
    let proxy_retry: u64 = header(&refused, "retry-after")
        .parse()
        .expect("retry-after");
    let proxy_ms: u64 = header(&refused, "retry-after-ms")
        .parse()
        .expect("retry-after-ms");
    assert_eq!(header(&refused, "x-should-retry"), "true");
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per minute")
    );
    // Ask the mock itself, with the same key, at the same moment.
    let direct = client()
        .post(format!("{}/chat/completions", mock.url()))
        .bearer_auth("k1")
        .json(&chat_body(GROQ_MODEL, "d", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 429);
    let mock_retry: u64 = header(&direct, "retry-after").parse().unwrap();
    assert!(
        proxy_retry.abs_diff(mock_retry) <= 1,
        "proxy {proxy_retry} vs mock {mock_retry}"
    );
    assert!(
        (proxy_ms as f64 / 1000.0 - 27.7).abs() < 0.1,
        "{proxy_ms} ms"
    );
    assert_eq!(
        mock.stats().responses(429),
        1,
        "only our direct probe was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_goes_as_soon_as_the_window_frees() {
    let clock = Clock::scaled(60.0).expect("scale");
    let mock = MockProvider::builder()
        .keys(["k1"])
        .limits(GROQ_MODEL, Limits::rpm(1))
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1"]
[providers.limits."{GROQ_MODEL}"]
requests_per_minute = 1

[[routes]]
model = "fast"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]
max_wait = "5m"
"#,
        mock.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1")], clock.clone()).await;
    assert_eq!(
        chat(&proxy.url(), &chat_body("fast", "a", 10))
            .await
            .status(),
        200
    );
    let first = mock.journal()[0].at;
    assert_eq!(
        chat(&proxy.url(), &chat_body("fast", "b", 10))
            .await
            .status(),
        200
    );
    let second = mock.journal()[1].at;
    let gap = second - first;
    assert!(
        (60.0..63.0).contains(&gap),
        "the second request went {gap:.2} s after the first"
    );
    assert_eq!(mock.stats().responses(429), 0);
}

/// Every duration on the wire is wall-clock time, so components at different time scales agree:
/// a proxy running sixty times faster than real time, in front of a provider in real time,
/// holds a key the provider refused for the provider's real minute — not for a simulated minute
/// (one real second), after which it would be refused again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_clock_proxy_honors_a_real_time_providers_reset_in_real_time() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(GROQ_MODEL, Limits::rpm(3))
        .clock(Clock::real())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1"]
unknown_limits_in_flight = 0

[[routes]]
model = "fast"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]
max_wait = "2m"
"#,
        mock.url()
    );
    // 2 simulated minutes of max_wait: 2 real seconds.
    let proxy = Proxy::start(
        &config,
        &[("K1", "k1")],
        Clock::scaled(60.0).expect("scale"),
    )
    .await;
    let url = proxy.url();
    let mut statuses = Vec::new();
    let mut retry_after_ms = Vec::new();
    // Six requests over about four real seconds: three fit the provider's minute.
    for i in 0..6 {
        let resp = chat(&url, &chat_body("fast", &format!("q{i}"), 10)).await;
        statuses.push(resp.status().as_u16());
        if let Some(ms) = resp
            .headers()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            retry_after_ms.push(ms);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        mock.stats().responses(429),
        1,
        "one 429 taught the proxy the key's real reset; it did not come back a second early"
    );
    // The clients are told the provider's own wait, in their (real) time: most of a minute.
    assert!(!retry_after_ms.is_empty());
    assert!(
        retry_after_ms
            .iter()
            .all(|ms| (40_000..=61_000).contains(ms)),
        "{retry_after_ms:?}"
    );
}
