//! What one candidate's run showed: the goal's metrics, how close each provider came to its
//! limits, the tokens it served, and the verdict.

use std::collections::BTreeMap;

use serde::Serialize;
use spillway_mock::spec::{LimitKind, Quantity};

use super::candidate::Candidate;
use super::chain::Chain;
use super::costs::CostTable;
use super::goal::{Goal, Metric, TermOutcome};
use crate::record::RunResult;

/// A provider's busiest window of one limit, over its keys and models.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeakUse {
    /// The provider (mock).
    pub provider: String,
    /// `rpm`, `tpm`, `itpm`, `otpm`, `rpd` or `tpd`.
    pub limit: String,
    /// The most any of its keys used in one window.
    pub peak: u64,
    /// That key's limit.
    pub of: u64,
}

impl PeakUse {
    fn share(&self) -> f64 {
        self.peak as f64 / self.of.max(1) as f64
    }

    fn per_day(&self) -> bool {
        self.limit.ends_with('d')
    }
}

/// One candidate, run.
#[derive(Clone, Debug, Serialize)]
pub struct CandidateResult {
    /// What was tried.
    pub candidate: Candidate,
    /// `groq free ×2 + cerebras`.
    pub label: String,
    /// Keys over every provider in its chain.
    pub total_keys: usize,
    /// Requests in the traffic.
    pub requests: usize,
    /// Requests answered before the run ended (fewer when it stopped early).
    pub answered: usize,
    /// True when the run stopped at the goal's first break.
    pub stopped: bool,
    /// Client 429s.
    pub client_429: u64,
    /// Client requests with neither a 200 nor a 429.
    pub client_errors: u64,
    /// 429s the mocks sent.
    pub upstream_429: u64,
    /// Fallbacks the proxy counted.
    pub fallbacks: u64,
    /// Median client wait (simulated seconds).
    pub wait_p50: f64,
    /// 99th-percentile client wait (simulated seconds).
    pub wait_p99: f64,
    /// Longest client wait (simulated seconds).
    pub wait_max: f64,
    /// Per provider and limit, the busiest window.
    pub peaks: Vec<PeakUse>,
    /// Tokens (prompt and completion) each provider served.
    pub tokens: BTreeMap<String, u64>,
    /// Each goal term against the run.
    pub goal: Vec<TermOutcome>,
    /// What broke the goal when the run stopped early.
    pub broken: Option<String>,
    /// True when the whole traffic ran and every term held.
    pub pass: bool,
    /// What it costs, when a cost table was given.
    pub cost: Option<f64>,
    /// Simulated seconds the run took.
    pub sim_seconds: f64,
    /// Wall seconds the run took.
    pub wall_seconds: f64,
    /// How far the harness fell behind the clock (simulated seconds): a stall of the machine,
    /// multiplied by the speed.
    pub lag: f64,
    /// Times the run was tried again after failing while behind the clock.
    pub reruns: usize,
}

/// The result of running `candidate`.
pub fn assess(
    candidate: &Candidate,
    chain: &Chain,
    goal: &Goal,
    run: &RunResult,
    broken: Option<String>,
    requests: usize,
) -> CandidateResult {
    let terms = goal.evaluate(run);
    let stopped = broken.is_some();
    let tokens: BTreeMap<String, u64> = run
        .mocks
        .iter()
        .map(|m| {
            let t = m
                .stats
                .keys
                .values()
                .flat_map(|k| k.values())
                .map(|s| s.tokens_admitted)
                .sum();
            (m.name.clone(), t)
        })
        .collect();
    CandidateResult {
        label: candidate.label(chain),
        total_keys: candidate.total_keys(chain),
        candidate: candidate.clone(),
        requests,
        answered: run.clients.len(),
        stopped,
        client_429: Metric::Client429.of(run) as u64,
        client_errors: Metric::ClientErrors.of(run) as u64,
        upstream_429: Metric::Upstream429.of(run) as u64,
        fallbacks: run.fallbacks,
        wait_p50: Metric::WaitP50.of(run),
        wait_p99: Metric::WaitP99.of(run),
        wait_max: Metric::WaitMax.of(run),
        peaks: peaks(run),
        tokens,
        pass: !stopped && terms.iter().all(|t| t.pass),
        goal: terms,
        broken,
        cost: None,
        sim_seconds: run.sim_seconds,
        wall_seconds: run.wall_seconds,
        lag: 0.0,
        reruns: 0,
    }
}

