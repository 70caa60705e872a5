//! The embedded store: sled (0.34, the stable line) as the index — key → (creation time, where
//! the record is) — with the records themselves in a [`ValueLog`]. sled's nodes hold only
//! 24-byte index values, so neither its write cost nor its memory grows with answer sizes, and
//! lookups stay fast with millions of entries. A [`KeyFilter`] answers most misses without
//! touching sled. One tree insert per put: eviction and purges find old entries by scanning
//! the index (rare, on the writer thread) rather than keeping a second, time-ordered tree on
//! every write (which cost 40% of the writer's time in a profile).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cache::filter::KeyFilter;
use crate::cache::key::CacheKey;
use crate::cache::store::{CacheStore, StoreError};
use crate::cache::vlog::{Location, ValueLog};

/// Rewrite the value log once this much of it is dead (and more than is alive).
const COMPACT_DEAD_BYTES: u64 = 64 * 1024 * 1024;

/// A sled-indexed, value-log-backed [`CacheStore`].
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    index: sled::Tree,
    vlog: ValueLog,
    live: AtomicU64,
    writes: Mutex<()>,
    /// Every key in the index (and some removed since): a miss never touches sled.
    filter: RwLock<Arc<KeyFilter>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn to_key(bytes: &[u8]) -> Option<CacheKey> {
    Some(CacheKey(bytes.try_into().ok()?))
}

/// An index value: creation time and location.
fn index_value(created: u64, loc: Location) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&created.to_be_bytes());
    v[8..].copy_from_slice(&loc.encode());
    v
}

fn parse_index(v: &[u8]) -> Option<(u64, Location)> {
    let created = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    Some((created, Location::decode(v.get(8..)?)?))
}

