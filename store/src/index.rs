//! The store's index, as a contract: key → (creation time, where the record is in the value
//! log), behind the [`KeyIndex`] trait, which two implementations keep. [`IndexKind::File`]
//! (the default, `slot_index`) is an on-disk hash table read with positioned I/O, so the
//! proxy's memory does not grow with the number of entries; [`IndexKind::Sled`] (`sled_index`)
//! is a sled tree, which keeps index nodes in process memory (up to several times
//! `index_memory`). Opening the configured kind is `open_index`'s.

use crate::Key;
use crate::StoreError;
use crate::vlog::{Generation, Location};

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
    fn get(&self, key: &Key) -> Result<Option<IndexEntry>, StoreError>;
    /// Sets `key`'s entry; returns the one it replaced.
    fn insert(&self, key: &Key, entry: IndexEntry) -> Result<Option<IndexEntry>, StoreError>;
    /// Adds `key`, which the caller knows is not in the index (the cache's key filter says it
    /// was never stored): an index may then skip looking for it.
    fn insert_new(&self, key: &Key, entry: IndexEntry) -> Result<(), StoreError> {
        self.insert(key, entry).map(|_| ())
    }
    /// Removes `key`; returns its entry.
    fn remove(&self, key: &Key) -> Result<Option<IndexEntry>, StoreError>;
    /// Sets `key`'s entry to `new` only if it is still `old`; true when it was.
    fn replace(&self, key: &Key, old: IndexEntry, new: IndexEntry) -> Result<bool, StoreError>;
    /// Calls `visit` with every entry (in no particular order).
    fn for_each(&self, visit: &mut dyn FnMut(Key, IndexEntry)) -> Result<(), StoreError>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes every mutation so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// The value log generation the index was written for (`None`: none recorded yet).
    fn generation(&self) -> Result<Option<Generation>, StoreError>;
    /// Records the value log generation the index is written for, durably.
    fn set_generation(&self, generation: Generation) -> Result<(), StoreError>;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An entry stored at `created`, somewhere in segment 1.
    pub(crate) fn entry(created: u64) -> IndexEntry {
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
}
