//! The file index (`[cache] index = "file"`, the default): an open-addressing hash table in one
//! file, `index.slots`, read and written with positioned I/O. Of it, the process keeps only
//! one byte per bucket in memory (how many of its slots are taken, 1/4096 of the file); the OS
//! page cache holds its hot pages. A lookup reads one 4 KiB bucket (rarely two), an insert
//! reads and writes one, and the insert of a key known to be new (the cache's key filter says
//! so) only writes its slot; so the cost of either does not depend on the number of entries,
//! and neither does the proxy's memory.
//!
//! Layout: a 4 KiB header (magic, bucket count, the value log's generation), then `buckets` buckets of 64 slots of 64 bytes:
//! key (32), created (8), [`Location`](crate::vlog::Location) (16), state (4),
//! checksum (4). A key's home bucket comes from its bytes (it is already a uniform hash); a
//! full bucket overflows into the next one. Removal leaves a tombstone, so the chains stay
//! whole; tombstones are reused by inserts and dropped when the table is rebuilt (at twice the
//! size once 70% of the slots are taken). A slot whose checksum does not match (a torn write
//! after a crash, or read while being written) is never returned.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::Key;
use crate::StoreError;
use crate::index::{IndexEntry, KeyIndex};
use crate::vlog::Generation;

const MAGIC: &[u8; 8] = b"SPWSLOT1";
/// Header and bucket size.
const PAGE: usize = 4096;
const SLOT: usize = 64;
const SLOTS_PER_BUCKET: u64 = (PAGE / SLOT) as u64;
/// The smallest table: 64 buckets, 4,096 slots, 260 KiB on disk.
const MIN_BUCKETS: u64 = 64;
/// Rebuild once this share (in tenths) of the slots is taken, live or tombstone.
const MAX_LOAD_TENTHS: u64 = 7;
/// Buckets read per step of a full scan (1 MiB).
const SCAN_BUCKETS: u64 = 256;

const EMPTY: u32 = 0;
const LIVE: u32 = 1;
const TOMBSTONE: u32 = 2;

/// One table file and its size.
#[derive(Debug)]
struct Table {
    file: File,
    buckets: u64,
}

/// Where the header keeps the value log's generation (zeros: none recorded).
const GENERATION_AT: u64 = 16;

/// What a slot holds.
enum Slot {
    /// Never used: ends a probe chain.
    Empty,
    /// A valid entry.
    Live(Key, IndexEntry),
    /// Taken by a key other than the one looked for (not decoded further).
    Other,
    /// Removed, torn or unreadable: skipped, reusable.
    Dead,
}

fn checksum(bytes: &[u8]) -> u32 {
    let hash = blake3::hash(bytes);
    u32::from_le_bytes(hash.as_bytes()[..4].try_into().expect("4 of 32 bytes"))
}

fn encode_slot(key: &Key, entry: IndexEntry, state: u32) -> [u8; SLOT] {
    let mut s = [0u8; SLOT];
    s[..32].copy_from_slice(&key.0);
    s[32..40].copy_from_slice(&entry.created.to_le_bytes());
    s[40..56].copy_from_slice(&entry.loc.encode());
    s[56..60].copy_from_slice(&state.to_le_bytes());
    let sum = checksum(&s[..60]);
    s[60..].copy_from_slice(&sum.to_le_bytes());
    s
}

