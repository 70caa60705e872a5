//! The `spillway` binary run as a user runs it: started on a config file, talked to over HTTP,
//! signalled, and stopped with its log collected; and the one-route config several of these
//! tests start it on.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `spillway serve` child process.
pub struct Running {
    /// `http://ADDR`, from its first line.
    pub url: String,
    child: Child,
}

impl Running {
    /// Starts `spillway serve --config CONFIG ARGS` with `env`; waits (at most 20 s) for its
    /// `listening on` line, and shows its stderr when it stopped instead.
    pub async fn start(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_spillway"));
        command
            .args(["serve", "--config"])
            .arg(config)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("starts");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).map(|_| line)
            }),
        )
        .await
        .expect("prints within 20 s")
        .expect("reader")
        .expect("a line");
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let mut stderr = String::new();
            let _ = child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr);
            panic!("first line was {line:?}; stderr: {stderr}");
        };
        Running {
            url: url.to_string(),
            child,
        }
    }

    /// Sends it a signal (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{name}");
    }

    /// Stops it with SIGTERM and returns its log (stderr); asserts it exited cleanly within 20 s.
    pub async fn stop(mut self) -> String {
        self.signal("TERM");
        let mut stderr = self.child.stderr.take().expect("stderr");
        let mut child = self.child;
        let (status, logs) = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || {
                let mut logs = String::new();
                let _ = stderr.read_to_string(&mut logs);
                (child.wait(), logs)
            }),
        )
        .await
        .expect("exits within 20 s of SIGTERM")
        .expect("waited");
        assert!(status.expect("exit status").success(), "{logs:.3000}");
        logs
    }
}

/// A config on loopback port 0 with the cache off and one route, `llama-3.1-8b`, to Groq's
/// `llama-3.1-8b-instant` at `base_url` with the key in `$key_var`; `server` adds lines to
/// `[server]`, `after` follows the route's table (route fields first, then more tables).
pub fn one_route_config(base_url: &str, key_var: &str, server: &str, after: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[cache]
mode = "off"

[[providers]]
name = "groq"
base_url = "{base_url}"
keys = ["env:{key_var}"]

[[routes]]
model = "llama-3.1-8b"
targets = [{{ provider = "groq", model = "llama-3.1-8b-instant" }}]
{after}
"#
    )
}
