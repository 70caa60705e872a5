//! `spillway-harness plan`: how many keys, on which tier, with which fallbacks, does this
//! traffic need? Replays the traffic on simulated time against mocks with each candidate's
//! limits, searches the key count per tier (and per set of fallback providers kept), and
//! recommends the cheapest candidate that meets the goal.
//!
//! - [`source`]: the traffic (a recording, or a `[traffic]` table);
//! - [`chain`]: what the spillway config means for the plan (primary provider, fallbacks);
//! - [`tiers`]: limit tables per tier and model (Groq's, and a limits file);
//! - [`costs`]: an optional cost table;
//! - [`goal`]: the goal, and the watch that stops a run at its first break;
//! - [`candidate`]: one candidate and the scenario that tries it;
//! - [`search`]: the fewest keys per tier;
//! - [`outcome`]: one candidate's run, assessed;
//! - [`report`]: the report, the table and the recommendation;
//! - [`chart`]: the picture.

pub mod candidate;
pub mod chain;
pub mod chart;
pub mod costs;
pub mod goal;
pub mod outcome;
pub mod report;
pub mod search;
pub mod source;
pub mod tiers;

use std::path::{Path, PathBuf};

use candidate::{Candidate, Setup, scenario_toml};
use chain::Chain;
use costs::CostTable;
use goal::{Goal, Watch};
use outcome::CandidateResult;
use report::{PlanReport, SearchSummary};
use search::KeySearch;
use source::PlanTraffic;
use tiers::LimitTables;

use crate::scenario::Scenario;

/// Most fallback providers a plan tries with and without (every subset of them is searched).
pub const MAX_FALLBACKS: usize = 3;

/// Everything a plan needs.
#[derive(Clone, Debug)]
pub struct PlanSpec {
    /// The traffic.
    pub traffic: PlanTraffic,
    /// The route's providers, from the config.
    pub chain: Chain,
    /// The config's name, for the report.
    pub config_name: String,
    /// Limit tables.
    pub tables: LimitTables,
    /// Tiers to try for the primary provider, lowest first.
    pub tiers: Vec<String>,
    /// Prices, when cost decides.
    pub costs: Option<CostTable>,
    /// Most keys to try.
    pub max_keys: usize,
    /// The goal.
    pub goal: Goal,
    /// Simulated seconds per wall second.
    pub speed: f64,
    /// Seed of synthetic traffic.
    pub seed: u64,
}

/// Reports `(candidate, answers so far, requests)` while a candidate runs.
pub type PlanProgress<'a> = &'a (dyn Fn(&str, usize, usize) + Sync);

impl PlanSpec {
    /// Checks what can be checked before running anything: tiers, fallbacks, prices.
    pub fn check(&self) -> Result<(), String> {
        if self.max_keys == 0 {
            return Err("--max-keys must be at least 1".into());
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err("--speed must be a number greater than 0".into());
        }
        self.chain.check_tiers(&self.tiers, &self.tables)?;
        if self.chain.fallbacks.len() > MAX_FALLBACKS {
            return Err(format!(
                "the route has {} fallback providers; a plan tries every subset of at most {MAX_FALLBACKS}",
                self.chain.fallbacks.len()
            ));
        }
        if let Some(costs) = &self.costs {
            let primary = self.tiers.iter().map(|t| (&self.chain.primary, t));
            let fallbacks = self.chain.fallbacks.iter().map(|f| (&f.name, &f.tier));
            for (provider, tier) in primary.chain(fallbacks) {
                if costs.price(provider, tier).is_none() {
                    return Err(format!(
                        "the cost table has no price for {provider} on {tier}: add [{provider}] {tier} = ..."
                    ));
                }
            }
        }
        Ok(())
    }

    /// The scenario file (TOML) that tries `candidate`.
    pub fn scenario_toml(&self, candidate: &Candidate) -> toml::Table {
        let setup = Setup {
            time_scale: self.speed,
            seed: self.seed,
            traffic: self.traffic.table.clone(),
        };
        scenario_toml(candidate, &self.chain, &self.tables, &self.goal, &setup)
    }

    /// Every set of fallbacks to try, the smallest first (none, then each one, ...).
    fn fallback_sets(&self) -> Vec<Vec<String>> {
        let names: Vec<&String> = self.chain.fallbacks.iter().map(|f| &f.name).collect();
        let mut sets: Vec<Vec<String>> = (0..1usize << names.len())
            .map(|mask| {
                names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, n)| (*n).clone())
                    .collect()
            })
            .collect();
        sets.sort_by_key(Vec::len);
        sets
    }
}

