//! `spillway-harness run` as users call it: exit 0 when every expectation holds, 1 naming the
//! failed expectation and both sides, 2 naming the field of an invalid file; reports and
//! timelines written; `--filter` and `--json`. `up` and `replay` start and answer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spillway-harness"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[test]
fn a_failing_expectation_exits_1_and_shows_both_sides() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = harness()
        .arg("run")
        .arg(fixture("impossible.toml"))
        .arg("--out")
        .arg(out_dir.path())
        .env("CI", "true")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client_status.200: expected all, got 5"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| FAIL |"), "{stdout}");
    // Named after the file (impossible.toml), not the scenario's title.
    assert!(out_dir.path().join("impossible.json").exists());
    let svg = std::fs::read_to_string(out_dir.path().join("impossible.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));
}

#[test]
fn an_invalid_file_exits_2_naming_file_line_and_field() {
    let out = harness()
        .arg("run")
        .arg(fixture("invalid.toml"))
        .arg("--out")
        .arg(tempfile::tempdir().unwrap().path())
        .env("CI", "true")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid.toml:20: stream_ratoi:"),
        "{stderr}"
    );
}

#[test]
fn filter_selects_and_json_reports() {
    let out = harness()
        .arg("run")
        .arg(scenarios())
        .args(["--filter", "exhausted", "--json", "--out"])
        .arg(tempfile::tempdir().unwrap().path())
        .env("CI", "true")
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["pass"], true);
    assert_eq!(reports[0]["client_status"]["429"], 25);
}

fn first_line(child: &mut std::process::Child) -> String {
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("a first line within 60 s")
}

