//! `spillway-harness chaos`: the reliability suite. A fault matrix ([`matrix`]: plain and
//! streamed requests through 429s, 5xx, resets, cut and stalled streams, invalid JSON and slow
//! headers, every client outcome classified by [`outcome`]), crash rounds ([`crash`]: SIGKILLs
//! during cache writes, half of them with the disk's unsynced writes taken away, every answer
//! served afterwards compared with the original) and a memory soak ([`soak`]). It passes when
//! no request hung, was truncated silently, or was answered wrongly, no answer served after a
//! crash was wrong, and memory stayed flat.

pub mod crash;
pub mod matrix;
pub mod outcome;
pub mod soak;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crash::{CrashReport, CrashSpec, run_crash_rounds};
use matrix::{MatrixReport, MatrixSpec, run_matrix};
use soak::{SoakReport, SoakSpec, run_soak};

/// A whole chaos run.
#[derive(Clone, Debug)]
pub struct ChaosSpec {
    /// The fault matrix.
    pub matrix: MatrixSpec,
    /// The crash rounds (none: skipped).
    pub crash: Option<CrashSpec>,
    /// The soak (none: skipped).
    pub soak: Option<SoakSpec>,
}

impl ChaosSpec {
    /// The profile CI runs: 1,000 requests, 4 crash rounds, no soak (about a minute).
    pub fn short(seed: u64) -> Self {
        ChaosSpec {
            matrix: MatrixSpec {
                requests: 1_000,
                concurrency: 16,
                client_timeout: Duration::from_secs(30),
                seed,
            },
            crash: Some(CrashSpec {
                rounds: 4,
                prompts: 120,
                clients: 8,
                seed,
            }),
            soak: None,
        }
    }

    /// The profile RELIABILITY.md reports: 10,000 requests, 20 crash rounds, 500,000 soak
    /// requests.
    pub fn full(seed: u64) -> Self {
        ChaosSpec {
            matrix: MatrixSpec {
                requests: 10_000,
                concurrency: 32,
                client_timeout: Duration::from_secs(30),
                seed,
            },
            crash: Some(CrashSpec {
                rounds: 20,
                prompts: 400,
                clients: 16,
                seed,
            }),
            soak: Some(SoakSpec {
                per_stage: 100_000,
                stages: 5,
                concurrency: 32,
            }),
        }
    }
}

/// What a chaos run found.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosReport {
    /// The fault matrix.
    pub matrix: MatrixReport,
    /// The crash rounds, if run.
    pub crash: Option<CrashReport>,
    /// The soak, if run.
    pub soak: Option<SoakReport>,
}

impl ChaosReport {
    /// True when nothing the gateway must never do happened.
    pub fn passed(&self) -> bool {
        self.matrix.failures() == 0
            && self.crash.as_ref().is_none_or(|c| c.wrong == 0)
            && self.soak.as_ref().is_none_or(SoakReport::held)
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.matrix;
        out.push_str(&format!(
            "## Fault matrix: {} requests in {:.1} s ({} upstream requests, {} upstream 429s)\n\n",
            m.requests, m.seconds, m.upstream_requests, m.upstream_429
        ));
        let names: Vec<&str> = outcome::Outcome::ALL.iter().map(|o| o.name()).collect();
        out.push_str(&format!(
            "| phase | requests | streamed | {} |\n",
            names.join(" | ")
        ));
        out.push_str(&format!("|---|---:|---:|{}\n", "---:|".repeat(names.len())));
        for p in &m.phases {
            let cells: Vec<String> = names
                .iter()
                .map(|n| p.outcomes.get(n).copied().unwrap_or(0).to_string())
                .collect();
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                p.name,
                p.requests,
                p.streamed,
                cells.join(" | ")
            ));
        }
        let totals: Vec<String> = names
            .iter()
            .map(|n| m.outcomes.get(n).copied().unwrap_or(0).to_string())
            .collect();
        out.push_str(&format!(
            "| **all** | {} | {} | {} |\n\n",
            m.requests,
            m.phases.iter().map(|p| p.streamed).sum::<u64>(),
            totals.join(" | ")
        ));
        if !m.refused_statuses.is_empty() {
            let statuses: Vec<String> = m
                .refused_statuses
                .iter()
                .map(|(status, n)| format!("{n} × {status}"))
                .collect();
            out.push_str(&format!("Refusals by status: {}\n\n", statuses.join(", ")));
        }
        for e in &m.examples {
            out.push_str(&format!("- example: {e}\n"));
        }
        if let Some(c) = &self.crash {
            out.push_str(&format!(
                "## Crash rounds: {} SIGKILLs, {} with unsynced writes lost; {} answers served from the cache afterwards, {} wrong\n\n",
                c.rounds, c.losses, c.hits_checked, c.wrong
            ));
            for l in &c.loss_log {
                out.push_str(&format!("- {l}\n"));
            }
            out.push('\n');
        }
        if let Some(s) = &self.soak {
            let rss: Vec<String> = s
                .rss_kib
                .iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect();
            out.push_str(&format!(
                "## Soak: {} stages of {} requests ({:.0} req/s), {} failures; RSS after each stage (MiB): {}; growth after warm-up: {}\n\n",
                s.rss_kib.len(),
                s.per_stage,
                s.rps,
                s.failures,
                rss.join(" → "),
                s.growth_after_warmup()
                    .map_or("-".into(), |g| format!("{:+.1}%", g * 100.0))
            ));
        }
        out.push_str(if self.passed() {
            "**pass**: 0 hung, 0 silently truncated, 0 wrong\n"
        } else {
            "**FAIL**\n"
        });
        out
    }
}

/// Runs a chaos suite. `exe` is the harness binary (the crash rounds and the soak start the
/// gateway and the mock from it in processes of their own); `progress` is told
/// `(stage, done, total)`.
pub async fn run_chaos(
    spec: &ChaosSpec,
    exe: &PathBuf,
    progress: &(dyn Fn(&str, u64, u64) + Sync),
) -> Result<ChaosReport, String> {
    let (a, b) = matrix::mocks().await;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let env: HashMap<String, String> = matrix::KEYS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = spillway::config::parse(
        &matrix::proxy_config(&a, &b, &dir.path().join("cache")),
        "chaos.toml",
        &env,
    )
    .map_err(|e| e.to_string())?;
    let state = spillway::AppState::new(config, spillway::Clock::real())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(spillway::run(listener, state, async move {
        let _ = stopped.await;
    }));
    let matrix = run_matrix(
        &spec.matrix,
        &format!("http://{addr}/v1"),
        &a,
        &b,
        &|done, total| progress("fault matrix", done, total),
    )
    .await;
    let _ = stop.send(());
    let _ = serving.await;
    drop((a, b));
    let crash = match &spec.crash {
        Some(c) => {
            // A mock of its own, without limits: the matrix may have spent `a`'s.
            let mock = spillway_mock::MockProvider::builder()
                .key(matrix::KEYS[0].1)
                .model(matrix::MODEL)
                .start()
                .await;
            Some(
                run_crash_rounds(c, exe, &mock, &|done, total| {
                    progress("crash rounds", done, total)
                })
                .await?,
            )
        }
        None => None,
    };
    let soak = match &spec.soak {
        Some(s) => Some(run_soak(s, exe, &|done, total| progress("soak", done, total)).await?),
        None => None,
    };
    Ok(ChaosReport {
        matrix,
        crash,
        soak,
    })
}
