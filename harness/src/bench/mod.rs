//! `spillway-harness bench`: the same request mix, closed loop, through each subject in turn
//! (A B C A B C... so machine drift cancels), at each concurrency; medians reported with
//! ratios against going direct to the mock and against a bare forwarder, then a memory soak.
//!
//! - [`report`]: what a run produced, as data (rows, soak, probes, targets, machine);
//! - [`probe`]: one request per subject, checked against the mock's own answer;
//! - [`targets`]: the targets, met, missed or not measured;
//! - [`table`]: the report as Markdown;
//! - [`chart`]: the SVG bar chart.

pub mod chart;
pub mod probe;
pub mod report;
pub mod table;
pub mod targets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub use report::{BenchReport, Machine, Row, Skipped, Soak, TargetCheck};

use crate::load::{
    Bodies, BodyCheck, LoadReport, LoadSpec, bodies, json_headers, numbered_bodies, run_load,
};
use crate::subjects::{
    BENCH_KEY, BENCH_MODEL, BENCH_ROUTE, ProxyShape, Subject, spawn_peer, spawn_proxy, spawn_redis,
};
use probe::Probe;

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
    /// Measure spillway in a fleet (with a redis-server) beside the same spillway alone, and
    /// the load spread over three members.
    pub fleet: bool,
}

/// Where each subject stands in the list the targets point into; peers follow.
const MOCK: usize = 0;
const SPILLWAY: usize = 1;
const FORWARDER: usize = 2;
const SPILLWAY_ADAPTIVE: usize = 3;
/// With `--fleet`: the Redis (at 4), spillway with its limits known, and the same in a fleet
/// (with two more members, at [`FLEET_MORE`]).
const SPILLWAY_KNOWN: usize = 5;
const SPILLWAY_FLEET: usize = 6;
/// The fleet's second and third members (with `--fleet`), the first being [`SPILLWAY_FLEET`].
const FLEET_MORE: [usize; 2] = [7, 8];

/// One measured path: a subject, a URL, a request mix.
struct Target {
    name: String,
    subject: usize,
    url: http::Uri,
    /// More instances the load is spread over with `url` (a fleet's other members).
    spread: Vec<http::Uri>,
    model: &'static str,
    key: String,
    stream: bool,
    /// Distinct prompts: 0, a new one for every request (every request a cache miss), or a
    /// few (after the first pass, every request a cache hit).
    distinct: usize,
}

impl Target {
    /// A target sending with the bench's own key.
    fn new(
        name: &str,
        subject: usize,
        url: &str,
        model: &'static str,
        stream: bool,
        distinct: usize,
    ) -> Result<Target, String> {
        Ok(Target {
            name: name.into(),
            subject,
            url: uri(url.to_string())?,
            spread: Vec::new(),
            model,
            key: BENCH_KEY.into(),
            stream,
            distinct,
        })
    }

