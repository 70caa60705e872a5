//! Every file in `scenarios/` runs through the harness's library API and every expectation
//! holds (those whose fleet shares limits through Redis in a test of their own, ignored with
//! the reason without `redis-server`); the same scenario and seed give the same counts,
//! statuses and served-by split twice.

use std::path::{Path, PathBuf};

use spillway_harness::report::Report;
use spillway_harness::{ScenarioOutcome, run_scenario};

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

async fn run(path: &Path) -> Report {
    match run_scenario(path, None, None, &|_, _| {}).await {
        ScenarioOutcome::Ran(r) => *r,
        ScenarioOutcome::Invalid(e) => panic!("invalid scenario: {e}"),
        ScenarioOutcome::Error(e) => panic!("scenario could not run: {e}"),
        ScenarioOutcome::Skipped(why) => panic!("scenario skipped: {why}"),
    }
}

/// The scenario files, and whether each one's fleet shares limits through Redis.
fn scenarios() -> Vec<(PathBuf, bool)> {
    let files = spillway_harness::scenario::collect(&[folder()]).expect("the scenarios folder");
    files
        .into_iter()
        .map(|f| {
            let scenario = spillway_harness::scenario::Scenario::load(&f).expect("valid");
            let redis = scenario.fleet.redis;
            (f, redis)
        })
        .collect()
}

/// Runs `files` and fails with every expectation that did not hold.
async fn all_hold(files: &[PathBuf]) {
    let mut failures = Vec::new();
    for file in files {
        let report = run(file).await;
        failures.extend(spillway_harness::report::failures(&report));
    }
    assert!(
        failures.is_empty(),
        "failed expectations:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_in_the_folder_holds() {
    let all = scenarios();
    assert!(
        all.len() >= 14,
        "the folder ships at least 14 scenarios, found {}",
        all.len()
    );
    let alone: Vec<PathBuf> = all
        .into_iter()
        .filter(|(_, r)| !r)
        .map(|(f, _)| f)
        .collect();
    all_hold(&alone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn every_fleet_scenario_holds_with_a_real_redis() {
    let fleets: Vec<PathBuf> = scenarios()
        .into_iter()
        .filter(|(_, r)| *r)
        .map(|(f, _)| f)
        .collect();
    assert!(!fleets.is_empty(), "the folder ships a fleet scenario");
    all_hold(&fleets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_scenario_and_seed_give_the_same_outcome_twice() {
    for name in ["05-groq-to-cerebras.toml", "08-eval-cache.toml"] {
        let path = folder().join(name);
        let (a, b) = (run(&path).await, run(&path).await);
        let facts = |r: &Report| {
            (
                r.requests,
                r.client_status.clone(),
                r.served_by.clone(),
                r.upstream_429,
                r.cache.clone(),
            )
        };
        assert_eq!(facts(&a), facts(&b), "{name} differed between two runs");
        // Between keys with equal room, the choice follows each key's headroom, which moves
        // when earlier answers report their usage: the same keys serve, the split may differ
        // by a request or two.
        let keys = |r: &Report| r.served_by_key.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b), "{name}: other keys served");
        for (key, n) in &a.served_by_key {
            let m = b.served_by_key[key];
            assert!(
                n.abs_diff(m) <= 2,
                "{name}: {key} served {n} then {m} requests"
            );
        }
    }
}
