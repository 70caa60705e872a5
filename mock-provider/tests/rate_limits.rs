//! Limits as Groq enforces them, seen over HTTP: headers on 200s and 429s, retry-after that
//! tells the truth, token and daily limits, and scaled time that behaves like real time.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use spillway_mock::{Clock, Limits, MockProvider};

#[tokio::test]
async fn every_response_carries_the_six_groq_headers_with_their_windows() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(2).with_rpd(100).with_tpm(10_000))
        .clock(Clock::manual())
        .start()
        .await;
    let body = chat_body(MODEL, "hello there");
    let ok = chat(&mock.url(), "k1", &body).await;
    assert_eq!(ok.status(), 200);
    let tokens: u64 = {
        let v: Value =
            serde_json::from_str(&chat(&mock.url(), "k1", &body).await.text().await.unwrap())
                .unwrap();
        v["usage"]["total_tokens"].as_u64().unwrap()
    };
    // Requests headers report the day window, tokens headers the minute window.
    assert_eq!(header(&ok, "x-ratelimit-limit-requests"), "100");
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), "99");
    assert_eq!(header(&ok, "x-ratelimit-reset-requests"), "24h0m0s");
    assert_eq!(header(&ok, "x-ratelimit-limit-tokens"), "10000");
    assert_eq!(
        header(&ok, "x-ratelimit-remaining-tokens"),
        (10_000 - tokens).to_string()
    );
    assert_eq!(header(&ok, "x-ratelimit-reset-tokens"), "1m0s");
    assert!(
        ok.headers().get("retry-after").is_none(),
        "retry-after only on 429"
    );

    mock.clock().advance(Duration::from_millis(7_660));
    let limited = chat(&mock.url(), "k1", &body).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "x-ratelimit-remaining-requests"), "98");
    assert_eq!(
        header(&limited, "x-ratelimit-reset-requests"),
        "23h59m52.34s"
    );
    assert_eq!(header(&limited, "x-ratelimit-reset-tokens"), "52.34s");
    assert_eq!(header(&limited, "retry-after"), "53");
    let err: Value = limited.json().await.unwrap();
    assert_eq!(err["error"]["type"], "requests");
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "Rate limit reached for model `{MODEL}` in organization `org_"
        )),
        "{msg}"
    );
    assert!(
        msg.contains("service tier `on_demand` on requests per minute (RPM): Limit 2, Used 2, Requested 1. Please try again in 52.34s."),
        "{msg}"
    );
}

#[tokio::test]
async fn windows_the_mock_is_not_given_are_not_reported() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(5))
        .start()
        .await;
    let ok = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    assert_eq!(ok.status(), 200);
    for name in [
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(
            ok.headers().get(name).is_none(),
            "{name} reported without a limit"
        );
    }
}

#[tokio::test]
async fn the_request_after_the_limit_gets_429_and_succeeds_after_retry_after() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(3))
        .time_scale(60.0)
        .start()
        .await;
    let body = chat_body(MODEL, "burst");
    for _ in 0..3 {
        assert_eq!(chat(&mock.url(), "k1", &body).await.status(), 200);
    }
    let limited = chat(&mock.url(), "k1", &body).await;
    assert_eq!(limited.status(), 429);
    // Wall-clock time on the wire: the key frees within a simulated minute, under a real second.
    let retry_after: u64 = header(&limited, "retry-after").parse().expect("a number");
    assert_eq!(retry_after, 1, "retry-after {retry_after}");
    let err: Value = limited.json().await.unwrap();
    let message = err["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("Please try again in ") && message.contains("ms."),
        "a wait under a real second, in milliseconds: {message}"
    );
    // Wait exactly what we were told, in real time.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(chat(&mock.url(), "k1", &body).await.status(), 200);
    let stats = mock.stats();
    let s = stats.key_model("k1", MODEL).expect("counted");
    assert_eq!((s.requests_admitted, s.responses(429)), (4, 1));
    assert_eq!(s.windows["minute"].peak_requests, 3);
}

#[tokio::test]
async fn large_prompts_trip_tokens_per_minute_while_requests_remain() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(30).with_tpm(1_000))
        .clock(Clock::manual())
        .start()
        .await;
    let big = "x".repeat(4 * 400); // 400 prompt tokens
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, &big))
            .await
            .status(),
        200
    );
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, &big))
            .await
            .status(),
        200
    );
    let limited = chat(&mock.url(), "k1", &chat_body(MODEL, &big)).await;
    assert_eq!(limited.status(), 429);
    let err: Value = limited.json().await.unwrap();
    assert_eq!(err["error"]["type"], "tokens");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("on tokens per minute (TPM): Limit 1000, Used"),
        "{msg}"
    );
    // A small request still fits: requests remain.
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "hi"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_request_larger_than_the_whole_token_limit_gets_413() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::tpm(500))
        .start()
        .await;
    let resp = chat(&mock.url(), "k1", &chat_body(MODEL, &"y".repeat(4 * 600))).await;
    assert_eq!(resp.status(), 413);
    assert!(
        resp.headers().get("retry-after").is_none(),
        "waiting cannot help"
    );
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("Request too large for model `{MODEL}`")),
        "{msg}"
    );
    assert!(msg.contains("Limit 500, Requested"), "{msg}");
}

