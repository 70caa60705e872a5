//! Bad input gets Groq's status and body, never a panic or a hang.

mod common;

use common::*;
use serde_json::{Value, json};
use spillway_mock::MockProvider;

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("error bodies are JSON");
    (status, body)
}

async fn post_raw(url: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("the mock answers")
}

#[tokio::test]
async fn missing_or_unknown_key_is_401_invalid_api_key() {
    let mock = MockProvider::builder().key("k1").start().await;
    let url = format!("{}/chat/completions", mock.url());
    let body = chat_body(MODEL, "hi").to_string();
    for key in [None, Some("not-a-key")] {
        let (status, err) = error_of(post_raw(&url, key, &body).await).await;
        assert_eq!(status, 401);
        assert_eq!(
            err,
            json!({"error": {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}})
        );
    }
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (status, err) = error_of(chat(&mock.url(), "k1", &chat_body("gpt-9", "hi")).await).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "model_not_found");
    assert_eq!(
        err["error"]["message"],
        "The model `gpt-9` does not exist or you do not have access to it."
    );
    let resp = client()
        .get(format!("{}/models/gpt-9", mock.url()))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn malformed_json_and_bad_fields_are_400_naming_the_field() {
    let mock = MockProvider::builder().key("k1").start().await;
    let url = format!("{}/chat/completions", mock.url());
    let cases: &[(&str, Option<&str>)] = &[
        ("{\"model\": ", None),
        ("[1, 2]", None),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (r#"{"model":"llama-3.1-8b-instant"}"#, Some("messages")),
        (r#"{"model":17,"messages":[]}"#, Some("model")),
        (
            r#"{"model":"llama-3.1-8b-instant","messages":{}}"#,
            Some("messages"),
        ),
        (
            r#"{"model":"llama-3.1-8b-instant","messages":[{"role":"wizard","content":"x"}]}"#,
            Some("messages[0].role"),
        ),
        (
            r#"{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"x"}],"temperature":7}"#,
            Some("temperature"),
        ),
    ];
    for (body, param) in cases {
        let (status, err) = error_of(post_raw(&url, Some("k1"), body).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{body}");
        let message = err["error"]["message"].as_str().unwrap();
        match param {
            Some(p) => {
                assert_eq!(err["error"]["param"], *p, "{body}");
                assert!(message.contains(p), "message {message:?} should name {p}");
            }
            None => assert!(message.contains("JSON"), "{message}"),
        }
    }
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_413() {
    let mock = MockProvider::builder()
        .key("k1")
        .max_body_bytes(1024)
        .start()
        .await;
    let resp = chat(&mock.url(), "k1", &chat_body(MODEL, &"a".repeat(4096))).await;
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 413);
    assert_eq!(err["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn wrong_method_is_405_and_unknown_path_is_404() {
    let mock = MockProvider::builder().key("k1").start().await;
    let resp = client()
        .get(format!("{}/chat/completions", mock.url()))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 405);
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let resp = client()
        .post(format!("{}/completions/chat", mock.url()))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(resp).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "unknown_url");
}

#[tokio::test]
async fn flex_tier_at_capacity_is_498_when_configured() {
    let mock = MockProvider::builder()
        .key("k1")
        .flex_capacity_exceeded(true)
        .start()
        .await;
    let mut body = chat_body(MODEL, "hi");
    body["service_tier"] = json!("flex");
    let (status, err) = error_of(chat(&mock.url(), "k1", &body).await).await;
    assert_eq!(status, 498);
    assert_eq!(err["error"]["code"], "capacity_exceeded");
    body["service_tier"] = json!("on_demand");
    assert_eq!(chat(&mock.url(), "k1", &body).await.status(), 200);
}

#[tokio::test]
async fn both_base_paths_serve_the_api() {
    let mock = MockProvider::builder().key("k1").start().await;
    for base in [mock.url(), mock.openai_url()] {
        assert_eq!(
            chat(&base, "k1", &chat_body(MODEL, "hi")).await.status(),
            200
        );
        let models: Value = client()
            .get(format!("{base}/models"))
            .bearer_auth("k1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(models["object"], "list");
        assert!(
            models["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == MODEL)
        );
    }
    let one: Value = client()
        .get(format!("{}/models/openai/gpt-oss-120b", mock.url()))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "openai/gpt-oss-120b");
}