fn word(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads a slot; `want` (when given) skips the checksum of slots holding other keys.
fn decode_slot(s: &[u8], want: Option<&Key>) -> Slot {
    match word(s, 56) {
        EMPTY => Slot::Empty,
        LIVE => {
            if want.is_some_and(|k| k.0[..] != s[..32]) {
                return Slot::Other;
            }
            if word(s, 60) != checksum(&s[..60]) {
                return Slot::Dead;
            }
            let key = Key(s[..32].try_into().expect("32 bytes"));
            let loc = crate::vlog::Location::decode(&s[40..56]).expect("16 bytes");
            let created = u64::from_le_bytes(s[32..40].try_into().expect("8 bytes"));
            Slot::Live(key, IndexEntry { created, loc })
        }
        _ => Slot::Dead,
    }
}

fn home(key: &Key, buckets: u64) -> u64 {
    // Bytes 16..24: the key filter uses 0..16, so the two stay independent.
    u64::from_le_bytes(key.0[16..24].try_into().expect("8 bytes")) & (buckets - 1)
}

fn bucket_offset(bucket: u64) -> u64 {
    PAGE as u64 * (1 + bucket)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError(format!("cache index {}: {e}", path.display()))
}

impl Table {
    /// Creates an empty table of `buckets` buckets at `path` (replacing any file there), made
    /// for the value log of `generation`.
    fn create(path: &Path, buckets: u64, generation: Option<Generation>) -> std::io::Result<Table> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        let mut header = [0u8; PAGE];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&buckets.to_le_bytes());
        if let Some(g) = generation {
            header[GENERATION_AT as usize..GENERATION_AT as usize + 16].copy_from_slice(&g.0);
        }
        file.write_all_at(&header, 0)?;
        // Unwritten buckets read as zeros: every slot empty.
        file.set_len(bucket_offset(buckets))?;
        Ok(Table { file, buckets })
    }

    /// Opens an existing table, checking its header and size.
    fn open(path: &Path) -> Result<Table, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        let mut header = [0u8; 16];
        file.read_exact_at(&mut header, 0)
            .map_err(|_| "too short to be a cache index".to_string())?;
        if &header[..8] != MAGIC {
            return Err("not a spillway cache index (wrong magic)".into());
        }
        let buckets = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if !buckets.is_power_of_two() || buckets < MIN_BUCKETS {
            return Err(format!("bad bucket count {buckets}"));
        }
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len != bucket_offset(buckets) {
            return Err(format!(
                "{len} bytes where {buckets} buckets take {}",
                bucket_offset(buckets)
            ));
        }
        Ok(Table { file, buckets })
    }

    fn slots(&self) -> u64 {
        self.buckets * SLOTS_PER_BUCKET
    }

    /// The value log generation the header records.
    fn generation(&self) -> std::io::Result<Option<Generation>> {
        let mut g = [0u8; 16];
        self.file.read_exact_at(&mut g, GENERATION_AT)?;
        Ok((g != [0u8; 16]).then_some(Generation(g)))
    }

    /// Finds `key`: its slot (bucket, index, entry), and the first reusable slot on its chain.
    fn probe(&self, key: &Key) -> std::io::Result<Probe> {
        let mut page = [0u8; PAGE];
        let start = home(key, self.buckets);
        let mut probe = Probe::default();
        for step in 0..self.buckets {
            let bucket = (start + step) & (self.buckets - 1);
            self.file.read_exact_at(&mut page, bucket_offset(bucket))?;
            for (i, s) in page.chunks_exact(SLOT).enumerate() {
                let at = (bucket, i as u64);
                match decode_slot(s, Some(key)) {
                    Slot::Empty => {
                        probe.free.get_or_insert((at, true));
                        return Ok(probe);
                    }
                    Slot::Live(_, entry) => {
                        probe.found = Some((at, entry));
                        return Ok(probe);
                    }
                    Slot::Other => {}
                    Slot::Dead => {
                        probe.free.get_or_insert((at, false));
                    }
                }
            }
        }
        Ok(probe)
    }

    /// Copies every valid entry into `fresh` (empty, with a multiple of this table's buckets);
    /// returns how many, and the fresh table's fills. Works in steps of [`SCAN_BUCKETS`] buckets: an entry from old bucket `b`
    /// has its new home in one of the buckets congruent to `b`, so each step fills those few
    /// contiguous ranges in memory and writes each with one call. The rare entry whose place
    /// falls outside them (it had overflowed, or its range is full to the end) is inserted
    /// afterwards, by a probe of the file.
    fn copy_into(&self, fresh: &Table) -> std::io::Result<(u64, Vec<u8>)> {
        let factor = fresh.buckets / self.buckets;
        let mut fills = vec![0u8; fresh.buckets as usize];
        let step = (SCAN_BUCKETS / factor).max(1);
        let mut old = vec![0u8; PAGE * step as usize];
        let mut new = vec![0u8; PAGE * (step * factor) as usize];
        let mut later = Vec::new();
        let mut live = 0;
        let mut first = 0;
        while first < self.buckets {
            let n = step.min(self.buckets - first);
            let old = &mut old[..PAGE * n as usize];
            self.file.read_exact_at(old, bucket_offset(first))?;
            new.fill(0);
            for s in old.chunks_exact(SLOT) {
                let Slot::Live(key, entry) = decode_slot(s, None) else {
                    continue;
                };
                live += 1;
                let target = home(&key, fresh.buckets);
                let (range, at) = (target / self.buckets, target % self.buckets);
                let placed = (first..first + n).contains(&at) && {
                    let start = (range * n + at - first) as usize * PAGE;
                    let end = ((range + 1) * n) as usize * PAGE;
                    match new[start..end]
                        .chunks_exact_mut(SLOT)
                        .find(|s| word(s, 56) == EMPTY)
                    {
                        Some(free) => {
                            free.copy_from_slice(&encode_slot(&key, entry, LIVE));
                            true
                        }
                        None => false,
                    }
                };
                if !placed {
                    later.push((key, entry));
                }
            }
            for range in 0..factor {
                let pages = &new[(range * n) as usize * PAGE..((range + 1) * n) as usize * PAGE];
                let bucket = range * self.buckets + first;
                let at = bucket_offset(bucket);
                // A page per write. The page cache sizes what it allocates for a write by the
                // write's length: one large write leaves the table in large folios, and on a
                // file system that uses them (ext4 on recent kernels) every later 64-byte slot
                // write walks the whole folio's list of blocks.
                for (i, page) in pages.chunks_exact(PAGE).enumerate() {
                    fresh.file.write_all_at(page, at + (i * PAGE) as u64)?;
                    fills[bucket as usize + i] = fill_of(page);
                }
            }
            first += n;
        }
        for (key, entry) in later {
            match fresh.probe(&key)?.free {
                Some(((bucket, i), _)) => {
                    fresh.write_slot((bucket, i), &encode_slot(&key, entry, LIVE))?;
                    // A fresh table has no tombstones: the free slot was its bucket's first
                    // empty one.
                    fills[bucket as usize] = u8::try_from(i + 1).expect("64 slots a bucket");
                }
                None => return Err(std::io::Error::other("no free slot in a fresh table")),
            }
        }
        Ok((live, fills))
    }

    fn write_slot(&self, (bucket, i): (u64, u64), slot: &[u8; SLOT]) -> std::io::Result<()> {
        self.file
            .write_all_at(slot, bucket_offset(bucket) + i * SLOT as u64)
    }

    /// Every valid entry, read in large sequential steps; returns the counts and each
    /// bucket's fill.
    fn scan(&self, visit: &mut dyn FnMut(Key, IndexEntry)) -> std::io::Result<(Counts, Vec<u8>)> {
        let mut counts = Counts::default();
        let mut fills = Vec::with_capacity(self.buckets as usize);
        let mut chunk = vec![0u8; PAGE * SCAN_BUCKETS as usize];
        let mut bucket = 0;
        while bucket < self.buckets {
            let n = SCAN_BUCKETS.min(self.buckets - bucket);
            let bytes = &mut chunk[..PAGE * n as usize];
            self.file.read_exact_at(bytes, bucket_offset(bucket))?;
            for page in bytes.chunks_exact(PAGE) {
                fills.push(fill_of(page));
            }
            for s in bytes.chunks_exact(SLOT) {
                match decode_slot(s, None) {
                    Slot::Empty | Slot::Other => {}
                    Slot::Live(key, entry) => {
                        counts.live += 1;
                        counts.used += 1;
                        visit(key, entry);
                    }
                    Slot::Dead => counts.used += 1,
                }
            }
            bucket += n;
        }
        Ok((counts, fills))
    }
}

