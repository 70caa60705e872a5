//! A plan's report: every candidate run, the fewest keys each search found, the recommendation
//! (one entry per provider of the route), the table and the one-line answer.

use serde::Serialize;

use super::candidate::Candidate;
use super::chain::Chain;
use super::outcome::{CandidateResult, providers};
use crate::expect::trim_number;

/// What one search found: the fewest keys on a tier with a set of fallbacks.
#[derive(Clone, Debug, Serialize)]
pub struct SearchSummary {
    /// The primary provider's tier.
    pub tier: String,
    /// The fallback providers kept.
    pub fallbacks: Vec<String>,
    /// The fewest keys that met the goal (`None`: not even the most allowed).
    pub least_keys: Option<usize>,
}

/// One provider of the recommended chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pick {
    /// The provider, as the config names it.
    pub provider: String,
    /// Its tier (`None` for a fallback to leave out).
    pub tier: Option<String>,
    /// How many keys it needs (0: leave it out of the route).
    pub keys: usize,
    /// What it costs, when a cost table was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

/// Everything a plan found.
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    /// The traffic planned for (a recording or a `[traffic]` table's file).
    pub traffic: String,
    /// The spillway config planned.
    pub config: String,
    /// The goal, as read.
    pub goal: String,
    /// The goal's terms.
    #[serde(skip)]
    pub goal_terms: Vec<super::goal::Term>,
    /// Tiers tried, lowest first.
    pub tiers: Vec<String>,
    /// Most keys tried per provider.
    pub max_keys: usize,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Requests in the traffic.
    pub requests: usize,
    /// The searches, one per tier and set of fallbacks.
    pub searches: Vec<SearchSummary>,
    /// Every candidate run, in the order they ran.
    pub candidates: Vec<CandidateResult>,
    /// The cheapest candidate that met the goal: one entry per provider of the route; `None`
    /// when none did.
    pub recommendation: Option<Vec<Pick>>,
    /// Its label (`groq free ×2`).
    pub recommended: Option<String>,
    /// Its cost, when a cost table was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// What the reader should know (limits not checked, fallbacks without limits).
    pub notes: Vec<String>,
    /// Wall seconds the plan took.
    pub wall_seconds: f64,
}

/// How candidates rank, cheapest first: by cost when there is one, then the primary's tier
/// (in the order the tiers were given), then keys over every provider, then fewer fallbacks.
fn rank(r: &CandidateResult, tiers: &[String]) -> (f64, usize, usize, usize) {
    let tier = tiers
        .iter()
        .position(|t| *t == r.candidate.tier)
        .unwrap_or(usize::MAX);
    (
        r.cost.unwrap_or(0.0),
        tier,
        r.total_keys,
        r.candidate.fallbacks.len(),
    )
}

/// The cheapest candidate that met the goal.
pub fn cheapest<'a>(
    results: &'a [CandidateResult],
    tiers: &[String],
) -> Option<&'a CandidateResult> {
    results.iter().filter(|r| r.pass).min_by(|a, b| {
        rank(a, tiers)
            .partial_cmp(&rank(b, tiers))
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

/// The recommendation for `best`: every provider of the route, a fallback it leaves out with
/// no tier and 0 keys; each with its share of the cost when `priced`.
pub fn picks(
    best: &CandidateResult,
    chain: &Chain,
    costs: Option<&super::costs::CostTable>,
) -> Vec<Pick> {
    let c: &Candidate = &best.candidate;
    let mut out: Vec<Pick> = providers(c, chain)
        .into_iter()
        .map(|(provider, tier, keys)| {
            let tokens = best.tokens.get(&provider).copied().unwrap_or(0);
            let cost = costs.map(|t| {
                t.price(&provider, &tier)
                    .map_or(0.0, |p| p.of(keys, tokens))
            });
            Pick {
                provider,
                tier: Some(tier),
                keys,
                cost,
            }
        })
        .collect();
    for f in chain
        .fallbacks
        .iter()
        .filter(|f| !c.fallbacks.contains(&f.name))
    {
        out.push(Pick {
            provider: f.name.clone(),
            tier: None,
            keys: 0,
            cost: costs.map(|_| 0.0),
        });
    }
    out
}

/// Simulated seconds, short.
fn secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2}s")
    } else {
        format!("{s:.0}s")
    }
}

/// The table of every candidate run.
pub fn table(report: &PlanReport) -> String {
    let mut out = String::from(
        "| candidate | answered | client 429s | p50 wait | p99 wait | fallbacks | peak use per window (busiest key) | cost | verdict |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &report.candidates {
        out.push_str(&format!(
            "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.label,
            r.answered,
            r.requests,
            r.client_429,
            secs(r.wait_p50),
            secs(r.wait_p99),
            r.fallbacks,
            r.peak_summary(),
            r.cost.map_or("-".into(), trim_number),
            r.verdict()
        ));
    }
    out
}

/// The answer in one line.
pub fn recommendation_line(report: &PlanReport) -> String {
    let Some(picks) = &report.recommendation else {
        return format!(
            "no candidate met the goal ({}) with up to {} keys on {}: allow more keys (--max-keys), a higher tier or a fallback",
            report.goal,
            report.max_keys,
            report.tiers.join(", ")
        );
    };
    let parts: Vec<String> = picks
        .iter()
        .map(|p| match &p.tier {
            Some(tier) => format!(
                "{} {tier} with {} key{}",
                p.provider,
                p.keys,
                if p.keys == 1 { "" } else { "s" }
            ),
            None => format!("no {}", p.provider),
        })
        .collect();
    let cost = report
        .cost
        .map_or(String::new(), |c| format!(", cost {}", trim_number(c)));
    format!(
        "recommendation: {}{cost} (meets {})",
        parts.join(", "),
        report.goal
    )
}