    fn kind(&self) -> &'static str {
        if self.stream { "stream" } else { "chat" }
    }

    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        json_headers(&self.key).map_err(|e| e.to_string())
    }

    fn check(&self) -> BodyCheck {
        if self.stream {
            BodyCheck::Stream
        } else {
            BodyCheck::Chat
        }
    }

    /// What one run sends. Miss runs: a new prompt for every request, and a tag per run, so a
    /// cache in front never answers. Hit runs reuse one small prompt set, stored during the
    /// first warm-up.
    fn bodies(&self, tag: &str) -> Bodies {
        if self.distinct == 0 {
            numbered_bodies(self.model, 200, tag, self.stream)
        } else {
            Bodies::Cycle(Arc::new(bodies(
                self.model,
                self.distinct,
                200,
                "hits ",
                self.stream,
            )))
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

/// Runs the benchmark: starts the mock, the forwarder, spillway and the peers; probes each;
/// measures; soaks; evaluates the targets.
pub async fn run_bench(spec: &BenchSpec) -> Result<BenchReport, String> {
    let cache_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let mut subjects = start_subjects(spec, cache_dir.path())?;
    let (peer_targets, skipped) = start_peers(spec, &mut subjects).await?;
    let targets = targets(&subjects, spec.fleet, peer_targets)?;
    let probes = probe_all(&targets, &subjects[MOCK]).await?;
    let mut rows = Vec::new();
    for &concurrency in &spec.concurrency {
        rows.extend(measure_level(spec, &subjects, &targets, concurrency).await?);
    }
    // The soak gets a fresh spillway, so what it measures is its own 3 × N requests.
    drop(subjects.drain(MOCK + 1..));
    let soak = if spec.soak > 0 {
        Some(soak_fresh(spec, &subjects[MOCK]).await?)
    } else {
        None
    };
    let mut report = BenchReport {
        machine: Machine::read(),
        duration_s: spec.duration.as_secs_f64(),
        warmup_s: spec.warmup.as_secs_f64(),
        repeat: spec.repeat.max(1),
        probes,
        rows,
        soak,
        skipped,
        targets: Vec::new(),
    };
    report.targets = targets::evaluate(&report, &spec.peers);
    Ok(report)
}

/// Starts the mock, spillway, the forwarder, spillway with its congestion window for keys
/// whose limits are unknown, and with `--fleet` a Redis, spillway with its key's limits known
/// and the same in a fleet; each in its place of the list, each spillway with its cache in a
/// folder of `dir`.
fn start_subjects(spec: &BenchSpec, dir: &Path) -> Result<Vec<Subject>, String> {
    let mock = Subject::spawn("mock", &spec.exe, &["serve-mock".into()], &[])?;
    let proxy = spawn_proxy(
        "spillway",
        &spec.exe,
        &mock.base_url,
        &dir.join("plain"),
        &ProxyShape::default(),
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
    let adaptive = spawn_proxy(
        "spillway (limits unknown)",
        &spec.exe,
        &mock.base_url,
        &dir.join("adaptive"),
        &ProxyShape {
            adaptive: true,
            ..ProxyShape::default()
        },
    )?;
    let mut subjects = vec![mock, proxy, forwarder, adaptive];
    if spec.fleet {
        let redis = spawn_redis(&spec.exe)?;
        let known = ProxyShape {
            limits_known: true,
            ..ProxyShape::default()
        };
        let fleet = ProxyShape {
            fleet_redis: Some(redis.base_url.clone()),
            ..known.clone()
        };
        let base = subjects[MOCK].base_url.clone();
        let alone = spawn_proxy(
            "spillway (limits known)",
            &spec.exe,
            &base,
            &dir.join("known"),
            &known,
        )?;
        let member = spawn_proxy(
            "spillway (fleet)",
            &spec.exe,
            &base,
            &dir.join("fleet"),
            &fleet,
        )?;
        let second = spawn_proxy(
            "spillway (fleet #2)",
            &spec.exe,
            &base,
            &dir.join("fleet-2"),
            &fleet,
        )?;
        let third = spawn_proxy(
            "spillway (fleet #3)",
            &spec.exe,
            &base,
            &dir.join("fleet-3"),
            &fleet,
        )?;
        subjects.extend([redis, alone, member, second, third]);
    }
    Ok(subjects)
}

/// Starts the peers asked for, each added to `subjects` with its target; a peer that cannot
/// be installed or started is skipped, with the reason.
async fn start_peers(
    spec: &BenchSpec,
    subjects: &mut Vec<Subject>,
) -> Result<(Vec<Target>, Vec<Skipped>), String> {
    let mut skipped = Vec::new();
    let mut targets = Vec::new();
    for peer in &spec.peers {
        let key = peer_key();
        eprintln!("starting peer {peer} (a first run installs it)");
        match start_peer(spec, peer, &subjects[MOCK].base_url, &key).await? {
            Ok(subject) => {
                targets.push(Target {
                    name: peer.clone(),
                    subject: subjects.len(),
                    url: uri(format!("{}/v1/chat/completions", subject.base_url))?,
                    spread: Vec::new(),
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
    Ok((targets, skipped))
}

/// Starts one peer in front of the mock at `mock_url`, off the runtime's threads (a first run
/// installs it, which takes minutes); the inner error says why it did not start.
async fn start_peer(
    spec: &BenchSpec,
    peer: &str,
    mock_url: &str,
    key: &str,
) -> Result<Result<Subject, String>, String> {
    let (name, dir, mock_url, within, key) = (
        peer.to_string(),
        spec.peers_dir.clone(),
        mock_url.to_string(),
        spec.peer_start,
        key.to_string(),
    );
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
    .map_err(|e| e.to_string())
}

/// Every measured path, in the order they take turns: plain requests through each subject
/// (the peers after spillway's), then streams through the mock, the forwarder and spillway.
fn targets(subjects: &[Subject], fleet: bool, peers: Vec<Target>) -> Result<Vec<Target>, String> {
    let direct_url = format!("{}/openai/v1/chat/completions", subjects[MOCK].base_url);
    let forwarder_url = format!(
        "{}/openai/v1/chat/completions",
        subjects[FORWARDER].base_url
    );
    let proxy_url = format!("{}/v1/chat/completions", subjects[SPILLWAY].base_url);
    let adaptive_url = format!(
        "{}/v1/chat/completions",
        subjects[SPILLWAY_ADAPTIVE].base_url
    );
    let mut targets = vec![
        Target::new("direct", MOCK, &direct_url, BENCH_MODEL, false, 0)?,
        Target::new(
            "forwarder",
            FORWARDER,
            &forwarder_url,
            BENCH_MODEL,
            false,
            0,
        )?,
        Target::new("spillway miss", SPILLWAY, &proxy_url, BENCH_ROUTE, false, 0)?,
        Target::new(
            "spillway hit",
            SPILLWAY,
            &proxy_url,
            BENCH_ROUTE,
            false,
            100,
        )?,
        Target::new(
            "spillway miss (limits unknown)",
            SPILLWAY_ADAPTIVE,
            &adaptive_url,
            BENCH_ROUTE,
            false,
            0,
        )?,
    ];
    if fleet {
        let known_url = format!("{}/v1/chat/completions", subjects[SPILLWAY_KNOWN].base_url);
        let fleet_url = format!("{}/v1/chat/completions", subjects[SPILLWAY_FLEET].base_url);
        targets.extend([
            Target::new(
                "spillway miss (limits known)",
                SPILLWAY_KNOWN,
                &known_url,
                BENCH_ROUTE,
                false,
                0,
            )?,
            Target::new(
                "spillway miss (fleet)",
                SPILLWAY_FLEET,
                &fleet_url,
                BENCH_ROUTE,
                false,
                0,
            )?,
        ]);
        // The load spread over three gateways sharing the key's windows through one Redis.
        let mut three = Target::new(
            "spillway miss (fleet of 3)",
            SPILLWAY_FLEET,
            &fleet_url,
            BENCH_ROUTE,
            false,
            0,
        )?;
        for i in FLEET_MORE {
            three.spread.push(uri(format!(
                "{}/v1/chat/completions",
                subjects[i].base_url
            ))?);
        }
        targets.push(three);
    }
    targets.extend(peers);
    targets.extend([
        Target::new("direct", MOCK, &direct_url, BENCH_MODEL, true, 0)?,
        Target::new("forwarder", FORWARDER, &forwarder_url, BENCH_MODEL, true, 0)?,
        Target::new("spillway miss", SPILLWAY, &proxy_url, BENCH_ROUTE, true, 0)?,
    ]);
    Ok(targets)
}

/// One request through every target, checked against the mock's own answer; a wrong one is
/// reported at once.
async fn probe_all(targets: &[Target], mock: &Subject) -> Result<Vec<Probe>, String> {
    let direct_url = format!("{}/openai/v1/chat/completions", mock.base_url);
    let reference = probe::reference(&direct_url, BENCH_KEY, BENCH_MODEL).await?;
    let mut probes = Vec::new();
    for t in targets {
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
    Ok(probes)
}

/// One target's runs at one concurrency, as they accumulate.
#[derive(Default)]
struct Runs {
    reports: Vec<LoadReport>,
    /// Answers spillway gave from its cache during a miss run: each is a wrong measurement.
    cached_in_miss_runs: u64,
    /// For spillway, each run's answers its cache did not store (none where a count could not
    /// be read).
    unstored: Vec<Option<u64>>,
}

impl Runs {
    /// Runs `t` once at `concurrency` (run `rep` of each), reading spillway's counters before
    /// and after, so what its cache did during the run is known.
    async fn run(
        &mut self,
        spec: &BenchSpec,
        spillway: &str,
        t: &Target,
        tag: &str,
        concurrency: usize,
        rep: usize,
    ) -> Result<(), String> {
        let is_spillway = t.subject == SPILLWAY;
        let dropped_before = if is_spillway {
            dropped_writes(spillway).await
        } else {
            None
        };
        let miss_run = is_spillway && t.distinct == 0;
        let cached_before = if miss_run {
            answered_from_cache(spillway).await
        } else {
            None
        };
        let report = run_load(LoadSpec {
            url: t.url.clone(),
            spread: t.spread.clone(),
            headers: t.headers()?,
            bodies: t.bodies(tag),
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
            && let Some(after) = answered_from_cache(spillway).await
            && after > before
        {
            eprintln!(
                "    {} answers of this miss run came from the cache",
                after - before
            );
            self.cached_in_miss_runs += after - before;
        }
        if let Some(e) = &report.first_error {
            eprintln!("    {} failed requests; the first: {e}", report.errors);
        }
        if is_spillway {
            let dropped_after = dropped_writes(spillway).await;
            self.unstored.push(match (dropped_before, dropped_after) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                _ => None,
            });
        }
        self.reports.push(report);
        Ok(())
    }

    /// The row of medians over these runs; `rss_kib`, the subject's memory after them.
    fn row(self, t: &Target, concurrency: usize, rss_kib: Option<u64>) -> Row {
        let reports = self.reports;
        let failures =
            reports.iter().map(|r| r.errors + r.non_200()).sum::<u64>() + self.cached_in_miss_runs;
        Row {
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
            rss_kib,
            unstored: if self.unstored.is_empty() {
                None
            } else {
                self.unstored.into_iter().sum()
            },
            runs: reports,
        }
    }
}

/// Every target at one concurrency, `repeat` times, the targets taking turns run by run (so
/// machine drift cancels); one row of medians per target.
async fn measure_level(
    spec: &BenchSpec,
    subjects: &[Subject],
    targets: &[Target],
    concurrency: usize,
) -> Result<Vec<Row>, String> {
    let spillway = &subjects[SPILLWAY].base_url;
    let mut runs: Vec<Runs> = targets.iter().map(|_| Runs::default()).collect();
    for rep in 0..spec.repeat.max(1) {
        for (i, (t, runs)) in targets.iter().zip(&mut runs).enumerate() {
            let tag = format!("c{concurrency} r{rep} t{i} ");
            runs.run(spec, spillway, t, &tag, concurrency, rep).await?;
        }
    }
    Ok(targets
        .iter()
        .zip(runs)
        .map(|(t, runs)| runs.row(t, concurrency, subjects[t.subject].rss_kib()))
        .collect())
}

/// The memory soak through a fresh spillway in front of `mock`.
async fn soak_fresh(spec: &BenchSpec, mock: &Subject) -> Result<Soak, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let proxy = spawn_proxy(
        "spillway",
        &spec.exe,
        &mock.base_url,
        &dir.path().join("cache"),
        &ProxyShape::default(),
    )?;
    run_soak(spec, &proxy).await
}

/// Three stages of `spec.soak` new prompts through `proxy` (every answer stored), its memory
/// read after each.
async fn run_soak(spec: &BenchSpec, proxy: &Subject) -> Result<Soak, String> {
    let url = uri(format!("{}/v1/chat/completions", proxy.base_url))?;
    let target = Target {
        name: "spillway miss".into(),
        subject: 0,
        url: url.clone(),
        spread: Vec::new(),
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
            spread: Vec::new(),
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
        soak.failures += report.errors + report.invalid + report.non_200();
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
            &proxy_config(
                &mock.base_url(),
                &dir.path().join("cache"),
                &ProxyShape::default(),
            ),
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
