//! The journal: every API request in arrival order, so tests can assert on gaps and order
//! ("no request reached a key before the `retry-after` it was given").

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// One request as the mock saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Arrival number, from 1.
    pub seq: u64,
    /// Arrival time, seconds of (scaled) clock time since the mock started.
    pub at: f64,
    /// `chat`, `embeddings` or `models`.
    pub endpoint: String,
    /// The key, when it was an accepted one.
    pub key: Option<String>,
    /// The model requested, when it was read.
    pub model: Option<String>,
    /// `"stream": true`.
    pub stream: bool,
    /// Tokens counted against the limits (prompt plus completion), when known.
    pub tokens: u64,
    /// The status answered; 0 when no response was sent (connection reset, hang).
    pub status: u16,
    /// The `retry-after` given, on 429s (whole wall-clock seconds, rounded up).
    pub retry_after: Option<u64>,
    /// On 429s, the wait the limiter computed, in wall-clock milliseconds (what the message's
    /// "Please try again in" says, before `retry-after` rounds it up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The client's `x-stainless-retry-count` header, if sent.
    pub retry_count: Option<u32>,
    /// The injected fault, if any.
    pub fault: Option<String>,
}

/// A bounded, ordered log of [`JournalEntry`].
#[derive(Debug)]
pub struct Journal {
    entries: Mutex<VecDeque<JournalEntry>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl Journal {
    /// A journal keeping at most `capacity` entries (oldest dropped first).
    pub fn new(capacity: usize) -> Self {
        Journal {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<JournalEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an entry, dropping the oldest when full.
    pub fn push(&self, entry: JournalEntry) {
        if self.capacity == 0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut entries = self.lock();
        if entries.len() == self.capacity {
            entries.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        entries.push_back(entry);
    }

    /// Entries with `seq > since`, in order.
    pub fn since(&self, since: u64) -> Vec<JournalEntry> {
        let entries = self.lock();
        entries.iter().filter(|e| e.seq > since).cloned().collect()
    }

    /// How many entries were dropped for lack of room.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.lock().clear();
        self.dropped.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_journal_drops_the_oldest_and_counts_it() {
        let j = Journal::new(2);
        for seq in 1..=3 {
            j.push(JournalEntry {
                seq,
                ..JournalEntry::default()
            });
        }
        let seqs: Vec<u64> = j.since(0).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        assert_eq!(j.dropped(), 1);
        assert_eq!(j.since(2).len(), 1);
    }
}
