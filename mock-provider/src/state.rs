//! The state one running mock shares between its handlers.

use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use axum::http::HeaderMap;
use spillway_clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::error::MockError;
use crate::journal::{Journal, JournalEntry};
use crate::limiter::Limiter;
use crate::request::bearer_token;
use crate::spec::{Faults, MockSpec};
use crate::stats::Stats;

const STATUS_SLOTS: usize = 600;

/// Shared state of one mock instance.
#[derive(Debug)]
pub struct MockState {
    /// The spec it was started with (faults live in `faults`, which can change).
    pub spec: MockSpec,
    /// Its clock.
    pub clock: Clock,
    /// Limits, windows and per-key counters.
    pub limiter: Limiter,
    /// Every request in order.
    pub journal: Journal,
    /// Faults and latency in force.
    pub faults: ArcSwap<Faults>,
    /// Cancelled when the mock shuts down (releases hanging requests).
    pub shutdown: CancellationToken,
    /// A number distinguishing this instance's response ids.
    pub instance: u64,
    requests: AtomicU64,
    chat_requests: AtomicU64,
    model_requests: Vec<AtomicU64>,
    by_status: Vec<AtomicU64>,
}

impl MockState {
    /// State for a validated spec.
    pub fn new(spec: MockSpec, clock: Clock) -> Self {
        let instance = u64::from_le_bytes(
            blake3::hash(&clock.unix_now().as_nanos().to_le_bytes()).as_bytes()[..8]
                .try_into()
                .expect("8 bytes"),
        );
        MockState {
            limiter: Limiter::new(&spec),
            journal: Journal::new(spec.journal_capacity),
            faults: ArcSwap::from_pointee(spec.faults.clone()),
            model_requests: spec.models.iter().map(|_| AtomicU64::new(0)).collect(),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            requests: AtomicU64::new(0),
            chat_requests: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            instance,
            clock,
            spec,
        }
    }

    /// Numbers an incoming API request (from 1).
    pub fn next_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Numbers a chat or embeddings request that passed validation, overall and for its model
    /// (both from 1): the numbers fault rules count.
    pub fn next_generation(&self, model: usize) -> (u64, u64) {
        (
            self.chat_requests.fetch_add(1, Ordering::Relaxed) + 1,
            self.model_requests[model].fetch_add(1, Ordering::Relaxed) + 1,
        )
    }

    /// The key a request authenticates with (`Authorization: Bearer` or `x-api-key`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<usize, MockError> {
        let key = bearer_token(headers)
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        key.and_then(|k| self.limiter.key_index(k))
            .ok_or(MockError::InvalidApiKey)
    }

    /// Counts a response and journals its request.
    pub fn record(&self, key: Option<usize>, model: Option<usize>, entry: JournalEntry) {
        let slot = usize::from(entry.status).min(STATUS_SLOTS - 1);
        self.by_status[slot].fetch_add(1, Ordering::Relaxed);
        if let (Some(k), Some(m)) = (key, model) {
            self.limiter.note_status(k, m, entry.status);
        }
        self.journal.push(entry);
    }

    /// Every counter as one report.
    pub fn stats(&self) -> Stats {
        Stats {
            uptime: self.clock.now().as_secs_f64(),
            requests: self.requests.load(Ordering::Relaxed),
            by_status: self
                .by_status
                .iter()
                .enumerate()
                .filter_map(|(status, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((status as u16, n))
                })
                .collect(),
            keys: self.limiter.stats(),
            journal_dropped: self.journal.dropped(),
        }
    }

    /// Forgets every window, counter and journal entry (faults stay as they are).
    pub fn reset(&self) {
        self.limiter.reset();
        self.journal.clear();
        self.requests.store(0, Ordering::Relaxed);
        self.chat_requests.store(0, Ordering::Relaxed);
        for n in self.model_requests.iter().chain(&self.by_status) {
            n.store(0, Ordering::Relaxed);
        }
    }
}
