//! Every file in `scenarios/` runs through the harness's library API and every expectation
//! holds; the same scenario and seed give the same counts, statuses and served-by split twice.

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
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_in_the_folder_holds() {
    let files = spillway_harness::scenario::collect(&[folder()]).expect("the scenarios folder");
    assert!(
        files.len() >= 12,
        "the folder ships at least 12 scenarios, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
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
