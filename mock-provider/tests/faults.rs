//! Injected faults and latency, set in the spec or at run time.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use spillway_mock::{Fault, FaultRule, Faults, MockProvider, Trigger};

fn rule(fault: Fault, trigger: Trigger) -> FaultRule {
    FaultRule {
        fault,
        trigger,
        model: None,
    }
}

#[tokio::test]
async fn scripted_503s_hit_exactly_the_numbered_requests_with_groqs_body() {
    let faults = Faults::none().with_rule(rule(
        Fault::Status(503),
        Trigger::Requests { from: 2, to: 3 },
    ));
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let resp = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 503 {
            let err: Value = resp.json().await.unwrap();
            assert_eq!(err["error"]["code"], "over_capacity");
            assert!(
                err["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("over capacity")
            );
        }
    }
    assert_eq!(statuses, vec![200, 503, 503, 200, 200]);
    let stats = mock.stats();
    assert_eq!(
        stats.key_model("k1", MODEL).unwrap().requests_admitted,
        3,
        "failed requests are not counted"
    );
}

#[tokio::test]
async fn a_reset_fault_drops_the_connection_before_any_response() {
    let faults = Faults::none().with_rule(rule(Fault::Reset, Trigger::Requests { from: 1, to: 1 }));
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let err = client()
        .post(format!("{}/chat/completions", mock.url()))
        .bearer_auth("k1")
        .json(&chat_body(MODEL, "x"))
        .send()
        .await
        .expect_err("the connection is reset");
    assert!(!err.is_timeout(), "{err:?}");
    // The next request on a fresh connection is served.
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        200
    );
    assert_eq!(mock.journal()[0].fault.as_deref(), Some("reset"));
    assert_eq!(mock.journal()[0].status, 0);
}

#[tokio::test]
async fn invalid_json_comes_with_status_200() {
    let faults = Faults::none().with_rule(rule(Fault::InvalidJson, Trigger::Probability(1.0)));
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let resp = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn hanging_headers_make_the_client_time_out() {
    let faults = Faults::none().with_rule(rule(Fault::Hang, Trigger::Probability(1.0)));
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let err = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.url()))
        .bearer_auth("k1")
        .timeout(Duration::from_millis(300))
        .json(&chat_body(MODEL, "x"))
        .send()
        .await
        .expect_err("no headers ever come");
    assert!(err.is_timeout(), "{err:?}");
    // Shutting down releases the hanging handler instead of waiting on it.
    tokio::time::timeout(Duration::from_secs(3), mock.shutdown())
        .await
        .expect("shutdown does not wait on hanging requests");
}

#[tokio::test]
async fn latency_delays_the_answer() {
    let faults = Faults {
        latency: Some(Duration::from_millis(200)),
        ..Faults::none()
    };
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let started = mock.clock().now();
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        200
    );
    assert!(mock.clock().now() - started >= Duration::from_millis(200));
}

#[tokio::test]
async fn faults_change_at_run_time_through_the_control_plane() {
    let mock = MockProvider::builder().key("k1").start().await;
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        200
    );
    let put = client()
        .put(format!("{}/_mock/faults", mock.base_url()))
        .json(&json!({"rules": [{"fault": "status", "status": 500, "probability": 1.0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        500
    );
    let bad = client()
        .put(format!("{}/_mock/faults", mock.base_url()))
        .json(&json!({"rules": [{"fault": "status", "status": 500, "probability": 1.0, "model": "nope"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    mock.set_faults(Faults::none());
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn per_model_rules_leave_other_models_alone() {
    let faults = Faults::none().with_rule(FaultRule {
        fault: Fault::Status(502),
        trigger: Trigger::Probability(1.0),
        model: Some("openai/gpt-oss-20b".into()),
    });
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body("openai/gpt-oss-20b", "x"))
            .await
            .status(),
        502
    );
    assert_eq!(
        chat(&mock.url(), "k1", &chat_body(MODEL, "x"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_cut_plain_answer_delivers_part_of_the_body_then_breaks() {
    let faults = Faults::none().with_rule(rule(
        Fault::CutStream { after_chunks: 0 },
        Trigger::Probability(1.0),
    ));
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let mut resp = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let ended_with_error = loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => received.extend_from_slice(&bytes),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(ended_with_error);
    assert!(
        received.starts_with(b"{\"id\":\"chatcmpl-"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn a_stalled_plain_answer_sends_headers_and_part_of_the_body_then_nothing() {
    let faults = Faults::none().with_rule(rule(
        Fault::StallStream { after_chunks: 3 },
        Trigger::Probability(1.0),
    ));
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let mut resp = chat(&mock.url(), "k1", &chat_body(MODEL, "x")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), "application/json");
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("part of the body comes")
        .expect("no error")
        .expect("a chunk");
    assert!(
        first.starts_with(b"{\"id\":\"chatcmpl-"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    let next = tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await;
    assert!(next.is_err(), "expected silence, got {next:?}");
    assert_eq!(mock.journal()[0].fault.as_deref(), Some("stall_stream"));
    // The mock's shutdown releases it well within its grace, breaking the body.
    tokio::time::timeout(Duration::from_secs(2), mock.shutdown())
        .await
        .expect("shutdown releases the stalled answer");
    let end = tokio::time::timeout(Duration::from_secs(2), resp.chunk())
        .await
        .expect("the body ends");
    assert!(end.is_err(), "{end:?}");
}

#[tokio::test]
async fn stall_stream_is_set_through_the_control_plane() {
    let mock = MockProvider::builder().key("k1").start().await;
    let put = client()
        .put(format!("{}/_mock/faults", mock.base_url()))
        .json(&json!({"rules": [{"fault": "stall_stream", "after_chunks": 2, "requests": [1, 1]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let set: Value = put.json().await.unwrap();
    assert_eq!(set["rules"][0]["fault"], "stall_stream");
    assert_eq!(set["rules"][0]["after_chunks"], 2);
    assert_eq!(
        mock.state().faults.load().rules[0].fault,
        Fault::StallStream { after_chunks: 2 }
    );
    let bad = client()
        .put(format!("{}/_mock/faults", mock.base_url()))
        .json(&json!({"rules": [{"fault": "stall", "probability": 1.0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stall_stream")),
        "{err}"
    );
}
