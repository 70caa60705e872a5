//! A Bloom filter over the stored keys, so a miss — the common case while a cache fills — is
//! answered from memory instead of an index lookup (with the sled index, a walk down its tree
//! that, under concurrent inserts, also made readers help split nodes: 9% of the request path
//! in a profile; with the file index, a positioned read).
//!
//! "No" is certain; "maybe" costs one index lookup. Removed keys stay set (a false "maybe"),
//! which is harmless; the owner rebuilds the filter larger when more keys than it was sized for
//! have gone in. Bits are atomic words, so lookups never lock.
//!
//! Blocked: all of a key's bits are in one 64-bit word, so an insert is one atomic OR and a
//! lookup one load, each touching one cache line (a classic filter's 7 probes each touch one of
//! their own, on the writer's path for every new key). The price is a higher false
//! "maybe" rate at capacity, about 0.4% instead of 0.05%: one needless index read per 250 misses.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Key;

/// Bits set per key (in its one word).
const PROBES: u32 = 7;
/// Bits per key of capacity (with 7 bits in a word: about 0.4% false "maybe" at capacity).
const BITS_PER_KEY: usize = 16;
/// The smallest capacity.
pub const MIN_CAPACITY: usize = 1 << 16;

/// A lock-free Bloom filter of cache keys.
#[derive(Debug)]
pub struct KeyFilter {
    words: Box<[AtomicU64]>,
    mask: u64,
    capacity: usize,
    inserted: AtomicU64,
}

impl KeyFilter {
    /// An empty filter sized for `capacity` keys (at least [`MIN_CAPACITY`]).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        let bits = (capacity * BITS_PER_KEY).next_power_of_two();
        let words = (0..bits / 64).map(|_| AtomicU64::new(0)).collect();
        KeyFilter {
            words,
            mask: (bits / 64) as u64 - 1,
            capacity,
            inserted: AtomicU64::new(0),
        }
    }

    /// The keys it was sized for.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys inserted so far (with repeats).
    pub fn inserted(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    /// True when more keys went in than it was sized for.
    pub fn is_full(&self) -> bool {
        self.inserted() > self.capacity as u64
    }

    /// The word that holds `key`'s bits, and which of its bits they are: the key is already
    /// a uniform hash, so its first word picks the word and 6-bit slices of its second pick the
    /// bits.
    fn probe(&self, key: &Key) -> (usize, u64) {
        let word = |i: usize| {
            u64::from_le_bytes(key.0[i * 8..i * 8 + 8].try_into().expect("8 bytes of 32"))
        };
        let index = (word(0) & self.mask) as usize;
        let mut slices = word(1);
        let mut bits = 0u64;
        for _ in 0..PROBES {
            bits |= 1 << (slices & 63);
            slices >>= 6;
        }
        (index, bits)
    }

    /// Adds `key`.
    pub fn insert(&self, key: &Key) {
        let (index, bits) = self.probe(key);
        self.words[index].fetch_or(bits, Ordering::Relaxed);
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    /// False when `key` was certainly never inserted.
    pub fn may_contain(&self, key: &Key) -> bool {
        let (index, bits) = self.probe(key);
        self.words[index].load(Ordering::Relaxed) & bits == bits
    }

    /// Bytes of memory its bits take.
    pub fn memory(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Key {
        Key(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    #[test]
    fn every_inserted_key_is_found() {
        let f = KeyFilter::with_capacity(1000);
        for i in 0..50_000 {
            f.insert(&key(i));
        }
        assert!((0..50_000).all(|i| f.may_contain(&key(i))));
        assert_eq!(f.inserted(), 50_000);
    }

    #[test]
    fn keys_never_inserted_are_almost_always_refused_at_capacity() {
        let f = KeyFilter::with_capacity(MIN_CAPACITY);
        for i in 0..MIN_CAPACITY as u64 {
            f.insert(&key(i));
        }
        assert!(!f.is_full());
        let false_maybe = (1_000_000..1_100_000u64)
            .filter(|i| f.may_contain(&key(*i)))
            .count();
        // 16 bits per key, 7 of them in one word: about 0.4% expected; allow 0.8%.
        assert!(false_maybe < 800, "{false_maybe} of 100000");
        f.insert(&key(u64::MAX));
        assert!(f.is_full());
    }

    #[test]
    fn sizes_grow_with_capacity() {
        let small = KeyFilter::with_capacity(10);
        assert_eq!(small.capacity(), MIN_CAPACITY);
        let big = KeyFilter::with_capacity(1 << 20);
        assert_eq!(big.memory(), (1 << 20) * BITS_PER_KEY / 8);
    }
}
