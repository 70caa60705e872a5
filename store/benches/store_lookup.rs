//! The storage engine alone: fills a fresh store with N records of about 300 bytes (default
//! 300,000; `SPILLWAY_BENCH_ENTRIES` to change) in batches as the writer stores them, then
//! times random reads, and prints the process's resident memory. `SPILLWAY_BENCH_INDEX=sled`
//! measures the sled index instead of the file index. Not a timed test: run it with
//!
//!     cargo bench -p spillway-store --bench store_lookup
//!
//! (`cargo bench -p spillway --bench cache_lookup` measures a cache hit's whole read: the
//! store, the record's checksum, decompression and decoding.)

use std::hint::black_box;

use hdrhistogram::Histogram;
use spillway_clock::Clock;
use spillway_store::{DiskStore, IndexKind, Key, NewRecord, Store};

fn key(i: u64) -> Key {
    Key(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn main() {
    let entries: u64 = std::env::var("SPILLWAY_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let index = std::env::var("SPILLWAY_BENCH_INDEX")
        .ok()
        .map_or(IndexKind::File, |v| {
            IndexKind::parse(&v).expect("SPILLWAY_BENCH_INDEX is file or sled")
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DiskStore::open(&dir.path().join("store"), index, 64 << 20).expect("opens");
    let clock = Clock::real();
    let record = vec![b'r'; 300];
    let started = clock.now();
    let keys: Vec<Key> = (0..entries).map(key).collect();
    for batch in keys.chunks(64) {
        let records: Vec<NewRecord<'_>> = batch
            .iter()
            .map(|k| NewRecord {
                key: k,
                created: 1,
                record: &record,
            })
            .collect();
        store.put_all(&records).expect("stored");
    }
    store.flush().expect("flushed");
    let fill = clock.now() - started;
    println!(
        "{:?} index: filled {entries} records in {:.1} s ({} bytes)",
        index,
        fill.as_secs_f64(),
        store.bytes()
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let reads = 200_000;
    let started = clock.now();
    for _ in 0..reads {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = &keys[((x >> 33) % entries) as usize];
        let t = clock.now();
        let got = store.get(k).expect("reads");
        let ns = (clock.now() - t).as_nanos() as u64;
        assert!(black_box(got).is_some(), "every key was stored");
        let _ = hist.record(ns.max(1));
    }
    let total = clock.now() - started;
    println!(
        "{reads} random reads: {:.0}/s; p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        reads as f64 / total.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("resident memory {rss}");
}