/// How far (simulated seconds) the harness may fall behind the clock in a run that fails the
/// goal before that failure is put down to the machine and the run is tried again.
pub const LAG_ALLOWED: f64 = 10.0;

/// Times a failed run that fell behind the clock is tried again.
pub const LAG_RETRIES: usize = 2;

/// Runs one candidate; a failure in a run that fell behind the clock by more than
/// [`LAG_ALLOWED`] (a stall of this machine, multiplied by the speed) is run again, up to
/// [`LAG_RETRIES`] times.
pub async fn try_candidate(
    spec: &PlanSpec,
    candidate: &Candidate,
    progress: PlanProgress<'_>,
) -> Result<CandidateResult, String> {
    let mut result = run_candidate(spec, candidate, progress).await?;
    while !result.pass && result.lag > LAG_ALLOWED && result.reruns < LAG_RETRIES {
        let reruns = result.reruns + 1;
        result = run_candidate(spec, candidate, progress).await?;
        result.reruns = reruns;
    }
    Ok(result)
}

/// Runs one candidate: its scenario, stopped at the goal's first break.
async fn run_candidate(
    spec: &PlanSpec,
    candidate: &Candidate,
    progress: PlanProgress<'_>,
) -> Result<CandidateResult, String> {
    let table = spec.scenario_toml(candidate);
    let text = toml::to_string(&table).map_err(|e| e.to_string())?;
    let path = PathBuf::from(format!("{}.plan.toml", spec.traffic.name));
    let scenario = Scenario::parse(&text, &path).map_err(|e| e.to_string())?;
    let label = candidate.label(&spec.chain);
    let total = spec.traffic.requests();
    let mut watch = Watch::new(&spec.goal, total);
    let shown = |done: usize, total: usize| progress(&label, done, total);
    let (run, end) =
        crate::runner::run_watched(&scenario, &spec.traffic.passes, &shown, &mut |r| {
            watch.see(r)
        })
        .await?;
    let mut result = outcome::assess(
        candidate,
        &spec.chain,
        &spec.goal,
        &run,
        watch.broken,
        total,
    );
    result.lag = end.lag;
    if let Some(costs) = &spec.costs {
        result.price(&spec.chain, costs);
    }
    Ok(result)
}

/// Plans: searches every tier with every set of fallbacks and recommends the cheapest
/// candidate that meets the goal.
pub async fn plan(spec: &PlanSpec, progress: PlanProgress<'_>) -> Result<PlanReport, String> {
    spec.check()?;
    let wall = spillway_clock::Clock::real();
    let mut searches: Vec<SearchSummary> = Vec::new();
    let mut results: Vec<CandidateResult> = Vec::new();
    for fallbacks in spec.fallback_sets() {
        for tier in &spec.tiers {
            // Fallbacks never hurt: what passed with fewer of them on this tier caps the search.
            let known = searches
                .iter()
                .filter(|s| s.tier == *tier && s.fallbacks.iter().all(|f| fallbacks.contains(f)))
                .filter_map(|s| s.least_keys)
                .min();
            let mut search = KeySearch::new(spec.max_keys, known);
            while let Some(keys) = search.next() {
                let candidate = Candidate {
                    tier: tier.clone(),
                    keys,
                    fallbacks: fallbacks.clone(),
                };
                let result = try_candidate(spec, &candidate, progress).await?;
                search.record(keys, result.pass);
                results.push(result);
            }
            searches.push(SearchSummary {
                tier: tier.clone(),
                fallbacks: fallbacks.clone(),
                least_keys: search.answer(),
            });
        }
    }
    let mut notes = notes(spec);
    notes.extend(lag_note(&results, spec.speed));
    let best = report::cheapest(&results, &spec.tiers);
    let recommendation = best.map(|b| report::picks(b, &spec.chain, spec.costs.as_ref()));
    Ok(PlanReport {
        traffic: spec.traffic.path.display().to_string(),
        config: spec.config_name.clone(),
        goal: spec.goal.text(),
        goal_terms: spec.goal.terms.clone(),
        tiers: spec.tiers.clone(),
        max_keys: spec.max_keys,
        speed: spec.speed,
        requests: spec.traffic.requests(),
        recommended: best.map(|b| b.label.clone()),
        cost: best.and_then(|b| b.cost),
        recommendation,
        searches,
        notes,
        candidates: results,
        wall_seconds: wall.now().as_secs_f64(),
    })
}