/// Per provider and limit, the busiest window any key reached (from the mocks' own counters).
fn peaks(run: &RunResult) -> Vec<PeakUse> {
    let mut out: Vec<PeakUse> = Vec::new();
    for m in &run.mocks {
        for s in m.stats.keys.values().flat_map(|k| k.values()) {
            for kind in LimitKind::ALL {
                let (Some(limit), Some(window)) =
                    (s.limits.get(kind), s.windows.get(kind.window().name()))
                else {
                    continue;
                };
                let peak = match kind.quantity() {
                    Quantity::Requests => window.peak_requests,
                    Quantity::Tokens => window.peak_tokens,
                    Quantity::InputTokens => window.peak_input_tokens,
                    Quantity::OutputTokens => window.peak_output_tokens,
                };
                let use_ = PeakUse {
                    provider: m.name.clone(),
                    limit: short_name(kind).into(),
                    peak,
                    of: limit,
                };
                match out
                    .iter_mut()
                    .find(|p| p.provider == use_.provider && p.limit == use_.limit)
                {
                    Some(p) if p.share() < use_.share() => *p = use_,
                    Some(_) => {}
                    None => out.push(use_),
                }
            }
        }
    }
    out
}

fn short_name(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::RequestsPerMinute => "rpm",
        LimitKind::TokensPerMinute => "tpm",
        LimitKind::InputTokensPerMinute => "itpm",
        LimitKind::OutputTokensPerMinute => "otpm",
        LimitKind::RequestsPerDay => "rpd",
        LimitKind::TokensPerDay => "tpd",
    }
}

impl CandidateResult {
    /// Fills in the cost from `costs`: each provider's keys and tokens at its tier's price.
    pub fn price(&mut self, chain: &Chain, costs: &CostTable) {
        let c = &self.candidate;
        let mut total = 0.0;
        for (provider, tier, keys) in providers(c, chain) {
            let tokens = self.tokens.get(&provider).copied().unwrap_or(0);
            total += costs
                .price(&provider, &tier)
                .map_or(0.0, |p| p.of(keys, tokens));
        }
        self.cost = Some(total);
    }

    /// The busiest minute and day limit of each provider (`groq rpm 30/30 · tpd 19k/500k`).
    pub fn peak_summary(&self) -> String {
        let mut parts = Vec::new();
        let mut providers: Vec<&str> = self.peaks.iter().map(|p| p.provider.as_str()).collect();
        providers.dedup();
        for provider in providers {
            let mut line = provider.to_string();
            for day in [false, true] {
                let busiest = self
                    .peaks
                    .iter()
                    .filter(|p| p.provider == provider && p.per_day() == day)
                    .max_by(|a, b| a.share().total_cmp(&b.share()));
                if let Some(p) = busiest {
                    line.push_str(&format!(" {} {}/{}", p.limit, count(p.peak), count(p.of)));
                }
            }
            parts.push(line);
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }

    /// `pass`, or `FAIL` with what broke.
    pub fn verdict(&self) -> String {
        if self.pass {
            return "pass".into();
        }
        if let Some(b) = &self.broken {
            return format!("FAIL: {b}");
        }
        let failed: Vec<String> = self
            .goal
            .iter()
            .filter(|t| !t.pass)
            .map(|t| format!("{}: {}", t.term, t.actual))
            .collect();
        format!("FAIL: {}", failed.join(", "))
    }
}

/// Each provider of a candidate's chain with its tier and keys.
pub fn providers(c: &Candidate, chain: &Chain) -> Vec<(String, String, usize)> {
    std::iter::once((chain.primary.clone(), c.tier.clone(), c.keys))
        .chain(
            c.kept(chain)
                .map(|f| (f.name.clone(), f.tier.clone(), f.keys)),
        )
        .collect()
}

/// A count, short (`950`, `19k`, `1.2M`).
fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}
