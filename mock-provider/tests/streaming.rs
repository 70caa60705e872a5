//! Streams: Groq's chunk shapes, the same text and usage as the plain answer, and cut streams
//! that say why.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use spillway_mock::{Clock, Fault, FaultRule, Faults, MockProvider, Trigger};

/// The `data:` payloads of an SSE body.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn streamed(mut body: Value, include_usage: bool) -> Value {
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

#[tokio::test]
async fn chunks_reassemble_into_the_plain_reply_and_usage_agrees() {
    let mock = MockProvider::builder().key("k1").start().await;
    let mut body = chat_body(MODEL, "tell me about rivers");
    body["max_tokens"] = json!(500);
    let plain: Value = chat(&mock.url(), "k1", &body).await.json().await.unwrap();
    let resp = chat(&mock.url(), "k1", &streamed(body, true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "text/event-stream");
    let text = resp.text().await.unwrap();
    let events = events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("each chunk is JSON"))
        .collect();
    assert!(
        chunks[0]["x_groq"]["id"]
            .as_str()
            .unwrap()
            .starts_with("req_")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let reassembled: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        reassembled,
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    // The last content chunk: empty delta, finish reason, x_groq.usage.
    let last_content = &chunks[chunks.len() - 2];
    assert_eq!(last_content["choices"][0]["delta"], json!({}));
    assert_eq!(last_content["choices"][0]["finish_reason"], "stop");
    let usage = &last_content["x_groq"]["usage"];
    for field in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(usage[field], plain["usage"][field], "{field}");
    }
    // With include_usage, an extra chunk with no choices and a top-level usage.
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"]["total_tokens"],
        plain["usage"]["total_tokens"]
    );
}

#[tokio::test]
async fn without_include_usage_there_is_no_usage_chunk() {
    let mock = MockProvider::builder().key("k1").start().await;
    let text = chat(&mock.url(), "k1", &streamed(chat_body(MODEL, "q"), false))
        .await
        .text()
        .await
        .unwrap();
    assert!(!events(&text).iter().any(|e| e.contains("\"choices\":[]")));
}

#[tokio::test]
async fn a_cut_stream_says_why_in_x_groq_error_and_never_sends_done() {
    let faults = Faults::none().with_rule(FaultRule {
        fault: Fault::CutStream { after_chunks: 2 },
        trigger: Trigger::Probability(1.0),
        model: None,
    });
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let mut resp = chat(&mock.url(), "k1", &streamed(chat_body(MODEL, "q"), false)).await;
    assert_eq!(resp.status(), 200);
    let mut received = String::new();
    let outcome = loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => received.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(None) => break "clean end",
            Err(_) => break "error",
        }
    };
    assert_eq!(outcome, "error", "the body must end abruptly: {received}");
    let events = events(&received);
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let content_chunks = events
        .iter()
        .filter(|e| e.contains("\"delta\":{\"content\""))
        .count();
    assert_eq!(content_chunks, 2, "{received}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["x_groq"]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
}

#[tokio::test]
async fn time_to_first_token_and_pace_delay_the_stream() {
    let faults = Faults {
        time_to_first_token: Some(Duration::from_millis(300)),
        tokens_per_second: Some(1000.0),
        ..Faults::none()
    };
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .clock(Clock::real())
        .start()
        .await;
    let started = mock.clock().now();
    let text = chat(&mock.url(), "k1", &streamed(chat_body(MODEL, "q"), false))
        .await
        .text()
        .await
        .unwrap();
    assert!(mock.clock().now() - started >= Duration::from_millis(300));
    assert!(events(&text).last().is_some_and(|e| e == "[DONE]"));
}