impl SledStore {
    /// Opens (or creates) the store in directory `path` (`index/` for sled, `values/` for the
    /// value log), with at most about `index_memory` bytes of sled's page cache.
    pub fn open(path: &Path, index_memory: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path.join("index"))
            .cache_capacity(index_memory)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let index = db.open_tree("index").map_err(err)?;
        // Earlier versions kept a time-ordered second tree; its space is reclaimed.
        if db.tree_names().iter().any(|n| n.as_ref() == b"by_time") {
            db.drop_tree("by_time").map_err(err)?;
        }
        let vlog = ValueLog::open(&path.join("values")).map_err(|e| {
            StoreError(format!(
                "cannot open {}: {e}",
                path.join("values").display()
            ))
        })?;
        let mut live = 0;
        let filter = KeyFilter::with_capacity(2 * index.len());
        for item in index.iter() {
            let (k, v) = item.map_err(err)?;
            if let Some((_, loc)) = parse_index(&v) {
                live += u64::from(loc.len);
            }
            if let Some(key) = to_key(&k) {
                filter.insert(&key);
            }
        }
        Ok(SledStore {
            db,
            index,
            vlog,
            live: AtomicU64::new(live),
            writes: Mutex::new(()),
            filter: RwLock::new(Arc::new(filter)),
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
        for k in self.index.iter().keys() {
            if let Some(key) = to_key(&k.map_err(err)?) {
                grown.insert(&key);
            }
        }
        tracing::debug!(capacity = grown.capacity(), "cache key filter grown");
        *self.filter.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(grown);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_locked(&self, key: &CacheKey) -> Result<(), StoreError> {
        if let Some(old) = self.index.remove(key.0).map_err(err)?
            && let Some((_, loc)) = parse_index(&old)
        {
            self.live.fetch_sub(u64::from(loc.len), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Every entry's (creation time, key, size), oldest first.
    fn by_age(&self) -> Result<Vec<(u64, CacheKey, u64)>, StoreError> {
        let mut all = Vec::new();
        for item in self.index.iter() {
            let (k, v) = item.map_err(err)?;
            if let (Some(key), Some((created, loc))) = (to_key(&k), parse_index(&v)) {
                all.push((created, key, u64::from(loc.len)));
            }
        }
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
        for item in self.index.iter() {
            let (key, old) = item.map_err(err)?;
            let Some((created, loc)) = parse_index(&old) else {
                continue;
            };
            if loc.segment >= fresh {
                continue;
            }
            let Ok(Some(record)) = self.vlog.read(loc) else {
                continue;
            };
            let moved = self.vlog.append(&record).map_err(err)?;
            let _ = self
                .index
                .compare_and_swap(&key, Some(&old), Some(&index_value(created, moved)[..]))
                .map_err(err)?;
        }
        self.db.flush().map_err(err)?;
        let (segments, _) = self.vlog.segments();
        for id in segments.into_iter().filter(|id| *id < fresh) {
            self.vlog.delete(id).map_err(err)?;
        }
        tracing::info!(reclaimed_bytes = dead, "cache value log compacted");
        Ok(())
    }
}

impl CacheStore for SledStore {
    fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.filter().may_contain(key) {
            return Ok(None);
        }
        let Some(v) = self.index.get(key.0).map_err(err)? else {
            return Ok(None);
        };
        let Some((_, loc)) = parse_index(&v) else {
            // An index entry that does not parse reads as an empty record, which no check
            // accepts: the cache removes it.
            return Ok(Some(Vec::new()));
        };
        match self.vlog.read(loc) {
            Ok(record) => Ok(record),
            // A torn or overwritten frame: likewise unreadable, likewise removed.
            Err(_) => Ok(Some(Vec::new())),
        }
    }

    fn put(&self, key: &CacheKey, created: u64, record: &[u8]) -> Result<(), StoreError> {
        let loc = self.vlog.append(record).map_err(err)?;
        let _guard = self.lock();
        // Into the filter first: a reader that finds the key in the index must not be told
        // "certainly absent" by a filter that has not caught up.
        self.filter().insert(key);
        let old = self
            .index
            .insert(key.0, &index_value(created, loc))
            .map_err(err)?;
        self.live.fetch_add(u64::from(loc.len), Ordering::Relaxed);
        // One tree walk for a new key; a replaced entry's size is retired here.
        if let Some(old) = old
            && let Some((_, old_loc)) = parse_index(&old)
        {
            self.live
                .fetch_sub(u64::from(old_loc.len), Ordering::Relaxed);
        }
        Ok(())
    }

    fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.remove_locked(key)
    }

    fn keys(&self) -> Result<Vec<CacheKey>, StoreError> {
        self.index
            .iter()
            .keys()
            .filter_map(|k| match k {
                Ok(k) => to_key(&k).map(Ok),
                Err(e) => Some(Err(err(e))),
            })
            .collect()
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
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn maintain(&self) -> Result<(), StoreError> {
        self.grow_filter()?;
        self.compact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[test]
    fn entries_persist_across_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = SledStore::open(dir.path(), 1 << 20).expect("opens");
            store.put(&key(1), 10, b"one").expect("put");
            store.put(&key(2), 20, b"two!").expect("put");
            store.flush().expect("flush");
        }
        let store = SledStore::open(dir.path(), 1 << 20).expect("reopens");
        assert_eq!(store.get(&key(1)).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!((store.len(), store.bytes()), (2, 7));
        assert_eq!(store.created_before(15).unwrap(), vec![key(1)]);
    }

    #[test]
    fn the_key_filter_grows_and_never_hides_a_stored_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path(), 1 << 20).expect("opens");
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
    }

    #[test]
    fn shrinking_evicts_oldest_first_and_overwrites_move_in_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path(), 1 << 20).expect("opens");
        store.put(&key(1), 10, &[0; 100]).unwrap();
        store.put(&key(2), 20, &[0; 100]).unwrap();
        store.put(&key(3), 30, &[0; 100]).unwrap();
        store.put(&key(1), 40, &[0; 100]).unwrap(); // key 1 is now the newest
        assert_eq!(store.bytes(), 300);
        assert_eq!(store.shrink_to(150).unwrap(), 2);
        assert!(store.get(&key(2)).unwrap().is_none());
        assert!(store.get(&key(3)).unwrap().is_none());
        assert!(store.get(&key(1)).unwrap().is_some());
    }

    #[test]
    fn compaction_keeps_live_records_and_drops_dead_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path(), 1 << 20).expect("opens");
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
    }
}
