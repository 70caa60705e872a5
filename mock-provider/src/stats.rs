//! The mock's counters as one serializable report (`GET /_mock/stats`,
//! [`crate::MockProvider::stats`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limiter::KeyModelStats;

/// Everything the mock counted since start (or the last reset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Seconds of (scaled) clock time since the mock started.
    pub uptime: f64,
    /// API requests received (chat, embeddings, models), valid or not.
    pub requests: u64,
    /// Every API response by status; 0 counts connections reset or left hanging.
    pub by_status: BTreeMap<u16, u64>,
    /// Per key, per model: admitted requests and tokens, statuses, limits and window peaks.
    pub keys: BTreeMap<String, BTreeMap<String, KeyModelStats>>,
    /// Journal entries dropped for lack of room.
    pub journal_dropped: u64,
}

impl Stats {
    /// The figures of one key and model.
    pub fn key_model(&self, key: &str, model: &str) -> Option<&KeyModelStats> {
        self.keys.get(key)?.get(model)
    }

    /// Responses with this status, over every key and model.
    pub fn responses(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Requests admitted over every key and model.
    pub fn admitted(&self) -> u64 {
        self.keys
            .values()
            .flat_map(|m| m.values())
            .map(|s| s.requests_admitted)
            .sum()
    }

    /// True when no key's peak in any window exceeded that window's limit.
    pub fn peaks_within_limits(&self) -> bool {
        self.keys
            .values()
            .flat_map(|m| m.values())
            .all(KeyModelStats::peaks_within_limits)
    }
}
