//! No provider key ever appears in what the proxy writes: logs (captured at TRACE level, the
//! HTTP stack's included), response bodies and headers, metrics (ARCHITECTURE.md, invariant 7).

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use spillway_clock::Clock;
use spillway_mock::{Faults, Limits, MockProvider};
use spillway_tests::*;

const SECRETS: [&str; 4] = [
    "gsk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "gsk_live_revoked0000000000000000000000",
    "csk-cerebras-1234567890abcdef",
    "client-secret-abcdef123456",
];

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_never_appear_in_logs_errors_headers_or_metrics() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let clock = Clock::scaled(60.0).expect("scale");
    let groq = MockProvider::builder()
        .keys([SECRETS[0]])
        .limits("llama-3.1-8b-instant", Limits::rpm(3))
        .clock(clock.clone())
        .start()
        .await;
    let cerebras = MockProvider::builder()
        .keys([SECRETS[2]])
        .model("llama3.1-8b")
        .clock(clock.clone())
        .start()
        .await;
    let config = format!(
        r#"
[server]
client_keys = ["env:CLIENT"]

[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:REVOKED", "env:GROQ"]
unknown_limits_in_flight = 0

[[providers]]
name = "cerebras"
base_url = "{}"
keys = ["env:CEREBRAS"]

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "llama-3.1-8b-instant" }}, {{ provider = "cerebras", model = "llama3.1-8b" }}]
max_wait = "0s"

[[routes]]
model = "groq-only"
targets = [{{ provider = "groq", model = "llama-3.1-8b-instant" }}]
max_wait = "0s"
"#,
        groq.url(),
        cerebras.url()
    );
    let proxy = Proxy::start(
        &config,
        &[
            ("GROQ", SECRETS[0]),
            ("REVOKED", SECRETS[1]),
            ("CEREBRAS", SECRETS[2]),
            ("CLIENT", SECRETS[3]),
        ],
        clock.clone(),
    )
    .await;

    let mut seen = String::new();
    let http = client();
    let record = |resp: reqwest::Response| async move {
        let mut out = format!("{}\n", resp.status());
        for (k, v) in resp.headers() {
            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("")));
        }
        out.push_str(&resp.text().await.unwrap_or_default());
        out
    };
    // Successes, a revoked key (401 upstream), 429s upstream and to the client, an outage,
    // a stream, client auth failures, bad input.
    for i in 0..6 {
        for route in ["chat", "groq-only"] {
            let mut body = chat_body(route, &format!("q{i}"), 10);
            if i % 2 == 1 {
                body["stream"] = json!(true);
            }
            let resp = http
                .post(format!("{}/chat/completions", proxy.url()))
                .bearer_auth(SECRETS[3])
                .json(&body)
                .send()
                .await
                .unwrap();
            seen.push_str(&record(resp).await);
        }
    }
    groq.set_faults(Faults::always_status(503));
    let resp = http
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth(SECRETS[3])
        .json(&chat_body("chat", "outage", 10))
        .send()
        .await
        .unwrap();
    seen.push_str(&record(resp).await);
    for token in ["wrong", ""] {
        let resp = http
            .post(format!("{}/chat/completions", proxy.url()))
            .bearer_auth(token)
            .json(&chat_body("chat", "x", 10))
            .send()
            .await
            .unwrap();
        seen.push_str(&record(resp).await);
    }
    let resp = http
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth(SECRETS[3])
        .body("{broken")
        .send()
        .await
        .unwrap();
    seen.push_str(&record(resp).await);
    let metrics = http
        .get(format!("{}/metrics", proxy.base()))
        .send()
        .await
        .unwrap();
    seen.push_str(&record(metrics).await);
    proxy.shutdown().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    assert!(logs.contains("served"), "the capture works: {logs:.500}");
    assert!(logs.contains("groq#1"), "keys are logged by alias");
    assert!(seen.contains("429"), "the exhausted route was exercised");
    for secret in SECRETS {
        assert!(!logs.contains(secret), "a key leaked into the logs");
        assert!(
            !seen.contains(secret),
            "a key leaked into a response or the metrics"
        );
    }
}
