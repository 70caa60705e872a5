//! What a bench run means to a reader: a Markdown table per concurrency with ratios against
//! going direct and against the bare forwarder, the targets (met, missed, or not measured), the
//! memory soak, and the machine it ran on.

use super::report::{BenchReport, Row, Soak, TargetCheck, find};

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
            let bad = r.failures + r.invalid;
            out.push_str(&format!(
                "| {}{}{} | {:.0} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.subject,
                stream_suffix(r),
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
    let mut out = how_measured(report);
    out.push_str(&tables(&report.rows));
    out.push_str(&targets(&report.targets));
    out.push_str(&wrong_answers(&report.rows));
    out.push_str(&unstored(&report.rows));
    if let Some(s) = &report.soak {
        out.push_str(&soak(s));
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

/// The opening line: the machine, and how each figure was measured.
fn how_measured(report: &BenchReport) -> String {
    let m = &report.machine;
    format!(
        "Machine: {} ({} logical CPUs), {} MiB, {}, kernel {}. Each figure is the median of {} runs of {} s (after {} s of warm-up) per subject and level; subjects take turns run by run.\n",
        m.cpu,
        m.cpus,
        m.memory_mib,
        m.os,
        m.kernel,
        report.repeat,
        report.duration_s,
        report.warmup_s
    )
}

/// The targets' table.
fn targets(targets: &[TargetCheck]) -> String {
    let mut out =
        String::from("\n#### targets\n\n| target | expected | this run | |\n|---|---|---|---|\n");
    for t in targets {
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
    out
}

/// A warning for each row with failed requests or malformed answers.
fn wrong_answers(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.failures + r.invalid > 0) {
        let first = r
            .runs
            .iter()
            .find_map(|run| run.first_error.clone())
            .map(|e| format!("; the first connection error: {e}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n⚠ {}{} at concurrency {}: {} failed requests (errors or non-200) and {} malformed answers{first}.\n",
            r.subject,
            stream_suffix(r),
            r.concurrency,
            r.failures,
            r.invalid
        ));
    }
    out
}

/// The answers spillway's cache did not store because its writer was behind, if any.
fn unstored(rows: &[Row]) -> String {
    let behind: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let n = r.unstored.filter(|n| *n > 0)?;
            Some(format!(
                "{}{} at concurrency {}: {n} of {} answers",
                r.subject,
                stream_suffix(r),
                r.concurrency,
                r.requests
            ))
        })
        .collect();
    if behind.is_empty() {
        return String::new();
    }
    format!(
        "\nNot stored by spillway's cache because its writer was behind (the answers were served; counted by `spillway_cache_writes_dropped_total`, including warm-up): {}.\n",
        behind.join("; ")
    )
}

/// The memory soak's line.
fn soak(s: &Soak) -> String {
    format!(
        "\nMemory soak: a fresh spillway, {} stages of {} distinct requests at concurrency {} (every answer sent to the cache; {} not stored because the writer was behind); RSS after each stage: {}.\n",
        s.rss_kib.len(),
        s.requests_per_stage,
        s.concurrency,
        s.unstored
            .map_or_else(|| "unknown".to_string(), |n| n.to_string()),
        s.rss_kib
            .iter()
            .map(|k| format!("{:.1} MB", *k as f64 * 1024.0 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// ` (stream)` after the subject of a streamed row, so the two kinds read apart.
fn stream_suffix(r: &Row) -> &'static str {
    if r.kind == "stream" { " (stream)" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_switch_to_milliseconds_at_ten() {
        assert_eq!(micros(9_999), "9999 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(ratio(3.0, Some(2.0)), "1.50×");
        assert_eq!(ratio(3.0, None), "-");
    }
}