#[tokio::test]
async fn up_serves_a_scenario_until_stopped() {
    let mut child = harness()
        .arg("up")
        .arg(scenarios().join("04-two-keys.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let line = first_line(&mut child);
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening on URL")
        .to_string();
    let resp = reqwest::Client::new()
        .post(format!("{url}/chat/completions"))
        .json(&serde_json::json!({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-spillway-provider"], "groq");
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A spillway config in `dir` with one `mock:groq` provider and the recording's route, no cache.
fn replay_config(dir: &Path) -> PathBuf {
    let config = dir.join("spillway.toml");
    std::fs::write(
        &config,
        r#"
[[providers]]
name = "groq"
base_url = "mock:groq"
keys = ["mock:groq"]

[[routes]]
model = "llama-3.1-8b"
targets = [{ provider = "groq", model = "llama-3.1-8b-instant" }]

max_wait = "5m"

[cache]
mode = "off"
"#,
    )
    .unwrap();
    config
}

/// `replay` of the shipped recording through `config`, fast, with `extra` arguments.
fn replay(config: &Path, extra: &[&str]) -> std::process::Output {
    harness()
        .arg("replay")
        .arg(scenarios().join("recordings/eval.jsonl"))
        .arg("--proxy-config")
        .arg(config)
        .args(["--speed", "20", "--time-scale", "60"])
        .args(extra)
        .env("CI", "true")
        .output()
        .expect("runs")
}

#[test]
fn replay_drives_a_recording_through_a_config_with_mocks() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay(&replay_config(dir.path()), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("200×40"), "{stdout}");
}

/// harness/README.md's replay command, with the config shipped beside the recording: its
/// comments mention `mock:NAME`, and only the mock its provider names is started.
#[test]
fn replay_runs_the_shipped_config_and_starts_only_the_mocks_it_names() {
    let config = scenarios().join("recordings/replay-spillway.toml");
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("mock:NAME")
    );
    let out = replay(&config, &["--expect", "client_status.200 all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("200×40"), "{stdout}");
    assert!(stdout.contains("\"mock\": \"groq\""), "{stdout}");
    assert!(!stdout.contains("\"mock\": \"NAME\""), "{stdout}");
}

#[test]
fn replay_without_expectations_says_so_not_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay(&replay_config(dir.path()), &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| no expectations |"), "{stdout}");
    assert!(!stdout.contains("| pass |"), "{stdout}");
    assert!(
        stdout.contains("\"verdict\": \"no expectations\""),
        "{stdout}"
    );
}

#[test]
fn replay_checks_expectations_from_flags_and_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = replay_config(dir.path());
    let expect_file = dir.path().join("expect.toml");
    std::fs::write(
        &expect_file,
        "[expect]\nclient_status = { 200 = \"all\" }\npeak_within_limits = true\n",
    )
    .unwrap();
    let expect_file = expect_file.to_str().unwrap();

    let held = replay(
        &config,
        &[
            "--expect-file",
            expect_file,
            "--expect",
            "client_status.429 == 0",
            "--expect",
            "max_latency < 10m",
        ],
    );
    let stdout = String::from_utf8_lossy(&held.stdout);
    assert_eq!(
        held.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert!(stdout.contains("| pass |"), "{stdout}");
    for name in [
        "client_status.200",
        "client_status.429",
        "peak_within_limits",
        "max_latency",
    ] {
        assert!(
            stdout.contains(&format!("\"name\": \"{name}\"")),
            "{name}: {stdout}"
        );
    }

    let failed = replay(&config, &["--expect", "client_status.200 == 0"]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("client_status.200: expected == 0, got 40"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&failed.stdout).contains("| FAIL |"));

    let invalid = replay(&config, &["--expect", "client_429 == 0"]);
    assert_eq!(invalid.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("client_429"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_a_configs_env_keys_from_the_environment() {
    // The example config as a user runs it, pointed at a mock of our own on a free port.
    let mock = spillway_mock::MockProvider::builder()
        .keys(["mock-key", "mock-key-2"])
        .start()
        .await;
    let example_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../proxy/examples/spillway-mock.toml");
    let example = std::fs::read_to_string(example_path).unwrap();
    let text = example.replace("http://127.0.0.1:8090/openai/v1", &mock.url());
    assert_ne!(text, example, "the example's mock address moved");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spillway-mock.toml");
    std::fs::write(&config, text).unwrap();
    let mut command = harness();
    command
        .arg("replay")
        .arg(scenarios().join("recordings/eval.jsonl"))
        .arg("--proxy-config")
        .arg(&config)
        .args(["--speed", "20"])
        .env("CI", "true")
        .env("MOCK_KEY", "mock-key")
        .env("MOCK_KEY_2", "mock-key-2");
    let out = tokio::task::spawn_blocking(move || command.output().expect("runs"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("200×40"), "{stdout}");
    let keys = mock.stats().keys;
    assert!(keys.contains_key("mock-key"), "{keys:?}");
}

#[test]
fn replay_sets_the_mocks_requests_per_minute() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay(&replay_config(dir.path()), &["--mock-rpm", "7"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&stdout[stdout.find('{').expect("the report")..]).unwrap();
    let minute = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["model"] == "llama-3.1-8b-instant" && k["window"] == "minute")
        .expect("the model's minute window");
    assert_eq!(minute["limit_requests"], 7, "{minute}");
    assert!(minute["peak_requests"].as_u64().unwrap() <= 7, "{minute}");
}

#[test]
fn replay_without_a_config_or_a_proxy_names_both() {
    let out = harness()
        .arg("replay")
        .arg(scenarios().join("recordings/eval.jsonl"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--proxy-config") && stderr.contains("--against"),
        "{stderr}"
    );
    let help = harness().args(["replay", "--help"]).output().expect("runs");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("one of --proxy-config and --against is required"),
        "{help}"
    );
}

/// `spillway-harness replay ... | head -1`: the reader goes away before the report; the
/// harness stops quietly with success, it does not panic on the closed pipe.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = harness()
        .arg("replay")
        .arg(scenarios().join("recordings/eval.jsonl"))
        .arg("--proxy-config")
        .arg(replay_config(dir.path()))
        .args(["--speed", "20", "--time-scale", "60"])
        .env("CI", "true")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
