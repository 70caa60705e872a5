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
    assert!(
        out_dir
            .path()
            .join("an-impossible-expectation.json")
            .exists()
    );
    let svg =
        std::fs::read_to_string(out_dir.path().join("an-impossible-expectation.svg")).unwrap();
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

#[test]
fn replay_drives_a_recording_through_a_config_with_mocks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spillway.toml");
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
    let out = harness()
        .arg("replay")
        .arg(scenarios().join("recordings/eval.jsonl"))
        .arg("--proxy-config")
        .arg(&config)
        .args(["--speed", "20", "--time-scale", "60"])
        .env("CI", "true")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("200×40"), "{stdout}");
}
