//! What a scenario run shows: its figures (written as JSON), a line of the summary table, and
//! the data for its timeline picture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::record::RunResult;
use crate::scenario::Scenario;
use crate::timeline::{ClientEvent, KeySeries, Outcome, Timeline};
use crate::verdict::Verdict;

/// One mock key's busiest window against its limit.
#[derive(Clone, Debug, Serialize)]
pub struct KeyPeak {
    /// Mock name.
    pub mock: String,
    /// Key.
    pub key: String,
    /// Model.
    pub model: String,
    /// `minute` or `day`.
    pub window: String,
    /// Most requests in any window of that length.
    pub peak_requests: u64,
    /// The requests limit of that window, if any.
    pub limit_requests: Option<u64>,
    /// Most tokens in any window of that length.
    pub peak_tokens: u64,
    /// The tokens limit of that window, if any.
    pub limit_tokens: Option<u64>,
}

/// Every figure of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Scenario file.
    pub file: String,
    /// Seed used.
    pub seed: u64,
    /// Simulated seconds per wall second.
    pub time_scale: f64,
    /// Client requests.
    pub requests: usize,
    /// Client responses by status (0: no response).
    pub client_status: BTreeMap<u16, usize>,
    /// Mock responses by status, over every mock.
    pub upstream_status: BTreeMap<u16, u64>,
    /// 429s the mocks sent.
    pub upstream_429: u64,
    /// Fallbacks the proxy counted.
    pub fallbacks: u64,
    /// Client requests by cache outcome.
    pub cache: BTreeMap<String, usize>,
    /// Requests answered upstream, by provider.
    pub served_by: BTreeMap<String, usize>,
    /// Requests answered upstream, by key alias.
    pub served_by_key: BTreeMap<String, usize>,
    /// Median latency (simulated seconds).
    pub p50_latency: f64,
    /// 99th-percentile latency (simulated seconds).
    pub p99_latency: f64,
    /// Slowest request (simulated seconds).
    pub max_latency: f64,
    /// Every limited mock key's peaks.
    pub keys: Vec<KeyPeak>,
    /// Simulated seconds the run took.
    pub sim_seconds: f64,
    /// Wall seconds the run took.
    pub wall_seconds: f64,
    /// In a fleet sharing limits: how long each gateway went on its own share of the limits,
    /// its Redis out of reach (simulated seconds), the first gateway first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fleet_degraded: Vec<f64>,
    /// Every expectation, evaluated.
    pub expectations: Vec<Verdict>,
    /// True when no expectation failed (also when there were none: see `verdict`).
    pub pass: bool,
    /// `pass` (every expectation held), `FAIL` (one did not) or `no expectations` (nothing
    /// was checked, so nothing is proved).
    pub verdict: String,
}

/// The verdict of a run with no expectations: it ran, and nothing was checked.
pub const NO_EXPECTATIONS: &str = "no expectations";

