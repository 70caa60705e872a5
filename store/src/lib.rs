//! # spillway-store
//!
//! spillway's storage engine: a key → record map with creation times (for eviction and
//! purges), on disk, checked on every read, rebuilt from its own log when its index is lost.
//! It knows nothing of HTTP or of what a record holds; the proxy's cache encodes its answers
//! into records. The on-disk format, what is checked on read and what a crash can leave are in
//! `FORMAT.md` beside this crate.
//!
//! # Layout
//! - [`Store`]: the trait a backend implements; [`Key`], [`NewRecord`], [`StoreError`];
//! - [`disk`]: the embedded store, an index over a value log;
//! - [`vlog`]: the value log (segments of checked frames);
//! - [`index`]: the index trait, kept by [`slot_index`] (the default, a hash table in one file)
//!   and [`sled_index`] (a sled tree); [`open_index`] opens the configured kind, adopting the
//!   other's entries and setting a damaged index aside;
//! - [`filter`]: the key filter that answers most misses from memory;
//! - [`writer`]: the one thread that stores records in batches, syncs and keeps the size.

pub mod disk;
pub mod filter;
pub mod index;
pub mod open_index;
pub mod sled_index;
pub mod slot_index;
pub mod vlog;
pub mod writer;

use std::fmt;
use std::time::Duration;

pub use disk::DiskStore;
pub use index::IndexKind;

/// A record's key: 32 bytes, already a uniform hash (the index and the filter use its bytes
/// directly).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Reads 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let hash = blake3::Hash::from_hex(s.trim()).ok()?;
        Some(Key(*hash.as_bytes()))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_hex())
    }
}

/// When the store's writes are made durable (`[cache] fsync`). Whatever the policy, a crash or
/// a power loss never makes a read return another key's record; the policy decides how many of
/// the most recent records such a loss may forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch the writer stores, before its callers are told it is stored: nothing
    /// stored is lost, at the cost of a disk sync per batch.
    Always,
    /// At most this long after a write (the default, every second): a power loss forgets at
    /// most the records of the last interval.
    Interval(Duration),
    /// Only at shutdown (and when asked): a killed process loses nothing (the operating system
    /// has every write), a power loss may forget everything since start.
    Shutdown,
}

impl FsyncPolicy {
    /// Reads `always`, `shutdown`, or a duration such as `1s` (an interval).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "always" => Some(FsyncPolicy::Always),
            "shutdown" => Some(FsyncPolicy::Shutdown),
            other => humantime::parse_duration(other)
                .ok()
                .filter(|d| !d.is_zero())
                .map(FsyncPolicy::Interval),
        }
    }

    /// How it is written in the config.
    pub fn name(self) -> String {
        match self {
            FsyncPolicy::Always => "always".into(),
            FsyncPolicy::Shutdown => "shutdown".into(),
            FsyncPolicy::Interval(d) => humantime::format_duration(d).to_string(),
        }
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("cache store: {0}")]
pub struct StoreError(pub String);

/// One record to store.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Its key.
    pub key: &'a Key,
    /// When it was created (unix seconds).
    pub created: u64,
    /// The encoded record.
    pub record: &'a [u8],
}

/// A key → record store with creation times. Implementations return a record only for the
/// key it was stored under, whole, or nothing.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The record under `key`.
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `record` under `key`, created at `created` (unix seconds).
    fn put(&self, key: &Key, created: u64, record: &[u8]) -> Result<(), StoreError> {
        self.put_all(&[NewRecord {
            key,
            created,
            record,
        }])
    }
    /// Stores several records, with as few writes as the backend can. On an error some of them
    /// may be stored and others not.
    fn put_all(&self, records: &[NewRecord<'_>]) -> Result<(), StoreError>;
    /// Removes `key`.
    fn remove(&self, key: &Key) -> Result<(), StoreError>;
    /// Removes several keys, with as few writes as the backend can.
    fn remove_all(&self, keys: &[Key]) -> Result<(), StoreError> {
        keys.iter().try_for_each(|k| self.remove(k))
    }
    /// Every key, in key order.
    fn keys(&self) -> Result<Vec<Key>, StoreError>;
    /// Keys created before `before` (unix seconds), oldest first.
    fn created_before(&self, before: u64) -> Result<Vec<Key>, StoreError>;
    /// Removes the oldest entries until the records' total size is at most `bytes`; returns how
    /// many were removed.
    fn shrink_to(&self, bytes: u64) -> Result<usize, StoreError>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Total size of the records, in bytes.
    fn bytes(&self) -> u64;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Background upkeep (reclaiming space), called now and then by the writer.
    fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Keeps the store under `max` bytes (when given): once over it, the oldest entries are
    /// evicted down to 90% of it, so eviction runs now and then rather than on every write.
    fn keep_under(&self, max: Option<u64>) {
        let Some(max) = max else {
            return;
        };
        if self.bytes() <= max {
            return;
        }
        match self.shrink_to(max - max / 10) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(evicted = n, "cache over max_size: oldest entries evicted"),
            Err(e) => tracing::warn!(error = %e, "cache eviction failed"),
        }
    }
}
