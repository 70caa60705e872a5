//! Verdicts: every expectation of a scenario held against what its run produced. Each names what
//! it compares and reports both sides, so a failure reads as "expected X, got Y".

use std::collections::BTreeMap;

use serde::Serialize;

use crate::expect::{Check, Expect, status_code, trim_number};
use crate::record::{ClientRecord, RunResult};

/// One evaluated expectation.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// What was compared (`served_by.groq`).
    pub name: String,
    /// The expectation, as written.
    pub expected: String,
    /// What the run produced.
    pub actual: String,
    /// Whether it held.
    pub pass: bool,
}

impl Verdict {
    /// A check against a number.
    pub fn number(name: impl Into<String>, check: &Check, actual: f64, total: f64) -> Self {
        Verdict {
            name: name.into(),
            expected: check.to_string(),
            actual: trim_number(actual),
            pass: check.holds(actual, total),
        }
    }

    /// A yes/no expectation.
    pub fn flag(name: impl Into<String>, expected: bool, actual: bool, detail: String) -> Self {
        Verdict {
            name: name.into(),
            expected: expected.to_string(),
            actual: if detail.is_empty() {
                actual.to_string()
            } else {
                format!("{actual} ({detail})")
            },
            pass: expected == actual,
        }
    }

    /// A check against a duration (simulated seconds), shown with its unit.
    fn seconds(name: &str, check: &Check, seconds: f64) -> Self {
        let mut verdict = Verdict::number(name, check, seconds, 0.0);
        verdict.actual = format!("{}s", trim_number(seconds));
        verdict
    }
}

/// Evaluates every expectation against a run, in the order the `[expect]` table documents them.
pub fn evaluate(expect: &Expect, r: &RunResult) -> Vec<Verdict> {
    let total = r.clients.len() as f64;
    let mut out = client_status(&expect.client_status, r);
    if let Some(check) = &expect.upstream_429 {
        let n = upstream_429s(r);
        out.push(Verdict::number("upstream_429", check, n as f64, total));
    }
    if let Some(check) = &expect.upstream_requests {
        let n: u64 = r.mocks.iter().map(|m| m.stats.requests).sum();
        out.push(Verdict::number("upstream_requests", check, n as f64, total));
    }
    out.extend(expect.peak_within_limits.map(|e| peak_within_limits(e, r)));
    out.extend(served_by(&expect.served_by, r));
    if let Some(check) = &expect.cache_hit_ratio {
        let share = hit_share(r.clients.iter());
        out.push(Verdict::number("cache_hit_ratio", check, share, 1.0));
    }
    if let Some(check) = &expect.final_pass_hit_ratio {
        let share = hit_share(r.clients.iter().filter(|c| c.pass == r.passes));
        out.push(Verdict::number("final_pass_hit_ratio", check, share, 1.0));
    }
    if let Some(check) = &expect.coalesced {
        let n = r
            .clients
            .iter()
            .filter(|c| c.cache.as_deref() == Some("coalesced"))
            .count();
        out.push(Verdict::number("coalesced", check, n as f64, total));
    }
    if let Some(check) = &expect.fallbacks {
        let n = r.fallbacks as f64;
        out.push(Verdict::number("fallbacks", check, n, total));
    }
    if let Some(check) = &expect.fleet_degraded {
        // The first gateway that fails the check, else the least degraded (none: no fleet,
        // nothing to show, which fails a check that expects time).
        let shown = r
            .fleet_degraded
            .iter()
            .copied()
            .find(|&s| !check.holds(s, s))
            .or_else(|| r.fleet_degraded.iter().copied().reduce(f64::min));
        out.push(Verdict::seconds(
            "fleet_degraded",
            check,
            shown.unwrap_or(0.0),
        ));
    }
    let (p50, p99, max) = r.latencies();
    for (name, check, v) in [
        ("p50_latency", &expect.p50_latency, p50),
        ("p99_latency", &expect.p99_latency, p99),
        ("max_latency", &expect.max_latency, max),
    ] {
        out.extend(check.as_ref().map(|check| Verdict::seconds(name, check, v)));
    }
    out.extend(
        expect
            .client_retry_after
            .as_ref()
            .map(|c| client_retry_after(c, r)),
    );
    out.extend(
        expect
            .retry_after_honored
            .map(|e| retry_after_honored(e, r)),
    );
    out.extend(
        expect
            .makespan
            .as_ref()
            .map(|c| Verdict::seconds("makespan", c, makespan(r))),
    );
    out
}

