//! The targets a bench run is held to (spillway's miss path against the bare forwarder, its hit
//! path against the mock itself, against LiteLLM, its memory), each met, missed, or not measured
//! in this run.

use super::report::{BenchReport, Row, Soak, TargetCheck, find};

/// 50 MB, the memory target, in KiB.
const MEMORY_TARGET_KIB: u64 = 50_000_000 / 1024;

/// RSS moves by up to about this much between samples with nothing growing (the allocator
/// takes and returns memory in large pages), so the soak's "no growth" allows it.
const GROWTH_NOISE_KIB: f64 = 1024.0;

/// True when RSS went from `second` to `third` (KiB) without growing beyond sampling noise.
fn no_growth(second: u64, third: u64) -> bool {
    third as f64 - second as f64 <= GROWTH_NOISE_KIB.max(0.02 * second as f64)
}

/// Checks the targets against a run; `peers` are the peers that were asked for.
pub fn evaluate(report: &BenchReport, peers: &[String]) -> Vec<TargetCheck> {
    let rows = &report.rows;
    let levels: Vec<usize> = {
        let mut l: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
        l.dedup();
        l
    };
    let litellm_asked = peers.iter().any(|p| p == "litellm");
    let mut out = vec![
        miss_latency_vs_forwarder(rows),
        limits_unknown_throughput(rows),
        miss_throughput_vs_forwarder(rows),
        miss_throughput_vs_litellm(rows, 16, litellm_asked),
        miss_throughput_vs_litellm(rows, 64, litellm_asked),
        miss_p99_vs_litellm(rows, &levels, litellm_asked),
        hit_throughput_vs_direct(rows, &levels),
        fleet_latency(rows),
        fleet_throughput(rows),
    ];
    out.extend(memory(report.soak.as_ref()));
    out
}

/// A target this run measured.
fn measured(name: String, expected: String, actual: String, met: bool) -> TargetCheck {
    TargetCheck {
        name,
        expected,
        actual,
        met: Some(met),
    }
}

fn not_measured(name: String, expected: String, why: &str) -> TargetCheck {
    TargetCheck {
        name,
        expected,
        actual: why.into(),
        met: None,
    }
}

/// `a`'s requests per second over `b`'s (chat, at `concurrency`), with both rows; none when
/// either was not measured or `b` served nothing.
fn rps_ratio<'a>(
    rows: &'a [Row],
    a: &str,
    b: &str,
    concurrency: usize,
) -> Option<(f64, &'a Row, &'a Row)> {
    let a = find(rows, a, "chat", concurrency)?;
    let b = find(rows, b, "chat", concurrency)?;
    (b.rps > 0.0).then(|| (a.rps / b.rps, a, b))
}

/// The cache-miss path against the floor: spillway's p50 at concurrency 1 against the bare
/// forwarder's.
fn miss_latency_vs_forwarder(rows: &[Row]) -> TargetCheck {
    let name = "spillway miss p50 at concurrency 1".to_string();
    let expected = "≤ 1.10× the forwarder's".to_string();
    match (
        find(rows, "spillway miss", "chat", 1),
        find(rows, "forwarder", "chat", 1),
    ) {
        (Some(s), Some(f)) if f.p50_us > 0 => {
            let ratio = s.p50_us as f64 / f.p50_us as f64;
            let actual = format!("{ratio:.2}× ({} µs vs {} µs)", s.p50_us, f.p50_us);
            measured(name, expected, actual, ratio <= 1.10)
        }
        _ => not_measured(name, expected, "concurrency 1 not in this run"),
    }
}

/// What the congestion window for a key whose limits are unknown costs at concurrency 64.
fn limits_unknown_throughput(rows: &[Row]) -> TargetCheck {
    let name = "limits unknown: throughput at concurrency 64".to_string();
    let expected = "≥ 0.90× the same proxy with the in-flight cap off".to_string();
    match rps_ratio(rows, "spillway miss (limits unknown)", "spillway miss", 64) {
        Some((ratio, a, s)) => {
            let actual = format!("{ratio:.2}× ({:.0} vs {:.0} req/s)", a.rps, s.rps);
            measured(name, expected, actual, ratio >= 0.90)
        }
        None => not_measured(name, expected, "concurrency 64 not in this run"),
    }
}

