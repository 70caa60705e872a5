//! The content-addressed response cache in front of the router: a hit never touches a provider
//! or its limits. [`key`] (canonical request → blake3), [`entry`] (an answer as a checked
//! record), [`policy`] (which requests are cached, and their own controls), [`flight`]
//! (single-flight), [`convert`] (stream ↔ plain), [`cassette`] (export/import), and the
//! [`Cache`] facade over the storage engine, `spillway-store` (re-exported as [`store`]), whose
//! writer stores records off the request path. How a request uses all this is the pipeline's.

pub mod cassette;
pub mod convert;
pub mod entry;
pub mod flight;
pub mod key;
pub mod policy;

pub use spillway_store as store;
use spillway_store::{DiskStore, disk, writer};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use spillway_clock::Clock;

use crate::error::Closest;

use crate::config::cache::{CacheConfig, CacheMode};
use entry::{Corrupt, Stored};
use flight::Flights;
use key::{CacheKey, diff_paths};
use store::{Store as CacheStore, StoreError};

/// Most entries a replay miss examines when looking for the closest stored request.
const CLOSEST_SCAN_LIMIT: usize = 100_000;

/// The cache: its policy, its store (none when off), its writer and the flights in progress.
#[derive(Debug)]
pub struct Cache {
    /// The `[cache]` section.
    pub config: CacheConfig,
    store: Option<Arc<dyn CacheStore>>,
    writer: Option<writer::Writer>,
    /// Flights in progress.
    pub flights: Arc<Flights>,
    hot: Option<HotEntries>,
    clock: Clock,
    /// Answers not stored because they were larger than `max_entry_size`.
    too_large: AtomicU64,
}

/// Opens the disk store at `config.path`; when its files cannot be used, moves the directory
/// aside and opens a fresh one.
fn open_disk_store(config: &CacheConfig) -> Result<DiskStore, StoreError> {
    let path = &config.path;
    let lock = disk::lock_dir(path)?;
    match DiskStore::open_locked(path, lock, config.index, config.index_memory) {
        Ok(store) => Ok(store),
        Err(e) => {
            let aside = (1..)
                .map(|n| {
                    let mut p = path.as_os_str().to_owned();
                    p.push(format!(".damaged-{n}"));
                    std::path::PathBuf::from(p)
                })
                .find(|p| !p.exists())
                .expect("some name is free");
            std::fs::rename(path, &aside).map_err(|r| {
                StoreError(format!(
                    "{e}; and it could not be moved aside to {}: {r}",
                    aside.display()
                ))
            })?;
            tracing::error!(
                error = %e,
                moved_to = %aside.display(),
                "the cache could not be opened: moved aside, starting with an empty cache"
            );
            let lock = disk::lock_dir(path)?;
            DiskStore::open_locked(path, lock, config.index, config.index_memory)
        }
    }
}

/// Weighs a decoded entry by its bytes (plus a fixed overhead).
#[derive(Clone, Copy, Debug)]
struct EntryBytes;

impl quick_cache::Weighter<CacheKey, Arc<Stored>> for EntryBytes {
    fn weight(&self, _: &CacheKey, s: &Arc<Stored>) -> u64 {
        let body = s.body.as_ref().map_or(0, |b| b.get().len());
        let chunks: usize = s.chunks.iter().flatten().map(|c| c.get().len()).sum();
        (256 + body + chunks) as u64
    }
}

/// Decoded entries kept in memory: lock-sharded, no background work, byte-weighted.
type HotEntries = quick_cache::sync::Cache<CacheKey, Arc<Stored>, EntryBytes>;

/// A bounded, byte-weighted map of decoded entries (`None` when `bytes` is 0).
fn hot_cache(bytes: u64) -> Option<HotEntries> {
    (bytes > 0).then(|| {
        // Sized for answers of about 2 KB; the weight bound is what holds.
        let items = usize::try_from(bytes / 2048).unwrap_or(usize::MAX).max(16);
        HotEntries::with_weighter(items, bytes, EntryBytes)
    })
}

