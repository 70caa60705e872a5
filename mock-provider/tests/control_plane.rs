//! `/_mock/stats`, `/_mock/journal` and `/_mock/reset`: the independent witness.

mod common;

use common::*;
use serde_json::Value;
use spillway_mock::{Clock, Limits, MockProvider, Stats};

#[tokio::test]
async fn stats_report_admissions_statuses_and_window_peaks() {
    let mock = MockProvider::builder()
        .keys(["k1", "k2"])
        .limits(MODEL, Limits::rpm(2).with_tpm(100_000))
        .clock(Clock::manual())
        .start()
        .await;
    for _ in 0..3 {
        chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    }
    chat(&mock.url(), "k2", &chat_body(MODEL, "x")).await;
    let stats: Stats = client()
        .get(format!("{}/_mock/stats", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("stats parse into the library's type");
    assert_eq!(stats, mock.stats());
    let k1 = stats.key_model("k1", MODEL).unwrap();
    assert_eq!(
        (k1.requests_admitted, k1.responses(200), k1.responses(429)),
        (2, 2, 1)
    );
    assert_eq!(k1.windows["minute"].peak_requests, 2);
    assert_eq!(k1.windows["minute"].seconds, 60);
    assert!(stats.peaks_within_limits());
    assert_eq!(stats.key_model("k2", MODEL).unwrap().requests_admitted, 1);
    assert_eq!((stats.requests, stats.responses(429)), (4, 1));
}

#[tokio::test]
async fn the_journal_lists_requests_in_order_with_retry_counts_and_retry_after() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(1))
        .clock(Clock::manual())
        .start()
        .await;
    chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    client()
        .post(format!("{}/chat/completions", mock.url()))
        .bearer_auth("k1")
        .header("x-stainless-retry-count", "2")
        .json(&chat_body(MODEL, "x"))
        .send()
        .await
        .unwrap();
    let journal: Value = client()
        .get(format!("{}/_mock/journal", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = journal["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[0]["key"], "k1");
    assert_eq!(entries[0]["model"], MODEL);
    assert!(entries[0]["tokens"].as_u64().unwrap() > 0);
    assert_eq!(entries[1]["status"], 429);
    assert_eq!(entries[1]["retry_count"], 2);
    assert_eq!(entries[1]["retry_after"], 60);
    let since: Value = client()
        .get(format!("{}/_mock/journal?since=1", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(since["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn reset_forgets_windows_counters_and_journal() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(1))
        .clock(Clock::manual())
        .start()
        .await;
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        200
    );
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        429
    );
    let reset = client()
        .post(format!("{}/_mock/reset", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    assert!(mock.journal().is_empty());
    assert_eq!(mock.stats().requests, 0);
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        200
    );
}