/// `client_status`: how many client requests ended with each status.
fn client_status(checks: &BTreeMap<String, Check>, r: &RunResult) -> Vec<Verdict> {
    let total = r.clients.len() as f64;
    checks
        .iter()
        .map(|(status, check)| {
            let code = status_code(status).unwrap_or(0);
            let n = r.clients.iter().filter(|c| c.status == code).count();
            Verdict::number(format!("client_status.{status}"), check, n as f64, total)
        })
        .collect()
}

/// 429s the mocks sent, over every key.
fn upstream_429s(r: &RunResult) -> u64 {
    r.mocks.iter().map(|m| m.stats.responses(429)).sum()
}

/// `peak_within_limits`: every mock key stayed within every limit; the detail names those that
/// did not.
fn peak_within_limits(expected: bool, r: &RunResult) -> Verdict {
    let mut over = Vec::new();
    for m in &r.mocks {
        for (key, models) in &m.stats.keys {
            for (model, s) in models {
                if !s.peaks_within_limits() {
                    over.push(format!("{}/{key}/{model}", m.name));
                }
            }
        }
    }
    Verdict::flag(
        "peak_within_limits",
        expected,
        over.is_empty(),
        over.join(", "),
    )
}

/// `served_by`: the share of the requests answered upstream that each provider or key alias
/// served, shown with its count.
fn served_by(checks: &BTreeMap<String, Check>, r: &RunResult) -> Vec<Verdict> {
    let upstream: Vec<&ClientRecord> = r
        .clients
        .iter()
        .filter(|c| c.status == 200 && !c.from_cache())
        .collect();
    checks
        .iter()
        .map(|(name, check)| {
            let n = upstream
                .iter()
                .filter(|c| c.provider.as_deref() == Some(name) || c.key.as_deref() == Some(name))
                .count();
            let share = if upstream.is_empty() {
                0.0
            } else {
                n as f64 / upstream.len() as f64
            };
            let mut v = Verdict::number(format!("served_by.{name}"), check, share, 1.0);
            v.actual = format!("{} ({n} of {})", trim_number(share), upstream.len());
            v
        })
        .collect()
}

/// The share of `clients` that were cache hits (0 when there are none).
fn hit_share<'a>(clients: impl Iterator<Item = &'a ClientRecord>) -> f64 {
    let (mut all, mut hits) = (0usize, 0usize);
    for c in clients {
        all += 1;
        hits += usize::from(c.cache.as_deref() == Some("hit"));
    }
    if all == 0 {
        0.0
    } else {
        hits as f64 / all as f64
    }
}

/// `client_retry_after`: every client 429 carries a `retry-after` that passes the check.
fn client_retry_after(check: &Check, r: &RunResult) -> Verdict {
    let waits: Vec<f64> = r
        .clients
        .iter()
        .filter(|c| c.status == 429)
        .filter_map(|c| c.retry_after)
        .collect();
    let refused = r.clients.iter().filter(|c| c.status == 429).count();
    let pass = waits.len() == refused && waits.iter().all(|w| check.holds(*w, 0.0));
    let lo = waits.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = waits.iter().copied().fold(0.0, f64::max);
    Verdict {
        name: "client_retry_after".into(),
        expected: format!("every 429's retry-after {check}"),
        actual: if refused == 0 {
            "no 429s".into()
        } else {
            format!(
                "{} of {refused} carried one, {}s to {}s",
                waits.len(),
                trim_number(lo),
                trim_number(hi)
            )
        },
        pass,
    }
}

/// `retry_after_honored`: no key was asked again before the wait it had given.
fn retry_after_honored(expected: bool, r: &RunResult) -> Verdict {
    let violations = retry_after_violations(r);
    let detail = if violations.is_empty() {
        format!("{} retry-after given", upstream_429s(r))
    } else {
        violations.join("; ")
    };
    Verdict::flag(
        "retry_after_honored",
        expected,
        violations.is_empty(),
        detail,
    )
}

/// How long (wall-clock time) after a 429 a request may still reach the same key because it
/// was already on its way: sent before the proxy had read the 429. A proxy that ignores a
/// `retry-after` keeps sending long after this.
const IN_FLIGHT_ALLOWANCE: f64 = 0.1;

