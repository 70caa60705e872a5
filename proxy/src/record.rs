//! Traffic recording (`spillway serve --record traffic.jsonl`): one JSON line per client
//! request — when it came (seconds from the start), its route, endpoint and body (or, with
//! `--record-bodies false`, only its cache key and token counts), and its outcome. No
//! credentials: no header is recorded. The harness replays these files.
//!
//! Lines are written by a background task so a slow disk never holds up a request; if the
//! writer falls far behind, lines are dropped and counted rather than queued without bound.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// Lines that may wait for the writer before new ones are dropped.
const BACKLOG: usize = 65_536;

/// A request's outcome as recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RecordedOutcome {
    /// HTTP status the client got.
    pub status: u16,
    /// Provider that answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Upstream model id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Key alias, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Upstream attempts.
    #[serde(default)]
    pub attempts: u32,
    /// `hit`, `miss`, `bypass`, `coalesced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Time to the response headers, milliseconds (clock time).
    pub latency_ms: f64,
    /// `{prompt_tokens, completion_tokens}` when the answer reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
    /// Milliseconds (wall-clock) the request waited for headroom, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// The keys and targets tried or passed over and why each was left, as in
    /// `x-spillway-fallback`, when there was more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// One recorded request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// Seconds (clock time) from the start of the recording.
    pub t: f64,
    /// The route (client-facing model name).
    pub route: String,
    /// The named client (`[[clients]]`) that sent it, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// `chat` or `embeddings`.
    pub endpoint: String,
    /// `"stream": true`.
    pub stream: bool,
    /// The request body, unless recorded without bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// The request's cache key (route and endpoint included, no namespace).
    pub key: String,
    /// Prompt tokens, estimated.
    pub prompt_tokens: u64,
    /// Completion tokens allowed.
    pub max_tokens: u64,
    /// What happened.
    pub outcome: RecordedOutcome,
}

/// Writes recorded requests to a JSONL file.
#[derive(Debug)]
pub struct Recorder {
    /// Whether bodies are recorded.
    pub bodies: bool,
    /// Clock time the recording started.
    pub started: Duration,
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<String>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: AtomicU64,
}

impl Recorder {
    /// Creates (or truncates) `path` and starts the writer.
    pub fn open(path: &Path, bodies: bool, started: Duration) -> std::io::Result<Self> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::create(path)?;
        let (tx, mut rx) = mpsc::channel::<String>(BACKLOG);
        let task = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            while let Some(line) = rx.blocking_recv() {
                let _ = out.write_all(line.as_bytes());
                let _ = out.write_all(b"\n");
                // Flush whenever the queue runs dry, so the file is current when idle.
                if rx.is_empty() {
                    let _ = out.flush();
                }
            }
            let _ = out.flush();
        });
        Ok(Recorder {
            bodies,
            started,
            path: path.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues one line.
    pub fn record(&self, request: &RecordedRequest) {
        let Ok(line) = serde_json::to_string(request) else {
            return;
        };
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref()
            && tx.try_send(line).is_err()
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(path = %self.path.display(), dropped = n, "recording cannot keep up; lines dropped");
            }
        }
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stops accepting lines and waits until every queued line is on disk.
    pub async fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Reads a recording.
pub fn read(path: &Path) -> Result<Vec<RecordedRequest>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))
        })
        .collect()
}