#[tokio::test]
async fn daily_limits_trip_and_lift_a_day_later() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(100).with_rpd(3))
        .clock(Clock::manual())
        .start()
        .await;
    let body = chat_body(MODEL, "daily");
    for _ in 0..3 {
        assert_eq!(chat(&mock.url(), "k1", &body).await.status(), 200);
        mock.clock().advance(Duration::from_secs(120));
    }
    let limited = chat(&mock.url(), "k1", &body).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = header(&limited, "retry-after").parse().unwrap();
    assert_eq!(
        retry_after,
        86_400 - 360,
        "until the first request of the day leaves"
    );
    let err: Value = limited.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per day (RPD)")
    );
    mock.clock().advance(Duration::from_secs(retry_after));
    assert_eq!(chat(&mock.url(), "k1", &body).await.status(), 200);
}

#[tokio::test]
async fn each_key_has_its_own_windows() {
    let mock = MockProvider::builder()
        .keys(["k1", "k2"])
        .limits(MODEL, Limits::rpm(1))
        .clock(Clock::manual())
        .start()
        .await;
    let body = chat_body(MODEL, "k");
    assert_eq!(chat(&mock.url(), "k1", &body).await.status(), 200);
    assert_eq!(chat(&mock.url(), "k2", &body).await.status(), 200);
    assert_eq!(chat(&mock.url(), "k1", &body).await.status(), 429);
}

/// (clock seconds since start, prompt size in bytes) of a script both clocks play; no request
/// falls within five clock seconds (83 ms of wall time at scale 60) of a window edge.
const SCRIPT: &[(u64, usize)] = &[
    (0, 40),
    (10, 40),
    (20, 2_000),
    (30, 40),
    (40, 40),
    (50, 40),
    (65, 40),
    (75, 40),
];

#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    retry_after: Option<u64>,
    remaining_tokens: String,
}

/// Plays [`SCRIPT`]; also returns how late (on the mock's clock) the latest answer came after
/// its request's scheduled time.
async fn play(mock: &MockProvider, manual: bool) -> (Vec<Seen>, Duration) {
    let mut seen = Vec::new();
    let mut latest = Duration::ZERO;
    let base = mock.clock().now();
    for (at, size) in SCRIPT {
        let target = base + Duration::from_secs(*at);
        if manual {
            let now = mock.clock().now();
            mock.clock().advance(target.saturating_sub(now));
        } else {
            mock.clock().sleep_until(target).await;
        }
        let resp = chat(&mock.url(), "k1", &chat_body(MODEL, &"z".repeat(*size))).await;
        seen.push(Seen {
            status: resp.status().as_u16(),
            retry_after: header(&resp, "retry-after").parse().ok(),
            remaining_tokens: header(&resp, "x-ratelimit-remaining-tokens"),
        });
        latest = latest.max(mock.clock().now().saturating_sub(target));
    }
    (seen, latest)
}

#[tokio::test]
async fn time_scale_sixty_behaves_like_real_time() {
    let limits = Limits::rpm(3).with_tpm(1_200);
    let real_time = MockProvider::builder()
        .key("k1")
        .limits(MODEL, limits)
        .clock(Clock::manual())
        .start()
        .await;
    let (expected, _) = play(&real_time, true).await;
    // The script's requests sit 5 clock seconds (83 ms of wall time) from window edges; on a
    // machine too busy to keep that schedule the comparison means nothing, so such a run is
    // played again (on a fresh mock), at most five times.
    let mut got = None;
    for _ in 0..5 {
        let scaled = MockProvider::builder()
            .key("k1")
            .limits(MODEL, limits)
            .time_scale(60.0)
            .start()
            .await;
        let (seen, late) = play(&scaled, false).await;
        // Each answer takes about 2.3 clock seconds here; within 4 every request is still on
        // its side of every window edge.
        if late <= Duration::from_secs(4) {
            got = Some(seen);
            break;
        }
    }
    let got = got.expect("one of five runs kept the script's schedule");
    assert!(
        expected.iter().any(|s| s.status == 429),
        "the script must hit a limit"
    );
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(
            (g.status, &g.remaining_tokens),
            (e.status, &e.remaining_tokens)
        );
        // Durations on the wire are wall-clock time: the scaled run's retry-after is the real
        // run's divided by 60, rounded up (to whole seconds, at least one).
        match (g.retry_after, e.retry_after) {
            (Some(g), Some(e)) => assert_eq!(g, e.div_ceil(60).max(1), "retry-after {g} vs {e}"),
            (g, e) => assert_eq!(g, e),
        }
    }
}
