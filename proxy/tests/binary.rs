//! The `spillway` binary: `check` prints the resolved routes, errors name the file, the field or
//! the variable (never its value), `serve` prints its address first, refuses to expose itself
//! without client keys, and exits cleanly on SIGTERM. Nothing it writes contains a key.

mod support;

use std::process::Command;

use spillway_mock::MockProvider;
use support::Running;

const KEY: &str = "gsk_binarytest_5ecret_value_0123456789";

fn config(base_url: &str) -> String {
    let cache = std::env::temp_dir().join(format!("spillway-binary-test-{}", std::process::id()));
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[cache]
mode = "off"
path = {:?}

[[providers]]
name = "groq"
base_url = "{base_url}"
keys = ["env:SPILLWAY_TEST_GROQ_KEY"]
[providers.limits."llama-3.1-8b-instant"]
requests_per_minute = 30
tokens_per_minute = 6000

[[routes]]
model = "llama-3.1-8b"
targets = [{{ provider = "groq", model = "llama-3.1-8b-instant" }}]
max_wait = "5s"
"#,
        cache.display().to_string()
    )
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("spillway.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

#[test]
fn check_prints_resolved_routes_and_names_missing_variables() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(&dir, &config("http://127.0.0.1:9/openai/v1"));
    let ok = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["check", "--config"])
        .arg(&path)
        .env("SPILLWAY_TEST_GROQ_KEY", KEY)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("route llama-3.1-8b"), "{stdout}");
    assert!(stdout.contains("groq/llama-3.1-8b-instant"), "{stdout}");
    assert!(
        stdout.contains("30 rpm") && stdout.contains("6000 tpm"),
        "{stdout}"
    );
    assert!(
        stdout.contains("groq#1 ($SPILLWAY_TEST_GROQ_KEY)"),
        "{stdout}"
    );
    assert!(!stdout.contains(KEY));

    // A user's mistake prints its message, never a backtrace, whatever RUST_BACKTRACE says.
    let missing = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("SPILLWAY_TEST_GROQ_KEY")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("spillway.toml"), "{stderr}");
    assert!(stderr.contains("providers[0].keys[0]"), "{stderr}");
    assert!(
        stderr.contains("SPILLWAY_TEST_GROQ_KEY is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn serve_refuses_a_public_address_without_client_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(&dir, &config("http://127.0.0.1:9/openai/v1"));
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&path)
        .env("SPILLWAY_TEST_GROQ_KEY", KEY)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to listen on 0.0.0.0"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_its_address_serves_and_exits_cleanly_on_sigterm() {
    let mock = MockProvider::builder().key(KEY).start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(&dir, &config(&mock.url()));
    let env = [("SPILLWAY_TEST_GROQ_KEY", KEY), ("RUST_LOG", "trace")];
    let running = Running::start(&path, &[], &env).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", running.url))
        .json(&serde_json::json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-spillway-key"], "groq#1");
    let logs = running.stop().await;
    assert!(logs.contains("served"), "{logs:.2000}");
    assert!(!logs.contains(KEY), "the key leaked into the logs");
}

/// The binary's config with its cache in `dir` (replay mode opens the store).
fn config_with_cache_in(dir: &tempfile::TempDir, base_url: &str) -> String {
    let path = format!("{:?}", dir.path().join("cache").display().to_string());
    config(base_url)
        .lines()
        .map(|l| {
            if l.starts_with("path = ") {
                format!("path = {path}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn check_in_replay_mode_needs_no_provider_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        &config_with_cache_in(&dir, "http://127.0.0.1:9/openai/v1"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["check", "--cache-mode", "replay", "--config"])
        .arg(&path)
        .env_remove("SPILLWAY_TEST_GROQ_KEY")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cache replay"), "{stdout}");
    assert!(
        stdout.contains("groq#1 ($SPILLWAY_TEST_GROQ_KEY, not read)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_in_replay_mode_needs_no_provider_key_and_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(
        &dir,
        &config_with_cache_in(&dir, "http://127.0.0.1:9/openai/v1"),
    );
    // SPILLWAY_TEST_GROQ_KEY is set in no test's own environment, only in its children's.
    let running = Running::start(&path, &["--cache-mode", "replay"], &[("RUST_LOG", "info")]).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", running.url))
        .json(&serde_json::json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 404, "a miss, offline");
    let body: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "cache_miss", "{body}");
    let logs = running.stop().await;
    assert!(
        logs.contains("replay mode: provider keys are not read"),
        "{logs:.2000}"
    );
}

/// A user's mistake, whichever command meets it, is its message on one line and a failing exit,
/// never a backtrace, whatever the backtrace variables say.
#[test]
fn a_users_mistake_prints_its_message_and_no_backtrace_in_every_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(&dir, &config("http://127.0.0.1:9/openai/v1"));
    let missing = dir.path().join("absent.toml");
    let path = path.to_str().expect("a text path");
    let missing = missing.to_str().expect("a text path");
    let cases: [(&[&str], &str); 4] = [
        (
            &["serve", "--config", path],
            "SPILLWAY_TEST_GROQ_KEY is not set",
        ),
        (&["check", "--config", missing], "cannot read"),
        (&["cache", "--config", missing, "stats"], "cannot read"),
        (
            &["serve", "--cache-mode", "sometimes", "--config", path],
            "--cache-mode",
        ),
    ];
    for (args, message) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args(args)
            .env_remove("SPILLWAY_TEST_GROQ_KEY")
            .env("RUST_BACKTRACE", "full")
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("acktrace"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

/// `spillway status` against a real `spillway serve`: the table per route (no colours when
/// stdout is not a terminal, every line within 80 columns), `--json` the document, and a key
/// that is not an admin key refused with the gateway's message. No key value is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_running_gateway_as_a_table_and_as_json() {
    const ADMIN: &str = "sk-admin-binarytest-5ecret";
    let mock = MockProvider::builder().key(KEY).start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config(&mock.url()).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nadmin_keys = [\"env:SPILLWAY_TEST_ADMIN_KEY\"]",
    );
    let path = write_config(&dir, &text);
    let env = [
        ("SPILLWAY_TEST_GROQ_KEY", KEY),
        ("SPILLWAY_TEST_ADMIN_KEY", ADMIN),
    ];
    let running = Running::start(&path, &[], &env).await;
    let url = running.url.clone();
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let status = move |key: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args([
                "status",
                "--url",
                &url,
                "--admin-key-env",
                "ADMIN_FOR_STATUS",
            ])
            .args(extra)
            .env("ADMIN_FOR_STATUS", key)
            .output()
            .expect("runs")
    };
    let table = tokio::task::spawn_blocking({
        let status = status.clone();
        move || status(ADMIN, &[])
    })
    .await
    .expect("ran");
    let out = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(out.contains("ROUTE llama-3.1-8b"), "{out}");
    assert!(out.contains("groq llama-3.1-8b-instant"), "{out}");
    assert!(
        out.contains("groq#1") && out.contains("rpm") && out.contains("/ 30"),
        "{out}"
    );
    assert!(out.contains("last min: 1 req"), "{out}");
    assert!(!out.contains('\x1b'), "no colours into a pipe: {out}");
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    let json = tokio::task::spawn_blocking({
        let status = status.clone();
        move || status(ADMIN, &["--json"])
    })
    .await
    .expect("ran");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("the document");
    assert_eq!(doc["routes"][0]["targets"][0]["keys"][0]["key"], "groq#1");
    let refused = tokio::task::spawn_blocking(move || status("not-the-admin-key", &[]))
        .await
        .expect("ran");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("403") && stderr.contains("not an admin key"),
        "{stderr}"
    );
    for output in [&table, &json, &refused] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !all.contains(KEY) && !all.contains(ADMIN),
            "a key was printed"
        );
    }
    running.stop().await;
}