/// A bucket's fill: where its first empty slot is (every slot before it is taken, live or
/// not), or [`SLOTS_PER_BUCKET`] when it is full.
fn fill_of(page: &[u8]) -> u8 {
    let taken = page
        .chunks_exact(SLOT)
        .position(|s| word(s, 56) == EMPTY)
        .unwrap_or(SLOTS_PER_BUCKET as usize);
    u8::try_from(taken).expect("64 slots a bucket")
}

/// Where a key is, or could go.
#[derive(Default)]
struct Probe {
    found: Option<((u64, u64), IndexEntry)>,
    /// The first slot an insert may take, and whether it was empty (not a tombstone).
    free: Option<((u64, u64), bool)>,
}

/// Slots taken: live entries, and live plus dead ones.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    live: u64,
    used: u64,
}

/// What mutations keep up to date, under one lock.
#[derive(Debug)]
struct Writes {
    counts: Counts,
    /// Each bucket's fill ([`fill_of`]): where a new key goes without reading the bucket.
    fills: Vec<u8>,
}

/// A [`KeyIndex`] in one hash-table file.
#[derive(Debug)]
pub struct SlotIndex {
    path: PathBuf,
    table: ArcSwap<Table>,
    /// Held by every mutation: one writer at a time.
    writes: Mutex<Writes>,
    live: AtomicU64,
}

