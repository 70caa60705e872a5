//! The embedded store: an index ([`KeyIndex`]: key → creation time and where the record is)
//! with the records themselves in a [`ValueLog`]. The index holds only small fixed-size
//! entries, so neither its write cost nor its size grows with answer sizes. A [`KeyFilter`]
//! answers most misses without touching the index. One index insert per put: eviction and
//! purges find old entries by scanning the index (rare, on the writer thread) rather than
//! keeping a second, time-ordered index on every write.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cache::filter::KeyFilter;
use crate::cache::index::{IndexEntry, IndexKind, KeyIndex, open_index};
use crate::cache::key::CacheKey;
use crate::cache::store::{CacheStore, NewRecord, StoreError};
use crate::cache::vlog::ValueLog;

/// Keys the key filter is sized for when it starts (2 MiB of bits), so the proxy's memory stays
/// flat for the first million entries; past them it doubles (2 bytes per key). Unit tests start
/// small to reach the growth quickly.
const FILTER_KEYS_AT_START: usize = if cfg!(test) { 1 << 10 } else { 1 << 20 };

/// Rewrite the value log once this much of it is dead (and more than is alive).
const COMPACT_DEAD_BYTES: u64 = 64 * 1024 * 1024;

/// An indexed, value-log-backed [`CacheStore`].
#[derive(Debug)]
pub struct DiskStore {
    index: Box<dyn KeyIndex>,
    vlog: ValueLog,
    live: AtomicU64,
    writes: Mutex<()>,
    /// Every key in the index (and some removed since): a miss never touches the index.
    filter: RwLock<Arc<KeyFilter>>,
    /// The directory's lock, held while the store is open.
    _lock: File,
}

