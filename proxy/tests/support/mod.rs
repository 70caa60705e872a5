//! The `spillway` binary run as a user runs it: started on a config file, talked to over HTTP,
//! signalled, and stopped with its log collected.

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
