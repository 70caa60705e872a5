//! The sled index (`[cache] index = "sled"`): a sled 0.34 tree of 32-byte keys → 24-byte
//! [`IndexEntry`] values. sled keeps the nodes it has read in memory, budgeted in on-disk
//! bytes (`index_memory`); their in-memory form is several times that, so the proxy's memory
//! grows with the number of entries until the budget is reached.

use std::path::Path;

use crate::Key;
use crate::StoreError;
use crate::index::{IndexEntry, KeyIndex};
use crate::vlog::Generation;

/// Reopening attempts (10 ms apart) while sled's lock is still held by a closed handle.
const LOCK_RETRIES: u32 = 300;

/// A [`KeyIndex`] in a sled database.
#[derive(Debug)]
pub struct SledIndex {
    db: sled::Db,
    tree: sled::Tree,
    meta: sled::Tree,
}

/// The key under which the `meta` tree keeps the value log's generation.
const GENERATION_KEY: &[u8] = b"log_generation";

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn to_key(bytes: &[u8]) -> Option<Key> {
    Some(Key(bytes.try_into().ok()?))
}

impl SledIndex {
    /// Opens (or creates) the sled database in directory `path`, with at most about
    /// `index_memory` bytes of sled's page cache.
    pub fn open(path: &Path, index_memory: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(index_memory)
            .flush_every_ms(Some(500));
        // sled releases its file lock from a background thread after the last handle is
        // dropped, so reopening in the same process can briefly find it held.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(e) if attempts < LOCK_RETRIES && e.to_string().contains("acquire lock") => {
                    attempts += 1;
                    // A pause in real time, not in the proxy's (possibly simulated) time.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => {
                    break other
                        .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
                }
            }
        };
        let tree = db.open_tree("index").map_err(err)?;
        // Earlier versions kept a time-ordered second tree; its space is reclaimed.
        if db.tree_names().iter().any(|n| n.as_ref() == b"by_time") {
            db.drop_tree("by_time").map_err(err)?;
        }
        let meta = db.open_tree("meta").map_err(err)?;
        Ok(SledIndex { db, tree, meta })
    }
}

/// A value that does not decode reads as an entry no record matches: its length is zero,
/// which no record has, so the store treats it as unreadable and removes it.
fn decode(v: &[u8]) -> IndexEntry {
    IndexEntry::decode(v).unwrap_or(IndexEntry {
        created: 0,
        loc: crate::vlog::Location {
            segment: 0,
            offset: 0,
            len: 0,
        },
    })
}

impl KeyIndex for SledIndex {
    fn get(&self, key: &Key) -> Result<Option<IndexEntry>, StoreError> {
        Ok(self.tree.get(key.0).map_err(err)?.map(|v| decode(&v)))
    }

    fn insert(&self, key: &Key, entry: IndexEntry) -> Result<Option<IndexEntry>, StoreError> {
        let old = self.tree.insert(key.0, &entry.encode()).map_err(err)?;
        Ok(old.map(|v| decode(&v)))
    }

    fn remove(&self, key: &Key) -> Result<Option<IndexEntry>, StoreError> {
        Ok(self.tree.remove(key.0).map_err(err)?.map(|v| decode(&v)))
    }

    fn replace(&self, key: &Key, old: IndexEntry, new: IndexEntry) -> Result<bool, StoreError> {
        let swapped = self
            .tree
            .compare_and_swap(key.0, Some(&old.encode()[..]), Some(&new.encode()[..]))
            .map_err(err)?;
        Ok(swapped.is_ok())
    }

    fn for_each(&self, visit: &mut dyn FnMut(Key, IndexEntry)) -> Result<(), StoreError> {
        for item in self.tree.iter() {
            let (k, v) = item.map_err(err)?;
            if let Some(key) = to_key(&k) {
                visit(key, decode(&v));
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.tree.len()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(err)
    }

    fn generation(&self) -> Result<Option<Generation>, StoreError> {
        Ok(self
            .meta
            .get(GENERATION_KEY)
            .map_err(err)?
            .and_then(|v| Some(Generation(v.as_ref().try_into().ok()?))))
    }

    fn set_generation(&self, generation: Generation) -> Result<(), StoreError> {
        self.meta
            .insert(GENERATION_KEY, &generation.0[..])
            .map_err(err)?;
        self.flush()
    }
}
