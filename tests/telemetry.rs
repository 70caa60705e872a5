//! OpenTelemetry traces: each request is one server span, its upstream attempts client spans
//! under it, sent to an OTLP/HTTP collector (here an in-process stub that keeps what it is
//! sent); a caller's sampled `traceparent` makes the request a child of its trace, an
//! unsampled one is not exported; a collector that is away costs no request.

use std::collections::HashMap;

use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::{Faults, MockProvider};
use spillway_tests::{GROQ_MODEL, Proxy, chat_body, client, header};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A route `chat` whose first target always fails (500) and whose second answers, with traces
/// sent to `collector`.
fn config(first: &MockProvider, second: &MockProvider, collector: &str) -> String {
    format!(
        r#"
[[providers]]
name = "first"
base_url = "{}"
keys = ["env:K1"]
failures_to_open = 100

[[providers]]
name = "second"
base_url = "{}"
keys = ["env:K2"]

[[routes]]
model = "chat"
targets = [
  {{ provider = "first", model = "{GROQ_MODEL}" }},
  {{ provider = "second", model = "{GROQ_MODEL}" }},
]

[telemetry]
otlp_endpoint = "{collector}"
service_name = "spillway-under-test"
"#,
        first.url(),
        second.url()
    )
}

async fn send(proxy: &Proxy, body: &Value, traceparent: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .json(body);
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    request.send().await.expect("answers")
}

