//! The embedded store: sled (0.34, the stable line), two trees — records by key (each value
//! prefixed with its creation time) and keys by creation time — and an in-memory byte count.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::key::CacheKey;
use crate::cache::store::{CacheStore, StoreError};

/// sled's page cache: kept small, the OS page cache does the rest.
const SLED_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A sled-backed [`CacheStore`].
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    records: sled::Tree,
    by_time: sled::Tree,
    bytes: AtomicU64,
    writes: Mutex<()>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn time_key(created: u64, key: &CacheKey) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&created.to_be_bytes());
    k[8..].copy_from_slice(&key.0);
    k
}

fn to_key(bytes: &[u8]) -> Option<CacheKey> {
    Some(CacheKey(bytes.try_into().ok()?))
}

impl SledStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let records = db.open_tree("records").map_err(err)?;
        let by_time = db.open_tree("by_time").map_err(err)?;
        let mut bytes = 0;
        for item in records.iter() {
            let (_, v) = item.map_err(err)?;
            bytes += v.len().saturating_sub(8) as u64;
        }
        Ok(SledStore {
            db,
            records,
            by_time,
            bytes: AtomicU64::new(bytes),
            writes: Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_locked(&self, key: &CacheKey) -> Result<(), StoreError> {
        if let Some(old) = self.records.remove(key.0).map_err(err)? {
            self.bytes
                .fetch_sub(old.len().saturating_sub(8) as u64, Ordering::Relaxed);
            if let Some(t) = old.get(..8).and_then(|t| <[u8; 8]>::try_from(t).ok()) {
                self.by_time
                    .remove(time_key(u64::from_be_bytes(t), key))
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

impl CacheStore for SledStore {
    fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .records
            .get(key.0)
            .map_err(err)?
            .map(|v| v.get(8..).unwrap_or_default().to_vec()))
    }

    fn put(&self, key: &CacheKey, created: u64, record: &[u8]) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.remove_locked(key)?;
        self.by_time
            .insert(time_key(created, key), &[])
            .map_err(err)?;
        let mut value = Vec::with_capacity(8 + record.len());
        value.extend_from_slice(&created.to_be_bytes());
        value.extend_from_slice(record);
        self.records.insert(key.0, value).map_err(err)?;
        self.bytes.fetch_add(record.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
        let _guard = self.lock();
        self.remove_locked(key)
    }

    fn keys(&self) -> Result<Vec<CacheKey>, StoreError> {
        self.records
            .iter()
            .keys()
            .filter_map(|k| match k {
                Ok(k) => to_key(&k).map(Ok),
                Err(e) => Some(Err(err(e))),
            })
            .collect()
    }

    fn created_before(&self, before: u64) -> Result<Vec<CacheKey>, StoreError> {
        let end = before.to_be_bytes();
        self.by_time
            .range(..end.as_slice())
            .keys()
            .filter_map(|k| match k {
                Ok(k) => to_key(&k[8..]).map(Ok),
                Err(e) => Some(Err(err(e))),
            })
            .collect()
    }

    fn shrink_to(&self, bytes: u64) -> Result<usize, StoreError> {
        let _guard = self.lock();
        let mut removed = 0;
        while self.bytes.load(Ordering::Relaxed) > bytes {
            let Some((oldest, _)) = self.by_time.first().map_err(err)? else {
                break;
            };
            match to_key(&oldest[8..]) {
                Some(key) if self.records.contains_key(key.0).map_err(err)? => {
                    self.remove_locked(&key)?;
                    removed += 1;
                }
                // A stale index entry (a crash between trees): drop it.
                _ => {
                    self.by_time.remove(oldest).map_err(err)?;
                }
            }
        }
        Ok(removed)
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(err)
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
            let store = SledStore::open(dir.path()).expect("opens");
            store.put(&key(1), 10, b"one").expect("put");
            store.put(&key(2), 20, b"two!").expect("put");
            store.flush().expect("flush");
        }
        let store = SledStore::open(dir.path()).expect("reopens");
        assert_eq!(store.get(&key(1)).unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!((store.len(), store.bytes()), (2, 7));
        assert_eq!(store.created_before(15).unwrap(), vec![key(1)]);
    }

    #[test]
    fn shrinking_evicts_oldest_first_and_overwrites_move_in_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledStore::open(dir.path()).expect("opens");
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
}
