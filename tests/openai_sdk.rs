//! The official `openai` Python SDK against spillway: a chat call, a streamed call, and an
//! exhausted route where the SDK's own retry logic honors spillway's `retry-after-ms`.
//!
//! Needs a Python with the `openai` package: `SPILLWAY_PYTHON`, else `.venv/bin/python` at the
//! workspace root (`.ci/run` makes it). Without one the test is skipped locally and fails in CI.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use spillway_clock::Clock;
use spillway_mock::MockProvider;
use spillway_tests::*;

const MODEL: &str = "llama-3.1-8b-instant";

fn python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("SPILLWAY_PYTHON").map(PathBuf::from),
        Some(root.join(".venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Moves a manual clock at the pace of wall time.
fn follow_wall_time(clock: &Clock) -> tokio::task::JoinHandle<()> {
    let clock = clock.clone();
    tokio::spawn(async move {
        let wall = Clock::real();
        let mut last = wall.now();
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = wall.now();
            clock.advance(now - last);
            last = now;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_chats_streams_and_honors_retry_after() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide a Python with the openai package (SPILLWAY_PYTHON)"
        );
        eprintln!("skipped: no Python with the openai package (set SPILLWAY_PYTHON)");
        return;
    };
    let clock = Clock::manual();
    let mock = MockProvider::builder()
        .key("k1")
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
keys = ["env:K1"]
[providers.limits."{MODEL}"]
requests_per_minute = 1000

[[providers]]
name = "tight"
base_url = "{}"
keys = ["env:K1"]
[providers.limits."{MODEL}"]
requests_per_minute = 1

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{MODEL}" }}]

[[routes]]
model = "tight"
targets = [{{ provider = "tight", model = "{MODEL}" }}]
max_wait = "0s"
"#,
        mock.url(),
        mock.url()
    );
    let proxy = Proxy::start(
        &config,
        &[("K1", "k1"), ("CLIENT", "sdk-client-key")],
        clock.clone(),
    )
    .await;
    // Use up `tight` now, then move to 55 s later: the SDK's call comes after the script's start-up
    // and its cache calls (1-3 s on a loaded machine), and is told to wait what is left of 5 s.
    let first = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth("sdk-client-key")
        .json(&chat_body("tight", "warm up", 10))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    clock.advance(Duration::from_secs(55));
    let driver = follow_wall_time(&clock);

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk/openai_client.py");
    let url = proxy.url();
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .args([url.as_str(), "sdk-client-key"])
                .output()
        }),
    )
    .await
    .expect("the script finishes within 90 s")
    .expect("joined")
    .expect("python runs");
    driver.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["statuses"][0], 429);
    assert!(report["told"].as_f64().unwrap() > 1.0);
    assert_eq!(
        mock.stats().responses(429),
        0,
        "the provider never saw a 429"
    );
}
