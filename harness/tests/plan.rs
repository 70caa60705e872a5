//! `spillway-harness plan` on recordings whose answer is known by construction: a steady 55
//! requests a minute against keys of 30 requests a minute needs two keys on the free tier;
//! more tokens in a day than two free keys' daily limit needs the developer tier. Each
//! recommendation, replayed as the scenario the planner writes, gives no client a 429. Bad
//! input exits 2 naming what is wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};
use spillway::record::{RecordedOutcome, RecordedRequest};
use spillway_harness::traffic::{Rng, prompt_of};

fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spillway-harness"));
    c.env("CI", "true");
    c
}

/// Groq's 8B model behind the route `llama-3.1-8b`: free plan 30 requests and 6,000 tokens a
/// minute, 500,000 tokens a day per key.
const SMALL: (&str, &str) = ("llama-3.1-8b", "llama-3.1-8b-instant");

/// Groq's 70B model behind the route `llama-3.3-70b`: free plan 12,000 tokens a minute and
/// 100,000 tokens a day per key; no daily token limit on the developer plan.
const LARGE: (&str, &str) = ("llama-3.3-70b", "llama-3.3-70b-versatile");

/// A recording of `n` chat requests on `route`, request `i` at `i * gap` seconds, each with
/// a prompt the mock counts as about `prompt` tokens and `max_tokens` 20 (the mock's answers
/// are then 20 tokens long); every prompt differs.
fn recording(dir: &Path, name: &str, route: &str, n: usize, gap: f64, prompt: u64) -> PathBuf {
    let mut rng = Rng::new(7);
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let body = json!({
                "model": route,
                "messages": [{"role": "user", "content": format!("#{i} {}", prompt_of(prompt, &mut rng))}],
                "max_tokens": 20,
                "temperature": 0.7,
            });
            let line = RecordedRequest {
                t: i as f64 * gap,
                route: route.into(),
                endpoint: "chat".into(),
                stream: false,
                body: Some(body),
                key: format!("{i:064x}"),
                prompt_tokens: prompt,
                max_tokens: 20,
                client: None,
                outcome: RecordedOutcome { status: 200, ..RecordedOutcome::default() },
            };
            serde_json::to_string(&line).unwrap()
        })
        .collect();
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// A config with Groq alone on both routes, written as for production (real URL, `env:`
/// keys).
fn config(dir: &Path) -> PathBuf {
    let path = dir.join("spillway.toml");
    let mut text = String::from(
        "[server]\nclient_keys = [\"env:SPILLWAY_CLIENT_KEY\"]\n[[providers]]\nname = \"groq\"\n\
         base_url = \"https://api.groq.com/openai/v1\"\nkeys = [\"env:GROQ_API_KEY\"]\n",
    );
    for (route, model) in [SMALL, LARGE] {
        text.push_str(&format!(
            "[[routes]]\nmodel = \"{route}\"\ntargets = [{{ provider = \"groq\", model = \"{model}\" }}]\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Plans `recording` with `flags`, as JSON; asserts the exit status.
fn plan(recording: &Path, dir: &Path, flags: &[&str], status: i32) -> Value {
    let out: Output = harness()
        .arg("plan")
        .arg(recording)
        .arg("--config")
        .arg(config(dir))
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--json")
        .args(flags)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// Runs the scenario the planner wrote for its recommendation; returns its report.
fn replay_recommendation(dir: &Path, name: &str) -> Value {
    let scenario = dir.join("out").join(format!("{name}.plan.toml"));
    let out = harness()
        .arg("run")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.join("replayed"))
        .arg("--json")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    reports[0].clone()
}

/// The run of `tier` with `keys` keys and no fallback.
fn candidate<'a>(report: &'a Value, tier: &str, keys: u64) -> &'a Value {
    report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["candidate"]["tier"] == tier && c["candidate"]["keys"] == keys)
        .unwrap_or_else(|| panic!("no run of {tier} ×{keys}: {report:#}"))
}

#[test]
fn a_steady_55_a_minute_against_30_a_minute_keys_needs_two_free_keys() {
    let dir = tempfile::tempdir().unwrap();
    // Five minutes at 55 a minute: one key (30 a minute) falls behind at once, two keep up.
    let rec = recording(dir.path(), "steady-55", SMALL.0, 275, 60.0 / 55.0, 50);
    let report = plan(&rec, dir.path(), &["--max-keys", "4", "--speed", "100"], 0);
    assert_eq!(
        report["recommendation"],
        json!([{"provider": "groq", "tier": "free", "keys": 2}]),
        "{report:#}"
    );
    let one = candidate(&report, "free", 1);
    assert_eq!(one["pass"], false);
    assert_eq!(
        one["stopped"], true,
        "the run stops at the first client 429"
    );
    assert!(one["answered"].as_u64().unwrap() < 275, "{one:#}");
    assert_eq!(candidate(&report, "free", 2)["client_429"], 0);
    assert_eq!(report["searches"][1]["least_keys"], 1, "developer: one key");
    let replayed = replay_recommendation(dir.path(), "steady-55");
    assert_eq!(replayed["requests"], 275);
    assert_eq!(
        replayed["client_status"]["429"],
        Value::Null,
        "{replayed:#}"
    );
    assert_eq!(replayed["client_status"]["200"], 275, "{replayed:#}");
    let svg = std::fs::read_to_string(dir.path().join("out/steady-55.plan.svg")).unwrap();
    assert!(
        svg.contains("<polyline") && svg.contains(">developer</text>"),
        "{svg}"
    );
}

#[test]
fn more_tokens_a_day_than_two_free_keys_allow_needs_the_developer_tier() {
    let dir = tempfile::tempdir().unwrap();
    // 250 requests of 1,000 tokens, one every 10 s (42 minutes): 6,000 tokens a minute is half
    // of one free key's 12,000, but 250,000 tokens is more than two free keys' 100,000 a day
    // each; the developer tier has no daily token limit.
    let rec = recording(dir.path(), "daily", LARGE.0, 250, 10.0, 980);
    let report = plan(&rec, dir.path(), &["--max-keys", "2", "--speed", "500"], 0);
    assert_eq!(
        report["recommendation"],
        json!([{"provider": "groq", "tier": "developer", "keys": 1}]),
        "{report:#}"
    );
    let two = candidate(&report, "free", 2);
    assert_eq!(two["pass"], false);
    let peak = |limit: &str| {
        let p = two["peaks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["limit"] == limit)
            .unwrap_or_else(|| panic!("no {limit}: {two:#}"));
        (p["peak"].as_u64().unwrap(), p["of"].as_u64().unwrap())
    };
    let (tpd, of) = peak("tpd");
    assert!(
        tpd * 100 >= of * 98,
        "a free key's daily tokens ran out: {two:#}"
    );
    let (tpm, of) = peak("tpm");
    assert!(tpm < of, "the minutes had room: {two:#}");
    assert_eq!(
        report["searches"][0]["least_keys"],
        Value::Null,
        "free: not within 2 keys"
    );
    let replayed = replay_recommendation(dir.path(), "daily");
    assert_eq!(
        replayed["client_status"]["429"],
        Value::Null,
        "{replayed:#}"
    );
    assert_eq!(replayed["client_status"]["200"], 250, "{replayed:#}");
}

/// A config with Groq first and Cerebras (one key, 30 requests a minute) after it.
fn config_with_fallback(dir: &Path) -> PathBuf {
    let path = dir.join("groq-cerebras.toml");
    std::fs::write(
        &path,
        r#"
[[providers]]
name = "groq"
base_url = "https://api.groq.com/openai/v1"
keys = ["env:GROQ_API_KEY"]
[[providers]]
name = "cerebras"
base_url = "https://api.cerebras.ai/v1"
keys = ["env:CEREBRAS_API_KEY"]
[providers.limits."llama3.1-8b"]
requests_per_minute = 30
[[routes]]
model = "llama-3.1-8b"
targets = [{ provider = "groq", model = "llama-3.1-8b-instant" }, { provider = "cerebras", model = "llama3.1-8b" }]
"#,
    )
    .unwrap();
    path
}

#[test]
fn a_fallback_is_tried_with_and_without_and_a_cost_table_decides() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recording(dir.path(), "steady-55", SMALL.0, 275, 60.0 / 55.0, 50);
    let costs = dir.path().join("costs.toml");
    // A Groq key costs 5, the Cerebras key 1: one of each (6) is cheaper than two Groq keys.
    std::fs::write(
        &costs,
        "[groq]\nfree = 5\ndeveloper = 50\n[cerebras]\nconfigured = 1\n",
    )
    .unwrap();
    let plan = |extra: &[&str]| {
        let out = harness()
            .arg("plan")
            .arg(&rec)
            .arg("--config")
            .arg(config_with_fallback(dir.path()))
            .args(["--max-keys", "4", "--speed", "200", "--json", "--out"])
            .arg(dir.path().join("out"))
            .args(extra)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Without prices: fewest keys, then fewest providers: two Groq keys, no Cerebras.
    let by_keys = plan(&[]);
    assert_eq!(
        by_keys["recommendation"],
        json!([
            {"provider": "groq", "tier": "free", "keys": 2},
            {"provider": "cerebras", "tier": null, "keys": 0}
        ]),
        "{by_keys:#}"
    );
    let with = by_keys["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "groq free ×1 + cerebras")
        .unwrap_or_else(|| panic!("one Groq key with Cerebras was tried: {by_keys:#}"));
    assert_eq!(with["pass"], true, "{with:#}");
    assert!(
        with["fallbacks"].as_u64().unwrap() > 0 || with["tokens"]["cerebras"].as_u64().unwrap() > 0
    );
    // With prices: the cheapest.
    let by_cost = plan(&["--costs", costs.to_str().unwrap()]);
    assert_eq!(
        by_cost["recommendation"],
        json!([
            {"provider": "groq", "tier": "free", "keys": 1, "cost": 5.0},
            {"provider": "cerebras", "tier": "configured", "keys": 1, "cost": 1.0}
        ]),
        "{by_cost:#}"
    );
    assert_eq!(by_cost["cost"], 6.0);
}

#[test]
fn a_traffic_table_plans_without_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    // Two minutes at 55 a minute, described rather than recorded, in a scenario file whose
    // [proxy] is the config.
    let file = dir.path().join("described.toml");
    std::fs::write(
        &file,
        r#"
name = "what does 55 a minute need?"
[traffic]
requests = 110
model = "llama-3.1-8b"
arrival = { kind = "constant", rate_per_minute = 55 }
prompt_tokens = { min = 50, max = 60 }
max_tokens = 20
[proxy]
[[proxy.providers]]
name = "groq"
base_url = "https://api.groq.com/openai/v1"
keys = ["env:GROQ_API_KEY"]
[[proxy.routes]]
model = "llama-3.1-8b"
targets = [{ provider = "groq", model = "llama-3.1-8b-instant" }]
"#,
    )
    .unwrap();
    let out = harness()
        .arg("plan")
        .arg(&file)
        .args([
            "--tiers",
            "free",
            "--max-keys",
            "4",
            "--speed",
            "200",
            "--out",
        ])
        .arg(dir.path().join("out"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("recommendation: groq free with 2 keys"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| groq free ×1 |") && stdout.contains("FAIL"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(dir.path().join("out/described.plan.toml")).unwrap();
    assert!(
        written.contains("rate_per_minute = 55"),
        "the scenario keeps the description: {written}"
    );
}

#[test]
fn bad_input_exits_2_saying_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recording(dir.path(), "few", SMALL.0, 3, 1.0, 50);
    let cases: [(&[&str], &str); 4] = [
        (&["--goal", "client_429 >= 1"], "<, <="),
        (&["--goal", "clients_429 == 0"], "unknown metric"),
        (&["--tiers", "free,gold"], "gold"),
        (&["--route", "other"], "no request asks for route"),
    ];
    for (flags, says) in cases {
        let out = harness()
            .arg("plan")
            .arg(&rec)
            .arg("--config")
            .arg(config(dir.path()))
            .args(flags)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
    let out = harness().arg("plan").arg(&rec).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
