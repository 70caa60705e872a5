//! Helpers for the end-to-end tests: start a proxy in-process on port 0 against mocks, and talk
//! to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use spillway::AppState;
use spillway_clock::Clock;
use tokio::sync::oneshot;

/// A proxy running in-process.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its cache directory (removed with the proxy) unless the config names one.
    pub cache_dir: Option<tempfile::TempDir>,
    /// Its shared state at start (router, metrics).
    pub state: Arc<AppState>,
    /// The state in force, which [`spillway::Live::reload`] replaces.
    pub live: Arc<spillway::Live>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    /// Starts a proxy from config text; `env` resolves its `env:NAME` references.
    pub async fn start(toml: &str, env: &[(&str, &str)], clock: Clock) -> Proxy {
        // Every test proxy gets its own cache directory unless its config says otherwise.
        let (toml, cache_dir) = if toml.contains("[cache]") {
            (toml.to_string(), None)
        } else {
            let dir = tempfile::tempdir().expect("a temp dir");
            let path = dir.path().join("cache");
            (
                format!("{toml}\n[cache]\npath = {:?}\n", path.display().to_string()),
                Some(dir),
            )
        };
        let toml = toml.as_str();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = spillway::config::parse(toml, "test.toml", &env).expect("valid test config");
        let state = AppState::new(config, clock).expect("proxy state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let live = spillway::Live::new(state.clone());
        let task = tokio::spawn(spillway::run_live(listener, live.clone(), async move {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            cache_dir,
            state,
            live,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://ADDR/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://ADDR`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tells the proxy to stop and hands back its serving task, which ends once in-flight
    /// requests have finished.
    pub fn begin_shutdown(&mut self) -> Option<tokio::task::JoinHandle<std::io::Result<()>>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take()
    }

    /// Stops and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        // Background tasks drop their handles on the state just after landing; wait for them
        // so the cache directory is free for a restarted proxy.
        // The state in force is held here, by `live` and by `current`; a state a reload
        // replaced, only by `state`.
        let current = self.live.current();
        let reloaded = !Arc::ptr_eq(&self.state, &current);
        for _ in 0..500 {
            let idle = if reloaded {
                Arc::strong_count(&self.state) == 1 && Arc::strong_count(&current) == 2
            } else {
                Arc::strong_count(&current) == 3
            };
            if idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The model the tests' `groq` provider serves.
pub const GROQ_MODEL: &str = "llama-3.1-8b-instant";

/// A config with one provider, `groq` at `base_url` with the key in env `K1`, behind the route
/// `chat`; `tables` (`[server]`, `[cache]`, ...) come after it.
pub fn groq_chat_config(base_url: &str, tables: &str) -> String {
    format!(
        r#"
[[providers]]
name = "groq"
base_url = "{base_url}"
keys = ["env:K1"]

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]

{tables}
"#
    )
}

/// The `data:` payloads of a server-sent-events body, in order (`[DONE]` included).
pub fn data_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The text a chat-completion stream's events spell out.
pub fn text_of(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// A client with a generous timeout (every test bounds its own waits).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

/// A chat body for `model`.
pub fn chat_body(model: &str, content: &str, max_tokens: u64) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    })
}

/// POSTs a chat request to `base` (ending in `/v1`).
pub async fn chat(base: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("the proxy answers")
}

/// A header as text ("" when absent).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Moves a manual clock forward in step with wall time until the returned handle is dropped,
/// so code that sleeps on the clock wakes up.
pub fn drive(clock: &Clock) -> DriveGuard {
    let clock = clock.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            clock.advance(Duration::from_millis(5));
        }
    });
    DriveGuard(task)
}

/// Stops driving a manual clock when dropped.
pub struct DriveGuard(tokio::task::JoinHandle<()>);

impl Drop for DriveGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A `redis-server` of the test's own on a free loopback port, with nothing saved to disk;
/// killed when dropped (the harness's, which scenarios and benchmarks start too).
pub use spillway_harness::redis::RedisServer;
