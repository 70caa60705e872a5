//! The `spillway-mock` binary: first line, limits from flags, clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts the binary with `args` and reads its first line: the URL it listens on.
async fn start(args: &[&str]) -> (Child, String) {
    start_with_env(args, &[]).await
}

/// [`start`], with these environment variables set.
async fn start_with_env(args: &[&str], vars: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spillway-mock"))
        .args(args)
        .envs(vars.iter().copied())
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
    (child, url)
}

#[tokio::test]
async fn prints_its_address_first_enforces_flags_and_exits_cleanly_on_sigterm() {
    let (mut child, url) = start(&["--listen", "127.0.0.1:0", "--rpm", "1", "--keys", "a,b"]).await;
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

#[tokio::test]
async fn the_read_timeout_flag_closes_a_connection_that_sends_nothing() {
    let (mut child, url) = start(&["--listen", "127.0.0.1:0", "--read-timeout", "200ms"]).await;
    let addr = url.strip_prefix("http://").expect("an http URL");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection is closed without an answer: {read:?}"
    );
}

#[tokio::test]
async fn the_admin_token_env_flag_guards_the_control_plane() {
    let (mut child, url) = start_with_env(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin-token-env",
            "MOCK_TEST_ADMIN",
        ],
        &[("MOCK_TEST_ADMIN", "t0ken")],
    )
    .await;
    let client = reqwest::Client::new();
    let without = client.get(format!("{url}/_mock/stats")).send().await;
    let with = client
        .get(format!("{url}/_mock/stats"))
        .bearer_auth("t0ken")
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(without.expect("answers").status(), 401);
    assert_eq!(with.expect("answers").status(), 200);
}

#[test]
fn an_admin_token_variable_that_is_not_set_stops_the_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway-mock"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-token-env",
            "MOCK_TEST_UNSET_VAR",
        ])
        .env_remove("MOCK_TEST_UNSET_VAR")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MOCK_TEST_UNSET_VAR is not set"),
        "{stderr}"
    );
}

/// What the binary logs to stderr when started with `args`, until it has accepted a
/// connection (the warning, if any, is logged before the accept loop starts).
fn stderr_at_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spillway-mock"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line);
    let port = line.trim().rsplit(':').next().unwrap_or("").to_string();
    let served = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).and_then(|mut s| {
        use std::io::{Read, Write};
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /_mock/faults HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map(|_| answer)
    });
    let _ = child.kill();
    let out = child.wait_with_output().expect("exits once killed");
    assert!(
        read.is_ok() && line.starts_with("listening on "),
        "first line {line:?}"
    );
    assert!(
        served.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "{served:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn listening_beyond_loopback_logs_a_warning_and_loopback_does_not() {
    let exposed = stderr_at_start(&["--listen", "0.0.0.0:0"]);
    assert!(
        exposed.contains("WARN") && exposed.contains("beyond loopback"),
        "{exposed}"
    );
    assert!(exposed.contains("/_mock/*) is open"), "{exposed}");
    let local = stderr_at_start(&["--listen", "127.0.0.1:0"]);
    assert!(!local.contains("beyond loopback"), "{local}");
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
    let resolved = spillway_mock::config::resolve(
        Some(config),
        &Default::default(),
        &spillway_mock::config::ProcessEnv,
    )
    .expect("the example resolves");
    assert_eq!(resolved.spec.keys.len(), 2);
    assert_eq!(resolved.spec.faults.rules.len(), 2);
}
