//! What a bench run produced, as data: each subject's median figures per concurrency, the memory
//! soak, the probes, the skipped peers, the targets and the machine. Measuring fills it in; the
//! targets, the tables and the chart read it.

use serde::Serialize;

use super::probe::Probe;
use crate::load::LoadReport;

/// One subject's median figures at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Subject name (`spillway miss`).
    pub subject: String,
    /// `chat` or `stream`.
    pub kind: String,
    /// Concurrency.
    pub concurrency: usize,
    /// Median requests per second.
    pub rps: f64,
    /// Median p50, µs.
    pub p50_us: u64,
    /// Median p99, µs.
    pub p99_us: u64,
    /// Median p99.9, µs.
    pub p999_us: u64,
    /// Requests measured over all runs.
    pub requests: u64,
    /// Non-200 answers, connection errors, and (spillway's miss rows) answers that came from the
    /// cache, over all runs.
    pub failures: u64,
    /// 200 answers whose body was not a chat completion (or stream) over all runs.
    pub invalid: u64,
    /// Resident memory of the subject's process (and its children) after the runs, KiB.
    pub rss_kib: Option<u64>,
    /// For spillway: answers its cache did not store during these runs because the writer was
    /// behind (`spillway_cache_writes_dropped_total`).
    pub unstored: Option<u64>,
    /// Every run.
    pub runs: Vec<LoadReport>,
}

/// The memory soak: spillway on its cache-miss path (every answer stored), RSS after each stage.
#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    /// Requests per stage.
    pub requests_per_stage: u64,
    /// Concurrency.
    pub concurrency: usize,
    /// RSS after each stage, KiB.
    pub rss_kib: Vec<u64>,
    /// Requests measured per stage.
    pub requests: Vec<u64>,
    /// Non-200 answers, errors and invalid bodies over all stages.
    pub failures: u64,
    /// Answers not stored because the cache writer was behind, over all stages.
    pub unstored: Option<u64>,
}

/// A peer that was asked for and not measured, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The peer.
    pub peer: String,
    /// Why.
    pub reason: String,
}

/// Everything a bench run produced.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The machine it ran on.
    pub machine: Machine,
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Runs per subject and level.
    pub repeat: usize,
    /// Each subject's answer to one request, checked against the mock's.
    pub probes: Vec<Probe>,
    /// Rows, by concurrency then subject.
    pub rows: Vec<Row>,
    /// The memory soak, if run.
    pub soak: Option<Soak>,
    /// Peers asked for but not measured.
    pub skipped: Vec<Skipped>,
    /// The targets, met or not.
    pub targets: Vec<TargetCheck>,
}

impl BenchReport {
    /// Whether every subject answered every request correctly.
    pub fn all_correct(&self) -> bool {
        self.probes.iter().all(|p| p.ok)
            && self.rows.iter().all(|r| r.failures == 0 && r.invalid == 0)
            && self.soak.as_ref().is_none_or(|s| s.failures == 0)
    }
}

/// The machine a bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Operating system.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads it from `/proc` and `/etc/os-release` (fields unknown elsewhere).
    pub fn read() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once([':', '='])?;
                    (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                })
                .unwrap_or_else(|| "unknown".into())
        };
        let memory_kib: u64 = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0);
        Machine {
            cpu: field(&cpuinfo, "model name"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: memory_kib / 1024,
            os: field(&read("/etc/os-release"), "PRETTY_NAME"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// One target of the benchmark, checked against a run.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub name: String,
    /// The target.
    pub expected: String,
    /// What this run measured.
    pub actual: String,
    /// Met, missed, or not measured (`None`: a subject or level was not in the run).
    pub met: Option<bool>,
}

/// The row of `subject`'s `kind` of requests at `concurrency`, if it was measured.
pub fn find<'a>(rows: &'a [Row], subject: &str, kind: &str, concurrency: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.subject == subject && r.kind == kind && r.concurrency == concurrency)
}