/// Takes the cache directory's lock (`lock`): one process at a time writes a store.
fn lock_dir(path: &Path) -> Result<File, StoreError> {
    let lock_path = path.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError(format!(
            "the cache {} is in use by another process (stop it, or give this one its own \
             [cache] path)",
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StoreError(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl DiskStore {
    /// Opens (or creates) the store in directory `path`: the index of kind `kind` (see
    /// [`open_index`]; `index_memory` bounds sled's page cache) and `values/` for the value log.
    pub fn open(path: &Path, kind: IndexKind, index_memory: u64) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
        let lock = lock_dir(path)?;
        let index = open_index(path, kind, index_memory)?;
        let vlog = ValueLog::open(&path.join("values")).map_err(|e| {
            StoreError(format!(
                "cannot open {}: {e}",
                path.join("values").display()
            ))
        })?;
        let mut live = 0;
        let filter = KeyFilter::with_capacity((2 * index.len()).max(FILTER_KEYS_AT_START));
        index.for_each(&mut |key, entry| {
            live += u64::from(entry.loc.len);
            filter.insert(&key);
        })?;
        Ok(DiskStore {
            index,
            vlog,
            live: AtomicU64::new(live),
            writes: Mutex::new(()),
            filter: RwLock::new(Arc::new(filter)),
            _lock: lock,
        })
    }

    fn filter(&self) -> Arc<KeyFilter> {
        self.filter
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rebuilds the key filter twice as large once more keys went in than it was sized for.
    fn grow_filter(&self) -> Result<(), StoreError> {
        let current = self.filter();
        if !current.is_full() {
            return Ok(());
        }
        // Under the write lock, no key goes in while the new filter is filled.
        let _guard = self.lock();
        let grown = KeyFilter::with_capacity((2 * self.index.len()).max(2 * current.capacity()));
        self.index.for_each(&mut |key, _| grown.insert(&key))?;
        tracing::debug!(capacity = grown.capacity(), "cache key filter grown");
        *self.filter.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(grown);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_locked(&self, key: &CacheKey) -> Result<(), StoreError> {
        if let Some(old) = self.index.remove(key)? {
            self.live
                .fetch_sub(u64::from(old.loc.len), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every entry's (creation time, key, size), oldest first.
    fn by_age(&self) -> Result<Vec<(u64, CacheKey, u64)>, StoreError> {
        let mut all = Vec::new();
        self.index.for_each(&mut |key, entry| {
            all.push((entry.created, key, u64::from(entry.loc.len)));
        })?;
        all.sort_unstable_by_key(|(created, key, _)| (*created, key.0));
        Ok(all)
    }

    /// Rewrites every live record into fresh segments and deletes the old ones, when enough of
    /// the log is dead. Readers never block: an index entry moves only by compare-and-swap, and
    /// a reader that still held an old location reads a miss.
    fn compact(&self) -> Result<(), StoreError> {
        let total = self.vlog.total_bytes();
        let live = self.live.load(Ordering::Relaxed);
        let dead = total.saturating_sub(live);
        if dead < COMPACT_DEAD_BYTES || dead < live {
            return Ok(());
        }
        let fresh = self.vlog.rotate().map_err(err)?;
        let mut old_entries = Vec::new();
        self.index.for_each(&mut |key, entry| {
            if entry.loc.segment < fresh {
                old_entries.push((key, entry));
            }
        })?;
        for (key, old) in old_entries {
            let Ok(Some(record)) = self.vlog.read(old.loc) else {
                continue;
            };
            let moved = IndexEntry {
                created: old.created,
                loc: self.vlog.append(&record).map_err(err)?,
            };
            self.index.replace(&key, old, moved)?;
        }
        self.index.flush()?;
        let (segments, _) = self.vlog.segments();
        for id in segments.into_iter().filter(|id| *id < fresh) {
            self.vlog.delete(id).map_err(err)?;
        }
        tracing::info!(reclaimed_bytes = dead, "cache value log compacted");
        Ok(())
    }
}

impl CacheStore for DiskStore {
    fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.filter().may_contain(key) {
            return Ok(None);
        }
        let Some(entry) = self.index.get(key)? else {
            return Ok(None);
        };
        if entry.loc.len == 0 {
            // An index entry that did not decode reads as an empty record, which no check
            // accepts: the cache removes it.
            return Ok(Some(Vec::new()));
        }
        match self.vlog.read(entry.loc) {
            Ok(record) => Ok(record),
            // A torn or overwritten frame: likewise unreadable, likewise removed.
            Err(_) => Ok(Some(Vec::new())),
        }
    }

    /// One append to the value log for all the records, then their index entries.
    fn put_all(&self, records: &[NewRecord<'_>]) -> Result<(), StoreError> {
        let bytes: Vec<&[u8]> = records.iter().map(|r| r.record).collect();
        let locations = self.vlog.append_all(&bytes).map_err(err)?;
        let _guard = self.lock();
        let filter = self.filter();
        for (new, loc) in records.iter().zip(locations) {
            // A key the filter has never seen is in no slot of the index: its insert need
            // not look for it.
            let new_key = !filter.may_contain(new.key);
            // Into the filter first: a reader that finds the key in the index must not be told
            // "certainly absent" by a filter that has not caught up.
            filter.insert(new.key);
            let entry = IndexEntry {
                created: new.created,
                loc,
            };
            let old = if new_key {
                self.index.insert_new(new.key, entry)?;
                None
            } else {
                self.index.insert(new.key, entry)?
            };
            self.live.fetch_add(u64::from(loc.len), Ordering::Relaxed);
            // A replaced entry's size is retired here.
            if let Some(old) = old {
                self.live
                    .fetch_sub(u64::from(old.loc.len), Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.remove_locked(key)
    }

    fn keys(&self) -> Result<Vec<CacheKey>, StoreError> {
        let mut keys = Vec::with_capacity(self.index.len());
        self.index.for_each(&mut |key, _| keys.push(key))?;
        keys.sort_unstable_by_key(|k| k.0);
        Ok(keys)
    }

    fn created_before(&self, before: u64) -> Result<Vec<CacheKey>, StoreError> {
        Ok(self
            .by_age()?
            .into_iter()
            .take_while(|(created, _, _)| *created < before)
            .map(|(_, key, _)| key)
            .collect())
    }

    fn shrink_to(&self, bytes: u64) -> Result<usize, StoreError> {
        let _guard = self.lock();
        let mut removed = 0;
        if self.live.load(Ordering::Relaxed) <= bytes {
            return Ok(0);
        }
        for (_, key, _) in self.by_age()? {
            if self.live.load(Ordering::Relaxed) <= bytes {
                break;
            }
            self.remove_locked(&key)?;
            removed += 1;
        }
        Ok(removed)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn bytes(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.vlog.sync().map_err(err)?;
        self.index.flush()
    }

    fn maintain(&self) -> Result<(), StoreError> {
        self.grow_filter()?;
        self.compact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` against a store with each kind of index.
    fn each_kind(test: fn(IndexKind)) {
        for kind in [IndexKind::File, IndexKind::Sled] {
            test(kind);
        }
    }

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[test]
    fn entries_persist_across_reopening() {
        each_kind(|kind| {
            let dir = tempfile::tempdir().expect("temp dir");
            {
                let store = DiskStore::open(dir.path(), kind, 1 << 20).expect("opens");
                store.put(&key(1), 10, b"one").expect("put");
                store.put(&key(2), 20, b"two!").expect("put");
                store.flush().expect("flush");
            }
            let store = DiskStore::open(dir.path(), kind, 1 << 20).expect("reopens");
            assert_eq!(store.get(&key(1)).unwrap().as_deref(), Some(&b"one"[..]));
            assert_eq!((store.len(), store.bytes()), (2, 7));
            assert_eq!(store.created_before(15).unwrap(), vec![key(1)]);
        });
    }

    #[test]
    fn one_process_at_a_time_opens_a_cache_directory() {
        each_kind(|kind| {
            let dir = tempfile::tempdir().expect("temp dir");
            let first = DiskStore::open(dir.path(), kind, 1 << 20).expect("opens");
            let e = DiskStore::open(dir.path(), kind, 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(e.contains("in use by another process"), "{e}");
            drop(first);
            DiskStore::open(dir.path(), kind, 1 << 20).expect("opens once the first is closed");
        });
    }

    #[test]
    fn the_key_filter_grows_and_never_hides_a_stored_key() {
        each_kind(|kind| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = DiskStore::open(dir.path(), kind, 1 << 20).expect("opens");
            let cap = store.filter().capacity();
            let n = cap as u64 + 10;
            let k = |i: u64| CacheKey(*blake3::hash(&i.to_le_bytes()).as_bytes());
            for i in 0..n {
                store.put(&k(i), i, b"r").unwrap();
            }
            assert!(store.filter().is_full());
            store.maintain().unwrap();
            assert!(store.filter().capacity() > cap);
            assert!(
                (0..n)
                    .step_by(97)
                    .all(|i| store.get(&k(i)).unwrap().is_some())
            );
            assert!(store.get(&k(n + 1)).unwrap().is_none());
            // Replacing an entry keeps one time entry and the right size.
            store.put(&k(0), n + 5, b"longer").unwrap();
            assert_eq!(store.bytes(), n - 1 + 6);
            assert_eq!(store.created_before(1).unwrap(), Vec::<CacheKey>::new());
        });
    }

    #[test]
    fn shrinking_evicts_oldest_first_and_overwrites_move_in_time() {
        each_kind(|kind| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = DiskStore::open(dir.path(), kind, 1 << 20).expect("opens");
            store.put(&key(1), 10, &[0; 100]).unwrap();
            store.put(&key(2), 20, &[0; 100]).unwrap();
            store.put(&key(3), 30, &[0; 100]).unwrap();
            store.put(&key(1), 40, &[0; 100]).unwrap(); // key 1 is now the newest
            assert_eq!(store.bytes(), 300);
            assert_eq!(store.shrink_to(150).unwrap(), 2);
            assert!(store.get(&key(2)).unwrap().is_none());
            assert!(store.get(&key(3)).unwrap().is_none());
            assert!(store.get(&key(1)).unwrap().is_some());
        });
    }

    #[test]
    fn compaction_keeps_live_records_and_drops_dead_segments() {
        each_kind(|kind| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = DiskStore::open(dir.path(), kind, 1 << 20).expect("opens");
            let big = vec![7u8; 1024 * 1024];
            for round in 0..3u8 {
                for i in 0..50u8 {
                    let mut v = big.clone();
                    v[0] = round;
                    store.put(&key(i), u64::from(round), &v).unwrap();
                }
            }
            // 150 MiB written, 50 MiB alive: 100 MiB dead.
            store.maintain().unwrap();
            assert!(
                store.vlog.total_bytes() < 60 * 1024 * 1024,
                "dead segments deleted"
            );
            for i in 0..50u8 {
                let v = store.get(&key(i)).unwrap().expect("still there");
                assert_eq!(
                    (v.len(), v[0]),
                    (big.len(), 2),
                    "the newest record of each key"
                );
            }
        });
    }
}