impl SlotIndex {
    /// Opens the table at `path`, creating an empty one when there is none.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let table = if path.exists() {
            Table::open(path).map_err(|e| {
                StoreError(format!(
                    "cache index {}: {e}; delete the cache directory to start afresh",
                    path.display()
                ))
            })?
        } else {
            // Made aside and renamed into place, like every rebuild: `index.slots` is
            // either absent or whole, whenever the process stops.
            let tmp = path.with_extension("slots.tmp");
            let table = Table::create(&tmp, MIN_BUCKETS, None).map_err(io(path))?;
            std::fs::rename(&tmp, path).map_err(io(path))?;
            table
        };
        let (counts, fills) = table.scan(&mut |_, _| {}).map_err(io(path))?;
        Ok(SlotIndex {
            path: path.to_path_buf(),
            table: ArcSwap::from_pointee(table),
            live: AtomicU64::new(counts.live),
            writes: Mutex::new(Writes { counts, fills }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writes> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an insert into slot `(bucket, i)` (`was_empty`: not a reused tombstone), and
    /// rebuilds the table if it is now too full.
    fn inserted(
        &self,
        writes: &mut Writes,
        (bucket, i): (u64, u64),
        was_empty: bool,
    ) -> Result<(), StoreError> {
        writes.counts.live += 1;
        if was_empty {
            writes.counts.used += 1;
            // The first empty slot of its bucket was taken.
            writes.fills[bucket as usize] = u8::try_from(i + 1).expect("64 slots a bucket");
        }
        let grown = self.grow_if_full(writes);
        self.live.store(writes.counts.live, Ordering::Relaxed);
        grown.map_err(io(&self.path))
    }

    /// Rebuilds the table when too many slots are taken: at twice the size when the live
    /// entries alone would still fill it past half, else at the same size (dropping tombstones).
    fn grow_if_full(&self, writes: &mut Writes) -> std::io::Result<()> {
        let counts = writes.counts;
        let table = self.table.load_full();
        if counts.used * 10 <= table.slots() * MAX_LOAD_TENTHS {
            return Ok(());
        }
        let mut buckets = table.buckets;
        while counts.live * 2 > buckets * SLOTS_PER_BUCKET {
            buckets *= 2;
        }
        if counts.live * 10 > buckets * SLOTS_PER_BUCKET * MAX_LOAD_TENTHS / 2 {
            buckets *= 2;
        }
        let tmp = self.path.with_extension("slots.tmp");
        let fresh = Table::create(&tmp, buckets, table.generation()?)?;
        let (live, fills) = table.copy_into(&fresh)?;
        fresh.file.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        self.table.store(Arc::new(fresh));
        *writes = Writes {
            counts: Counts { live, used: live },
            fills,
        };
        tracing::debug!(buckets, entries = live, "cache index rebuilt");
        Ok(())
    }
}

impl KeyIndex for SlotIndex {
    fn get(&self, key: &Key) -> Result<Option<IndexEntry>, StoreError> {
        let probe = self.table.load().probe(key).map_err(io(&self.path))?;
        Ok(probe.found.map(|(_, entry)| entry))
    }

    fn insert(&self, key: &Key, entry: IndexEntry) -> Result<Option<IndexEntry>, StoreError> {
        let mut writes = self.lock();
        let table = self.table.load_full();
        let probe = table.probe(key).map_err(io(&self.path))?;
        let slot = encode_slot(key, entry, LIVE);
        if let Some((at, old)) = probe.found {
            table.write_slot(at, &slot).map_err(io(&self.path))?;
            return Ok(Some(old));
        }
        let Some((at, was_empty)) = probe.free else {
            return Err(StoreError(format!(
                "cache index {}: no free slot",
                self.path.display()
            )));
        };
        table.write_slot(at, &slot).map_err(io(&self.path))?;
        self.inserted(&mut writes, at, was_empty)?;
        Ok(None)
    }

    fn insert_new(&self, key: &Key, entry: IndexEntry) -> Result<(), StoreError> {
        let mut writes = self.lock();
        let table = self.table.load_full();
        // The chain's first empty slot, from the fills: every slot before it is taken, and
        // `key` is in none of them.
        let start = home(key, table.buckets);
        let at = (0..table.buckets)
            .map(|step| (start + step) & (table.buckets - 1))
            .find_map(|b| {
                let fill = u64::from(writes.fills[b as usize]);
                (fill < SLOTS_PER_BUCKET).then_some((b, fill))
            })
            .ok_or_else(|| {
                StoreError(format!("cache index {}: no free slot", self.path.display()))
            })?;
        table
            .write_slot(at, &encode_slot(key, entry, LIVE))
            .map_err(io(&self.path))?;
        self.inserted(&mut writes, at, true)
    }

    fn remove(&self, key: &Key) -> Result<Option<IndexEntry>, StoreError> {
        let mut writes = self.lock();
        let table = self.table.load_full();
        let Some((at, old)) = table.probe(key).map_err(io(&self.path))?.found else {
            return Ok(None);
        };
        table
            .write_slot(at, &encode_slot(key, old, TOMBSTONE))
            .map_err(io(&self.path))?;
        writes.counts.live -= 1;
        self.live.store(writes.counts.live, Ordering::Relaxed);
        Ok(Some(old))
    }

    fn replace(&self, key: &Key, old: IndexEntry, new: IndexEntry) -> Result<bool, StoreError> {
        let _writes = self.lock();
        let table = self.table.load_full();
        match table.probe(key).map_err(io(&self.path))?.found {
            Some((at, current)) if current == old => {
                table
                    .write_slot(at, &encode_slot(key, new, LIVE))
                    .map_err(io(&self.path))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn for_each(&self, visit: &mut dyn FnMut(Key, IndexEntry)) -> Result<(), StoreError> {
        self.table
            .load_full()
            .scan(visit)
            .map(|_| ())
            .map_err(io(&self.path))
    }

    fn len(&self) -> usize {
        usize::try_from(self.live.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.table.load().file.sync_data().map_err(io(&self.path))
    }

    fn generation(&self) -> Result<Option<Generation>, StoreError> {
        self.table.load().generation().map_err(io(&self.path))
    }

    fn set_generation(&self, generation: Generation) -> Result<(), StoreError> {
        let _writes = self.lock();
        let table = self.table.load_full();
        table
            .file
            .write_all_at(&generation.0, GENERATION_AT)
            .and_then(|()| table.file.sync_data())
            .map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::vlog::Location;

    fn entry(n: u64) -> IndexEntry {
        IndexEntry {
            created: n,
            loc: Location {
                segment: 1,
                offset: n * 100,
                len: 1 + (n % 1000) as u32,
            },
        }
    }

    /// Keys that all share one home bucket (bytes 16..24 zero), to exercise overflow chains.
    fn colliding(i: u64) -> Key {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        Key(k)
    }

    /// Keys whose home is the last bucket of any table, so their chain wraps around to bucket 0.
    fn wrapping(i: u64) -> Key {
        let mut k = [0xff; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        Key(k)
    }

    fn spread(i: u64) -> Key {
        Key(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    #[test]
    fn grows_keeps_every_entry_and_reopens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("index.slots");
        let n = 20_000;
        {
            let index = SlotIndex::open(&path).expect("opens");
            for i in 0..n {
                assert_eq!(index.insert(&spread(i), entry(i)).unwrap(), None);
            }
            assert!(index.table.load().buckets > MIN_BUCKETS, "it grew");
            assert_eq!(index.len(), n as usize);
            index.flush().unwrap();
        }
        let index = SlotIndex::open(&path).expect("reopens");
        assert_eq!(index.len(), n as usize);
        assert!((0..n).all(|i| index.get(&spread(i)).unwrap() == Some(entry(i))));
        assert_eq!(index.get(&spread(n)).unwrap(), None);
        let mut seen = 0;
        index.for_each(&mut |_, _| seen += 1).unwrap();
        assert_eq!(seen, n);
        // Churn: removed keys leave tombstones until a rebuild drops them.
        for i in (0..n).step_by(2) {
            index.remove(&spread(i)).unwrap();
        }
        for i in n..3 * n {
            index.insert(&spread(i), entry(i)).unwrap();
        }
        assert_eq!(index.len(), (n / 2 + 2 * n) as usize);
        assert!(
            (0..3 * n).all(|i| index.get(&spread(i)).unwrap().is_some() == (i >= n || i % 2 == 1))
        );
    }

    #[test]
    fn rebuilds_move_overflowed_and_wrapped_chains() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SlotIndex::open(&dir.path().join("index.slots")).expect("opens");
        // Long chains from bucket 0 and from the last bucket (wrapping to 0), then enough
        // spread keys for several rebuilds, with removals between them.
        for i in 0..300 {
            index.insert(&colliding(i), entry(i)).unwrap();
            index.insert(&wrapping(i), entry(i + 1)).unwrap();
        }
        for i in 0..30_000 {
            index.insert(&spread(i), entry(i)).unwrap();
            if i % 3 == 0 {
                index.remove(&spread(i / 2)).unwrap();
            }
        }
        assert!(index.table.load().buckets >= 512, "it grew");
        for i in 0..300 {
            assert_eq!(index.get(&colliding(i)).unwrap(), Some(entry(i)));
            assert_eq!(index.get(&wrapping(i)).unwrap(), Some(entry(i + 1)));
        }
        let removed: std::collections::HashSet<u64> =
            (0..30_000).filter(|i| i % 3 == 0).map(|i| i / 2).collect();
        for i in 0..30_000 {
            let expected = (!removed.contains(&i)).then(|| entry(i));
            assert_eq!(index.get(&spread(i)).unwrap(), expected, "key {i}");
        }
        assert_eq!(index.len(), 600 + 30_000 - removed.len());
        // The fills a rebuild left, overflowed entries included, are what the file holds.
        let (_, fills) = index.table.load().scan(&mut |_, _| {}).unwrap();
        assert_eq!(index.lock().fills, fills);
    }

    #[test]
    fn overflowing_buckets_and_tombstones_keep_chains_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SlotIndex::open(&dir.path().join("index.slots")).expect("opens");
        // Three buckets' worth of keys with the same home bucket.
        for i in 0..200 {
            index.insert(&colliding(i), entry(i)).unwrap();
        }
        // Removing keys early in the chain must not hide the ones after them.
        for i in (0..200).step_by(3) {
            assert_eq!(index.remove(&colliding(i)).unwrap(), Some(entry(i)));
        }
        for i in 0..200 {
            let expected = (i % 3 != 0).then(|| entry(i));
            assert_eq!(index.get(&colliding(i)).unwrap(), expected, "key {i}");
        }
        // A re-insert takes a tombstone and is found; a replaced entry is returned.
        assert_eq!(index.insert(&colliding(3), entry(7)).unwrap(), None);
        assert_eq!(
            index.insert(&colliding(3), entry(8)).unwrap(),
            Some(entry(7))
        );
        assert_eq!(index.get(&colliding(3)).unwrap(), Some(entry(8)));
        assert_eq!(index.len(), 200 - 67 + 1);
    }

    #[test]
    fn new_keys_go_in_without_a_read_and_are_found_across_full_buckets_and_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("index.slots");
        {
            let index = SlotIndex::open(&path).expect("opens");
            // Two buckets' worth with one home bucket, a tombstone among them, and a chain
            // that wraps from the last bucket to the first.
            for i in 0..100 {
                index.insert_new(&colliding(i), entry(i)).unwrap();
                index.insert_new(&wrapping(i), entry(i + 1)).unwrap();
            }
            assert_eq!(index.remove(&colliding(5)).unwrap(), Some(entry(5)));
            index.insert_new(&colliding(100), entry(100)).unwrap();
            let expected = |i: u64| (i != 5).then(|| entry(i));
            for i in 0..=100 {
                assert_eq!(index.get(&colliding(i)).unwrap(), expected(i), "key {i}");
            }
            assert_eq!(index.get(&wrapping(99)).unwrap(), Some(entry(100)));
            assert_eq!(index.len(), 200);
        }
        // Reopened, the fills are read from the file: new keys land after the old ones.
        let index = SlotIndex::open(&path).expect("reopens");
        for i in 101..5_000 {
            index.insert_new(&spread(i), entry(i)).unwrap();
        }
        assert!(index.table.load().buckets > MIN_BUCKETS, "it grew");
        assert_eq!(index.get(&colliding(100)).unwrap(), Some(entry(100)));
        assert_eq!(index.get(&colliding(5)).unwrap(), None);
        assert!((101..5_000).all(|i| index.get(&spread(i)).unwrap() == Some(entry(i))));
        assert_eq!(index.len(), 200 + 4_899);
        let (_, fills) = index.table.load().scan(&mut |_, _| {}).unwrap();
        assert_eq!(index.lock().fills, fills);
    }

    #[test]
    fn replace_only_swaps_the_expected_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = SlotIndex::open(&dir.path().join("index.slots")).expect("opens");
        index.insert(&spread(1), entry(1)).unwrap();
        assert!(!index.replace(&spread(1), entry(2), entry(3)).unwrap());
        assert!(index.replace(&spread(1), entry(1), entry(3)).unwrap());
        assert!(!index.replace(&spread(2), entry(1), entry(3)).unwrap());
        assert_eq!(index.get(&spread(1)).unwrap(), Some(entry(3)));
    }

    #[test]
    fn a_torn_slot_is_never_returned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("index.slots");
        let index = SlotIndex::open(&path).expect("opens");
        index.insert(&spread(1), entry(1)).unwrap();
        let table = index.table.load_full();
        let mut page = [0u8; PAGE];
        let bucket = home(&spread(1), table.buckets);
        table
            .file
            .read_exact_at(&mut page, bucket_offset(bucket))
            .unwrap();
        // Flip one byte of the stored location, as a torn write would.
        page[45] ^= 0xff;
        table
            .file
            .write_all_at(&page, bucket_offset(bucket))
            .unwrap();
        assert_eq!(index.get(&spread(1)).unwrap(), None);
        // The slot is reused by the next insert of the key.
        index.insert(&spread(1), entry(2)).unwrap();
        assert_eq!(index.get(&spread(1)).unwrap(), Some(entry(2)));
    }

    #[test]
    fn a_half_made_table_left_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("index.slots");
        std::fs::write(path.with_extension("slots.tmp"), b"SPWSLOT1").unwrap();
        let index = SlotIndex::open(&path).expect("opens afresh");
        index.insert(&spread(1), entry(1)).unwrap();
        drop(index);
        assert_eq!(
            SlotIndex::open(&path).unwrap().get(&spread(1)).unwrap(),
            Some(entry(1))
        );
    }

    #[test]
    fn a_foreign_or_truncated_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("index.slots");
        std::fs::write(&path, b"hello").unwrap();
        let e = SlotIndex::open(&path).unwrap_err().to_string();
        assert!(e.contains("index.slots") && e.contains("too short"), "{e}");
        std::fs::write(&path, [b"SPWSLOT1".as_slice(), &[0; 4088]].concat()).unwrap();
        let e = SlotIndex::open(&path).unwrap_err().to_string();
        assert!(e.contains("bucket count"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any sequence of inserts, removes and replaces leaves the index equal to a map.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((0u8..4, 0u64..300, 0u64..50), 1..1500)) {
            let dir = tempfile::tempdir().expect("temp dir");
            let index = SlotIndex::open(&dir.path().join("index.slots")).expect("opens");
            let mut model: HashMap<Key, IndexEntry> = HashMap::new();
            // Half the keys collide, half spread: both kinds of chain.
            let key = |i: u64| if i.is_multiple_of(2) { colliding(i) } else { spread(i) };
            for (op, k, v) in ops {
                let k = key(k);
                match op {
                    0 => prop_assert_eq!(index.insert(&k, entry(v)).unwrap(), model.insert(k, entry(v))),
                    // A key not in the map goes in as the cache's new keys do.
                    1 if !model.contains_key(&k) => {
                        index.insert_new(&k, entry(v)).unwrap();
                        model.insert(k, entry(v));
                    }
                    1 => prop_assert_eq!(index.insert(&k, entry(v)).unwrap(), model.insert(k, entry(v))),
                    2 => prop_assert_eq!(index.remove(&k).unwrap(), model.remove(&k)),
                    _ => {
                        let expected = model.get(&k) == Some(&entry(v));
                        prop_assert_eq!(index.replace(&k, entry(v), entry(v + 1)).unwrap(), expected);
                        if expected {
                            model.insert(k, entry(v + 1));
                        }
                    }
                }
            }
            prop_assert_eq!(index.len(), model.len());
            for (k, e) in &model {
                prop_assert_eq!(index.get(k).unwrap(), Some(*e));
            }
            let mut scanned = HashMap::new();
            index.for_each(&mut |k, e| { scanned.insert(k, e); }).unwrap();
            prop_assert_eq!(scanned, model);
            // The fills kept in memory are what the file holds.
            let (_, fills) = index.table.load().scan(&mut |_, _| {}).unwrap();
            prop_assert_eq!(&index.lock().fills, &fills);
        }
    }
}
