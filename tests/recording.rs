//! Traffic recording: one line per client request, with its timing, body (or only its key and
//! token counts) and outcome; never a credential.

use serde_json::json;
use spillway_clock::Clock;
use spillway_mock::MockProvider;
use spillway_tests::*;

fn config(mock: &MockProvider, record: &std::path::Path, bodies: bool) -> String {
    groq_chat_config(
        &mock.url(),
        &format!(
            "[server]\nrecord = {:?}\nrecord_bodies = {bodies}",
            record.display().to_string()
        ),
    )
}

#[tokio::test]
async fn every_request_is_recorded_with_its_outcome_and_no_credentials() {
    let mock = MockProvider::builder()
        .key("gsk_recording_test_key_0123456789")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traffic.jsonl");
    let proxy = Proxy::start(
        &config(&mock, &path, true),
        &[("K1", "gsk_recording_test_key_0123456789")],
        Clock::real(),
    )
    .await;
    let plain = json!({"model": "chat", "messages": [{"role": "user", "content": "one"}], "max_tokens": 20, "temperature": 0});
    let mut streamed = plain.clone();
    streamed["stream"] = json!(true);
    assert_eq!(chat(&proxy.url(), &plain).await.status(), 200);
    assert_eq!(chat(&proxy.url(), &plain).await.status(), 200);
    chat(&proxy.url(), &streamed).await.text().await.unwrap();
    assert_eq!(
        chat(&proxy.url(), &chat_body("nope", "x", 5))
            .await
            .status(),
        404
    );
    proxy.shutdown().await;

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("gsk_"), "a key leaked into the recording");
    let lines = spillway::record::read(&path).expect("the recording reads back");
    assert_eq!(
        lines.len(),
        3,
        "the unknown model never reached routing: {text}"
    );
    assert!(lines.windows(2).all(|w| w[0].t <= w[1].t), "in time order");
    assert_eq!(lines[0].outcome.cache.as_deref(), Some("miss"));
    assert_eq!(lines[0].outcome.provider.as_deref(), Some("groq"));
    assert_eq!(lines[0].outcome.key.as_deref(), Some("groq#1"));
    assert!(lines[0].outcome.usage.is_some());
    assert_eq!(lines[1].outcome.cache.as_deref(), Some("hit"));
    assert!(lines[2].stream);
    assert_eq!(
        lines[0].body.as_ref().unwrap()["messages"][0]["content"],
        "one"
    );
    assert_eq!(lines[0].key, lines[1].key);
    assert!(lines[0].prompt_tokens > 0 && lines[0].max_tokens == 20);
}

#[tokio::test]
async fn without_bodies_only_keys_and_token_counts_are_recorded() {
    let mock = MockProvider::builder().key("k1").start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traffic.jsonl");
    let proxy = Proxy::start(&config(&mock, &path, false), &[("K1", "k1")], Clock::real()).await;
    chat(&proxy.url(), &chat_body("chat", "a secret prompt", 10)).await;
    proxy.shutdown().await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("a secret prompt"));
    let lines = spillway::record::read(&path).unwrap();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].body.is_none());
    assert_eq!(lines[0].key.len(), 64);
}
