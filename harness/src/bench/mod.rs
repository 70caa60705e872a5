//! `spillway-harness bench`: the same request mix, closed loop, through each subject in turn
//! (A B C A B C... so machine drift cancels), at each concurrency; medians reported with
//! ratios against going direct to the mock and against a bare forwarder, then a memory soak.
//!
//! - [`probe`]: one request per subject, checked against the mock's own answer;
//! - [`table`]: the Markdown tables, the targets and the machine's description;
//! - [`chart`]: the SVG bar chart.

pub mod chart;
pub mod probe;
pub mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::load::{Bodies, BodyCheck, LoadReport, LoadSpec, bodies, numbered_bodies, run_load};
use crate::subjects::{BENCH_KEY, BENCH_MODEL, BENCH_ROUTE, Subject, spawn_peer};

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
    /// Peers to measure beside spillway (`litellm`).
    pub peers: Vec<String>,
    /// Where the peers' scripts are (`bench/peers`).
    pub peers_dir: PathBuf,
    /// Longest a peer may take to install and start.
    pub peer_start: Duration,
    /// Requests per memory-soak stage (three stages; 0: no soak).
    pub soak: u64,
    /// Concurrency of the soak.
    pub soak_concurrency: usize,
}

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
    pub machine: table::Machine,
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Runs per subject and level.
    pub repeat: usize,
    /// Each subject's answer to one request, checked against the mock's.
    pub probes: Vec<probe::Probe>,
    /// Rows, by concurrency then subject.
    pub rows: Vec<Row>,
    /// The memory soak, if run.
    pub soak: Option<Soak>,
    /// Peers asked for but not measured.
    pub skipped: Vec<Skipped>,
    /// The targets, met or not.
    pub targets: Vec<table::TargetCheck>,
}

impl BenchReport {
    /// Whether every subject answered every request correctly.
    pub fn all_correct(&self) -> bool {
        self.probes.iter().all(|p| p.ok)
            && self.rows.iter().all(|r| r.failures == 0 && r.invalid == 0)
            && self.soak.as_ref().is_none_or(|s| s.failures == 0)
    }
}

/// One measured path: a subject, a URL, a request mix.
struct Target {
    name: String,
    subject: usize,
    url: http::Uri,
    model: &'static str,
    key: String,
    stream: bool,
    /// Distinct prompts: 0, a new one for every request (every request a cache miss), or a
    /// few (after the first pass, every request a cache hit).
    distinct: usize,
}

impl Target {
    fn kind(&self) -> &'static str {
        if self.stream { "stream" } else { "chat" }
    }

    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        Ok(vec![
            (
                HeaderName::from_static("authorization"),
                HeaderValue::from_str(&format!("Bearer {}", self.key))
                    .map_err(|e| e.to_string())?,
            ),
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
        ])
    }

    fn check(&self) -> BodyCheck {
        if self.stream {
            BodyCheck::Stream
        } else {
            BodyCheck::Chat
        }
    }
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn uri(s: String) -> Result<http::Uri, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

/// A random-enough key for a peer that insists on one (LiteLLM's master key).
fn peer_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    format!("sk-bench-{:016x}{:016x}", random(), random())
}

/// spillway's count of answers its cache did not store (the writer was behind).
async fn dropped_writes(base_url: &str) -> Option<u64> {
    metric(
        &metrics(base_url).await?,
        "spillway_cache_writes_dropped_total ",
    )
}

/// Requests spillway answered from its cache (hits, and requests that joined an identical one in
/// flight), from its metrics.
async fn answered_from_cache(base_url: &str) -> Option<u64> {
    let text = metrics(base_url).await?;
    let hit = metric(&text, "spillway_cache_requests_total{outcome=\"hit\"} ");
    let joined = metric(
        &text,
        "spillway_cache_requests_total{outcome=\"coalesced\"} ",
    );
    Some(hit.unwrap_or(0) + joined.unwrap_or(0))
}