impl Cache {
    /// Opens the store (unless the mode is `off`). A store whose files cannot be used at all is
    /// moved aside (`PATH.damaged-N`) and a fresh one opened in its place, with a line in the
    /// log, so one bad file never keeps the proxy from starting; a store in use by another
    /// process is an error.
    pub fn open(config: CacheConfig, clock: Clock) -> Result<Self, StoreError> {
        let store: Option<Arc<dyn CacheStore>> = match config.mode {
            CacheMode::Off => None,
            _ => Some(Arc::new(open_disk_store(&config)?)),
        };
        let writer = match &store {
            Some(s) => Some(
                writer::Writer::spawn(
                    s.clone(),
                    writer::Upkeep {
                        max_size: config.max_size,
                        fsync: config.fsync,
                    },
                )
                .map_err(|e| StoreError(format!("cannot start the cache writer: {e}")))?,
            ),
            None => None,
        };
        Ok(Cache {
            hot: hot_cache(config.hot_memory),
            config,
            store,
            writer,
            flights: Arc::default(),
            clock,
            too_large: AtomicU64::new(0),
        })
    }

    /// The store, unless the cache is off.
    pub fn store(&self) -> Option<&Arc<dyn CacheStore>> {
        self.store.as_ref()
    }

    /// Unix seconds now, on the cache's clock.
    pub fn now_unix(&self) -> u64 {
        self.clock.unix_now().as_secs()
    }

    /// Answers not stored because they were larger than `max_entry_size`.
    pub fn not_stored_too_large(&self) -> u64 {
        self.too_large.load(Ordering::Relaxed)
    }

    /// Handles a record that failed its checks: logged, removed, treated as a miss.
    fn discard(&self, store: &Arc<dyn CacheStore>, key: &CacheKey, why: &Corrupt) {
        tracing::warn!(key = %key, error = %why, "corrupt cache entry removed; treated as a miss");
        if let Err(e) = store.remove(key) {
            tracing::warn!(key = %key, error = %e, "could not remove a corrupt cache entry");
        }
    }

    fn expired(&self, stored: &Stored) -> bool {
        self.config
            .ttl
            .is_some_and(|ttl| stored.created + ttl.as_secs() < self.now_unix())
    }

    /// The valid, unexpired entry under `key`: from memory when it is hot, else from the store.
    pub fn lookup(&self, key: &CacheKey) -> Option<Arc<Stored>> {
        if let Some(hot) = &self.hot
            && let Some(stored) = hot.get(key)
        {
            if !self.expired(&stored) {
                return Some(stored);
            }
            hot.remove(key);
        }
        let stored = Arc::new(self.lookup_stored(key)?);
        if let Some(hot) = &self.hot {
            hot.insert(*key, stored.clone());
        }
        Some(stored)
    }