/// Every span the collector was sent, each with the resource's service name.
async fn received_spans(collector: &MockServer) -> Vec<(String, Value)> {
    let mut spans = Vec::new();
    for request in collector.received_requests().await.expect("recording") {
        assert_eq!(
            request
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let body: Value = serde_json::from_slice(&request.body).expect("OTLP JSON");
        for resource in body["resourceSpans"].as_array().expect("resourceSpans") {
            let service = resource["resource"]["attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|kv| kv["key"] == "service.name"))
                .map(|kv| {
                    kv["value"]["stringValue"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default();
            for scope in resource["scopeSpans"].as_array().expect("scopeSpans") {
                for span in scope["spans"].as_array().expect("spans") {
                    spans.push((service.clone(), span.clone()));
                }
            }
        }
    }
    spans
}

/// A span's attributes as JSON values by key.
fn attributes(span: &Value) -> HashMap<String, Value> {
    span["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .map(|kv| {
            let value = &kv["value"];
            let v = value
                .get("stringValue")
                .or_else(|| value.get("intValue"))
                .or_else(|| value.get("boolValue"))
                .cloned()
                .unwrap_or(Value::Null);
            (kv["key"].as_str().expect("key").to_string(), v)
        })
        .collect()
}

fn nanos(span: &Value, field: &str) -> u128 {
    span[field]
        .as_str()
        .expect("a time as a decimal string")
        .parse()
        .expect("nanoseconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_a_span_tree_with_its_attempts_as_children() {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    let first = MockProvider::builder()
        .key("k1")
        .faults(Faults::always_status(500))
        .start()
        .await;
    let second = MockProvider::builder().key("k2").start().await;
    let proxy = Proxy::start(
        &config(&first, &second, &collector.uri()),
        &[("K1", "k1"), ("K2", "k2")],
        Clock::real(),
    )
    .await;

    // 1: joins the caller's trace; falls back from `first` (500) to `second`.
    let joined = send(
        &proxy,
        &chat_body("chat", "one", 5),
        Some(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
    )
    .await;
    assert_eq!(joined.status(), 200);
    assert_eq!(
        header(&joined, "x-spillway-fallback"),
        "first#1:500, second#1:200"
    );
    // 2: a caller that did not sample its trace: nothing exported.
    let unsampled_trace = "0af7651916cd43dd8448eb211c80319c";
    let unsampled = send(
        &proxy,
        &chat_body("chat", "two", 5),
        Some(&format!("00-{unsampled_trace}-b7ad6b7169203331-00")),
    )
    .await;
    assert_eq!(unsampled.status(), 200);
    // 3 and 4: the same cacheable request twice: a miss with its attempts, then a hit with none.
    let mut cacheable = chat_body("chat", "three", 5);
    cacheable["temperature"] = 0.into();
    assert_eq!(
        header(&send(&proxy, &cacheable, None).await, "x-spillway-cache"),
        "miss"
    );
    assert_eq!(
        header(&send(&proxy, &cacheable, None).await, "x-spillway-cache"),
        "hit"
    );
    // 5: a request the gateway refuses before any provider (an unknown route).
    assert_eq!(
        send(&proxy, &chat_body("nope", "x", 5), None)
            .await
            .status(),
        404
    );
    proxy.shutdown().await;

    let spans = received_spans(&collector).await;
    assert!(
        spans
            .iter()
            .all(|(service, _)| service == "spillway-under-test")
    );
    let spans: Vec<Value> = spans.into_iter().map(|(_, s)| s).collect();
    assert!(
        spans.iter().all(|s| s["traceId"] != unsampled_trace),
        "an unsampled trace was exported"
    );
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    let clients: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    // Requests 1, 3, 4 and 5; attempts: two each for 1 and 3.
    assert_eq!((servers.len(), clients.len()), (4, 4), "{spans:#?}");

    // Request 1: a child of the caller's span, its two attempts its children, in order.
    let root = servers
        .iter()
        .find(|s| s["traceId"] == CALLER_TRACE)
        .expect("the joined request's span");
    assert_eq!(root["parentSpanId"], CALLER_SPAN);
    assert_eq!(root["name"], "POST /v1/chat/completions");
    let attrs = attributes(root);
    assert_eq!(attrs["http.response.status_code"], "200");
    assert_eq!(attrs["gen_ai.request.model"], "chat");
    assert_eq!(attrs["gen_ai.provider.name"], "second");
    assert_eq!(attrs["spillway.fallback"], "first#1:500, second#1:200");
    assert_eq!(root["status"]["code"], 1);
    let mut attempts: Vec<&Value> = clients
        .iter()
        .copied()
        .filter(|s| s["traceId"] == CALLER_TRACE)
        .collect();
    attempts.sort_by_key(|s| nanos(s, "startTimeUnixNano"));
    assert_eq!(attempts.len(), 2);
    for attempt in &attempts {
        assert_eq!(attempt["parentSpanId"], root["spanId"]);
        assert_eq!(attempt["name"], format!("chat {GROQ_MODEL}"));
        assert!(nanos(attempt, "startTimeUnixNano") >= nanos(root, "startTimeUnixNano"));
        assert!(nanos(attempt, "endTimeUnixNano") <= nanos(root, "endTimeUnixNano"));
    }
    let (failed, answered) = (attributes(attempts[0]), attributes(attempts[1]));
    assert_eq!(
        (&failed["gen_ai.provider.name"], &failed["spillway.outcome"]),
        (&Value::from("first"), &Value::from("500"))
    );
    assert_eq!(failed["http.response.status_code"], "500");
    assert_eq!(attempts[0]["status"]["code"], 2);
    assert_eq!(answered["gen_ai.provider.name"], "second");
    assert_eq!(answered["spillway.key"], "second#1");
    assert_eq!(attempts[1]["status"]["code"], 1);
    assert!(nanos(attempts[0], "endTimeUnixNano") <= nanos(attempts[1], "startTimeUnixNano"));

    // The other requests start traces of their own, with no parent.
    let others: Vec<&&Value> = servers
        .iter()
        .filter(|s| s["traceId"] != CALLER_TRACE)
        .collect();
    assert_eq!(others.len(), 3);
    assert!(others.iter().all(|s| s.get("parentSpanId").is_none()));
    let by_cache = |cache: &str| {
        others
            .iter()
            .copied()
            .find(|s| attributes(s)["spillway.cache"] == cache)
            .unwrap_or_else(|| panic!("no {cache} span in {others:#?}"))
    };
    let hit = by_cache("hit");
    assert!(
        clients.iter().all(|c| c["traceId"] != hit["traceId"]),
        "a hit made no call"
    );
    let miss = by_cache("miss");
    assert_eq!(
        clients
            .iter()
            .filter(|c| c["traceId"] == miss["traceId"])
            .count(),
        2
    );
    assert_ne!(hit["traceId"], miss["traceId"]);
    let refused = by_cache("none");
    let refused_attrs = attributes(refused);
    assert_eq!(refused_attrs["http.response.status_code"], "404");
    assert_eq!(refused_attrs["error.type"], "model_not_found");
    // A refusal is the client's error, not the gateway's: the span is not marked failed.
    assert_eq!(refused["status"]["code"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_away_costs_no_request_and_its_spans_are_counted_dropped() {
    // A port that was free a moment ago: nothing listens there.
    let away = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.local_addr().expect("its address")
    };
    let first = MockProvider::builder().key("k1").start().await;
    let second = MockProvider::builder().key("k2").start().await;
    let proxy = Proxy::start(
        &config(&first, &second, &format!("http://{away}")),
        &[("K1", "k1"), ("K2", "k2")],
        Clock::real(),
    )
    .await;
    for n in 0..3 {
        let resp = send(&proxy, &chat_body("chat", &format!("q{n}"), 5), None).await;
        assert_eq!(resp.status(), 200);
    }
    // The exporter sends at least once a second; its failures show in /metrics.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = client()
            .get(format!("{}/metrics", proxy.base()))
            .send()
            .await
            .expect("answers")
            .text()
            .await
            .expect("text");
        if metrics.contains("spillway_trace_spans_total{outcome=\"dropped\"} 6") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("spillway_trace_spans_total{outcome=\"dropped\"} 6"),
        "{metrics}"
    );
    assert!(metrics.contains("spillway_trace_spans_total{outcome=\"exported\"} 0"));
    proxy.shutdown().await;
}