/// The report of a run.
pub fn build(scenario: &Scenario, seed: u64, r: &RunResult, expectations: Vec<Verdict>) -> Report {
    let mut client_status = BTreeMap::new();
    let mut cache = BTreeMap::new();
    let mut served_by = BTreeMap::new();
    let mut served_by_key = BTreeMap::new();
    for c in &r.clients {
        *client_status.entry(c.status).or_insert(0) += 1;
        *cache
            .entry(c.cache.clone().unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
        if c.status == 200
            && !c.from_cache()
            && let Some(p) = &c.provider
        {
            *served_by.entry(p.clone()).or_insert(0) += 1;
            if let Some(k) = &c.key {
                *served_by_key.entry(k.clone()).or_insert(0) += 1;
            }
        }
    }
    let mut upstream_status = BTreeMap::new();
    let mut keys = Vec::new();
    for m in &r.mocks {
        for (status, n) in &m.stats.by_status {
            *upstream_status.entry(*status).or_insert(0) += n;
        }
        for (key, models) in &m.stats.keys {
            for (model, s) in models {
                for (window, peak) in &s.windows {
                    let (rl, tl) = if window == "day" {
                        (s.limits.requests_per_day, s.limits.tokens_per_day)
                    } else {
                        (s.limits.requests_per_minute, s.limits.tokens_per_minute)
                    };
                    keys.push(KeyPeak {
                        mock: m.name.clone(),
                        key: key.clone(),
                        model: model.clone(),
                        window: window.clone(),
                        peak_requests: peak.peak_requests,
                        limit_requests: rl,
                        peak_tokens: peak.peak_tokens,
                        limit_tokens: tl,
                    });
                }
            }
        }
    }
    let (p50, p99, max) = r.latencies();
    let pass = expectations.iter().all(|v| v.pass);
    let verdict = if expectations.is_empty() {
        NO_EXPECTATIONS
    } else if pass {
        "pass"
    } else {
        "FAIL"
    };
    Report {
        scenario: scenario.name.clone(),
        file: scenario.path.display().to_string(),
        seed,
        time_scale: scenario.time_scale,
        requests: r.clients.len(),
        client_status,
        upstream_429: upstream_status.get(&429).copied().unwrap_or(0),
        upstream_status,
        fallbacks: r.fallbacks,
        cache,
        served_by,
        served_by_key,
        p50_latency: p50,
        p99_latency: p99,
        max_latency: max,
        keys,
        sim_seconds: r.sim_seconds,
        wall_seconds: r.wall_seconds,
        fleet_degraded: r.fleet_degraded.clone(),
        expectations,
        pass,
        verdict: verdict.to_string(),
    }
}

/// The timeline picture's data.
pub fn timeline(title: &str, r: &RunResult) -> Timeline {
    let mut series = Vec::new();
    for m in &r.mocks {
        let mut by_key: BTreeMap<(String, String), KeySeries> = BTreeMap::new();
        for e in &m.journal {
            let (Some(key), Some(model)) = (&e.key, &e.model) else {
                continue;
            };
            let s = by_key
                .entry((key.clone(), model.clone()))
                .or_insert_with(|| KeySeries {
                    label: format!("{}/{key} · {model}", m.name),
                    provider: m.name.clone(),
                    rpm_limit: m
                        .stats
                        .key_model(key, model)
                        .and_then(|s| s.limits.requests_per_minute),
                    ..KeySeries::default()
                });
            match e.status {
                200 => s.admitted.push(e.at),
                429 => s.rejected.push(e.at),
                0 | 500..=599 => s.failed.push(e.at),
                _ => {}
            }
        }
        series.extend(by_key.into_values());
    }
    let clients = r
        .clients
        .iter()
        .map(|c| ClientEvent {
            t: c.sent,
            outcome: match (c.status, c.cache.as_deref()) {
                (200, Some("hit")) => Outcome::Hit,
                (200, Some("coalesced")) => Outcome::Coalesced,
                (200, _) if c.error.is_none() => Outcome::Upstream {
                    fallback: c.attempts > 1,
                },
                (429, _) => Outcome::Refused,
                _ => Outcome::Failed,
            },
        })
        .collect();
    Timeline {
        title: title.to_string(),
        duration: r.sim_seconds,
        series,
        clients,
    }
}

/// Writes `OUT/NAME.json` and `OUT/NAME.svg`; returns their paths.
pub fn write(
    out: &Path,
    name: &str,
    report: &Report,
    svg: &str,
) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(out)?;
    let json = out.join(format!("{name}.json"));
    let picture = out.join(format!("{name}.svg"));
    std::fs::write(
        &json,
        serde_json::to_string_pretty(report).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(&picture, svg)?;
    Ok((json, picture))
}

/// In a fleet whose gateways lost their Redis: how long each went on its own share of the
/// limits, as a line for the summary (`None` when none did).
pub fn degraded(r: &Report) -> Option<String> {
    if r.fleet_degraded.iter().all(|&s| s == 0.0) {
        return None;
    }
    let each: Vec<String> = r.fleet_degraded.iter().map(|&s| seconds(s)).collect();
    Some(format!(
        "fleet: each gateway on its own share of the limits (Redis out of reach) for {}",
        each.join(", ")
    ))
}

/// Simulated seconds, readably (`0.24s`, `66s`, `2m8s`).
fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2}s")
    } else if s < 120.0 {
        format!("{s:.0}s")
    } else {
        format!("{}m{:.0}s", (s / 60.0).floor(), s % 60.0)
    }
}

fn statuses(r: &Report) -> String {
    r.client_status
        .iter()
        .map(|(s, n)| {
            if *s == 0 {
                format!("err×{n}")
            } else {
                format!("{s}×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn peaks(r: &Report) -> String {
    let mut parts = Vec::new();
    for k in r
        .keys
        .iter()
        .filter(|k| k.window == "minute" && (k.peak_requests > 0 || k.peak_tokens > 0))
    {
        if let Some(limit) = k.limit_requests {
            parts.push(format!("{}/{} {}/{limit}", k.mock, k.key, k.peak_requests));
        } else if let Some(limit) = k.limit_tokens {
            parts.push(format!("{}/{} {}/{limit}t", k.mock, k.key, k.peak_tokens));
        }
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The summary table of several runs.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | requests | statuses | 429s upstream | fallbacks | cache hits | peak/limit per key (RPM) | p50 | p99 | verdict |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.requests,
            statuses(r),
            r.upstream_429,
            r.fallbacks,
            r.cache.get("hit").copied().unwrap_or(0),
            peaks(r),
            seconds(r.p50_latency),
            seconds(r.p99_latency),
            r.verdict
        ));
    }
    out
}

/// The failed expectations of a run, one line each, both sides shown.
pub fn failures(r: &Report) -> Vec<String> {
    r.expectations
        .iter()
        .filter(|v| !v.pass)
        .map(|v| {
            format!(
                "{}: {}: expected {}, got {}",
                r.scenario, v.name, v.expected, v.actual
            )
        })
        .collect()
}
