//! Streams through the proxy: the same text as going direct; a cut upstream stream becomes an
//! error event and a closed stream, never a hang.

use serde_json::{Value, json};
use spillway_clock::Clock;
use spillway_mock::{Fault, FaultRule, Faults, MockProvider, Trigger};
use spillway_tests::*;

const MODEL: &str = GROQ_MODEL;

fn config(mock: &MockProvider) -> String {
    groq_chat_config(&mock.url(), "")
}

#[tokio::test]
async fn a_stream_through_the_proxy_reassembles_to_the_direct_text() {
    let mock = MockProvider::builder().key("k1").start().await;
    let proxy = Proxy::start(&config(&mock), &[("K1", "k1")], Clock::real()).await;
    let mut body = chat_body("chat", "tell me a story", 300);
    body["stream"] = json!(true);
    let through = chat(&proxy.url(), &body).await;
    assert_eq!(through.status(), 200);
    assert_eq!(header(&through, "content-type"), "text/event-stream");
    assert_eq!(header(&through, "x-spillway-provider"), "groq");
    let through = data_events(&through.text().await.unwrap());
    assert_eq!(through.last().map(String::as_str), Some("[DONE]"));

    let mut direct_body = body.clone();
    direct_body["model"] = json!(MODEL);
    let direct = client()
        .post(format!("{}/chat/completions", mock.url()))
        .bearer_auth("k1")
        .json(&direct_body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let direct = data_events(&direct);
    assert!(!text_of(&through).is_empty());
    assert_eq!(text_of(&through), text_of(&direct));
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event_and_closes() {
    let faults = Faults::none().with_rule(FaultRule {
        fault: Fault::CutStream { after_chunks: 3 },
        trigger: Trigger::Probability(1.0),
        model: None,
    });
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let proxy = Proxy::start(&config(&mock), &[("K1", "k1")], Clock::real()).await;
    let mut body = chat_body("chat", "tell me a story", 300);
    body["stream"] = json!(true);
    let resp = chat(&proxy.url(), &body).await;
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(std::time::Duration::from_secs(10), resp.text())
        .await
        .expect("the stream closes instead of hanging")
        .expect("the proxy's body itself is well formed");
    let events = data_events(&text);
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{text}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
    assert_eq!(text_of(&events).split_inclusive(' ').count(), 3);
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_byte_falls_back() {
    let faults = Faults::none().with_rule(FaultRule {
        fault: Fault::Status(502),
        trigger: Trigger::Probability(1.0),
        model: None,
    });
    let a = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let b = MockProvider::builder().key("k2").start().await;
    let config = format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:K1"]

[[providers]]
name = "b"
base_url = "{}"
keys = ["env:K2"]

[[routes]]
model = "chat"
targets = [{{ provider = "a", model = "{MODEL}" }}, {{ provider = "b", model = "{MODEL}" }}]
"#,
        a.url(),
        b.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1"), ("K2", "k2")], Clock::real()).await;
    let mut body = chat_body("chat", "q", 50);
    body["stream"] = json!(true);
    let resp = chat(&proxy.url(), &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-spillway-provider"), "b");
    assert_eq!(header(&resp, "x-spillway-attempts"), "2");
    let events = data_events(&resp.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}
