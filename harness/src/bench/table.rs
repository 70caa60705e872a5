//! What a bench run means to a reader: a Markdown table per concurrency with ratios against
//! going direct and against the bare forwarder, the targets (met, missed, or not measured), the
//! memory soak, and the machine it ran on.

use serde::Serialize;

use super::{BenchReport, Row};

/// The machine a bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Operating system.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads it from `/proc` and `/etc/os-release` (fields unknown elsewhere).
    pub fn read() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once([':', '='])?;
                    (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                })
                .unwrap_or_else(|| "unknown".into())
        };
        let memory_kib: u64 = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0);
        Machine {
            cpu: field(&cpuinfo, "model name"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: memory_kib / 1024,
            os: field(&read("/etc/os-release"), "PRETTY_NAME"),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// One target of the benchmark, checked against a run.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub name: String,
    /// The target.
    pub expected: String,
    /// What this run measured.
    pub actual: String,
    /// Met, missed, or not measured (`None`: a subject or level was not in the run).
    pub met: Option<bool>,
}

fn find<'a>(rows: &'a [Row], subject: &str, kind: &str, concurrency: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.subject == subject && r.kind == kind && r.concurrency == concurrency)
}

fn not_measured(name: String, expected: String, why: &str) -> TargetCheck {
    TargetCheck {
        name,
        expected,
        actual: why.into(),
        met: None,
    }
}

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
    let mut out = Vec::new();
    let levels: Vec<usize> = {
        let mut l: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
        l.dedup();
        l
    };
    // Cache-miss path against the floor.
    let name = "spillway miss p50 at concurrency 1".to_string();
    let expected = "≤ 1.10× the forwarder's".to_string();
    out.push(
        match (
            find(rows, "spillway miss", "chat", 1),
            find(rows, "forwarder", "chat", 1),
        ) {
            (Some(s), Some(f)) if f.p50_us > 0 => {
                let ratio = s.p50_us as f64 / f.p50_us as f64;
                TargetCheck {
                    name,
                    expected,
                    actual: format!("{ratio:.2}× ({} µs vs {} µs)", s.p50_us, f.p50_us),
                    met: Some(ratio <= 1.10),
                }
            }
            _ => not_measured(name, expected, "concurrency 1 not in this run"),
        },
    );
    let name = "spillway miss throughput at concurrency 64".to_string();
    let expected = "≥ 0.90× the forwarder's".to_string();
    out.push(
        match (
            find(rows, "spillway miss", "chat", 64),
            find(rows, "forwarder", "chat", 64),
        ) {
            (Some(s), Some(f)) if f.rps > 0.0 => {
                let ratio = s.rps / f.rps;
                TargetCheck {
                    name,
                    expected,
                    actual: format!("{ratio:.2}× ({:.0} vs {:.0} req/s)", s.rps, f.rps),
                    met: Some(ratio >= 0.90),
                }
            }
            _ => not_measured(name, expected, "concurrency 64 not in this run"),
        },
    );
    // Against LiteLLM.
    let litellm_asked = peers.iter().any(|p| p == "litellm");
    for c in [16, 64] {
        let name = format!("spillway miss throughput vs LiteLLM at concurrency {c}");
        let expected = "≥ 10×".to_string();
        out.push(
            match (
                find(rows, "spillway miss", "chat", c),
                find(rows, "litellm", "chat", c),
            ) {
                (Some(s), Some(l)) if l.rps > 0.0 => {
                    let ratio = s.rps / l.rps;
                    TargetCheck {
                        name,
                        expected,
                        actual: format!("{ratio:.1}× ({:.0} vs {:.0} req/s)", s.rps, l.rps),
                        met: Some(ratio >= 10.0),
                    }
                }
                _ if !litellm_asked => not_measured(name, expected, "run with --peers litellm"),
                _ => not_measured(name, expected, "LiteLLM or this level not measured"),
            },
        );
    }
    out.push(every_level(
        "spillway miss p99 vs LiteLLM, every level",
        "lower",
        if litellm_asked {
            "LiteLLM not measured"
        } else {
            "run with --peers litellm"
        },
        &levels,
        |c| {
            let s = find(rows, "spillway miss", "chat", c)?.p99_us;
            let l = find(rows, "litellm", "chat", c)?.p99_us;
            Some((format!("c={c}: {s} vs {l} µs"), s < l))
        },
    ));
    // Hits against the cheapest upstream.
    out.push(every_level(
        "spillway hit throughput, every level",
        "≥ 1.00× direct (the mock's own)",
        "no levels",
        &levels,
        |c| {
            let h = find(rows, "spillway hit", "chat", c)?.rps;
            let d = find(rows, "direct", "chat", c)?.rps;
            Some((format!("c={c}: {:.2}×", h / d.max(1e-9)), h >= d))
        },
    ));
    // Memory.
    let name = "spillway RSS after the first soak stage".to_string();
    let expected = "< 50 MB".to_string();
    match &report.soak {
        Some(s) if s.rss_kib.len() == 3 => {
            out.push(TargetCheck {
                name: format!(
                    "spillway RSS after {} requests (every one a stored miss)",
                    s.requests_per_stage
                ),
                expected,
                actual: format!("{:.1} MB", s.rss_kib[0] as f64 * 1024.0 / 1e6),
                met: Some(s.rss_kib[0] < MEMORY_TARGET_KIB),
            });
            let growth = s.rss_kib[2] as f64 - s.rss_kib[1] as f64;
            out.push(TargetCheck {
                name: "spillway RSS growth from the second soak stage to the third".into(),
                expected: "none (≤ 1 MiB or 2% of the second: allocator noise)".into(),
                actual: format!(
                    "{:+.1} MB ({:.1} → {:.1} MB)",
                    growth * 1024.0 / 1e6,
                    s.rss_kib[1] as f64 * 1024.0 / 1e6,
                    s.rss_kib[2] as f64 * 1024.0 / 1e6
                ),
                met: Some(no_growth(s.rss_kib[1], s.rss_kib[2])),
            });
        }
        _ => out.push(not_measured(name, expected, "no soak (--soak 0)")),
    }
    out
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

