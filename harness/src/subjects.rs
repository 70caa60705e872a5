//! The programs a benchmark measures, each in its own process so its memory can be read and it
//! does not share a runtime with the load generator. The harness binary re-executes itself with
//! a hidden `serve-*` subcommand; each child prints `listening on http://ADDR` first.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use spillway_mock::{MockProvider, MockSpec, MockState};
use tokio::net::TcpListener;

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
    child: Option<Child>,
}

impl Subject {
    /// Starts `exe args...`, waits (at most 60 s) for `listening on http://ADDR`.
    pub fn spawn(
        name: &str,
        exe: &PathBuf,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Subject, String> {
        Subject::spawn_within(name, exe, args, env, Duration::from_secs(60))
    }

    /// Starts `exe args...` in its own process group, waits at most `within` for `listening on
    /// http://ADDR`; on failure, the error names the subject (its stderr is passed through).
    pub fn spawn_within(
        name: &str,
        exe: &PathBuf,
        args: &[String],
        env: &[(&str, &str)],
        within: Duration,
    ) -> Result<Subject, String> {
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
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
        match rx.recv_timeout(within) {
            Ok(Some(base_url)) => Ok(Subject {
                name: name.to_string(),
                base_url,
                child: Some(child),
            }),
            Ok(None) => {
                let status = child.wait().ok();
                stop_group(child);
                Err(format!(
                    "{name} exited ({}) before printing `listening on http://ADDR`",
                    status.map_or_else(|| "unknown status".into(), |s| s.to_string())
                ))
            }
            Err(_) => {
                stop_group(child);
                Err(format!(
                    "{name} did not print `listening on http://ADDR` within {}",
                    humantime::format_duration(within)
                ))
            }
        }
    }

    /// Kills the process at once with SIGKILL, as a crash or a power cut would stop it, and
    /// waits for it to be gone.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Resident memory of the process and every process it started, in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let pids = process_tree(self.child.as_ref()?.id());
        let total: u64 = pids.iter().filter_map(|pid| rss_of(*pid)).sum();
        (total > 0).then_some(total)
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `root` and its descendants, from `/proc/*/stat` (empty elsewhere than Linux).
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // The command name may hold spaces and parentheses: the fields resume after the
            // last `)`; the parent is the second of them.
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// Stops a subject's whole process group (a peer's script and the server it started): SIGTERM,
/// then SIGKILL when it has not exited within two seconds.
fn stop_group(mut child: Child) {
    let group = format!("-{}", child.id());
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    if signal("-TERM").is_err() {
        let _ = child.kill();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = child.wait();
        let _ = tx.send(());
    });
    if rx.recv_timeout(Duration::from_secs(2)).is_err() {
        let _ = signal("-KILL");
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
    }
}

/// The peers `bench --peers` knows: name → script under `bench/peers/`.
pub const PEERS: &[&str] = &["litellm"];

/// Starts peer `name` with `bench/peers/NAME.sh serve MOCK_URL` from `peers_dir`, allowing
/// `within` for a first-run install; an error says why it was skipped.
pub fn spawn_peer(
    name: &str,
    peers_dir: &Path,
    mock_url: &str,
    within: Duration,
    env: &[(&str, &str)],
) -> Result<Subject, String> {
    if !PEERS.contains(&name) {
        return Err(format!(
            "unknown peer {name:?} (known: {})",
            PEERS.join(", ")
        ));
    }
    let script = peers_dir.join(format!("{name}.sh"));
    if !script.is_file() {
        return Err(format!("{} not found", script.display()));
    }
    Subject::spawn_within(
        name,
        &PathBuf::from("bash"),
        &[
            script.display().to_string(),
            "serve".into(),
            mock_url.to_string(),
        ],
        env,
        within,
    )
}

/// Starts `exe serve-proxy`: spillway in front of the mock at `upstream`, its cache in
/// `cache_dir` (see [`proxy_config`] for `adaptive`).
pub fn spawn_proxy(
    name: &str,
    exe: &PathBuf,
    upstream: &str,
    cache_dir: &Path,
    shape: &ProxyShape,
) -> Result<Subject, String> {
    let mut args = vec![
        "serve-proxy".into(),
        "--upstream".into(),
        upstream.to_string(),
        "--cache-dir".into(),
        cache_dir.display().to_string(),
    ];
    if shape.adaptive {
        args.push("--adaptive".into());
    }
    if shape.limits_known {
        args.push("--limits-known".into());
    }
    if let Some(url) = &shape.fleet_redis {
        args.extend(["--fleet-redis".into(), url.clone()]);
    }
    Subject::spawn(name, exe, &args, &[])
}

/// How a benchmark's spillway is set up beside the plain one.
#[derive(Clone, Debug, Default)]
pub struct ProxyShape {
    /// The key's requests in flight are held to a congestion window while its limits are
    /// unknown (spillway's default); otherwise uncapped.
    pub adaptive: bool,
    /// The key's per-minute limits are in the config (too high to be met), so each miss
    /// reserves and settles them: what a fleet shares.
    pub limits_known: bool,
    /// A member of a fleet on the Redis at this URL.
    pub fleet_redis: Option<String>,
}

/// Starts a `redis-server` for the fleet rows (a child of the `serve-redis` subject).
pub fn spawn_redis(exe: &PathBuf) -> Result<Subject, String> {
    Subject::spawn("redis", exe, &["serve-redis".into()], &[])
}

/// `serve-redis`: a `redis-server` on a free loopback port, nothing saved, announced on stdout
/// as `listening on redis://ADDR/0`, until killed (it is in this process's group, so it goes
/// with it).
pub async fn serve_redis() -> Result<(), String> {
    let redis = crate::redis::RedisServer::start().await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "listening on {}", redis.url());
        let _ = out.flush();
    }
    let status = redis.wait().await?;
    Err(format!("redis-server exited: {status}"))
}

