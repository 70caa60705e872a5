//! `spillway cache stats | get | purge | export | import` on a real store.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use spillway::Clock;
use spillway::cache::Cache;
use spillway::cache::entry::Stored;
use spillway::cache::key::cache_key;
use spillway::config::cache::CacheConfig;

fn populate(dir: &std::path::Path, n: u64, namespace: &str) -> Vec<String> {
    let cache = Cache::open(
        CacheConfig {
            path: dir.to_path_buf(),
            ..CacheConfig::default()
        },
        Clock::real(),
    )
    .expect("opens");
    let mut keys = Vec::new();
    for i in 0..n {
        let request: Map<String, Value> = serde_json::from_str(&format!(
            r#"{{"model":"r","messages":[{{"role":"user","content":"q{i}"}}],"temperature":0}}"#
        ))
        .unwrap();
        let key = cache_key("chat", "r", namespace, &request);
        let stored = Stored {
            created: cache.now_unix() - i * 86_400,
            namespace: namespace.into(),
            route: "r".into(),
            endpoint: "chat".into(),
            provider: Some("groq".into()),
            model: Some("m".into()),
            status: 200,
            headers: BTreeMap::new(),
            body: Some(RawValue::from_string(format!(r#"{{"answer":{i}}}"#)).unwrap()),
            chunks: None,
        };
        let mut canonical = Vec::new();
        spillway::cache::key::write_canonical(&Value::Object(request), &mut canonical).unwrap();
        cache.save(&key, &stored, &canonical);
        keys.push(key.to_hex());
    }
    cache.flush();
    keys
}

fn spillway(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("cache")
        .arg("--path")
        .arg(dir)
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cache_tools_inspect_export_import_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cache");
    let mut keys = populate(&store, 5, "");
    keys.extend(populate(&store, 2, "run-2"));

    let (ok, out, err) = spillway(&store, &["stats"]);
    assert!(ok, "{err}");
    assert!(out.contains("entries 7"), "{out}");
    assert!(out.contains("namespace run-2: 2"), "{out}");

    let (ok, out, _) = spillway(&store, &["get", &keys[0]]);
    assert!(ok);
    let entry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(entry["response"]["body"]["answer"], 0);
    let (ok, _, err) = spillway(&store, &["get", "not-a-key"]);
    assert!(!ok && err.contains("64 hex digits"), "{err}");

    let cassette = dir.path().join("answers.jsonl");
    let (ok, out, err) = spillway(&store, &["export", cassette.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("exported 7"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&cassette).unwrap().lines().count(),
        7
    );

    let (ok, out, _) = spillway(&store, &["purge", "--namespace", "run-2"]);
    assert!(ok && out.contains("removed 2"), "{out}");
    let (ok, out, _) = spillway(&store, &["purge", "--older-than", "2d 12h"]);
    assert!(
        ok && out.contains("removed 2"),
        "entries 3 and 4 days old: {out}"
    );
    let (_, out, _) = spillway(&store, &["stats"]);
    assert!(out.contains("entries 3"), "{out}");

    let fresh = dir.path().join("fresh");
    let (ok, out, err) = spillway(&fresh, &["import", cassette.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 7"), "{out}");
    let (_, out, _) = spillway(&fresh, &["get", &keys[6]]);
    let entry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(entry["namespace"], "run-2");
}

#[test]
fn a_reader_that_stops_early_ends_the_tools_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = populate(dir.path(), 3, "");
    for args in [vec!["stats"], vec!["get", keys[0].as_str()]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .arg("cache")
            .arg("--path")
            .arg(dir.path())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs");
        // The reader closes its end before reading anything, as `| true` does.
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().expect("exits");
        assert!(status.success(), "{args:?}: {status} {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
