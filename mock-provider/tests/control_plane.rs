//! `/_mock/stats`, `/_mock/journal` and `/_mock/reset`: the independent witness.

mod common;

use common::*;
use serde_json::Value;
use spillway_mock::mask::{mask_key, mask_stats};
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
    assert_eq!(
        stats,
        mask_stats(mock.stats()),
        "the same figures, keys masked"
    );
    let stats = mock.stats();
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
    assert_eq!(entries[0]["key"], mask_key("k1"));
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

/// Every control route, and a path and a method the control plane does not have, with the
/// status each gives to a caller that passed the gate.
fn control_requests(base: &str) -> Vec<(reqwest::RequestBuilder, u16)> {
    let c = client();
    vec![
        (c.get(format!("{base}/_mock/stats")), 200),
        (c.get(format!("{base}/_mock/journal?since=0")), 200),
        (c.post(format!("{base}/_mock/reset")), 204),
        (c.get(format!("{base}/_mock/faults")), 200),
        (
            c.put(format!("{base}/_mock/faults"))
                .body(r#"{"latency":"1ms"}"#),
            200,
        ),
        (c.get(format!("{base}/_mock/nothing-here")), 404),
        (c.delete(format!("{base}/_mock/stats")), 405),
    ]
}

#[tokio::test]
async fn with_an_admin_token_every_control_request_needs_it() {
    let mock = MockProvider::builder()
        .key("k1")
        .admin_token("s3cret")
        .start()
        .await;
    let base = mock.base_url();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("s3cret"),
    ] {
        for (req, _) in control_requests(&base) {
            let req = match auth {
                Some(a) => req.header("authorization", a),
                None => req,
            };
            let resp = req.send().await.expect("answers");
            let what = format!("{resp:?} with {auth:?}");
            assert_eq!(resp.status(), 401, "{what}");
            let err: Value = resp.json().await.expect("a JSON error");
            assert_eq!(err["error"]["type"], "invalid_request_error", "{what}");
            assert_eq!(err["error"]["code"], "invalid_admin_token", "{what}");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("Authorization: Bearer")),
                "{what}: {err}"
            );
        }
    }
    for (req, expected) in control_requests(&base) {
        let resp = req.bearer_auth("s3cret").send().await.expect("answers");
        assert_eq!(resp.status(), expected, "{resp:?}");
    }
    // The faults PUT above went through.
    assert_eq!(
        mock.state().faults.load().latency,
        Some(std::time::Duration::from_millis(1))
    );
}

#[tokio::test]
async fn without_an_admin_token_the_control_plane_stays_open() {
    let mock = MockProvider::builder().key("k1").start().await;
    for (req, expected) in control_requests(&mock.base_url()) {
        let resp = req.send().await.expect("answers");
        assert_eq!(resp.status(), expected, "{resp:?}");
    }
}

#[tokio::test]
async fn the_rust_handle_keeps_working_when_an_admin_token_is_set() {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(1))
        .admin_token("s3cret")
        .clock(Clock::manual())
        .start()
        .await;
    chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    let stats = mock.stats();
    assert_eq!(
        stats.key_model("k1", MODEL).map(|s| s.requests_admitted),
        Some(1)
    );
    assert_eq!(stats.responses(429), 1);
    let journal = mock.journal();
    assert_eq!(journal.len(), 2);
    assert_eq!(
        journal[0].key.as_deref(),
        Some("k1"),
        "the Rust API shows keys whole"
    );
    mock.set_faults(spillway_mock::Faults::always_status(503));
    mock.reset();
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        503
    );
    assert_eq!(mock.journal().len(), 1);
}

/// The body of a control-plane GET, as text, with its status.
async fn get_text(url: String, token: Option<&str>) -> (u16, String) {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("answers");
    (resp.status().as_u16(), resp.text().await.expect("a body"))
}

#[tokio::test]
async fn keys_are_masked_in_stats_and_journal_unless_the_admin_asks_for_them_whole() {
    let key = "mock-key-alpha";
    let mock = MockProvider::builder()
        .key(key)
        .admin_token("s3cret")
        .clock(Clock::manual())
        .start()
        .await;
    chat(&mock.url(), key, &chat_body(MODEL, "x")).await;
    let base = mock.base_url();
    for path in ["stats", "journal", "stats?keys=masked", "journal?since=0"] {
        let (status, body) = get_text(format!("{base}/_mock/{path}"), Some("s3cret")).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(key), "{path} shows the key whole: {body}");
        assert!(body.contains(&mask_key(key)), "{path}: {body}");
        assert!(mask_key(key).starts_with("mock…"));
    }
    for path in ["stats?keys=full", "journal?keys=full&since=0"] {
        let (status, body) = get_text(format!("{base}/_mock/{path}"), Some("s3cret")).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body.contains(&format!("\"{key}\"")), "{path}: {body}");
    }
    let full: Stats = client()
        .get(format!("{base}/_mock/stats?keys=full"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full, mock.stats());
}

#[tokio::test]
async fn whole_keys_without_a_configured_admin_token_are_refused_with_403() {
    let mock = MockProvider::builder().key("mock-key-alpha").start().await;
    let base = mock.base_url();
    for path in ["stats?keys=full", "journal?keys=full"] {
        let (status, body) = get_text(format!("{base}/_mock/{path}"), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        let err: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(err["error"]["code"], "permission_denied");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("configure `admin_token`")),
            "{err}"
        );
        // A token that is sent but not configured changes nothing.
        let (status, _) = get_text(format!("{base}/_mock/{path}"), Some("guess")).await;
        assert_eq!(status, 403, "{path}");
    }
    for path in ["stats?keys=all", "journal?since=abc"] {
        let (status, body) = get_text(format!("{base}/_mock/{path}"), None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let err: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{path}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}