    /// The valid, unexpired entry under `key`, read from the store.
    fn lookup_stored(&self, key: &CacheKey) -> Option<Stored> {
        let store = self.store.as_ref()?;
        let record = match store.get(key) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cache read failed; treated as a miss");
                return None;
            }
        };
        match entry::decode(&record) {
            Ok(stored) => {
                if self.expired(&stored) {
                    let _ = store.remove(key);
                    return None;
                }
                Some(stored)
            }
            Err(why) => {
                self.discard(store, key, &why);
                None
            }
        }
    }

    /// An answer's record as the fleet's shared tier holds it: the cache key's 32 bytes, then
    /// the record (which carries its own checksum), so a value read back is checked for its
    /// key as well as its bytes.
    pub fn shared_frame(key: &CacheKey, record: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(32 + record.len());
        frame.extend_from_slice(&key.0);
        frame.extend_from_slice(record);
        frame
    }

    /// The entry in a frame another gateway shared under `key`, checked like one read from the
    /// store (its key, its checksum, its age); kept in this gateway's own cache too. A frame
    /// that fails a check is a miss, said in the log.
    pub fn from_shared(&self, key: &CacheKey, frame: &[u8]) -> Option<Arc<Stored>> {
        let record = match frame.split_at_checked(32) {
            Some((k, record)) if k == key.0.as_slice() => record,
            _ => {
                tracing::warn!(key = %key, "the fleet's shared answer is for another key; treated as a miss");
                return None;
            }
        };
        let stored = match entry::decode(record) {
            Ok(stored) => stored,
            Err(why) => {
                tracing::warn!(key = %key, error = %why, "the fleet's shared answer failed its checks; treated as a miss");
                return None;
            }
        };
        if self.expired(&stored) {
            return None;
        }
        let stored = Arc::new(stored);
        if self.config.mode == CacheMode::ReadWrite {
            let (created, bytes) = (stored.created, record.to_vec());
            let size = bytes.len() as u64;
            let make: writer::MakeRecord =
                Box::new(move || Some(writer::Record { created, bytes }));
            self.save_later(*key, size, make, Box::new(|| {}));
        }
        if let Some(hot) = &self.hot {
            hot.insert(*key, stored.clone());
        }
        Some(stored)
    }

    /// The entry and canonical request under `key`, checked (for tools).
    pub fn lookup_full(&self, key: &CacheKey) -> Option<(Stored, Value)> {
        let store = self.store.as_ref()?;
        let record = store.get(key).ok()??;
        match entry::decode_full(&record) {
            Ok(full) => Some(full),
            Err(why) => {
                self.discard(store, key, &why);
                None
            }
        }
    }

    /// Queues an answer holding `size` bytes (its body and canonical request) for the writer,
    /// which builds its record with `record` and calls `after` once it is stored; when it is
    /// not stored (larger than `max_entry_size`, no writer, or the writer is behind), `after`
    /// runs now.
    pub fn save_later(
        &self,
        key: CacheKey,
        size: u64,
        record: writer::MakeRecord,
        after: writer::AfterStore,
    ) {
        if let Some(hot) = &self.hot {
            hot.remove(&key);
        }
        if size > self.config.max_entry_size {
            let n = self.too_large.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::info!(
                    key = %key,
                    bytes = size,
                    max_entry_size = self.config.max_entry_size,
                    not_stored = n,
                    "answer larger than [cache] max_entry_size: served, not stored"
                );
            }
            after();
            return;
        }
        let queued = match &self.writer {
            Some(w) => w.put(key, size, record, after),
            None => Err(after),
        };
        if let Err(after) = queued {
            after();
        }
    }

    /// Writes dropped because the writer was behind.
    pub fn dropped_writes(&self) -> u64 {
        self.writer.as_ref().map_or(0, writer::Writer::dropped)
    }

    /// Stores an answer with its canonical request now (tools and imports), then keeps the
    /// store under `max_size`.
    pub fn save(&self, key: &CacheKey, stored: &Stored, request: &[u8]) {
        if let Some(hot) = &self.hot {
            hot.remove(key);
        }
        let Some(store) = &self.store else {
            return;
        };
        let record = entry::encode(stored, request);
        if let Err(e) = store.put(key, stored.created, &record) {
            tracing::warn!(key = %key, error = %e, "could not store a cache entry");
            return;
        }
        store.keep_under(self.config.max_size);
    }

    /// The stored request closest to `request` for the same route, endpoint and namespace:
    /// the one least far from it by [`key::distance`] (edits in the fields that differ, so a
    /// typo names the entry it misspells), then the one differing in fewest fields.
    pub fn closest(
        &self,
        route: &str,
        endpoint: &str,
        namespace: &str,
        request: &Value,
    ) -> Option<Closest> {
        let store = self.store.as_ref()?;
        let mut best: Option<(usize, Closest)> = None;
        for key in store.keys().ok()?.into_iter().take(CLOSEST_SCAN_LIMIT) {
            let Some(record) = store.get(&key).ok().flatten() else {
                continue;
            };
            let Ok((stored, stored_request)) = entry::decode_full(&record) else {
                continue;
            };
            if stored.route != route || stored.endpoint != endpoint || stored.namespace != namespace
            {
                continue;
            }
            let bound = best.as_ref().map_or(usize::MAX, |(d, _)| *d);
            let Some(distance) = key::distance(request, &stored_request, bound) else {
                continue;
            };
            let differences = diff_paths(request, &stored_request, 20);
            let nearer = best
                .as_ref()
                .is_none_or(|(d, b)| distance < *d || differences.len() < b.differences.len());
            if nearer {
                best = Some((distance, Closest { key, differences }));
            }
        }
        best.map(|(_, closest)| closest)
    }

    /// Removes entries matching a namespace (when given) and older than `older_than` (when
    /// given); returns how many.
    pub fn purge(
        &self,
        namespace: Option<&str>,
        older_than: Option<Duration>,
    ) -> Result<usize, StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let candidates = match older_than {
            Some(age) => store.created_before(self.now_unix().saturating_sub(age.as_secs()))?,
            None => store.keys()?,
        };
        if let Some(hot) = &self.hot {
            hot.clear();
        }
        let mut doomed = Vec::new();
        for key in candidates {
            let matches = match namespace {
                None => true,
                Some(ns) => match store.get(&key)? {
                    Some(record) => entry::decode(&record)
                        .map(|s| s.namespace == ns)
                        .unwrap_or(true),
                    None => false,
                },
            };
            if matches {
                doomed.push(key);
            }
        }
        store.remove_all(&doomed)?;
        store.flush()?;
        Ok(doomed.len())
    }

    /// Stores everything queued and makes it durable (blocking; for tools).
    pub fn flush(&self) {
        if let Some(w) = &self.writer {
            w.flush_blocking();
        } else if let Some(store) = &self.store
            && let Err(e) = store.flush()
        {
            tracing::warn!(error = %e, "cache flush failed");
        }
    }

    /// Stores everything queued and makes it durable (on shutdown).
    pub async fn flush_async(&self) {
        if let Some(w) = &self.writer {
            w.flush().await;
        }
    }
}