/// What a fleet's Redis round trips cost a miss at concurrency 1: the p50 of spillway in a
/// fleet against the same spillway alone (both with the key's limits known).
fn fleet_latency(rows: &[Row]) -> TargetCheck {
    let name = "fleet: miss p50 at concurrency 1".to_string();
    let expected = "≤ the same spillway alone + 150 µs".to_string();
    match (
        find(rows, "spillway miss (fleet)", "chat", 1),
        find(rows, "spillway miss (limits known)", "chat", 1),
    ) {
        (Some(f), Some(l)) => {
            let extra = f.p50_us as i64 - l.p50_us as i64;
            let actual = format!("{extra:+} µs ({} µs vs {} µs)", f.p50_us, l.p50_us);
            measured(name, expected, actual, extra <= 150)
        }
        _ => not_measured(name, expected, "run with --fleet at concurrency 1"),
    }
}

/// What a fleet costs a miss's throughput at concurrency 64.
fn fleet_throughput(rows: &[Row]) -> TargetCheck {
    let name = "fleet: miss throughput at concurrency 64".to_string();
    let expected = "≥ 0.60× the same spillway alone".to_string();
    match rps_ratio(
        rows,
        "spillway miss (fleet)",
        "spillway miss (limits known)",
        64,
    ) {
        Some((ratio, f, l)) => {
            let actual = format!("{ratio:.2}× ({:.0} vs {:.0} req/s)", f.rps, l.rps);
            measured(name, expected, actual, ratio >= 0.60)
        }
        None => not_measured(name, expected, "run with --fleet at concurrency 64"),
    }
}

/// spillway's cache-miss throughput at concurrency 64 against the bare forwarder's.
fn miss_throughput_vs_forwarder(rows: &[Row]) -> TargetCheck {
    let name = "spillway miss throughput at concurrency 64".to_string();
    let expected = "≥ 0.90× the forwarder's".to_string();
    match rps_ratio(rows, "spillway miss", "forwarder", 64) {
        Some((ratio, s, f)) => {
            let actual = format!("{ratio:.2}× ({:.0} vs {:.0} req/s)", s.rps, f.rps);
            measured(name, expected, actual, ratio >= 0.90)
        }
        None => not_measured(name, expected, "concurrency 64 not in this run"),
    }
}

/// spillway's cache-miss throughput at `concurrency` against LiteLLM's.
fn miss_throughput_vs_litellm(rows: &[Row], concurrency: usize, asked: bool) -> TargetCheck {
    let name = format!("spillway miss throughput vs LiteLLM at concurrency {concurrency}");
    let expected = "≥ 10×".to_string();
    match rps_ratio(rows, "spillway miss", "litellm", concurrency) {
        Some((ratio, s, l)) => {
            let actual = format!("{ratio:.1}× ({:.0} vs {:.0} req/s)", s.rps, l.rps);
            measured(name, expected, actual, ratio >= 10.0)
        }
        None if !asked => not_measured(name, expected, "run with --peers litellm"),
        None => not_measured(name, expected, "LiteLLM or this level not measured"),
    }
}

/// spillway's cache-miss p99 below LiteLLM's at every level.
fn miss_p99_vs_litellm(rows: &[Row], levels: &[usize], asked: bool) -> TargetCheck {
    every_level(
        "spillway miss p99 vs LiteLLM, every level",
        "lower",
        if asked {
            "LiteLLM not measured"
        } else {
            "run with --peers litellm"
        },
        levels,
        |c| {
            let s = find(rows, "spillway miss", "chat", c)?.p99_us;
            let l = find(rows, "litellm", "chat", c)?.p99_us;
            Some((format!("c={c}: {s} vs {l} µs"), s < l))
        },
    )
}