/// A latency for a table cell.
pub fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

/// One Markdown table per concurrency: requests/s, p50, p99, p99.9, RSS, throughput against
/// direct and the forwarder of the same kind, p50 against the forwarder.
pub fn tables(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut levels: Vec<usize> = rows.iter().map(|r| r.concurrency).collect();
    levels.dedup();
    for c in levels {
        out.push_str(&format!(
            "\n#### concurrency {c}\n\n| subject | requests/s | p50 | p99 | p99.9 | RSS | req/s vs direct | req/s vs forwarder | p50 vs forwarder |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        ));
        for r in rows.iter().filter(|r| r.concurrency == c) {
            let direct = find(rows, "direct", &r.kind, c);
            let forwarder = find(rows, "forwarder", &r.kind, c);
            let subject = if r.kind == "stream" {
                format!("{} (stream)", r.subject)
            } else {
                r.subject.clone()
            };
            let bad = r.failures + r.invalid;
            out.push_str(&format!(
                "| {}{} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
                subject,
                if bad > 0 {
                    format!(" ⚠ {bad} wrong")
                } else {
                    String::new()
                },
                r.rps,
                micros(r.p50_us),
                micros(r.p99_us),
                micros(r.p999_us),
                r.rss_kib
                    .map(|k| format!("{:.0} MB", k as f64 * 1024.0 / 1e6))
                    .unwrap_or_else(|| "-".into()),
                ratio(r.rps, direct.map(|d| d.rps)),
                ratio(r.rps, forwarder.map(|f| f.rps)),
                ratio(r.p50_us as f64, forwarder.map(|f| f.p50_us as f64)),
            ));
        }
    }
    out
}

/// The whole report as Markdown: machine, tables, targets, soak, skipped peers, wrong answers.
pub fn markdown(report: &BenchReport) -> String {
    let m = &report.machine;
    let mut out = format!(
        "Machine: {} ({} logical CPUs), {} MiB, {}, kernel {}. Each figure is the median of {} runs of {} s (after {} s of warm-up) per subject and level; subjects take turns run by run.\n",
        m.cpu,
        m.cpus,
        m.memory_mib,
        m.os,
        m.kernel,
        report.repeat,
        report.duration_s,
        report.warmup_s
    );
    out.push_str(&tables(&report.rows));
    out.push_str("\n#### targets\n\n| target | expected | this run | |\n|---|---|---|---|\n");
    for t in &report.targets {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            t.name,
            t.expected,
            t.actual,
            match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            }
        ));
    }
    for r in report.rows.iter().filter(|r| r.failures + r.invalid > 0) {
        let kind = if r.kind == "stream" { " (stream)" } else { "" };
        let first = r
            .runs
            .iter()
            .find_map(|run| run.first_error.clone())
            .map(|e| format!("; the first connection error: {e}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n⚠ {}{kind} at concurrency {}: {} failed requests (errors or non-200) and {} malformed answers{first}.\n",
            r.subject, r.concurrency, r.failures, r.invalid
        ));
    }
    let behind: Vec<String> = report
        .rows
        .iter()
        .filter_map(|r| {
            let n = r.unstored.filter(|n| *n > 0)?;
            let kind = if r.kind == "stream" { " (stream)" } else { "" };
            Some(format!(
                "{}{kind} at concurrency {}: {n} of {} answers",
                r.subject, r.concurrency, r.requests
            ))
        })
        .collect();
    if !behind.is_empty() {
        out.push_str(&format!(
            "\nNot stored by spillway's cache because its writer was behind (the answers were served; counted by `spillway_cache_writes_dropped_total`, including warm-up): {}.\n",
            behind.join("; ")
        ));
    }
    if let Some(s) = &report.soak {
        out.push_str(&format!(
            "\nMemory soak: a fresh spillway, {} stages of {} distinct requests at concurrency {} (every answer sent to the cache; {} not stored because the writer was behind); RSS after each stage: {}.\n",
            s.rss_kib.len(),
            s.requests_per_stage,
            s.concurrency,
            s.unstored.map_or_else(|| "unknown".to_string(), |n| n.to_string()),
            s.rss_kib
                .iter()
                .map(|k| format!("{:.1} MB", *k as f64 * 1024.0 / 1e6))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for s in &report.skipped {
        out.push_str(&format!(
            "\nPeer {} was not measured: {}\n",
            s.peer, s.reason
        ));
    }
    for p in report.probes.iter().filter(|p| !p.ok) {
        out.push_str(&format!(
            "\n{} ({}) answered the probe wrongly: {}\n",
            p.subject, p.kind, p.detail
        ));
    }
    out
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

    #[test]
    fn latencies_switch_to_milliseconds_at_ten() {
        assert_eq!(micros(9_999), "9999 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(ratio(3.0, Some(2.0)), "1.50×");
        assert_eq!(ratio(3.0, None), "-");
    }
}
