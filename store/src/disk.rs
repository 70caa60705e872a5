//! The embedded store: an index ([`KeyIndex`]: key → creation time and where the record is)
//! with the records themselves in a [`ValueLog`]. The index holds only small fixed-size
//! entries, so neither its write cost nor its size grows with answer sizes. A [`KeyFilter`]
//! answers most misses without touching the index. One index insert per put: eviction and
//! purges find old entries by scanning the index (rare, on the writer thread) rather than
//! keeping a second, time-ordered index on every write.
//!
//! What the store promises after a crash or a power loss (ARCHITECTURE.md, invariant 6): a
//! read returns a record only for its own key, whole, or nothing. Every frame of the log
//! carries its key and a checksum; an index entry that points at anything else (the log lost
//! its tail, or was deleted, replaced or restored from an older copy) is dropped on the read
//! that finds it. An index written for another log (its generation differs), or one that
//! cannot be read at all, is rebuilt from the log when the store opens; the log alone knows
//! every record and every removal.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::Key;
use crate::filter::KeyFilter;
use crate::index::{IndexEntry, IndexKind, KeyIndex};
use crate::open_index::{open_index, reset_index};
use crate::vlog::{Frame, Scanned, ValueLog};
use crate::{NewRecord, Store, StoreError};

/// Keys the key filter is sized for when it starts (2 MiB of bits), so the proxy's memory stays
/// flat for the first million entries; past them it doubles (2 bytes per key). Unit tests start
/// small to reach the growth quickly.
const FILTER_KEYS_AT_START: usize = if cfg!(test) { 1 << 10 } else { 1 << 20 };

/// Why an index with no generation and no entries is filled from the log: it is new (or was
/// deleted); a log that holds records then says so.
const NEW_INDEX: &str = "the index is new or was deleted";

/// Rewrite the value log once this much of it is dead (and more than is alive).
const COMPACT_DEAD_BYTES: u64 = 64 * 1024 * 1024;

/// An indexed, value-log-backed [`Store`].
#[derive(Debug)]
pub struct DiskStore {
    index: Box<dyn KeyIndex>,
    vlog: ValueLog,
    live: AtomicU64,
    writes: Mutex<()>,
    /// Every key in the index (and some removed since): a miss never touches the index.
    filter: RwLock<Arc<KeyFilter>>,
    /// Index entries dropped because they did not lead to their record.
    stale: AtomicU64,
    /// The directory's lock, held while the store is open.
    _lock: File,
}

