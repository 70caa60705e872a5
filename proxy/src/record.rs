//! Traffic recording (`spillway serve --record traffic.jsonl`): one JSON line per client
//! request — when it came (seconds from the start), its route, endpoint and body (or, with
//! `--record-bodies false`, only its cache key and token counts), and its outcome. No
//! credentials: no header is recorded. The harness replays these files.
//!
//! Lines are written by a background task so a slow disk never holds up a request; if the
//! writer falls far behind, lines are dropped and counted rather than queued without bound. A
//! write that fails (a full disk) is cut back to the last whole line, its lines counted as
//! lost and logged: the file always holds whole lines only.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// Lines that may wait for the writer before new ones are dropped.
const BACKLOG: usize = 65_536;

/// The most bytes the writer gathers before it writes them.
const BATCH_BYTES: usize = 64 * 1024;

/// Where the writer appends whole lines.
trait LineSink {
    /// Appends `bytes` whole, or, on an error, leaves the sink as it was before.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

/// A file being written, with the length of what it holds whole.
struct FileSink {
    file: std::fs::File,
    len: u64,
}

impl LineSink for FileSink {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Part of the batch may be on disk: cut it off, so no line is left half
                // written, and write the next batch where it began.
                let _ = self.file.set_len(self.len);
                let _ = self.file.seek(std::io::SeekFrom::Start(self.len));
                Err(e)
            }
        }
    }
}

/// Lines gathered for one write.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

impl Batch {
    fn push(&mut self, line: &str) {
        self.bytes.extend_from_slice(line.as_bytes());
        self.bytes.push(b'\n');
        self.lines += 1;
    }

    /// Writes the batch to `sink` and empties it; on an error, counts its lines in `lost` and
    /// logs (at powers of two of the lines lost).
    fn write_to(&mut self, sink: &mut impl LineSink, lost: &AtomicU64, path: &Path) {
        if self.lines == 0 {
            return;
        }
        if let Err(e) = sink.append(&self.bytes) {
            let before = lost.fetch_add(self.lines, Ordering::Relaxed);
            let after = before + self.lines;
            if before == 0 || (after.ilog2() > before.ilog2()) {
                tracing::warn!(path = %path.display(), error = %e, lost = after, "recording: a write failed; its lines are lost (the file keeps whole lines only)");
            }
        }
        self.bytes.clear();
        self.lines = 0;
    }
}

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
    lost: Arc<AtomicU64>,
}

/// The writer: gathers the lines queued (up to [`BATCH_BYTES`]) and writes them whenever the
/// queue runs dry, so the file is current when traffic pauses.
fn write_lines(
    mut rx: mpsc::Receiver<String>,
    sink: &mut impl LineSink,
    lost: &AtomicU64,
    path: &Path,
) {
    let mut batch = Batch::default();
    while let Some(line) = rx.blocking_recv() {
        batch.push(&line);
        if rx.is_empty() || batch.bytes.len() >= BATCH_BYTES {
            batch.write_to(sink, lost, path);
        }
    }
    batch.write_to(sink, lost, path);
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
        let (tx, rx) = mpsc::channel::<String>(BACKLOG);
        let lost = Arc::new(AtomicU64::new(0));
        let task = tokio::task::spawn_blocking({
            let (lost, path) = (lost.clone(), path.to_path_buf());
            move || write_lines(rx, &mut FileSink { file, len: 0 }, &lost, &path)
        });
        Ok(Recorder {
            bodies,
            started,
            path: path.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
            dropped: AtomicU64::new(0),
            lost,
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

    /// Lines lost because a write failed (a full disk).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> RecordedRequest {
        RecordedRequest {
            t: i as f64,
            route: "chat".into(),
            client: None,
            endpoint: "chat".into(),
            stream: false,
            body: None,
            key: format!("{i:064x}"),
            prompt_tokens: 10,
            max_tokens: 5,
            outcome: RecordedOutcome::default(),
        }
    }

    /// A sink of `room` bytes: an append that does not fit fails and leaves it as it was.
    struct SmallDisk {
        written: Vec<u8>,
        room: usize,
    }

    impl LineSink for SmallDisk {
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if self.written.len() + bytes.len() > self.room {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            self.written.extend_from_slice(bytes);
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_loses_whole_lines_counted_and_leaves_no_partial_one() {
        let (tx, rx) = mpsc::channel(BACKLOG);
        for i in 0..300 {
            tx.try_send(serde_json::to_string(&line(i)).expect("JSON"))
                .expect("queued");
        }
        drop(tx);
        let mut disk = SmallDisk {
            written: Vec::new(),
            room: 20_000,
        };
        let lost = AtomicU64::new(0);
        write_lines(rx, &mut disk, &lost, Path::new("t.jsonl"));
        let text = String::from_utf8(disk.written).expect("UTF-8");
        let mut kept = 0;
        for l in text.lines() {
            serde_json::from_str::<RecordedRequest>(l).expect("a whole line");
            kept += 1;
        }
        assert!(text.ends_with('\n') || text.is_empty());
        assert!(kept < 300, "the disk was too small for every line");
        assert_eq!(kept as u64 + lost.load(Ordering::Relaxed), 300);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_recording_on_a_device_that_takes_nothing_counts_every_line_lost() {
        let recorder =
            Recorder::open(Path::new("/dev/full"), false, Duration::ZERO).expect("opened");
        for i in 0..50 {
            recorder.record(&line(i));
        }
        recorder.close().await;
        assert_eq!((recorder.lost(), recorder.dropped()), (50, 0));
    }
}
