//! Cache lookup latency with a large store: fills a fresh store with N entries (default
//! 1,000,000; `SPILLWAY_BENCH_ENTRIES` to change), then times random lookups through the same
//! path a hit takes (read, checksum, decode), and prints the process's resident memory.
//! `SPILLWAY_BENCH_INDEX=sled` measures the sled index instead of the file index, and
//! `SPILLWAY_BENCH_INDEX_MEMORY` (MiB) sets sled's page cache. Not a timed test: run it with
//!
//!     cargo bench -p spillway --bench cache_lookup

use std::collections::BTreeMap;
use std::hint::black_box;

use hdrhistogram::Histogram;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use spillway::Clock;
use spillway::cache::Cache;
use spillway::cache::entry::Stored;
use spillway::cache::key::{CacheKey, cache_key};
use spillway::config::cache::{CacheConfig, IndexKind};

fn request(i: u64) -> Map<String, Value> {
    serde_json::from_str(&format!(
        r#"{{"model":"bench","messages":[{{"role":"user","content":"question number {i} about rivers"}}],"temperature":0,"max_tokens":64}}"#
    ))
    .expect("an object")
}

fn main() {
    let entries: u64 = std::env::var("SPILLWAY_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let defaults = CacheConfig::default();
    let index_memory = std::env::var("SPILLWAY_BENCH_INDEX_MEMORY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(defaults.index_memory, |mib| mib << 20);
    let index = std::env::var("SPILLWAY_BENCH_INDEX")
        .ok()
        .map_or(defaults.index, |v| {
            IndexKind::parse(&v).expect("SPILLWAY_BENCH_INDEX is file or sled")
        });
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::open(
        CacheConfig {
            path: dir.path().join("cache"),
            index,
            index_memory,
            ..defaults
        },
        Clock::real(),
    )
    .expect("opens");
    let clock = Clock::real();
    let body = r#"{"id":"chatcmpl-0","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"A typical answer of a few dozen words about rivers, deltas and weirs, long enough to be realistic for an eval run."},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50}}"#;
    let started = clock.now();
    let mut keys: Vec<CacheKey> = Vec::with_capacity(entries as usize);
    for i in 0..entries {
        let req = request(i);
        let key = cache_key("chat", "bench", "", &req);
        let stored = Stored {
            created: i,
            namespace: String::new(),
            route: "bench".into(),
            endpoint: "chat".into(),
            provider: Some("mock".into()),
            model: Some("m".into()),
            status: 200,
            headers: BTreeMap::new(),
            body: Some(RawValue::from_string(body.to_string()).expect("json")),
            chunks: None,
        };
        let mut canonical = Vec::new();
        spillway::cache::key::write_canonical(&Value::Object(req), &mut canonical).expect("vec");
        cache.save(&key, &stored, &canonical);
        keys.push(key);
    }
    cache.flush();
    let fill = clock.now() - started;
    let store = cache.store().expect("store");
    println!(
        "filled {entries} entries in {:.1} s ({} bytes of records)",
        fill.as_secs_f64(),
        store.bytes()
    );
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let lookups = 200_000;
    let started = clock.now();
    for _ in 0..lookups {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = &keys[((x >> 33) % entries) as usize];
        let t = clock.now();
        let hit = cache.lookup(key);
        let ns = (clock.now() - t).as_nanos() as u64;
        assert!(black_box(hit).is_some(), "every key was stored");
        let _ = hist.record(ns.max(1));
    }
    let total = clock.now() - started;
    println!(
        "{lookups} random lookups: {:.0}/s; p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        lookups as f64 / total.as_secs_f64(),
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.value_at_quantile(0.999) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    match index {
        IndexKind::Sled => println!(
            "sled index, index_memory {} MiB; resident memory {rss}",
            index_memory >> 20
        ),
        IndexKind::File => println!("file index; resident memory {rss}"),
    }
}
