//! The `spillway-mock` binary: first line, limits from flags, clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn prints_its_address_first_enforces_flags_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spillway-mock"))
        .args(["--listen", "127.0.0.1:0", "--rpm", "1", "--keys", "a,b"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("prints within 10 s")
        .expect("reader ran")
        .expect("a line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let client = reqwest::Client::new();
    let body = serde_json::json!({"model": "llama-3.1-8b-instant", "messages": [{"role": "user", "content": "hi"}]});
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let resp = client
            .post(format!("{url}/openai/v1/chat/completions"))
            .bearer_auth("b")
            .json(&body)
            .send()
            .await
            .expect("answers");
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 429]);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("exits within 10 s of SIGTERM")
    .expect("waited")
    .expect("exit status");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn a_bad_config_is_an_error_naming_the_file_and_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mock.toml");
    std::fs::write(&path, "keys = [\"a\"]\nrpm = 5\n").expect("written");
    let out = Command::new(env!("CARGO_BIN_EXE_spillway-mock"))
        .args(["--config", path.to_str().expect("utf-8 path")])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mock.toml") && stderr.contains("rpm"),
        "{stderr}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/mock.example.toml");
    let config = spillway_mock::config::MockConfig::from_file(std::path::Path::new(path))
        .expect("the example parses");
    let resolved = spillway_mock::config::resolve(Some(config), &Default::default())
        .expect("the example resolves");
    assert_eq!(resolved.spec.keys.len(), 2);
    assert_eq!(resolved.spec.faults.rules.len(), 2);
}
