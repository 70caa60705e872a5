//! `spillway serve --log-format json` (or `[log] format = "json"`): every line of the log is
//! one JSON object, a served request's line carries the text line's fields with numbers as
//! numbers, and no provider key appears.

mod support;

use serde_json::{Value, json};
use spillway_mock::MockProvider;
use support::Running;

const KEY: &str = "gsk_logjsontest_5ecret_value_0123456789";

fn config(base_url: &str, tables: &str) -> String {
    let after = format!("max_wait = \"5s\"\n{tables}");
    support::one_route_config(base_url, "SPILLWAY_TEST_GROQ_KEY", "", &after)
}

/// Sends one answered request, one for an unknown model and one that is not JSON.
async fn three_requests(url: &str) {
    let client = reqwest::Client::new();
    let post = |body: reqwest::Body| {
        client
            .post(format!("{url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
    };
    let ok = json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]});
    let unknown = json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]});
    let statuses = [
        post(ok.to_string().into()).send().await.expect("answers"),
        post(unknown.to_string().into())
            .send()
            .await
            .expect("answers"),
        post("{not json".into()).send().await.expect("answers"),
    ]
    .map(|r| r.status().as_u16());
    assert_eq!(statuses, [200, 404, 400]);
}

/// Every line of `logs` as JSON (failing on the first that is not).
fn json_lines(logs: &str) -> Vec<Value> {
    assert!(!logs.trim().is_empty(), "no log lines");
    logs.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .inspect(|v| assert!(v.is_object(), "not an object: {v}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_is_a_json_object_with_the_text_lines_fields_and_numbers() {
    let mock = MockProvider::builder().key(KEY).start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spillway.toml");
    std::fs::write(&path, config(&mock.url(), "")).expect("config written");
    let env = [("SPILLWAY_TEST_GROQ_KEY", KEY), ("RUST_LOG", "trace")];
    let running = Running::start(&path, &["--log-format", "json"], &env).await;
    three_requests(&running.url).await;
    let logs = running.stop().await;
    assert!(!logs.contains(KEY), "the key leaked into the logs");
    let lines = json_lines(&logs);
    let served: Vec<&Value> = lines.iter().filter(|l| l["message"] == "served").collect();
    assert_eq!(served.len(), 3, "{logs:.3000}");
    for line in &served {
        assert_eq!(line["level"], "INFO", "{line}");
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["status"].is_u64(), "{line}");
        assert!(line["attempts"].is_u64(), "{line}");
        assert!(line["elapsed_ms"].is_number(), "{line}");
        for text in ["route", "cache", "provider", "key", "error"] {
            assert!(line[text].is_string(), "{text} in {line}");
        }
    }
    let ok = served.iter().find(|l| l["status"] == 200).expect("a 200");
    assert_eq!(ok["route"], "llama-3.1-8b");
    assert_eq!(ok["provider"], "groq");
    assert_eq!(ok["key"], "groq#1", "the key's alias, never the key");
    assert_eq!(ok["attempts"], 1);
    assert!(ok["elapsed_ms"].as_f64().expect("a number") > 0.0);
    let unknown = served.iter().find(|l| l["status"] == 404).expect("a 404");
    assert!(
        unknown["error"].as_str().expect("text").contains("nope"),
        "{unknown}"
    );
    assert!(served.iter().any(|l| l["status"] == 400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configs_log_format_applies_and_the_flag_overrides_it() {
    let mock = MockProvider::builder().key(KEY).start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spillway.toml");
    std::fs::write(&path, config(&mock.url(), "[log]\nformat = \"json\"\n")).expect("written");
    let env = [("SPILLWAY_TEST_GROQ_KEY", KEY), ("RUST_LOG", "info")];

    let running = Running::start(&path, &[], &env).await;
    three_requests(&running.url).await;
    let lines = json_lines(&running.stop().await);
    assert_eq!(lines.iter().filter(|l| l["message"] == "served").count(), 3);

    let running = Running::start(&path, &["--log-format", "text"], &env).await;
    three_requests(&running.url).await;
    let logs = running.stop().await;
    let served: Vec<&str> = logs.lines().filter(|l| l.contains("served")).collect();
    assert_eq!(served.len(), 3, "{logs}");
    for line in served {
        assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
        assert!(
            line.contains("status=") && line.contains("elapsed_ms="),
            "{line}"
        );
    }
}

#[test]
fn an_unknown_log_format_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spillway.toml");
    std::fs::write(
        &path,
        config("http://127.0.0.1:9", "[log]\nformat = \"xml\"\n"),
    )
    .expect("written");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["check", "--config"])
        .arg(&path)
        .env("SPILLWAY_TEST_GROQ_KEY", KEY)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("log.format") && stderr.contains("xml"),
        "{stderr}"
    );
    let flag = std::process::Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["serve", "--log-format", "xml", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!flag.status.success());
    assert!(String::from_utf8_lossy(&flag.stderr).contains("--log-format"));
}