/// Keys of mocks that received a request before the `retry-after` they had given on that
/// model, as `mock/key: at t, told to wait r, came back after d` (the journal's times are
/// simulated; a `retry-after` is wall-clock time, so it counts `time_scale` times over).
/// Requests that arrive within [`IN_FLIGHT_ALLOWANCE`] of the 429 that started the wait were
/// in flight beside it (several go at once to a key whose limits are unknown), and are not
/// counted.
pub fn retry_after_violations(r: &RunResult) -> Vec<String> {
    let allowance = IN_FLIGHT_ALLOWANCE * r.time_scale;
    let mut out = Vec::new();
    for mock in &r.mocks {
        let mut last_429: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
        for e in &mock.journal {
            let (Some(key), Some(model)) = (&e.key, &e.model) else {
                continue;
            };
            let slot = (key.clone(), model.clone());
            let waiting = last_429
                .get(&slot)
                .copied()
                .filter(|(at, wait)| e.at + 0.1 < at + wait);
            if let Some((at, wait)) = waiting
                && e.at > at + allowance
            {
                out.push(format!(
                    "{}/{key}: 429 at {at:.1}s said wait {wait}s, next request at {:.1}s",
                    mock.name, e.at
                ));
            }
            if e.status == 429 {
                // The provider's exact wait when it said it, else its `retry-after`.
                let wall = e
                    .retry_in_ms
                    .map(|ms| ms as f64 / 1000.0)
                    .or(e.retry_after.map(|s| s as f64))
                    .unwrap_or(0.0);
                // A 429 met while already waiting belongs to the wait that started first.
                if waiting.is_none() {
                    last_429.insert(slot, (e.at, wall * r.time_scale));
                }
            } else if e.status != 0 {
                last_429.remove(&slot);
            }
        }
    }
    out
}

/// First request sent to last answer received (simulated seconds; 0 without requests).
fn makespan(r: &RunResult) -> f64 {
    let first = r
        .clients
        .iter()
        .map(|c| c.sent)
        .fold(f64::INFINITY, f64::min);
    let last = r
        .clients
        .iter()
        .map(|c| c.sent + c.latency)
        .fold(0.0, f64::max);
    if first.is_finite() { last - first } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use spillway_mock::journal::JournalEntry;

    use super::*;
    use crate::record::MockOutcome;

    /// A request to key `k` of model `m`, arriving at `at` (simulated seconds), answered
    /// `status`; a 429 says to wait `wait` wall-clock seconds.
    fn arrival(at: f64, status: u16, wait: Option<u64>) -> JournalEntry {
        JournalEntry {
            seq: 0,
            at,
            endpoint: "chat".into(),
            key: Some("k".into()),
            model: Some("m".into()),
            stream: false,
            tokens: 10,
            status,
            retry_after: wait,
            retry_in_ms: None,
            retry_count: None,
            fault: None,
        }
    }

    /// A run at 60 simulated seconds per wall second with one mock that saw `journal`.
    fn run(journal: Vec<JournalEntry>) -> RunResult {
        RunResult {
            clients: Vec::new(),
            mocks: vec![MockOutcome {
                name: "groq".into(),
                stats: Default::default(),
                journal,
            }],
            fallbacks: 0,
            passes: 1,
            sim_seconds: 120.0,
            wall_seconds: 2.0,
            time_scale: 60.0,
            fleet_degraded: Vec::new(),
        }
    }

    #[test]
    fn requests_in_flight_beside_a_429_are_not_violations() {
        // Told at 1.6 s to wait 1 wall second (60 simulated); two more were on their way and
        // arrived within the allowance (0.1 wall seconds, 6 simulated); the next came after
        // the wait.
        let journal = vec![
            arrival(1.0, 200, None),
            arrival(1.6, 429, Some(1)),
            arrival(1.6, 429, Some(1)),
            arrival(1.7, 429, Some(1)),
            arrival(62.0, 200, None),
        ];
        assert_eq!(retry_after_violations(&run(journal)), Vec::<String>::new());
    }

    #[test]
    fn a_request_sent_after_the_429_was_read_and_before_the_wait_is_a_violation() {
        let journal = vec![
            arrival(1.6, 429, Some(1)),
            arrival(1.7, 429, Some(1)),
            arrival(30.0, 429, Some(1)),
            arrival(62.0, 200, None),
        ];
        let violations = retry_after_violations(&run(journal));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].contains("429 at 1.6s") && violations[0].contains("30.0s"),
            "{violations:?}"
        );
    }
}
