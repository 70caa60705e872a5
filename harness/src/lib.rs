//! # spillway-harness
//!
//! Proves, before deploying, that a spillway configuration holds under its traffic: starts mock
//! providers and the proxy in one process on a scaled clock, drives synthetic or recorded
//! traffic through, and checks what happened from both sides. Also spillway's benchmarks.
//!
//! # Layout
//! - [`scenario`]: scenario files (schema, loading, errors naming file, line and field);
//! - [`traffic`]: synthetic arrivals and recorded-traffic replay;
//! - [`record`]: what a run produced, from both sides (client records, mock outcomes);
//! - [`runner`]: starting mocks and proxy, driving traffic, collecting both sides;
//! - [`expect`]: the `[expect]` table and its checks, as a scenario file writes them;
//! - [`verdict`]: each expectation held against a run;
//! - [`report`]: figures (JSON), the summary table, timeline data;
//! - [`timeline`]: the timeline picture (SVG);
//! - [`load`]: a closed-loop HTTP/1.1 load generator with HDR latency histograms;
//! - [`subjects`]: the processes a benchmark measures, started as children;
//! - [`forwarder`]: the bare forwarder, the floor a gateway is measured against;
//! - [`bench`]: `spillway-harness bench`: subjects in turn, medians, a table;
//! - [`chaos`]: `spillway-harness chaos`: the fault matrix, crash rounds and memory soak;
//! - [`plan`]: `spillway-harness plan`: the keys, tier and fallbacks a traffic needs;
//! - [`redis`]: a `redis-server` of a run's own, for scenarios, benchmarks and tests.

pub mod bench;
pub mod chaos;
pub mod expect;
pub mod forwarder;
pub mod load;
pub mod plan;
pub mod record;
pub mod redis;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod subjects;
pub mod svg;
pub mod timeline;
pub mod traffic;
pub mod verdict;

use std::path::Path;

/// The outcome of running one scenario file.
#[derive(Debug)]
pub enum ScenarioOutcome {
    /// It ran; the report says whether every expectation held.
    Ran(Box<report::Report>),
    /// The file is invalid.
    Invalid(scenario::ScenarioError),
    /// It could not run (a mock or the proxy did not start, a recording is unreadable).
    Error(String),
    /// It needs something this machine does not have (why, and how to get it).
    Skipped(String),
}

/// Loads, runs and reports one scenario; writes `OUT/NAME.json` and `OUT/NAME.svg` when `out`
/// is given (`NAME`: the file's name without `.toml`).
pub async fn run_scenario(
    path: &Path,
    seed: Option<u64>,
    out: Option<&Path>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> ScenarioOutcome {
    let scenario = match scenario::Scenario::load(path) {
        Ok(s) => s,
        Err(e) => return ScenarioOutcome::Invalid(e),
    };
    if let Some(need) = runner::unmet_need(&scenario) {
        return ScenarioOutcome::Skipped(need);
    }
    let seed_used = seed.unwrap_or(scenario.seed);
    let result = match runner::run(&scenario, seed, progress).await {
        Ok(r) => r,
        Err(e) => return ScenarioOutcome::Error(format!("{}: {e}", path.display())),
    };
    let verdicts = verdict::evaluate(&scenario.expect, &result);
    let report = report::build(&scenario, seed_used, &result, verdicts);
    if let Some(out) = out {
        let svg = timeline::render_svg(&report::timeline(&scenario.name, &result));
        if let Err(e) = report::write(out, &scenario.report_name(), &report, &svg) {
            return ScenarioOutcome::Error(format!("cannot write to {}: {e}", out.display()));
        }
    }
    ScenarioOutcome::Ran(Box::new(report))
}
