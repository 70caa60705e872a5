//! Other providers' dialects, so fallback scenarios meet each for real.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use spillway_mock::{Clock, Dialect, Faults, Limits, MockProvider};

async fn limited_pair(
    dialect: Dialect,
    limits: Limits,
) -> (MockProvider, reqwest::Response, reqwest::Response) {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, limits)
        .dialect(dialect)
        .clock(Clock::manual())
        .start()
        .await;
    let ok = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    mock.clock().advance(Duration::from_millis(1500));
    let limited = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    (mock, ok, limited)
}

#[tokio::test]
async fn openai_reports_requests_per_minute() {
    let (_mock, ok, limited) = limited_pair(Dialect::OpenAi, Limits::rpm(1).with_tpm(5000)).await;
    assert_eq!(header(&ok, "x-ratelimit-limit-requests"), "1");
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&ok, "x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(header(&limited, "x-ratelimit-reset-requests"), "58.5s");
    assert_eq!(limited.status(), 429);
    let err: Value = limited.json().await.unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn cerebras_reports_day_and_minute_with_float_second_resets() {
    let (_mock, ok, limited) = limited_pair(
        Dialect::Cerebras,
        Limits::rpm(1).with_rpd(10).with_tpm(5000),
    )
    .await;
    assert_eq!(header(&ok, "x-ratelimit-limit-requests-day"), "10");
    assert_eq!(header(&ok, "x-ratelimit-remaining-requests-day"), "9");
    assert_eq!(header(&ok, "x-ratelimit-reset-requests-day"), "86400");
    assert_eq!(header(&ok, "x-ratelimit-limit-tokens-minute"), "5000");
    assert!(ok.headers().get("x-ratelimit-limit-requests").is_none());
    assert_eq!(header(&limited, "x-ratelimit-reset-tokens-minute"), "58.5");
    assert_eq!(limited.status(), 429);
}

#[tokio::test]
async fn anthropic_reports_rfc3339_resets_and_its_own_bodies() {
    let (mock, ok, limited) =
        limited_pair(Dialect::Anthropic, Limits::rpm(1).with_tpm(50_000)).await;
    assert_eq!(header(&ok, "anthropic-ratelimit-requests-limit"), "1");
    assert_eq!(
        header(&ok, "anthropic-ratelimit-tokens-remaining"),
        "50000",
        "rounded to thousands"
    );
    let reset = header(&ok, "anthropic-ratelimit-requests-reset");
    let at = humantime::parse_rfc3339(&reset).expect("RFC 3339");
    let expected = std::time::UNIX_EPOCH + mock.clock().unix_at(Duration::from_secs(60));
    let diff = at.duration_since(expected).unwrap_or_else(|e| e.duration());
    assert!(diff <= Duration::from_secs(1), "{reset}");
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_some());
    let err: Value = limited.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "rate_limit_error");

    mock.set_faults(Faults::always_status(503));
    let overloaded = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    assert_eq!(overloaded.status(), 529);
    let err: Value = overloaded.json().await.unwrap();
    assert_eq!(err["error"]["type"], "overloaded_error");
}