/// Takes the cache directory's lock (`lock`, created with the directory): one process at a
/// time writes a store. Fails when another process holds it.
pub fn lock_dir(path: &Path) -> Result<File, StoreError> {
    std::fs::create_dir_all(path)
        .map_err(|e| StoreError(format!("cannot create {}: {e}", path.display())))?;
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

/// Fills an empty `index` from every frame of `vlog`, in log order (a later record of a key
/// replaces an earlier one, a removal removes it); returns how many entries it holds.
fn rebuild(index: &dyn KeyIndex, vlog: &ValueLog) -> Result<usize, StoreError> {
    let mut failed = None;
    vlog.scan(&mut |scanned| {
        if failed.is_some() {
            return;
        }
        let done = match scanned {
            Scanned::Record { key, created, loc } => {
                index.insert(&key, IndexEntry { created, loc }).map(|_| ())
            }
            Scanned::Removal(key) => index.remove(&key).map(|_| ()),
        };
        if let Err(e) = done {
            failed = Some(e);
        }
    })
    .map_err(err)?;
    if let Some(e) = failed {
        return Err(e);
    }
    index.set_generation(vlog.generation())?;
    index.flush()?;
    Ok(index.len())
}

impl DiskStore {
    /// Opens (or creates) the store in directory `path`: the index of kind `kind` (see
    /// [`open_index`]; `index_memory` bounds sled's page cache) and `values/` for the value log.
    /// What does not fit together is mended, and said in the log: log segments of an older
    /// format or of another cache are renamed aside; an index that cannot be read is renamed
    /// aside; an index that cannot be read, or that was written for another log, is rebuilt
    /// from the log.
    pub fn open(path: &Path, kind: IndexKind, index_memory: u64) -> Result<Self, StoreError> {
        Self::open_locked(path, lock_dir(path)?, kind, index_memory)
    }

    /// [`DiskStore::open`] with the directory's lock already taken ([`lock_dir`]): an error
    /// here means the files could not be used, not that another process holds them.
    pub fn open_locked(
        path: &Path,
        lock: File,
        kind: IndexKind,
        index_memory: u64,
    ) -> Result<Self, StoreError> {
        let values = path.join("values");
        let (vlog, log_aside) = ValueLog::open(&values)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", values.display())))?;
        for file in &log_aside.files {
            tracing::warn!(
                file = %file.display(),
                "cache value log segment of an older format or of another cache set aside, not read (delete it when it is no longer wanted)"
            );
        }
        let (mut index, damaged) = open_index(path, kind, index_memory)?;
        for d in &damaged {
            tracing::warn!(file = %d.path.display(), error = %d.why, "cache index could not be read: set aside");
        }
        let rebuild_why = if !damaged.is_empty() {
            Some("the index could not be read")
        } else {
            match index.generation()? {
                Some(g) if g == vlog.generation() => None,
                Some(_) => Some(
                    "the index was written for another value log (deleted, replaced or restored)",
                ),
                None if index.is_empty() => Some(NEW_INDEX),
                None => Some("the index names no value log (written by an older spillway)"),
            }
        };
        if let Some(why) = rebuild_why {
            index = reset_index(path, kind, index_memory)?;
            let entries = rebuild(index.as_ref(), &vlog)?;
            if entries > 0 || why != NEW_INDEX {
                tracing::warn!(
                    entries,
                    reason = why,
                    "cache index rebuilt from the value log"
                );
            }
        }
        let mut live = 0;
        let mut referenced = 0;
        let filter = KeyFilter::with_capacity((2 * index.len()).max(FILTER_KEYS_AT_START));
        index.for_each(&mut |key, entry| {
            live += u64::from(entry.loc.len);
            referenced = referenced.max(entry.loc.segment);
            filter.insert(&key);
        })?;
        vlog.begin(referenced).map_err(|e| {
            StoreError(format!(
                "cannot start a segment in {}: {e}",
                values.display()
            ))
        })?;
        Ok(DiskStore {
            index,
            vlog,
            live: AtomicU64::new(live),
            writes: Mutex::new(()),
            filter: RwLock::new(Arc::new(filter)),
            stale: AtomicU64::new(0),
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

    /// Removes `key` from the index (not from the log); returns its entry.
    fn unindex_locked(&self, key: &Key) -> Result<Option<IndexEntry>, StoreError> {
        let old = self.index.remove(key)?;
        if let Some(old) = old {
            self.live
                .fetch_sub(u64::from(old.loc.len), Ordering::Relaxed);
        }
        Ok(old)
    }

    /// Removes `keys`: a removal frame in the log for each (so a rebuilt index does not bring
    /// them back), then their index entries.
    fn remove_locked(&self, keys: &[Key]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let frames: Vec<Frame<'_>> = keys
            .iter()
            .map(|key| Frame {
                key,
                created: 0,
                record: None,
            })
            .collect();
        self.vlog.append_all(&frames).map_err(err)?;
        for key in keys {
            self.unindex_locked(key)?;
        }
        Ok(())
    }

    /// Drops `key`'s index entry if it is still `entry`: what it points at is not its record.
    fn drop_stale(&self, key: &Key, entry: IndexEntry) {
        let _guard = self.lock();
        if matches!(self.index.get(key), Ok(Some(current)) if current == entry)
            && let Err(e) = self.unindex_locked(key)
        {
            tracing::warn!(key = %key, error = %e, "could not drop a stale cache index entry");
        }
    }

    /// Every entry's (creation time, key, size), oldest first.
    fn by_age(&self) -> Result<Vec<(u64, Key, u64)>, StoreError> {
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
            let Ok(Some(record)) = self.vlog.read(old.loc, &key) else {
                self.drop_stale(&key, old);
                continue;
            };
            let moved = IndexEntry {
                created: old.created,
                loc: self.vlog.append(&key, old.created, &record).map_err(err)?,
            };
            self.index.replace(&key, old, moved)?;
        }
        // The copies are durable before the segments they came from are deleted.
        self.vlog.sync().map_err(err)?;
        self.index.flush()?;
        let (segments, _) = self.vlog.segments();
        for id in segments.into_iter().filter(|id| *id < fresh) {
            self.vlog.delete(id).map_err(err)?;
        }
        tracing::info!(reclaimed_bytes = dead, "cache value log compacted");
        Ok(())
    }
}

impl Store for DiskStore {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.filter().may_contain(key) {
            return Ok(None);
        }
        let Some(entry) = self.index.get(key)? else {
            return Ok(None);
        };
        match self.vlog.read(entry.loc, key) {
            Ok(Some(record)) => Ok(Some(record)),
            Ok(None) => {
                // Its segment is gone (compacted away meanwhile, or deleted).
                self.drop_stale(key, entry);
                Ok(None)
            }
            Err(why) => {
                // After a lost log tail, many entries may be found stale: the log says so for
                // the first, then at every power of two.
                let n = self.stale.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        key = %key,
                        error = %why,
                        dropped_so_far = n,
                        "cache index entry does not lead to its record (the value log lost or rewrote data there): entry dropped, treated as a miss"
                    );
                }
                self.drop_stale(key, entry);
                Ok(None)
            }
        }
    }

    /// One append to the value log for all the records, then their index entries.
    fn put_all(&self, records: &[NewRecord<'_>]) -> Result<(), StoreError> {
        let frames: Vec<Frame<'_>> = records
            .iter()
            .map(|r| Frame {
                key: r.key,
                created: r.created,
                record: Some(r.record),
            })
            .collect();
        let locations = self.vlog.append_all(&frames).map_err(err)?;
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

    fn remove(&self, key: &Key) -> Result<(), StoreError> {
        self.remove_all(std::slice::from_ref(key))
    }

    fn remove_all(&self, keys: &[Key]) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.remove_locked(keys)
    }

    fn keys(&self) -> Result<Vec<Key>, StoreError> {
        let mut keys = Vec::with_capacity(self.index.len());
        self.index.for_each(&mut |key, _| keys.push(key))?;
        keys.sort_unstable_by_key(|k| k.0);
        Ok(keys)
    }

    fn created_before(&self, before: u64) -> Result<Vec<Key>, StoreError> {
        Ok(self
            .by_age()?
            .into_iter()
            .take_while(|(created, _, _)| *created < before)
            .map(|(_, key, _)| key)
            .collect())
    }

    fn shrink_to(&self, bytes: u64) -> Result<usize, StoreError> {
        let _guard = self.lock();
        let mut live = self.live.load(Ordering::Relaxed);
        if live <= bytes {
            return Ok(0);
        }
        let mut evicted = Vec::new();
        for (_, key, size) in self.by_age()? {
            if live <= bytes {
                break;
            }
            live = live.saturating_sub(size);
            evicted.push(key);
        }
        self.remove_locked(&evicted)?;
        Ok(evicted.len())
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

    fn key(n: u8) -> Key {
        Key([n; 32])
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
            let k = |i: u64| Key(*blake3::hash(&i.to_le_bytes()).as_bytes());
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
            assert_eq!(store.created_before(1).unwrap(), Vec::<Key>::new());
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
