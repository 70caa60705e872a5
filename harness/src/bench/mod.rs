//! `spillway-harness bench`: the same request mix, closed loop, through each subject in turn
//! (A B A B... so machine drift cancels), at each concurrency; medians reported as a table
//! with ratios against going direct to the mock.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::load::{LoadReport, LoadSpec, chat_bodies, run_load};
use crate::subjects::{BENCH_KEY, BENCH_MODEL, BENCH_ROUTE, Subject};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Measured time per run.
    pub duration: Duration,
    /// Unmeasured warm-up per run.
    pub warmup: Duration,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Runs per subject and level (the median is reported).
    pub repeat: usize,
    /// The harness executable (re-executed to serve subjects).
    pub exe: PathBuf,
}

/// One subject's median figures at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Subject name.
    pub subject: String,
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
    /// Non-200 answers and errors over all runs.
    pub failures: u64,
    /// Resident memory after the runs, KiB.
    pub rss_kib: Option<u64>,
    /// Every run.
    pub runs: Vec<LoadReport>,
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

struct Target {
    name: String,
    url: http::Uri,
    model: &'static str,
    subject: usize,
    /// Distinct prompts per run: many (every request a cache miss) or few (after the warm-up,
    /// every request a cache hit).
    distinct: usize,
}

/// Runs the benchmark: starts the mock and the proxy, measures, returns rows per concurrency.
pub async fn run_bench(spec: &BenchSpec) -> Result<Vec<Row>, String> {
    let mock = Subject::spawn("mock", &spec.exe, &["serve-mock".into()], &[])?;
    let cache_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let proxy = Subject::spawn(
        "spillway",
        &spec.exe,
        &[
            "serve-proxy".into(),
            "--upstream".into(),
            mock.base_url.clone(),
            "--cache-dir".into(),
            cache_dir.path().join("cache").display().to_string(),
        ],
        &[],
    )?;
    let forwarder = Subject::spawn(
        "forwarder",
        &spec.exe,
        &[
            "serve-forwarder".into(),
            "--upstream".into(),
            mock.base_url.clone(),
        ],
        &[],
    )?;
    let subjects = [&mock, &proxy, &forwarder];
    let targets = [
        Target {
            name: "direct (mock)".into(),
            url: format!("{}/openai/v1/chat/completions", mock.base_url)
                .parse()
                .map_err(|e| format!("{e}"))?,
            model: BENCH_MODEL,
            subject: 0,
            distinct: 50_000,
        },
        Target {
            name: "bare forwarder".into(),
            url: format!("{}/openai/v1/chat/completions", forwarder.base_url)
                .parse()
                .map_err(|e| format!("{e}"))?,
            model: BENCH_MODEL,
            subject: 2,
            distinct: 50_000,
        },
        Target {
            name: "spillway (miss)".into(),
            url: format!("{}/v1/chat/completions", proxy.base_url)
                .parse()
                .map_err(|e| format!("{e}"))?,
            model: BENCH_ROUTE,
            subject: 1,
            distinct: 50_000,
        },
        Target {
            name: "spillway (hit)".into(),
            url: format!("{}/v1/chat/completions", proxy.base_url)
                .parse()
                .map_err(|e| format!("{e}"))?,
            model: BENCH_ROUTE,
            subject: 1,
            distinct: 100,
        },
    ];
    let headers = vec![
        (
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(&format!("Bearer {BENCH_KEY}")).map_err(|e| e.to_string())?,
        ),
        (
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        ),
    ];
    let mut rows = Vec::new();
    for &concurrency in &spec.concurrency {
        let mut runs: BTreeMap<usize, Vec<LoadReport>> = BTreeMap::new();
        for rep in 0..spec.repeat.max(1) {
            for (i, target) in targets.iter().enumerate() {
                // Distinct prompts per run, so a cache in front never answers.
                // Hit runs reuse one small prompt set, warmed during the warm-up.
                let tag = if target.distinct < 1000 {
                    "hits ".to_string()
                } else {
                    format!("c{concurrency} r{rep} s{i} ")
                };
                let bodies = chat_bodies(target.model, target.distinct, 200, &tag);
                let report = run_load(LoadSpec {
                    url: target.url.clone(),
                    headers: headers.clone(),
                    bodies: Arc::new(bodies),
                    concurrency,
                    duration: spec.duration,
                    warmup: spec.warmup,
                    max_requests: None,
                })
                .await
                .map_err(|e| e.to_string())?;
                eprintln!(
                    "  c={concurrency:<3} run {} {:<16} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs",
                    rep + 1,
                    target.name,
                    report.rps,
                    report.p50_us,
                    report.p99_us
                );
                runs.entry(i).or_default().push(report);
            }
        }
        for (i, target) in targets.iter().enumerate() {
            let reports = runs.remove(&i).unwrap_or_default();
            let failures = reports
                .iter()
                .map(|r| {
                    r.errors
                        + r.by_status
                            .iter()
                            .filter(|(s, _)| **s != 200)
                            .map(|(_, n)| n)
                            .sum::<u64>()
                })
                .sum();
            rows.push(Row {
                subject: target.name.clone(),
                concurrency,
                rps: median_f64(reports.iter().map(|r| r.rps).collect()),
                p50_us: median_u64(reports.iter().map(|r| r.p50_us).collect()),
                p99_us: median_u64(reports.iter().map(|r| r.p99_us).collect()),
                p999_us: median_u64(reports.iter().map(|r| r.p999_us).collect()),
                failures,
                rss_kib: subjects[target.subject].rss_kib(),
                runs: reports,
            });
        }
    }
    Ok(rows)
}

/// The rows as a Markdown table, with ratios against the direct row of each concurrency.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| concurrency | subject | requests/s | p50 | p99 | p99.9 | RSS | throughput vs direct | p50 added |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let direct = rows
            .iter()
            .find(|r| r.concurrency == row.concurrency && r.subject.starts_with("direct"));
        let (ratio, added) = match direct {
            Some(d) if d.rps > 0.0 => (
                format!("{:.2}×", row.rps / d.rps),
                format!("{:+} µs", row.p50_us as i64 - d.p50_us as i64),
            ),
            _ => ("-".into(), "-".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} µs | {} µs | {} µs | {} | {} | {} |\n",
            row.concurrency,
            row.subject,
            row.rps,
            row.p50_us,
            row.p99_us,
            row.p999_us,
            row.rss_kib
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
            ratio,
            added
        ));
    }
    out
}
