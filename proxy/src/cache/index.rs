//! The store's index: key → (creation time, where the record is in the value log), behind a
//! trait with two implementations. [`IndexKind::File`] (the default) is an on-disk hash table
//! read with positioned I/O, so the proxy's memory does not grow with the number of entries;
//! [`IndexKind::Sled`] is a sled tree, which keeps index nodes in process memory (up to several
//! times `index_memory`). A cache directory written with one kind is adopted by the other.

use std::path::Path;

use crate::cache::key::CacheKey;
use crate::cache::sled_index::SledIndex;
use crate::cache::slot_index::SlotIndex;
use crate::cache::store::StoreError;
use crate::cache::vlog::Location;

/// One index entry: when the record was stored and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Unix seconds when stored.
    pub created: u64,
    /// The record in the value log.
    pub loc: Location,
}

impl IndexEntry {
    /// 24 bytes: creation time (big-endian), then the location.
    pub fn encode(&self) -> [u8; 24] {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&self.created.to_be_bytes());
        v[8..].copy_from_slice(&self.loc.encode());
        v
    }

    /// Reads 24 bytes written by [`IndexEntry::encode`].
    pub fn decode(v: &[u8]) -> Option<Self> {
        Some(IndexEntry {
            created: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
            loc: Location::decode(v.get(8..)?)?,
        })
    }
}

/// A key → [`IndexEntry`] map that persists. Mutations may come from several threads; each
/// implementation serializes them itself.
pub trait KeyIndex: Send + Sync + std::fmt::Debug {
    /// The entry under `key`.
    fn get(&self, key: &CacheKey) -> Result<Option<IndexEntry>, StoreError>;
    /// Sets `key`'s entry; returns the one it replaced.
    fn insert(&self, key: &CacheKey, entry: IndexEntry) -> Result<Option<IndexEntry>, StoreError>;
    /// Adds `key`, which the caller knows is not in the index (the cache's key filter says it
    /// was never stored): an index may then skip looking for it.
    fn insert_new(&self, key: &CacheKey, entry: IndexEntry) -> Result<(), StoreError> {
        self.insert(key, entry).map(|_| ())
    }
    /// Removes `key`; returns its entry.
    fn remove(&self, key: &CacheKey) -> Result<Option<IndexEntry>, StoreError>;
    /// Sets `key`'s entry to `new` only if it is still `old`; true when it was.
    fn replace(&self, key: &CacheKey, old: IndexEntry, new: IndexEntry)
    -> Result<bool, StoreError>;
    /// Calls `visit` with every entry (in no particular order).
    fn for_each(&self, visit: &mut dyn FnMut(CacheKey, IndexEntry)) -> Result<(), StoreError>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes every mutation so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// Which index a disk store keeps (`[cache] index`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexKind {
    /// An on-disk hash table (`index.slots`): a byte of memory per 22 to 45 entries.
    #[default]
    File,
    /// A sled tree (`index/`): index nodes cached in memory, up to about `index_memory`.
    Sled,
}

impl IndexKind {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            IndexKind::File => "file",
            IndexKind::Sled => "sled",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "file" => Some(IndexKind::File),
            "sled" => Some(IndexKind::Sled),
            _ => None,
        }
    }
}

/// Where the sled index lives in a cache directory.
const SLED_DIR: &str = "index";
/// Where the file index lives in a cache directory.
const SLOTS_FILE: &str = "index.slots";

/// Opens the index of kind `kind` in cache directory `dir`. An index of the other kind found
/// there (a cache written by an earlier configuration) is copied in and then deleted, so its
/// entries stay reachable.
pub fn open_index(
    dir: &Path,
    kind: IndexKind,
    index_memory: u64,
) -> Result<Box<dyn KeyIndex>, StoreError> {
    let sled_dir = dir.join(SLED_DIR);
    let slots = dir.join(SLOTS_FILE);
    let opened: Box<dyn KeyIndex> = match kind {
        IndexKind::File => Box::new(SlotIndex::open(&slots)?),
        IndexKind::Sled => Box::new(SledIndex::open(&sled_dir, index_memory)?),
    };
    match kind {
        IndexKind::File if sled_dir.is_dir() => {
            adopt(&SledIndex::open(&sled_dir, index_memory)?, opened.as_ref())?;
            remove(&sled_dir, std::fs::remove_dir_all(&sled_dir))?;
        }
        IndexKind::Sled if slots.is_file() => {
            adopt(&SlotIndex::open(&slots)?, opened.as_ref())?;
            remove(&slots, std::fs::remove_file(&slots))?;
        }
        _ => {}
    }
    Ok(opened)
}

/// Copies every entry of `from` into `into` and makes it durable.
fn adopt(from: &dyn KeyIndex, into: &dyn KeyIndex) -> Result<(), StoreError> {
    let mut failed = None;
    from.for_each(&mut |key, entry| {
        if failed.is_none()
            && let Err(e) = into.insert(&key, entry)
        {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    into.flush()?;
    tracing::info!(entries = into.len(), "cache index converted");
    Ok(())
}

fn remove(path: &Path, result: std::io::Result<()>) -> Result<(), StoreError> {
    result.map_err(|e| StoreError(format!("cannot remove {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(created: u64) -> IndexEntry {
        IndexEntry {
            created,
            loc: Location {
                segment: 1,
                offset: created * 10,
                len: 7,
            },
        }
    }

    #[test]
    fn entries_encode_and_decode() {
        let e = entry(1_700_000_000);
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
        assert_eq!(IndexEntry::decode(&e.encode()[..20]), None);
    }

    #[test]
    fn a_cache_changes_index_kind_without_losing_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = |i: u8| CacheKey([i; 32]);
        {
            let sled = open_index(dir.path(), IndexKind::Sled, 1 << 20).expect("opens");
            for i in 0..50 {
                sled.insert(&key(i), entry(u64::from(i))).unwrap();
            }
            sled.flush().unwrap();
        }
        let file = open_index(dir.path(), IndexKind::File, 1 << 20).expect("converts");
        assert_eq!(file.len(), 50);
        assert_eq!(file.get(&key(7)).unwrap(), Some(entry(7)));
        assert!(
            !dir.path().join(SLED_DIR).exists(),
            "the sled index is gone"
        );
        drop(file);
        let back = open_index(dir.path(), IndexKind::Sled, 1 << 20).expect("converts back");
        assert_eq!(back.len(), 50);
        assert_eq!(back.get(&key(49)).unwrap(), Some(entry(49)));
        assert!(!dir.path().join(SLOTS_FILE).exists());
    }
}
