//! A smoke run of `spillway-harness bench` (tiny durations and counts), so the bench cannot rot:
//! every subject answers every request correctly, the memory soak runs its three stages, the
//! outputs are written, a peer that cannot start is skipped with a message, and an unknown peer
//! is refused. Speed is not asserted here; figures live in BENCHMARKS.md.

use std::path::Path;
use std::process::{Command, Output};

fn bench(args: &[&str], peers_dir: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spillway-harness"))
        .arg("bench")
        .args(args)
        .arg("--peers-dir")
        .arg(peers_dir)
        .arg("--out")
        .arg(out)
        .env("SMOKE_HARNESS", env!("CARGO_BIN_EXE_spillway-harness"))
        .output()
        .expect("the harness runs")
}

fn json_report(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report on stdout")
}

/// A stand-in peer script: serves spillway itself (the bench's route, any client key), so the
/// peer path (script, `listening on` line, load, stop) is exercised without installing anything.
fn stand_in_peer(dir: &Path) {
    let script = r#"#!/usr/bin/env bash
set -euo pipefail
[[ "$1" == serve ]] || exit 2
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT
"$SMOKE_HARNESS" serve-proxy --upstream "$2" --cache-dir "$cache"
"#;
    std::fs::write(dir.join("litellm.sh"), script).unwrap();
}

#[test]
fn every_subject_answers_correctly_and_the_soak_runs_three_stages() {
    let peers = tempfile::tempdir().unwrap();
    stand_in_peer(peers.path());
    let out_dir = tempfile::tempdir().unwrap();
    let out = bench(
        &[
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--concurrency",
            "1,4",
            "--repeat",
            "1",
            "--soak",
            "200",
            "--peers",
            "litellm",
            "--json",
        ],
        peers.path(),
        out_dir.path(),
    );
    let report = json_report(&out);

    let probes = report["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 9, "{probes:?}");
    for p in probes {
        assert_eq!(p["ok"], true, "{p}");
    }

    let rows = report["rows"].as_array().unwrap();
    // Per level: direct, forwarder, spillway miss, spillway hit, spillway with its limits
    // unknown, the peer, and three streams.
    assert_eq!(rows.len(), 18, "{rows:?}");
    for level in [1, 4] {
        for (subject, kind) in [
            ("direct", "chat"),
            ("forwarder", "chat"),
            ("spillway miss", "chat"),
            ("spillway hit", "chat"),
            ("spillway miss (limits unknown)", "chat"),
            ("litellm", "chat"),
            ("direct", "stream"),
            ("forwarder", "stream"),
            ("spillway miss", "stream"),
        ] {
            let row = rows
                .iter()
                .find(|r| r["subject"] == subject && r["kind"] == kind && r["concurrency"] == level)
                .unwrap_or_else(|| panic!("no row for {subject} ({kind}) at c={level}"));
            assert!(row["requests"].as_u64().unwrap() > 0, "{row}");
            assert_eq!(row["failures"], 0, "{row}");
            assert_eq!(row["invalid"], 0, "{row}");
            assert!(row["rss_kib"].as_u64().unwrap() > 0, "{row}");
            // The main spillway's rows say how many answers its cache could not store.
            assert_eq!(
                row["unstored"].is_u64(),
                subject == "spillway miss" || subject == "spillway hit",
                "{row}"
            );
        }
    }
    assert!(report["skipped"].as_array().unwrap().is_empty());

    let soak = &report["soak"];
    assert_eq!(
        soak["requests"],
        serde_json::json!([200, 200, 200]),
        "{soak}"
    );
    assert_eq!(soak["failures"], 0, "{soak}");
    assert!(soak["unstored"].is_u64(), "{soak}");
    assert!(
        soak["rss_kib"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.as_u64().unwrap() > 0)
    );
    assert!(!report["targets"].as_array().unwrap().is_empty());

    let md = std::fs::read_to_string(out_dir.path().join("bench.md")).unwrap();
    assert!(md.contains("| spillway miss"), "{md}");
    assert!(
        md.contains("Concurrency 4") || md.contains("concurrency 4"),
        "{md}"
    );
    let svg = std::fs::read_to_string(out_dir.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("litellm"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("bench.json")).unwrap()).unwrap();
    assert_eq!(json["rows"], report["rows"]);
}

#[test]
fn a_peer_that_cannot_start_is_skipped_with_a_message() {
    let peers = tempfile::tempdir().unwrap();
    std::fs::write(
        peers.path().join("litellm.sh"),
        "#!/usr/bin/env bash\necho 'litellm peer: pip could not install litellm[proxy]' >&2\nexit 1\n",
    )
    .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let args = [
        "--duration",
        "100ms",
        "--warmup",
        "50ms",
        "--concurrency",
        "1",
        "--repeat",
        "1",
        "--soak",
        "0",
        "--peers",
        "litellm",
        "--json",
    ];
    let out = bench(&args, peers.path(), out_dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = json_report(&out);
    assert!(
        stderr.contains("skipping peer litellm") && stderr.contains("pip could not install"),
        "{stderr}"
    );
    assert_eq!(report["skipped"][0]["peer"], "litellm");
    assert!(
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["subject"] != "litellm")
    );
    assert!(report["soak"].is_null());

    // No script at all: skipped too.
    let empty = tempfile::tempdir().unwrap();
    let out = bench(&args, empty.path(), out_dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = json_report(&out);
    assert!(stderr.contains("skipping peer litellm"), "{stderr}");
    assert_eq!(report["skipped"][0]["peer"], "litellm");
}

#[test]
fn an_unknown_peer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = bench(&["--peers", "nginx"], dir.path(), dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown peer \"nginx\"") && stderr.contains("litellm"),
        "{stderr}"
    );
}

/// `--fleet`: spillway alone with its key's limits known, one member of a fleet, and the load
/// spread over three members sharing one Redis: each answers every request correctly.
#[test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
fn the_fleet_rows_measure_one_member_and_three_behind_the_load() {
    let peers = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = bench(
        &[
            "--fleet",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--concurrency",
            "3",
            "--repeat",
            "1",
            "--soak",
            "0",
            "--json",
        ],
        peers.path(),
        out_dir.path(),
    );
    let report = json_report(&out);
    for p in report["probes"].as_array().unwrap() {
        assert_eq!(p["ok"], true, "{p}");
    }
    let rows = report["rows"].as_array().unwrap();
    for subject in [
        "spillway miss (limits known)",
        "spillway miss (fleet)",
        "spillway miss (fleet of 3)",
    ] {
        let row = rows
            .iter()
            .find(|r| r["subject"] == subject)
            .unwrap_or_else(|| panic!("no row for {subject}: {rows:?}"));
        assert!(row["requests"].as_u64().unwrap() > 0, "{row}");
        assert_eq!(row["failures"], 0, "{row}");
        assert_eq!(row["invalid"], 0, "{row}");
    }
}
