//! Bad input gets Groq's status and body, never a panic or a hang: a few cases checked body for
//! body, then a table of malformed requests of every kind (bodies, fields, headers, methods,
//! framing, sizes, slow clients, the control plane), sent as raw bytes, each bounded in time and
//! followed by a valid request the mock must still serve.

mod common;
#[path = "bad_input/table.rs"]
mod table;

use std::time::Duration;

use common::raw::{self, Reply};
use common::*;
use serde_json::{Value, json};
use spillway_mock::MockProvider;
use table::{Case, Expect, LIMIT, Sending};
use tokio::io::AsyncWriteExt;

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

/// The table mock's read timeout.
const READ_TIMEOUT: Duration = Duration::from_millis(400);
/// No case may take longer than this to settle.
const CASE_BOUND: Duration = Duration::from_secs(5);

/// Sends one case and checks what came back; `Err` says what was wrong.
async fn run_case(addr: std::net::SocketAddr, case: &Case) -> Result<(), String> {
    let head = case.bytes.starts_with(b"HEAD ");
    let stream = raw::send(addr, &case.bytes).await;
    let (mut read, mut write) = stream.into_split();
    let _trickler = match case.sending {
        Sending::All => {
            // Keep the write side open for the whole case.
            tokio::spawn(async move {
                tokio::time::sleep(CASE_BOUND).await;
                drop(write);
            })
        }
        Sending::ThenEof => {
            write
                .shutdown()
                .await
                .map_err(|e| format!("shutdown: {e}"))?;
            tokio::spawn(async {})
        }
        Sending::ThenTrickle(tail) => raw::trickle(write, tail, Duration::from_millis(20)),
    };
    let reply = raw::read_reply(&mut read, head, CASE_BOUND).await;
    match (case.expect, reply) {
        (Expect::ClosedUnanswered, Reply::Closed { partial }) if partial.is_empty() => Ok(()),
        (Expect::Bare(status), Reply::Answer(a)) => {
            if a.status != status || !a.body.is_empty() {
                return Err(format!("expected a bare {status}, got {a:?}"));
            }
            if !raw::closes_within(&mut read, CASE_BOUND).await {
                return Err("the connection stayed open after a framing error".into());
            }
            Ok(())
        }
        (Expect::Head(status), Reply::Answer(a)) if a.status == status => Ok(()),
        (Expect::Completion, Reply::Answer(a)) => match a.json() {
            Some(v) if a.status == 200 && v["object"] == "chat.completion" => Ok(()),
            _ => Err(format!(
                "expected a completion, got {} {}",
                a.status,
                a.text()
            )),
        },
        (Expect::Embeddings, Reply::Answer(a)) => match a.json() {
            Some(v) if a.status == 200 && v["object"] == "list" => Ok(()),
            _ => Err(format!(
                "expected embeddings, got {} {}",
                a.status,
                a.text()
            )),
        },
        (
            Expect::Error {
                status,
                code,
                param,
            },
            Reply::Answer(a),
        ) => {
            let shown = format!("{} {}", a.status, a.text());
            if a.status != status {
                return Err(format!("expected {status}, got {shown}"));
            }
            if a.header("content-type") != Some("application/json") {
                return Err(format!("not labelled JSON: {:?}", a.headers));
            }
            let Some(body) = a.json() else {
                return Err(format!("not JSON: {shown}"));
            };
            let err = &body["error"];
            if err["message"].as_str().is_none_or(str::is_empty) || !err["type"].is_string() {
                return Err(format!("not an error object with a message: {shown}"));
            }
            if let Some(code) = code
                && err["code"] != code
            {
                return Err(format!("expected code {code}: {shown}"));
            }
            if let Some(param) = param
                && err["param"] != param
            {
                return Err(format!("expected param {param}: {shown}"));
            }
            Ok(())
        }
        (expect, reply) => Err(format!("expected {expect:?}, got {reply:?}")),
    }
}

#[tokio::test]
async fn every_malformed_request_gets_a_bounded_answer_and_the_mock_keeps_serving() {
    let cases = table::cases();
    assert!(cases.len() >= 90, "only {} cases", cases.len());
    let mock = MockProvider::builder()
        .key("k1")
        .max_body_bytes(LIMIT)
        .read_timeout(READ_TIMEOUT)
        .start()
        .await;
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(why) = run_case(mock.addr(), case).await {
            failures.push(format!("{}: {why}", case.name));
        }
        // Whatever the case did, the mock still serves a valid request.
        let after = tokio::time::timeout(
            CASE_BOUND,
            chat(&mock.url(), "k1", &chat_body(MODEL, "still there?")),
        )
        .await;
        match after {
            Ok(resp) if resp.status() == 200 => {}
            other => failures.push(format!(
                "{}: the next valid request was not served: {other:?}",
                case.name
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
