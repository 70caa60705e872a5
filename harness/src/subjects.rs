//! The programs a benchmark measures, each in its own process so its memory can be read and it
//! does not share a runtime with the load generator. The harness binary re-executes itself with
//! a hidden `serve-*` subcommand; each child prints `listening on http://ADDR` first.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use spillway_mock::{MockProvider, MockSpec, MockState};

/// The model id the benchmark's mock serves.
pub const BENCH_MODEL: &str = "llama-3.1-8b-instant";
/// The route name the benchmark's proxy serves.
pub const BENCH_ROUTE: &str = "bench";
/// The key the benchmark's mock accepts.
pub const BENCH_KEY: &str = "bench-key";

/// A child process serving HTTP.
#[derive(Debug)]
pub struct Subject {
    /// What it is.
    pub name: String,
    /// `http://ADDR`.
    pub base_url: String,
    child: Child,
}

impl Subject {
    /// Starts `exe args...`, waits (at most 60 s) for `listening on http://ADDR`.
    pub fn spawn(
        name: &str,
        exe: &PathBuf,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Subject, String> {
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if let Some(url) = line.trim().strip_prefix("listening on ") {
                            let _ = tx.send(Some(url.to_string()));
                            // Keep draining so the child never blocks on a full pipe.
                            let mut sink = String::new();
                            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                                sink.clear();
                            }
                            return;
                        }
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(base_url)) => Ok(Subject {
                name: name.to_string(),
                base_url,
                child,
            }),
            _ => {
                let _ = child.kill();
                Err(format!(
                    "{name} did not print `listening on http://ADDR` within 60 s"
                ))
            }
        }
    }

    /// Resident memory of the process, in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn print_listening(addr: std::net::SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

/// `serve-mock`: a spillway-mock with no limits, no journal, one key, until killed.
pub async fn serve_mock() -> Result<(), String> {
    let spec = MockSpec {
        keys: vec![BENCH_KEY.to_string()],
        journal_capacity: 0,
        ..MockSpec::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = Arc::new(MockState::new(spec, spillway_mock::Clock::real()));
    let mock = MockProvider::serve(listener, state).map_err(|e| e.to_string())?;
    print_listening(addr);
    std::future::pending::<()>().await;
    drop(mock);
    Ok(())
}

/// `serve-forwarder`: the bare forwarder in front of `upstream`, until killed.
pub async fn serve_forwarder(upstream: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    print_listening(addr);
    crate::forwarder::serve(listener, upstream).await
}

/// The proxy config a benchmark uses: one provider (the mock at `upstream`), no limits, one
/// route, the cache in `cache_dir`.
pub fn proxy_config(upstream: &str, cache_dir: &std::path::Path) -> String {
    format!(
        r#"
[cache]
path = {:?}

[[providers]]
name = "mock"
base_url = "{upstream}/openai/v1"
keys = ["env:BENCH_KEY"]
unknown_limits_in_flight = 0

[[routes]]
model = "{BENCH_ROUTE}"
targets = [{{ provider = "mock", model = "{BENCH_MODEL}" }}]
"#,
        cache_dir.display().to_string()
    )
}

/// `serve-proxy`: spillway in front of `upstream` with its cache in `cache_dir`, logging
/// warnings only, until killed.
pub async fn serve_proxy(upstream: &str, cache_dir: &std::path::Path) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let env: HashMap<String, String> = HashMap::from([("BENCH_KEY".into(), BENCH_KEY.into())]);
    let config = spillway::config::parse(&proxy_config(upstream, cache_dir), "bench.toml", &env)
        .map_err(|e| e.to_string())?;
    let state = spillway::AppState::new(config, spillway::Clock::real())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    print_listening(addr);
    spillway::run(listener, state, std::future::pending())
        .await
        .map_err(|e| e.to_string())
}
