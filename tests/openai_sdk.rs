//! The official `openai` Python SDK against spillway: a chat call, a streamed call, and an
//! exhausted route where the SDK's own retry logic honors spillway's `retry-after-ms`.
//!
//! Needs a Python with the `openai` package: `SPILLWAY_PYTHON`, else `.venv/bin/python` at the
//! workspace root (`.ci/run` makes it). Without one, found when the tests are built (`build.rs`),
//! these tests show as ignored with the reason.

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

/// Why the SDK tests are ignored when they are.
const NO_SDK: &str = "needs a Python with the openai package: set SPILLWAY_PYTHON to one, or run scripts/test.sh (it makes .venv)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(openai_sdk),
    ignore = "needs a Python with the openai package: set SPILLWAY_PYTHON to one, or run scripts/test.sh (it makes .venv)"
)]
async fn the_official_python_sdk_chats_streams_and_honors_retry_after() {
    let python = python().expect(NO_SDK);
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

/// Runs `tests/sdk/openai_retry.py URL KEY MODEL CALLS` with the SDK's default retries and
/// returns its report.
async fn five_calls(url: String, key: &str, model: &str) -> serde_json::Value {
    let python = python().expect(NO_SDK);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sdk/openai_retry.py");
    let args = [url, key.to_string(), model.to_string(), "5".to_string()];
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).args(args).output()),
    )
    .await
    .expect("the script finishes within 60 s")
    .expect("joined")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// Every duration on the wire is wall-clock time: against a mock sixty times faster than real
/// time with 3 requests a (simulated) minute, the SDK's own retries, obeying `retry-after`,
/// get five calls through in a few real seconds — not in the 57 real seconds a simulated
/// `retry-after` would have made it sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(openai_sdk),
    ignore = "needs a Python with the openai package: set SPILLWAY_PYTHON to one, or run scripts/test.sh (it makes .venv)"
)]
async fn the_sdk_gets_five_calls_through_a_scaled_mock_in_seconds_directly_and_through_spillway() {
    let clock = Clock::scaled(60.0).expect("scale");
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, spillway_mock::Limits::rpm(3))
        .clock(clock.clone())
        .start()
        .await;
    let direct = five_calls(mock.url(), "k1", MODEL).await;
    assert_eq!(direct["ok"], 5, "{direct}");
    assert!(direct["seconds"].as_f64().unwrap() < 5.0, "{direct}");
    assert!(
        direct["statuses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == 429),
        "the mock's limit bit, and the SDK waited it out: {direct}"
    );

    let config = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1"]

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{MODEL}" }}]
"#,
        mock.url()
    );
    let proxy = Proxy::start(&config, &[("K1", "k1")], clock.clone()).await;
    let through = five_calls(proxy.url(), "any", "chat").await;
    assert_eq!(through["ok"], 5, "{through}");
    assert!(through["seconds"].as_f64().unwrap() < 5.0, "{through}");
}
