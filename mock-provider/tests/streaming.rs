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

/// Reads `resp` until `enough` holds for what arrived (within 5 s), and returns it.
async fn read_until(resp: &mut reqwest::Response, enough: impl Fn(&str) -> bool) -> String {
    let mut received = String::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !enough(&received) {
            match resp.chunk().await {
                Ok(Some(bytes)) => received.push_str(&String::from_utf8_lossy(&bytes)),
                other => panic!("the stream ended early ({other:?}) after {received:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the first chunks never came: {received:?}"));
    received
}

fn content_chunks(received: &str) -> usize {
    events(received)
        .iter()
        .filter(|e| e.contains("\"delta\":{\"content\""))
        .count()
}

fn stall_after(after_chunks: u32) -> Faults {
    Faults::none().with_rule(FaultRule {
        fault: Fault::StallStream { after_chunks },
        trigger: Trigger::Probability(1.0),
        model: None,
    })
}

#[tokio::test]
async fn a_stalled_stream_sends_its_first_chunks_then_nothing_and_stays_open() {
    let mock = MockProvider::builder()
        .key("k1")
        .faults(stall_after(3))
        .start()
        .await;
    let mut resp = chat(&mock.url(), "k1", &streamed(chat_body(MODEL, "q"), false)).await;
    assert_eq!(resp.status(), 200);
    let received = read_until(&mut resp, |r| content_chunks(r) >= 3).await;
    assert!(
        received.contains("\"role\":\"assistant\""),
        "the role chunk comes first: {received}"
    );
    // Nothing more for 500 ms: no chunk, no end of the body, no error.
    let next = tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await;
    assert!(next.is_err(), "expected silence, got {next:?}");
    assert_eq!(content_chunks(&received), 3, "{received}");
    assert!(!received.contains("[DONE]"));
    let entry = &mock.journal()[0];
    assert_eq!(
        (entry.status, entry.fault.as_deref()),
        (200, Some("stall_stream"))
    );
    assert_eq!(
        mock.stats()
            .key_model("k1", MODEL)
            .map(|s| s.requests_admitted),
        Some(1),
        "a stalled request is counted"
    );
}

#[tokio::test]
async fn shutdown_ends_a_stalled_stream_within_its_grace() {
    let mock = MockProvider::builder()
        .key("k1")
        .faults(stall_after(1))
        .start()
        .await;
    let mut resp = chat(&mock.url(), "k1", &streamed(chat_body(MODEL, "q"), false)).await;
    read_until(&mut resp, |r| content_chunks(r) >= 1).await;
    let clock = Clock::real();
    let started = clock.now();
    // Well under the server's 5 s grace: the stall is released, not waited out.
    tokio::time::timeout(Duration::from_secs(2), mock.shutdown())
        .await
        .expect("shutdown releases the stalled stream");
    assert!(clock.now() - started < Duration::from_secs(2));
    let end = tokio::time::timeout(Duration::from_secs(2), resp.chunk())
        .await
        .expect("the body ends once the mock stops");
    assert!(
        end.is_err(),
        "the body breaks, it does not end cleanly: {end:?}"
    );
}

#[tokio::test]
async fn invalid_json_in_a_stream_garbles_one_chunk_and_carries_on_to_done() {
    let faults = Faults::none().with_rule(FaultRule {
        fault: Fault::InvalidJson,
        trigger: Trigger::Probability(1.0),
        model: None,
    });
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let mut body = chat_body(MODEL, "tell me about rivers");
    body["max_tokens"] = json!(500);
    // Replies depend only on (model, messages, seed): a mock without faults gives the text.
    let clean = MockProvider::builder().key("k1").start().await;
    let plain: Value = chat(&clean.url(), "k1", &body).await.json().await.unwrap();
    let text = chat(&mock.url(), "k1", &streamed(body, false))
        .await
        .text()
        .await
        .unwrap();
    let events = events(&text);
    let parsed: Vec<Result<Value, _>> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(e))
        .collect();
    let bad: Vec<usize> = parsed
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_err())
        .map(|(i, _)| i)
        .collect();
    // Exactly one event is not JSON (besides [DONE]): the third, where the second word was.
    assert_eq!(bad, vec![2, events.len() - 1], "{text}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events[2].starts_with("{\"id\":\"chatcmpl-")
            && events[2].ends_with("\"delta\":{\"content\":"),
        "{}",
        events[2]
    );
    // Every other chunk is as usual: the text is the plain reply without its second word.
    let words: Vec<&str> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let full = plain["choices"][0]["message"]["content"].as_str().unwrap();
    let mut expected: Vec<&str> = full.split_inclusive(' ').collect();
    expected.remove(1);
    assert_eq!(words.concat(), expected.concat());
}
