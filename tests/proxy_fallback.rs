//! Fallback is invisible: outages move requests to the next target, a refused key is disabled,
//! and a recovered provider takes traffic again.

use std::time::Duration;

use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::{Faults, Limits, MockProvider};
use spillway_tests::*;

const A_MODEL: &str = "llama-3.1-8b-instant";
const B_MODEL: &str = "llama3.1-8b";

fn two_provider_config(a: &MockProvider, b: &MockProvider, extra_a: &str) -> String {
    format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:A1"]
cooldown = "20s"
max_cooldown = "40s"
{extra_a}

[[providers]]
name = "b"
base_url = "{}"
keys = ["env:B1"]

[[routes]]
model = "chat"
targets = [
  {{ provider = "a", model = "{A_MODEL}" }},
  {{ provider = "b", model = "{B_MODEL}" }},
]
max_wait = "30s"
"#,
        a.url(),
        b.url()
    )
}

async fn b_mock(clock: &Clock) -> MockProvider {
    MockProvider::builder()
        .key("b1")
        .model(B_MODEL)
        .dialect(spillway_mock::Dialect::Cerebras)
        .clock(clock.clone())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_at_a_is_served_by_b_then_a_cools_down_and_recovers() {
    let clock = Clock::scaled(60.0).expect("scale");
    let a = MockProvider::builder()
        .key("a1")
        .model(A_MODEL)
        .faults(Faults::always_status(503))
        .clock(clock.clone())
        .start()
        .await;
    let b = b_mock(&clock).await;
    let proxy = Proxy::start(
        &two_provider_config(&a, &b, ""),
        &[("A1", "a1"), ("B1", "b1")],
        clock.clone(),
    )
    .await;
    for i in 0..10 {
        let resp = chat(&proxy.url(), &chat_body("chat", &format!("q{i}"), 10)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-spillway-provider"), "b");
        assert_eq!(header(&resp, "x-spillway-model"), B_MODEL);
    }
    // A failed once, then cooled down: far fewer attempts than requests.
    let a_attempts = a.stats().requests;
    assert!(
        (1..=3).contains(&a_attempts),
        "A was tried {a_attempts} times"
    );
    let first = chat(&proxy.url(), &chat_body("chat", "x", 10)).await;
    assert_eq!(header(&first, "x-spillway-provider"), "b");

    a.set_faults(Faults::none());
    // Within its (scaled) max cooldown, a probe finds A healthy and traffic returns to it.
    let mut back_on_a = false;
    for i in 0..200 {
        let resp = chat(&proxy.url(), &chat_body("chat", &format!("r{i}"), 10)).await;
        assert_eq!(resp.status(), 200);
        if header(&resp, "x-spillway-provider") == "a" {
            back_on_a = true;
            break;
        }
        clock.sleep(Duration::from_millis(500)).await;
    }
    assert!(back_on_a, "A never recovered");
    let after = chat(&proxy.url(), &chat_body("chat", "after", 10)).await;
    assert_eq!(
        header(&after, "x-spillway-provider"),
        "a",
        "the circuit closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_one_key_moves_to_the_next_key_then_the_next_target_at_once() {
    let clock = Clock::scaled(60.0).expect("scale");
    // The proxy does not know A's limit, so A's second request gets a 429.
    let a = MockProvider::builder()
        .keys(["a1", "a2"])
        .limits(A_MODEL, Limits::rpm(1))
        .clock(clock.clone())
        .start()
        .await;
    let b = b_mock(&clock).await;
    let config = two_provider_config(&a, &b, "").replace(
        r#"keys = ["env:A1"]"#,
        "keys = [\"env:A1\", \"env:A2\"]\nunknown_limits_in_flight = 0",
    );
    let proxy = Proxy::start(
        &config,
        &[("A1", "a1"), ("A2", "a2"), ("B1", "b1")],
        clock.clone(),
    )
    .await;
    let mut served_by = Vec::new();
    for i in 0..4 {
        let resp = chat(&proxy.url(), &chat_body("chat", &format!("q{i}"), 10)).await;
        assert_eq!(resp.status(), 200, "the client never sees the 429");
        served_by.push(format!(
            "{} {}",
            header(&resp, "x-spillway-key"),
            header(&resp, "x-spillway-attempts")
        ));
    }
    // a#1, a#2 fill their one-per-minute limit; then the third request meets a 429 on each key
    // (the limit is unknown until then) and lands on B; the fourth goes straight to B.
    assert_eq!(served_by[0], "a#1 1");
    assert_eq!(served_by[1], "a#2 1", "the key used least goes next");
    assert_eq!(served_by[2], "b#1 3", "{served_by:?}");
    assert_eq!(served_by[3], "b#1 1", "{served_by:?}");
    assert_eq!(
        a.stats().responses(429),
        2,
        "one 429 per key, then the limit is known"
    );
}

#[tokio::test]
async fn a_key_answering_401_is_disabled_and_the_others_carry_on() {
    let clock = Clock::real();
    let a = MockProvider::builder()
        .keys(["good"])
        .model(A_MODEL)
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:REVOKED", "env:GOOD"]
unknown_limits_in_flight = 0

[[routes]]
model = "chat"
targets = [{{ provider = "a", model = "{A_MODEL}" }}]
"#,
        a.url()
    );
    let proxy = Proxy::start(
        &config,
        &[("REVOKED", "revoked-key"), ("GOOD", "good")],
        clock,
    )
    .await;
    for i in 0..6 {
        let resp = chat(&proxy.url(), &chat_body("chat", &format!("q{i}"), 10)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-spillway-key"), "a#2");
    }
    let unauthorized: Vec<_> = a
        .journal()
        .into_iter()
        .filter(|e| e.status == 401)
        .collect();
    assert_eq!(
        unauthorized.len(),
        1,
        "the revoked key was tried once, then disabled"
    );
}

#[tokio::test]
async fn provider_refusals_of_the_request_itself_reach_the_client_unchanged() {
    let clock = Clock::real();
    let a = MockProvider::builder()
        .key("a1")
        .model(A_MODEL)
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:A1"]

[[routes]]
model = "chat"
targets = [{{ provider = "a", model = "{A_MODEL}" }}]
"#,
        a.url()
    );
    let proxy = Proxy::start(&config, &[("A1", "a1")], clock).await;
    let mut body = chat_body("chat", "x", 10);
    body["temperature"] = serde_json::json!(9);
    let resp = chat(&proxy.url(), &body).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(
        err["error"]["param"], "temperature",
        "the mock's own body: {err}"
    );
    assert_eq!(a.stats().requests, 1, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_a_skips_to_b_without_waiting() {
    let clock = Clock::scaled(60.0).expect("scale");
    let a = MockProvider::builder()
        .key("a1")
        .limits(A_MODEL, Limits::tpm(200))
        .clock(clock.clone())
        .start()
        .await;
    let b = b_mock(&clock).await;
    let proxy = Proxy::start(
        &two_provider_config(&a, &b, ""),
        &[("A1", "a1"), ("B1", "b1")],
        clock.clone(),
    )
    .await;
    let big = "a long question about rivers and their deltas ".repeat(40);
    let resp = chat(&proxy.url(), &chat_body("chat", &big, 10)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-spillway-provider"), "b");
    assert_eq!(
        a.stats().responses(413),
        1,
        "A answered 413 Request too large once"
    );
    // The limit was learned from A's message: the next large request skips A entirely.
    let resp = chat(
        &proxy.url(),
        &chat_body("chat", &big.replace("rivers", "lakes"), 10),
    )
    .await;
    assert_eq!(header(&resp, "x-spillway-provider"), "b");
    assert_eq!(header(&resp, "x-spillway-attempts"), "1");
    assert_eq!(a.stats().requests, 1);
}