/// What the reader of a plan should know about its inputs.
fn notes(spec: &PlanSpec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.tiers.iter().any(|t| t == "developer") {
        out.push(
            "the developer tier's built-in limits could not be checked against Groq's published page; give your organization's in a limits file (--limits)".into(),
        );
    }
    for f in &spec.chain.fallbacks {
        let open: Vec<&str> = f
            .models
            .iter()
            .filter(|m| !f.limits.contains_key(*m))
            .map(String::as_str)
            .collect();
        if !open.is_empty() {
            out.push(format!(
                "fallback {} has no limits for {} in the config: the plan treats it as unlimited",
                f.name,
                open.join(", ")
            ));
        }
    }
    out
}

/// A warning when runs failed while still behind the clock after their reruns: their verdicts
/// may be this machine's, not the candidate's.
fn lag_note(results: &[CandidateResult], speed: f64) -> Option<String> {
    let lagged: Vec<&str> = results
        .iter()
        .filter(|r| !r.pass && r.lag > LAG_ALLOWED)
        .map(|r| r.label.as_str())
        .collect();
    let worst = results.iter().map(|r| r.lag).fold(0.0, f64::max);
    (!lagged.is_empty()).then(|| {
        format!(
            "{} failed while the harness was behind the clock by more than {LAG_ALLOWED} simulated seconds (up to {worst:.0} s at --speed {speed}): this machine could not keep up, so those verdicts may be wrong; plan again at a lower --speed",
            lagged.join(", ")
        )
    })
}

/// Writes `OUT/NAME.plan.json`, `OUT/NAME.plan.svg` and, when there is a recommendation,
/// `OUT/NAME.plan.toml` (a scenario that replays the traffic against it); returns the paths.
pub fn write(out: &Path, spec: &PlanSpec, report: &PlanReport) -> Result<Vec<PathBuf>, String> {
    let io = |e: std::io::Error| format!("cannot write to {}: {e}", out.display());
    std::fs::create_dir_all(out).map_err(io)?;
    let name = &spec.traffic.name;
    let json = out.join(format!("{name}.plan.json"));
    let svg = out.join(format!("{name}.plan.svg"));
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(&json, text).map_err(io)?;
    let title = format!("plan for {}: {}", spec.traffic.path.display(), report.goal);
    std::fs::write(&svg, chart::render_svg(report, &title)).map_err(io)?;
    let mut written = vec![json, svg];
    if let Some(best) = report::cheapest(&report.candidates, &spec.tiers) {
        let scenario = out.join(format!("{name}.plan.toml"));
        let body =
            toml::to_string(&spec.scenario_toml(&best.candidate)).map_err(|e| e.to_string())?;
        let head = format!(
            "# The recommended candidate of `spillway-harness plan`, as a scenario: run it with\n# spillway-harness run {}\n",
            scenario.display()
        );
        std::fs::write(&scenario, head + &body).map_err(io)?;
        written.push(scenario);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RunResult;

    /// A run of `keys` free keys that failed or passed, `lag` simulated seconds behind.
    fn result(keys: usize, pass: bool, lag: f64) -> CandidateResult {
        let config: toml::Table = toml::from_str(
            "[[providers]]\nname = \"groq\"\nbase_url = \"https://api.groq.com/openai/v1\"\nkeys = []\n\
             [[routes]]\nmodel = \"r\"\ntargets = [{ provider = \"groq\", model = \"llama-3.1-8b-instant\" }]\n",
        )
        .unwrap();
        let routes = ["r".to_string()].into_iter().collect();
        let chain = Chain::new(config, "c.toml", routes, &LimitTables::builtin()).unwrap();
        let candidate = Candidate {
            tier: "free".into(),
            keys,
            fallbacks: Vec::new(),
        };
        let goal = Goal::parse(goal::DEFAULT_GOAL).unwrap();
        let run = RunResult {
            clients: Vec::new(),
            mocks: Vec::new(),
            fallbacks: 0,
            passes: 1,
            sim_seconds: 1.0,
            wall_seconds: 1.0,
            time_scale: 100.0,
            fleet_degraded: Vec::new(),
        };
        let broken = (!pass).then(|| "client_429 == 0 broken".to_string());
        let mut r = outcome::assess(&candidate, &chain, &goal, &run, broken, 1);
        r.lag = lag;
        r
    }

    #[test]
    fn a_failure_behind_the_clock_is_noted_and_a_pass_or_a_small_lag_is_not() {
        let note = lag_note(&[result(1, false, 40.0), result(2, true, 60.0)], 1000.0).unwrap();
        assert!(note.starts_with("groq free ×1 failed"), "{note}");
        assert!(note.contains("up to 60 s at --speed 1000"), "{note}");
        assert_eq!(
            lag_note(&[result(1, false, 3.0), result(2, true, 60.0)], 100.0),
            None
        );
    }
}