/// spillway's `/metrics` text.
async fn metrics(base_url: &str) -> Option<String> {
    reqwest::get(format!("{base_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of the metric whose line starts with `prefix` (absent: never counted).
fn metric(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn spawn_proxy(spec: &BenchSpec, mock: &Subject, dir: &std::path::Path) -> Result<Subject, String> {
    Subject::spawn(
        "spillway",
        &spec.exe,
        &[
            "serve-proxy".into(),
            "--upstream".into(),
            mock.base_url.clone(),
            "--cache-dir".into(),
            dir.join("cache").display().to_string(),
        ],
        &[],
    )
}

/// Runs the benchmark: starts the mock, the forwarder, spillway and the peers; probes each;
/// measures; soaks; evaluates the targets.
pub async fn run_bench(spec: &BenchSpec) -> Result<BenchReport, String> {
    let mock = Subject::spawn("mock", &spec.exe, &["serve-mock".into()], &[])?;
    let cache_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let proxy = spawn_proxy(spec, &mock, cache_dir.path())?;
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
    let mut subjects = vec![mock, proxy, forwarder];
    let mut skipped = Vec::new();
    let mut peer_targets = Vec::new();
    for peer in &spec.peers {
        let key = peer_key();
        eprintln!("starting peer {peer} (a first run installs it)");
        let started = {
            let (name, dir, mock_url, within) = (
                peer.clone(),
                spec.peers_dir.clone(),
                subjects[0].base_url.clone(),
                spec.peer_start,
            );
            let key = key.clone();
            tokio::task::spawn_blocking(move || {
                spawn_peer(
                    &name,
                    &dir,
                    &mock_url,
                    within,
                    &[("LITELLM_MASTER_KEY", &key)],
                )
            })
            .await
            .map_err(|e| e.to_string())?
        };
        match started {
            Ok(subject) => {
                peer_targets.push(Target {
                    name: peer.clone(),
                    subject: subjects.len(),
                    url: uri(format!("{}/v1/chat/completions", subject.base_url))?,
                    model: BENCH_ROUTE,
                    key,
                    stream: false,
                    distinct: 0,
                });
                subjects.push(subject);
            }
            Err(reason) => {
                eprintln!("skipping peer {peer}: {reason}");
                skipped.push(Skipped {
                    peer: peer.clone(),
                    reason,
                });
            }
        }
    }
    let (mock, proxy, forwarder) = (&subjects[0], &subjects[1], &subjects[2]);
    let direct_url = format!("{}/openai/v1/chat/completions", mock.base_url);
    let forwarder_url = format!("{}/openai/v1/chat/completions", forwarder.base_url);
    let proxy_url = format!("{}/v1/chat/completions", proxy.base_url);
    let target =
        |name: &str, subject, url: &str, model, stream, distinct| -> Result<Target, String> {
            Ok(Target {
                name: name.into(),
                subject,
                url: uri(url.to_string())?,
                model,
                key: BENCH_KEY.into(),
                stream,
                distinct,
            })
        };
    let mut targets = vec![
        target("direct", 0, &direct_url, BENCH_MODEL, false, 0)?,
        target("forwarder", 2, &forwarder_url, BENCH_MODEL, false, 0)?,
        target("spillway miss", 1, &proxy_url, BENCH_ROUTE, false, 0)?,
        target("spillway hit", 1, &proxy_url, BENCH_ROUTE, false, 100)?,
    ];
    targets.extend(peer_targets);
    targets.extend([
        target("direct", 0, &direct_url, BENCH_MODEL, true, 0)?,
        target("forwarder", 2, &forwarder_url, BENCH_MODEL, true, 0)?,
        target("spillway miss", 1, &proxy_url, BENCH_ROUTE, true, 0)?,
    ]);

    let mut probes = Vec::new();
    let reference = probe::reference(&direct_url, BENCH_KEY, BENCH_MODEL).await?;
    for t in &targets {
        let p = probe::probe(
            &t.name,
            t.kind(),
            &t.url.to_string(),
            &t.key,
            t.model,
            t.stream,
            &reference,
        )
        .await;
        if !p.ok {
            eprintln!("{} ({}) answered wrongly: {}", t.name, t.kind(), p.detail);
        }
        probes.push(p);
    }

    let mut rows = Vec::new();
    for &concurrency in &spec.concurrency {
        let mut runs: BTreeMap<usize, Vec<LoadReport>> = BTreeMap::new();
        let mut unstored: BTreeMap<usize, Option<u64>> = BTreeMap::new();
        // Answers spillway gave from its cache during a miss run: each is a wrong measurement.
        let mut cached_in_miss_runs: BTreeMap<usize, u64> = BTreeMap::new();
        for rep in 0..spec.repeat.max(1) {
            for (i, t) in targets.iter().enumerate() {
                // Miss runs: a new prompt for every request, and a tag per run, so a cache in
                // front never answers. Hit runs reuse one small prompt set, stored during the
                // first warm-up.
                let bodies = if t.distinct == 0 {
                    let tag = format!("c{concurrency} r{rep} t{i} ");
                    numbered_bodies(t.model, 200, &tag, t.stream)
                } else {
                    Bodies::Cycle(Arc::new(bodies(
                        t.model, t.distinct, 200, "hits ", t.stream,
                    )))
                };
                let is_spillway = t.subject == 1;
                let dropped_before = if is_spillway {
                    dropped_writes(&subjects[1].base_url).await
                } else {
                    None
                };
                let miss_run = is_spillway && t.distinct == 0;
                let cached_before = if miss_run {
                    answered_from_cache(&subjects[1].base_url).await
                } else {
                    None
                };
                let report = run_load(LoadSpec {
                    url: t.url.clone(),
                    headers: t.headers()?,
                    bodies,
                    concurrency,
                    duration: spec.duration,
                    warmup: spec.warmup,
                    max_requests: None,
                    check: t.check(),
                })
                .await
                .map_err(|e| format!("{}: {e}", t.name))?;
                eprintln!(
                    "  c={concurrency:<3} run {} {:<22} {:>9.0} req/s  p50 {:>7} µs  p99 {:>7} µs",
                    rep + 1,
                    format!("{} ({})", t.name, t.kind()),
                    report.rps,
                    report.p50_us,
                    report.p99_us
                );
                if let Some(before) = cached_before
                    && let Some(after) = answered_from_cache(&subjects[1].base_url).await
                    && after > before
                {
                    eprintln!(
                        "    {} answers of this miss run came from the cache",
                        after - before
                    );
                    *cached_in_miss_runs.entry(i).or_insert(0) += after - before;
                }
                if let Some(e) = &report.first_error {
                    eprintln!("    {} failed requests; the first: {e}", report.errors);
                }
                if is_spillway {
                    let after = dropped_writes(&subjects[1].base_url).await;
                    let slot = unstored.entry(i).or_insert(Some(0));
                    *slot = match (*slot, dropped_before, after) {
                        (Some(sum), Some(b), Some(a)) => Some(sum + a.saturating_sub(b)),
                        _ => None,
                    };
                }
                runs.entry(i).or_default().push(report);
            }
        }
        for (i, t) in targets.iter().enumerate() {
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
                .sum::<u64>()
                + cached_in_miss_runs.get(&i).copied().unwrap_or(0);
            rows.push(Row {
                subject: t.name.clone(),
                kind: t.kind().into(),
                concurrency,
                rps: median_f64(reports.iter().map(|r| r.rps).collect()),
                p50_us: median_u64(reports.iter().map(|r| r.p50_us).collect()),
                p99_us: median_u64(reports.iter().map(|r| r.p99_us).collect()),
                p999_us: median_u64(reports.iter().map(|r| r.p999_us).collect()),
                requests: reports.iter().map(|r| r.requests).sum(),
                failures,
                invalid: reports.iter().map(|r| r.invalid).sum(),
                rss_kib: subjects[t.subject].rss_kib(),
                unstored: unstored.remove(&i).flatten(),
                runs: reports,
            });
        }
    }
    // The soak gets a fresh spillway, so what it measures is its own 3 × N requests.
    drop(subjects.drain(1..));
    let soak = if spec.soak > 0 {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let proxy = spawn_proxy(spec, &subjects[0], dir.path())?;
        Some(run_soak(spec, &proxy).await?)
    } else {
        None
    };
    let mut report = BenchReport {
        machine: table::Machine::read(),
        duration_s: spec.duration.as_secs_f64(),
        warmup_s: spec.warmup.as_secs_f64(),
        repeat: spec.repeat.max(1),
        probes,
        rows,
        soak,
        skipped,
        targets: Vec::new(),
    };
    report.targets = table::evaluate(&report, &spec.peers);
    Ok(report)
}

async fn run_soak(spec: &BenchSpec, proxy: &Subject) -> Result<Soak, String> {
    let url = uri(format!("{}/v1/chat/completions", proxy.base_url))?;
    let target = Target {
        name: "spillway miss".into(),
        subject: 0,
        url: url.clone(),
        model: BENCH_ROUTE,
        key: BENCH_KEY.into(),
        stream: false,
        distinct: 0,
    };
    let mut soak = Soak {
        requests_per_stage: spec.soak,
        concurrency: spec.soak_concurrency,
        rss_kib: Vec::new(),
        requests: Vec::new(),
        failures: 0,
        unstored: None,
    };
    let dropped_before = dropped_writes(&proxy.base_url).await;
    for stage in 0..3 {
        let report = run_load(LoadSpec {
            url: url.clone(),
            headers: target.headers()?,
            bodies: numbered_bodies(BENCH_ROUTE, 200, &format!("soak {stage} "), false),
            concurrency: spec.soak_concurrency,
            // Bounded in time as well as count.
            duration: Duration::from_secs(600),
            warmup: Duration::ZERO,
            max_requests: Some(spec.soak),
            check: BodyCheck::Chat,
        })
        .await
        .map_err(|e| format!("soak: {e}"))?;
        // Let the cache's writer drain before reading memory.
        spillway_clock::Clock::real()
            .sleep(Duration::from_secs(1))
            .await;
        let rss = proxy.rss_kib().unwrap_or(0);
        eprintln!(
            "  soak stage {}: {} requests, RSS {:.1} MiB",
            stage + 1,
            report.requests,
            rss as f64 / 1024.0
        );
        soak.failures += report.errors
            + report.invalid
            + report
                .by_status
                .iter()
                .filter(|(s, _)| **s != 200)
                .map(|(_, n)| n)
                .sum::<u64>();
        soak.requests.push(report.requests);
        soak.rss_kib.push(rss);
    }
    if let (Some(before), Some(after)) = (dropped_before, dropped_writes(&proxy.base_url).await) {
        soak.unstored = Some(after.saturating_sub(before));
    }
    Ok(soak)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::subjects::proxy_config;
    use bytes::Bytes;

    /// The miss-run check reads spillway's own cache counters: a repeated request shows up in
    /// it, a new one does not.
    #[tokio::test]
    async fn answers_from_the_cache_are_read_from_spillways_metrics() {
        let mock = spillway_mock::MockProvider::builder()
            .key(BENCH_KEY)
            .start()
            .await;
        let dir = tempfile::tempdir().expect("a temp dir");
        let env = HashMap::from([("BENCH_KEY".to_string(), BENCH_KEY.to_string())]);
        let config = spillway::config::parse(
            &proxy_config(&mock.base_url(), &dir.path().join("cache")),
            "bench.toml",
            &env,
        )
        .expect("the bench's config");
        let state = spillway::AppState::new(config, spillway::Clock::real()).expect("proxy state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(spillway::run(listener, state, std::future::pending()));

        let send = |body: Bytes| {
            let url = format!("{base}/v1/chat/completions");
            async move {
                let resp = reqwest::Client::new()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("an answer");
                assert_eq!(resp.status(), 200);
            }
        };
        let numbered = numbered_bodies(BENCH_ROUTE, 50, "check ", false);
        assert_eq!(answered_from_cache(&base).await, Some(0));
        send(numbered.nth(0).expect("a body")).await;
        send(numbered.nth(1).expect("a body")).await;
        assert_eq!(answered_from_cache(&base).await, Some(0), "two new prompts");
        send(numbered.nth(0).expect("a body")).await;
        assert_eq!(
            answered_from_cache(&base).await,
            Some(1),
            "one repeated prompt"
        );
    }
}