fn print_listening(addr: SocketAddr) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

/// Listens on a port the OS picks, on the loopback address.
async fn bind_loopback() -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, addr))
}

/// Serves spillway with `config` on a loopback port, announced on stdout, until killed.
async fn serve_spillway(config: spillway::config::Config) -> Result<(), String> {
    let state = spillway::AppState::new(config, spillway::Clock::real())?;
    let (listener, addr) = bind_loopback().await?;
    print_listening(addr);
    spillway::run(listener, state, std::future::pending())
        .await
        .map_err(|e| e.to_string())
}

/// `serve-mock`: a spillway-mock with no limits, no journal, one key, until killed.
pub async fn serve_mock() -> Result<(), String> {
    let spec = MockSpec {
        keys: vec![BENCH_KEY.to_string()],
        journal_capacity: 0,
        ..MockSpec::default()
    };
    let (listener, addr) = bind_loopback().await?;
    let state = Arc::new(MockState::new(spec, spillway_mock::Clock::real()));
    let mock = MockProvider::serve(listener, state).map_err(|e| e.to_string())?;
    print_listening(addr);
    std::future::pending::<()>().await;
    drop(mock);
    Ok(())
}

/// `serve-forwarder`: the bare forwarder in front of `upstream`, until killed.
pub async fn serve_forwarder(upstream: &str) -> Result<(), String> {
    let (listener, addr) = bind_loopback().await?;
    print_listening(addr);
    crate::forwarder::serve(listener, upstream).await
}

/// The proxy config a benchmark uses: one provider (the mock at `upstream`), one route, the
/// cache in `cache_dir`, no limits unless `shape` asks for them (see [`ProxyShape`]).
pub fn proxy_config(upstream: &str, cache_dir: &Path, shape: &ProxyShape) -> String {
    let cap = if shape.adaptive {
        ""
    } else {
        "unknown_limits_in_flight = 0"
    };
    let limits = if shape.limits_known {
        format!(
            "[providers.limits.\"{BENCH_MODEL}\"]\nrequests_per_minute = 1000000000\ntokens_per_minute = 1000000000000\n"
        )
    } else {
        String::new()
    };
    let fleet = if shape.fleet_redis.is_some() {
        "[fleet]\nredis = \"env:BENCH_REDIS_URL\"\nname = \"bench\"\ntimeout = \"50ms\"\n"
    } else {
        ""
    };
    format!(
        r#"
[cache]
path = {:?}

[[providers]]
name = "mock"
base_url = "{upstream}/openai/v1"
keys = ["env:BENCH_KEY"]
{cap}
{limits}
[[routes]]
model = "{BENCH_ROUTE}"
targets = [{{ provider = "mock", model = "{BENCH_MODEL}" }}]

{fleet}"#,
        cache_dir.display().to_string()
    )
}

/// `serve-config`: spillway from a config file (keys from the environment), logging warnings
/// only, until killed.
pub async fn serve_config(path: &Path) -> Result<(), String> {
    init_quiet_logs();
    let config =
        spillway::config::load(path, &spillway::config::ProcessEnv).map_err(|e| e.to_string())?;
    serve_spillway(config).await
}

/// Warnings and errors to stderr (RUST_LOG to change).
fn init_quiet_logs() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}

/// `serve-proxy`: spillway in front of `upstream` with its cache in `cache_dir`, set up as
/// `shape` says, logging warnings only, until killed.
pub async fn serve_proxy(
    upstream: &str,
    cache_dir: &Path,
    shape: &ProxyShape,
) -> Result<(), String> {
    init_quiet_logs();
    let mut env: HashMap<String, String> = HashMap::from([("BENCH_KEY".into(), BENCH_KEY.into())]);
    if let Some(url) = &shape.fleet_redis {
        env.insert("BENCH_REDIS_URL".into(), url.clone());
    }
    let config = spillway::config::parse(
        &proxy_config(upstream, cache_dir, shape),
        "bench.toml",
        &env,
    )
    .map_err(|e| e.to_string())?;
    serve_spillway(config).await
}