/// Hits against the cheapest upstream: spillway answering from its cache at least as fast as
/// the mock answers directly, at every level.
fn hit_throughput_vs_direct(rows: &[Row], levels: &[usize]) -> TargetCheck {
    every_level(
        "spillway hit throughput, every level",
        "≥ 1.00× direct (the mock's own)",
        "no levels",
        levels,
        |c| {
            let h = find(rows, "spillway hit", "chat", c)?.rps;
            let d = find(rows, "direct", "chat", c)?.rps;
            Some((format!("c={c}: {:.2}×", h / d.max(1e-9)), h >= d))
        },
    )
}

/// Memory: spillway's RSS after the soak's first stage, and its growth from the second to the
/// third.
fn memory(soak: Option<&Soak>) -> Vec<TargetCheck> {
    let expected = "< 50 MB".to_string();
    let Some(s) = soak.filter(|s| s.rss_kib.len() == 3) else {
        let name = "spillway RSS after the first soak stage".to_string();
        return vec![not_measured(name, expected, "no soak (--soak 0)")];
    };
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let first = measured(
        format!(
            "spillway RSS after {} requests (every one a stored miss)",
            s.requests_per_stage
        ),
        expected,
        format!("{:.1} MB", mb(s.rss_kib[0])),
        s.rss_kib[0] < MEMORY_TARGET_KIB,
    );
    let growth = s.rss_kib[2] as f64 - s.rss_kib[1] as f64;
    let flat = measured(
        "spillway RSS growth from the second soak stage to the third".into(),
        "none (≤ 1 MiB or 2% of the second: allocator noise)".into(),
        format!(
            "{:+.1} MB ({:.1} → {:.1} MB)",
            growth * 1024.0 / 1e6,
            mb(s.rss_kib[1]),
            mb(s.rss_kib[2])
        ),
        no_growth(s.rss_kib[1], s.rss_kib[2]),
    );
    vec![first, flat]
}

/// A target that must hold at every measured level: `check` gives each level's figure and
/// verdict, or nothing when a side was not measured there.
fn every_level(
    name: &str,
    expected: &str,
    unmeasured: &str,
    levels: &[usize],
    check: impl Fn(usize) -> Option<(String, bool)>,
) -> TargetCheck {
    let checks: Vec<(String, bool)> = levels.iter().filter_map(|&c| check(c)).collect();
    if checks.is_empty() {
        return not_measured(name.to_string(), expected.to_string(), unmeasured);
    }
    TargetCheck {
        name: name.to_string(),
        expected: expected.to_string(),
        actual: checks
            .iter()
            .map(|(figure, _)| figure.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        met: Some(checks.iter().all(|(_, met)| *met)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_at_every_level_holds_only_if_it_holds_at_each() {
        let check = |bad: usize| move |c: usize| (c != 4).then(|| (format!("c={c}"), c != bad));
        let all = every_level("t", "e", "why", &[1, 4, 16], check(0));
        assert_eq!((all.met, all.actual.as_str()), (Some(true), "c=1; c=16"));
        let one_bad = every_level("t", "e", "why", &[1, 16], check(16));
        assert_eq!(one_bad.met, Some(false));
        let none = every_level("t", "e", "why", &[4], check(0));
        assert_eq!(none.met, None);
        assert!(none.actual.contains("why"), "{}", none.actual);
    }

    #[test]
    fn soak_growth_allows_sampling_noise_only() {
        assert!(no_growth(20_000, 19_000));
        assert!(no_growth(20_000, 20_900), "under 1 MiB");
        assert!(!no_growth(20_000, 21_200), "over 1 MiB and over 2%");
        assert!(no_growth(100_000, 101_900), "under 2% of a larger process");
        assert!(!no_growth(97_500, 135_800));
    }
}
