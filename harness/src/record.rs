//! What a scenario run produced, from both sides: what every client request saw and what every
//! mock received. The runner fills these in; the expectations, the report and the timeline read
//! them, so they stand below all of those.

use serde::Serialize;
use spillway_mock::{JournalEntry, Stats};

/// What one client request saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientRecord {
    /// Pass number, from 1.
    pub pass: usize,
    /// Position in its pass.
    pub index: usize,
    /// When it was sent (simulated seconds from the start of the run).
    pub sent: f64,
    /// Time to its complete answer (simulated seconds).
    pub latency: f64,
    /// HTTP status; 0 when no response came.
    pub status: u16,
    /// Provider that answered.
    pub provider: Option<String>,
    /// Key alias that answered.
    pub key: Option<String>,
    /// `x-spillway-cache`.
    pub cache: Option<String>,
    /// `x-spillway-attempts`.
    pub attempts: u32,
    /// `retry-after` on a 429 (seconds).
    pub retry_after: Option<f64>,
    /// `x-should-retry`.
    pub should_retry: Option<bool>,
    /// Asked for a stream.
    pub stream: bool,
    /// What went wrong, when something did.
    pub error: Option<String>,
}

/// What one mock saw.
#[derive(Clone, Debug, Serialize)]
pub struct MockOutcome {
    /// The mock's name.
    pub name: String,
    /// Its counters and peaks.
    pub stats: Stats,
    /// Every request it received.
    pub journal: Vec<JournalEntry>,
}

/// Everything a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Every client request, in send order.
    pub clients: Vec<ClientRecord>,
    /// Every mock.
    pub mocks: Vec<MockOutcome>,
    /// Fallbacks the proxy counted.
    pub fallbacks: u64,
    /// Passes driven.
    pub passes: usize,
    /// Simulated seconds the run took.
    pub sim_seconds: f64,
    /// Wall-clock seconds the run took.
    pub wall_seconds: f64,
    /// Simulated seconds per wall second: durations read from headers (wall-clock time, as
    /// every duration on the wire is) times this are simulated time.
    pub time_scale: f64,
    /// In a fleet sharing limits through Redis: how long each gateway went on its own share
    /// of the limits (simulated seconds), the first gateway first; empty otherwise.
    pub fleet_degraded: Vec<f64>,
}

impl ClientRecord {
    /// True when the cache answered it (a hit, or joined to an identical request in flight).
    pub fn from_cache(&self) -> bool {
        matches!(self.cache.as_deref(), Some("hit") | Some("coalesced"))
    }
}

impl RunResult {
    /// Latency percentiles of the client requests: p50, p99 and the slowest (simulated
    /// seconds).
    pub fn latencies(&self) -> (f64, f64, f64) {
        let mut l: Vec<f64> = self.clients.iter().map(|c| c.latency).collect();
        l.sort_by(f64::total_cmp);
        (
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            l.last().copied().unwrap_or(0.0),
        )
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