/// What the cache's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A plain 200 answer on route `r` with `body`.
    pub fn stored(body: &str) -> Stored {
        Stored {
            created: 0,
            namespace: String::new(),
            route: "r".into(),
            endpoint: "chat".into(),
            provider: None,
            model: None,
            status: 200,
            headers: std::collections::BTreeMap::new(),
            body: Some(serde_json::value::RawValue::from_string(body.into()).expect("json")),
            chunks: None,
        }
    }

    /// A cache in `dir` on a manual clock, with `hot_memory` bytes of hot entries.
    pub fn open(dir: &tempfile::TempDir, hot_memory: u64) -> Cache {
        let config = CacheConfig {
            path: dir.path().join("cache"),
            hot_memory,
            ..CacheConfig::default()
        };
        Cache::open(config, Clock::manual()).expect("opens")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use testing::stored;

    fn open(dir: &tempfile::TempDir) -> Cache {
        // No hot copies: these tests look at what the store itself serves.
        testing::open(dir, 0)
    }

    #[test]
    fn a_corrupt_record_is_a_miss_and_is_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = open(&dir);
        let key = CacheKey([1; 32]);
        cache.save(&key, &stored(r#"{"a":1}"#), b"{}");
        assert!(cache.lookup(&key).is_some());
        let store = cache.store().expect("a store").clone();
        let mut record = store.get(&key).unwrap().unwrap();
        let last = record.len() - 1;
        record[last] ^= 1;
        store.put(&key, 0, &record).unwrap();
        assert!(cache.lookup(&key).is_none());
        assert!(store.get(&key).unwrap().is_none(), "removed");
    }

    #[test]
    fn hot_entries_are_served_from_memory_and_replaced_on_save() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = CacheConfig {
            path: dir.path().join("cache"),
            ..CacheConfig::default()
        };
        let cache = Cache::open(config, Clock::manual()).expect("opens");
        let key = CacheKey([9; 32]);
        cache.save(&key, &stored(r#"{"v":1}"#), b"{}");
        assert_eq!(
            cache.lookup(&key).unwrap().body.as_ref().unwrap().get(),
            r#"{"v":1}"#
        );
        // Gone from the store, still hot.
        cache.store().unwrap().remove(&key).unwrap();
        assert!(cache.lookup(&key).is_some());
        // A new answer replaces the hot copy.
        cache.save(&key, &stored(r#"{"v":2}"#), b"{}");
        assert_eq!(
            cache.lookup(&key).unwrap().body.as_ref().unwrap().get(),
            r#"{"v":2}"#
        );
    }

    #[test]
    fn expired_entries_are_misses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = CacheConfig {
            path: dir.path().join("cache"),
            ttl: Some(Duration::from_secs(60)),
            ..CacheConfig::default()
        };
        let clock = Clock::manual();
        let cache = Cache::open(config, clock.clone()).expect("opens");
        let key = CacheKey([2; 32]);
        let mut s = stored(r#"{"a":1}"#);
        s.created = cache.now_unix();
        cache.save(&key, &s, b"{}");
        clock.advance(Duration::from_secs(30));
        assert!(cache.lookup(&key).is_some());
        clock.advance(Duration::from_secs(31));
        assert!(cache.lookup(&key).is_none());
    }

    #[test]
    fn max_size_evicts_the_oldest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = CacheConfig {
            path: dir.path().join("cache"),
            max_size: Some(1_000),
            ..CacheConfig::default()
        };
        let cache = Cache::open(config, Clock::manual()).expect("opens");
        for i in 0..5u8 {
            // Incompressible padding: records are lz4-compressed.
            let pad: String = (0..10u8)
                .map(|j| blake3::hash(&[i, j]).to_hex().to_string())
                .collect();
            let mut s = stored(&format!(r#"{{"pad":"{pad}"}}"#));
            s.created = u64::from(i);
            cache.save(&CacheKey([i; 32]), &s, b"{}");
        }
        let store = cache.store().unwrap();
        assert!(store.bytes() <= 1_000);
        assert!(cache.lookup(&CacheKey([4; 32])).is_some(), "newest kept");
        assert!(cache.lookup(&CacheKey([0; 32])).is_none(), "oldest evicted");
    }

    #[test]
    fn a_cache_whose_files_cannot_be_used_is_moved_aside_and_started_afresh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache");
        std::fs::create_dir_all(&path).unwrap();
        // The value log's folder is a file: nothing of the store can be used.
        std::fs::write(path.join("values"), b"not a folder").unwrap();
        let config = CacheConfig {
            path: path.clone(),
            ..CacheConfig::default()
        };
        let cache = Cache::open(config, Clock::manual()).expect("opens anyway");
        let key = CacheKey([3; 32]);
        cache.save(&key, &stored(r#"{"a":1}"#), b"{}");
        assert!(cache.lookup(&key).is_some());
        let aside = dir.path().join("cache.damaged-1");
        assert!(
            aside.join("values").is_file(),
            "the damaged store is kept aside"
        );
    }

    #[test]
    fn answers_over_max_entry_size_are_not_stored_and_are_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = CacheConfig {
            path: dir.path().join("cache"),
            max_entry_size: 100,
            ..CacheConfig::default()
        };
        let cache = Cache::open(config, Clock::manual()).expect("opens");
        let landed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = landed.clone();
        cache.save_later(
            CacheKey([4; 32]),
            101,
            Box::new(|| panic!("a record too large is never built")),
            Box::new(move || flag.store(true, Ordering::SeqCst)),
        );
        assert!(landed.load(Ordering::SeqCst), "its flight lands at once");
        assert_eq!(cache.not_stored_too_large(), 1);
        cache.flush();
        assert!(cache.lookup(&CacheKey([4; 32])).is_none());
    }
}
