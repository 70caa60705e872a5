//! The memory soak: a gateway in a process of its own, in front of a mock in another, serves
//! stages of plain and streamed requests, misses (a new prompt every time, each answer stored)
//! and hits (prompts it has answered before), and its resident memory is read after each stage.
//! After the first stages have filled the caches it keeps in memory, memory must stay flat.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use serde::Serialize;

use crate::load::{Bodies, BodyCheck, LoadSpec, bodies, json_headers, numbered_bodies, run_load};
use crate::subjects::{BENCH_KEY, BENCH_ROUTE, ProxyShape, Subject, spawn_proxy};

/// Resident memory that comes and goes with the allocator, not with what the gateway keeps.
const GROWTH_NOISE_KIB: f64 = 4096.0;

/// How the soak goes.
#[derive(Clone, Debug)]
pub struct SoakSpec {
    /// Requests per stage (a quarter each: plain misses, plain hits, streamed misses, streamed
    /// hits).
    pub per_stage: u64,
    /// Stages.
    pub stages: usize,
    /// Connections.
    pub concurrency: usize,
}

/// What the soak measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoakReport {
    /// Requests per stage.
    pub per_stage: u64,
    /// The gateway's resident memory after each stage, KiB.
    pub rss_kib: Vec<u64>,
    /// Requests that failed or were answered wrongly.
    pub failures: u64,
    /// Requests per second over the soak.
    pub rps: f64,
}

impl SoakReport {
    /// Growth from the end of the second stage (the caches warm) to the end of the last, as a
    /// share of the former.
    pub fn growth_after_warmup(&self) -> Option<f64> {
        let warm = *self.rss_kib.get(1)? as f64;
        let last = *self.rss_kib.last()? as f64;
        (warm > 0.0).then(|| (last - warm) / warm)
    }

    /// True when nothing failed and memory after the last stage is within 10% (or 4 MiB,
    /// whichever is more: the allocator's own give and take) of its level after the second.
    pub fn held(&self) -> bool {
        let within = match (self.rss_kib.get(1), self.rss_kib.last()) {
            (Some(&warm), Some(&last)) => {
                last as f64 <= warm as f64 + (0.10 * warm as f64).max(GROWTH_NOISE_KIB)
            }
            _ => true,
        };
        self.failures == 0 && within
    }
}

/// Runs the soak, starting the mock and the gateway from `exe` (the harness binary).
pub async fn run_soak(
    spec: &SoakSpec,
    exe: &PathBuf,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SoakReport, String> {
    let mock = Subject::spawn("spillway-mock (soak)", exe, &["serve-mock".into()], &[])?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let proxy = spawn_proxy(
        "spillway (soak)",
        exe,
        &mock.base_url,
        &dir.path().join("cache"),
        &ProxyShape::default(),
    )?;
    let url: Uri = format!("{}/v1/chat/completions", proxy.base_url)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let headers = json_headers(BENCH_KEY).map_err(|e| e.to_string())?;
    let quarter = (spec.per_stage / 4).max(1);
    let mut report = SoakReport {
        per_stage: quarter * 4,
        ..SoakReport::default()
    };
    let (mut requests, mut seconds) = (0u64, 0f64);
    for stage in 0..spec.stages {
        for (part, (bodies, check)) in stage_parts(stage).into_iter().enumerate() {
            let load = run_load(LoadSpec {
                url: url.clone(),
                spread: Vec::new(),
                headers: headers.clone(),
                bodies,
                concurrency: spec.concurrency,
                // Bounded in time as well as in count.
                duration: Duration::from_secs(900),
                warmup: Duration::ZERO,
                max_requests: Some(quarter),
                check,
            })
            .await
            .map_err(|e| format!("soak stage {stage}, part {part}: {e}"))?;
            report.failures += load.errors + load.invalid + load.non_200();
            requests += load.requests;
            seconds += load.seconds;
        }
        // Let the cache's writer drain before reading memory.
        spillway_clock::Clock::real()
            .sleep(Duration::from_secs(1))
            .await;
        report.rss_kib.push(proxy.rss_kib().unwrap_or(0));
        progress(stage as u64 + 1, spec.stages as u64);
    }
    report.rps = if seconds > 0.0 {
        requests as f64 / seconds
    } else {
        0.0
    };
    Ok(report)
}

/// What one stage sends, in four parts: plain misses (a new prompt every time), plain hits (a
/// thousand prompts, answered before after the first stage), streamed misses, streamed hits.
fn stage_parts(stage: usize) -> [(Bodies, BodyCheck); 4] {
    let hot = |stream| {
        Bodies::Cycle(Arc::new(bodies(
            BENCH_ROUTE,
            1000,
            200,
            "soak hot ",
            stream,
        )))
    };
    [
        (
            numbered_bodies(BENCH_ROUTE, 200, &format!("soak {stage} "), false),
            BodyCheck::Chat,
        ),
        (hot(false), BodyCheck::Chat),
        (
            numbered_bodies(BENCH_ROUTE, 200, &format!("soak s{stage} "), true),
            BodyCheck::Stream,
        ),
        (hot(true), BodyCheck::Stream),
    ]
}
