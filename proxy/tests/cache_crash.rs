//! A process writing cache entries is killed with SIGKILL at random moments, 20 rounds; after
//! each, reopening the store serves no wrong entry: every entry read is exactly what was
//! written for its key, or a miss (ARCHITECTURE.md, invariant 6).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use spillway::Clock;
use spillway::cache::Cache;
use spillway::cache::entry::Stored;
use spillway::cache::key::{CacheKey, cache_key};
use spillway::config::cache::CacheConfig;

const CHILD_DIR: &str = "SPILLWAY_CACHE_CRASH_WRITER_DIR";
const KEYS: u64 = 400;

fn request(i: u64) -> Map<String, Value> {
    json!({"model": "crash", "messages": [{"role": "user", "content": format!("question {i}")}], "temperature": 0})
        .as_object()
        .cloned()
        .expect("an object")
}

fn key(i: u64) -> CacheKey {
    cache_key("chat", "crash", "", &request(i))
}

/// The one body ever written for entry `i` (sizes vary from 50 bytes to ~40 KiB).
fn body(i: u64) -> String {
    let pad = "x".repeat(((i * 7919) % 40_000) as usize);
    json!({"id": format!("answer-{i}"), "choices": [{"message": {"content": pad}}], "n": i})
        .to_string()
}

fn open(dir: &std::path::Path) -> Cache {
    let config = CacheConfig {
        path: dir.join("cache"),
        ..CacheConfig::default()
    };
    Cache::open(config, Clock::real()).expect("the store opens after a crash")
}

/// Not a test of its own: the child process the crash test starts (and kills), so it is
/// ignored in a normal run; the crash test runs it with `--ignored` and the directory to write.
#[test]
#[ignore = "the writer process that a_store_killed_mid_write_never_serves_a_wrong_entry starts and kills"]
fn crash_writer_child_process() {
    let dir = std::env::var(CHILD_DIR)
        .expect("run by the crash test, which names the directory to write in");
    let cache = open(std::path::Path::new(&dir));
    let mut n: u64 = std::process::id() as u64;
    loop {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
        let i = (n >> 33) % KEYS;
        let stored = Stored {
            created: i,
            namespace: String::new(),
            route: "crash".into(),
            endpoint: "chat".into(),
            provider: None,
            model: None,
            status: 200,
            headers: BTreeMap::new(),
            body: Some(RawValue::from_string(body(i)).expect("json")),
            chunks: None,
        };
        let mut canonical = Vec::new();
        spillway::cache::key::write_canonical(&Value::Object(request(i)), &mut canonical)
            .expect("vec");
        cache.save(&key(i), &stored, &canonical);
        if n.is_multiple_of(7) {
            let _ = cache.store().expect("store").remove(&key((n >> 20) % KEYS));
        }
    }
}

#[tokio::test]
async fn a_store_killed_mid_write_never_serves_a_wrong_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("the test binary");
    let mut rng: u64 = 0x5EED;
    let mut seen_entries = 0;
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the writer starts");
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Kill at a random moment between 0.1 and 1 s into the writing.
        let run_ms = 100 + (rng >> 33) % 900;
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");

        let cache = open(dir.path());
        let mut present = 0;
        for i in 0..KEYS {
            if let Some(stored) = cache.lookup(&key(i)) {
                let got = stored.body.as_ref().expect("a body").get().to_string();
                assert_eq!(got, body(i), "round {round}: entry {i} was served wrong");
                present += 1;
            }
        }
        // Whatever the store holds is either valid or gone after a read.
        for k in cache.store().expect("store").keys().expect("keys") {
            let _ = cache.lookup(&k);
        }
        seen_entries += present;
        drop(cache);
    }
    assert!(
        seen_entries > 0,
        "the writer never got an entry to disk: the test proves nothing"
    );
}
