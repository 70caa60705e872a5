//! Crash rounds: a gateway in a process of its own stores answers while clients keep it busy;
//! it is killed with SIGKILL at a random moment, and in every other round the writes the disk
//! may not have kept are taken away too (the value log's tail cut at a random point, or the
//! index's tail zeroed, as a power loss leaves them). A fresh process on the same cache then
//! serves every prompt it can from the cache alone; each answer is compared with the one the
//! provider gives that prompt. None may be wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use spillway_mock::MockProvider;

use crate::chaos::matrix::{KEYS, MODEL, ROUTE, routed};
use crate::subjects::Subject;

/// How the crash rounds go.
#[derive(Clone, Debug)]
pub struct CrashSpec {
    /// Rounds (each ends in a SIGKILL).
    pub rounds: u32,
    /// Distinct prompts the clients send (and the check reads back).
    pub prompts: u64,
    /// Concurrent clients while the gateway writes.
    pub clients: usize,
    /// Seed of the kill times, losses and prompts.
    pub seed: u64,
}

/// What the crash rounds found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CrashReport {
    /// Rounds run (each killed with SIGKILL).
    pub rounds: u32,
    /// Rounds in which unsynced writes were also taken away.
    pub losses: u32,
    /// Answers served from the cache after a restart and compared.
    pub hits_checked: u64,
    /// Of them, not the provider's answer to that prompt.
    pub wrong: u64,
    /// What each loss was.
    pub loss_log: Vec<String>,
}

fn next(rng: &mut u64) -> u64 {
    *rng = rng
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *rng >> 33
}

/// The gateway's config: the mock as its one provider, the cache in `cache_dir`, every answer
/// stored.
fn config(mock: &MockProvider, cache_dir: &Path) -> String {
    format!(
        r#"
[cache]
path = {:?}
when = "always"

[[providers]]
name = "a"
base_url = "{}"
keys = ["env:CHAOS_A1"]

[[routes]]
model = "{ROUTE}"
targets = [{{ provider = "a", model = "{MODEL}" }}]
"#,
        cache_dir.display().to_string(),
        mock.url()
    )
}

fn body(prompt: u64, seed: u64) -> (Value, String) {
    // Answers of different lengths, so records of many sizes are written.
    let max_tokens = 20 + (prompt * 37) % 150;
    routed(json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": format!("crash prompt {prompt} of run {seed}")}],
        "max_tokens": max_tokens,
    }))
}

/// Takes away what a power loss could: the newest log segment cut at a random point in its
/// second half, or the index file's tail zeroed from a random page on.
fn lose_unsynced_writes(cache_dir: &Path, rng: &mut u64) -> Option<String> {
    let values = cache_dir.join("values");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&values)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let index = cache_dir.join("index.slots");
    if next(rng).is_multiple_of(2) {
        let newest = segments
            .iter()
            .rev()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 64))?;
        let len = std::fs::metadata(newest).ok()?.len();
        let cut = len / 2 + next(rng) % (len / 2).max(1);
        let file = std::fs::OpenOptions::new().write(true).open(newest).ok()?;
        file.set_len(cut).ok()?;
        Some(format!(
            "{} cut from {len} to {cut} bytes",
            newest.file_name()?.to_string_lossy()
        ))
    } else {
        let mut bytes = std::fs::read(&index).ok()?;
        let pages = bytes.len() / 4096;
        if pages < 2 {
            return None;
        }
        let from = (1 + next(rng) as usize % (pages - 1)) * 4096;
        bytes[from..].fill(0);
        std::fs::write(&index, bytes).ok()?;
        Some(format!(
            "index.slots zeroed from byte {from} of {}",
            pages * 4096
        ))
    }
}

/// Runs the rounds with the gateway started from `exe serve-config FILE` (the harness binary
/// itself), against `mock`.
pub async fn run_crash_rounds(
    spec: &CrashSpec,
    exe: &PathBuf,
    mock: &MockProvider,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<CrashReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cache_dir = dir.path().join("cache");
    let config_path = dir.path().join("chaos-crash.toml");
    std::fs::write(&config_path, config(mock, &cache_dir)).map_err(|e| e.to_string())?;
    let args = vec![
        "serve-config".to_string(),
        config_path.display().to_string(),
    ];
    let env = [(KEYS[0].0, KEYS[0].1)];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut rng = spec.seed.wrapping_add(0x5EED);
    let mut report = CrashReport::default();
    for round in 0..spec.rounds {
        let gateway = Subject::spawn("spillway (crash round)", exe, &args, &env)?;
        kill_while_busy(spec, gateway, &client, &mut rng).await;
        report.rounds += 1;
        if round % 2 == 1
            && let Some(loss) = lose_unsynced_writes(&cache_dir, &mut rng)
        {
            report.losses += 1;
            report.loss_log.push(format!("round {round}: {loss}"));
        }
        // A fresh process reads back everything it can, from the cache alone.
        let reader = Subject::spawn("spillway (after the crash)", exe, &args, &env)?;
        read_back(spec, &reader, &client, round, &mut report).await?;
        reader.kill();
        progress(u64::from(round + 1), u64::from(spec.rounds));
    }
    Ok(report)
}

/// Clients keep the writer of `gateway` busy with the round's prompts; at a random moment it
/// is killed with SIGKILL, and the clients stop.
async fn kill_while_busy(
    spec: &CrashSpec,
    gateway: Subject,
    client: &reqwest::Client,
    rng: &mut u64,
) {
    let url = format!("{}/v1/chat/completions", gateway.base_url);
    let run_ms = 200 + next(rng) % 1300;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..spec.clients {
        let (client, url) = (client.clone(), url.clone());
        let (prompts, seed, start) = (spec.prompts, spec.seed, next(rng));
        clients.spawn(async move {
            let mut n = start.wrapping_add(c as u64);
            loop {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
                let (body, _) = body((n >> 33) % prompts, seed);
                let _ = client.post(&url).json(&body).send().await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(run_ms)).await;
    gateway.kill();
    clients.abort_all();
    while clients.join_next().await.is_some() {}
}

/// Asks `reader` for every prompt from its cache alone and compares each answer it has with
/// the provider's; a miss (504) is no fault, any other status is.
async fn read_back(
    spec: &CrashSpec,
    reader: &Subject,
    client: &reqwest::Client,
    round: u32,
    report: &mut CrashReport,
) -> Result<(), String> {
    let url = format!("{}/v1/chat/completions", reader.base_url);
    for prompt in 0..spec.prompts {
        let (body, expected) = body(prompt, spec.seed);
        let resp = client
            .post(&url)
            .header("x-spillway-cache", "only-if-cached")
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("round {round}: the restarted gateway did not answer: {e}"))?;
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            200 => {
                report.hits_checked += 1;
                if answer["choices"][0]["message"]["content"].as_str() != Some(&expected) {
                    report.wrong += 1;
                }
            }
            504 => {}
            other => {
                return Err(format!(
                    "round {round}: prompt {prompt}: status {other} from the cache: {answer}"
                ));
            }
        }
    }
    Ok(())
}
