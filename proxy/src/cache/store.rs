//! Where entries live: a key → record map with creation times (for eviction and purges), behind
//! a trait so another backend (Redis, for a fleet of proxies) can take the disk store's place.

use crate::cache::key::CacheKey;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("cache store: {0}")]
pub struct StoreError(pub String);

/// One record to store.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Its key.
    pub key: &'a CacheKey,
    /// When it was created (unix seconds).
    pub created: u64,
    /// The encoded record.
    pub record: &'a [u8],
}

/// A key → record store with creation times.
pub trait CacheStore: Send + Sync + std::fmt::Debug {
    /// The record under `key`.
    fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `record` under `key`, created at `created` (unix seconds).
    fn put(&self, key: &CacheKey, created: u64, record: &[u8]) -> Result<(), StoreError> {
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
    fn remove(&self, key: &CacheKey) -> Result<(), StoreError>;
    /// Every key, in key order.
    fn keys(&self) -> Result<Vec<CacheKey>, StoreError>;
    /// Keys created before `before` (unix seconds), oldest first.
    fn created_before(&self, before: u64) -> Result<Vec<CacheKey>, StoreError>;
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
}
