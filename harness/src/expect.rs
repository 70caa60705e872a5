//! Expectations: a small, regular vocabulary of checks on what a run produced. Each names what
//! it compares and reports both sides, so a failure reads as "expected X, got Y".
//!
//! A check is written as a comparison string (`">= 0.5"`, `"< 2s"`, `"== 0"`), a table of
//! bounds (`{ min = 1, max = 10 }`), a bare number (exactly that), or, for counts, `"all"` /
//! `"none"`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::runner::{ClientRecord, RunResult};

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Op {
    fn holds(self, actual: f64, expected: f64) -> bool {
        match self {
            Op::Lt => actual < expected,
            Op::Le => actual <= expected,
            Op::Eq => (actual - expected).abs() < 1e-9,
            Op::Ge => actual >= expected,
            Op::Gt => actual > expected,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ge => ">=",
            Op::Gt => ">",
        }
    }
}

/// A check on a number: one or more (operator, value) conditions, or "all"/"none" of a total.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Check {
    /// Every condition holds.
    Compare(Vec<(Op, f64)>),
    /// Equal to the total it is taken from.
    All,
    /// Zero.
    None,
}

impl Check {
    /// Whether `actual` passes (`total`: what "all" means).
    pub fn holds(&self, actual: f64, total: f64) -> bool {
        match self {
            Check::All => (actual - total).abs() < 1e-9,
            Check::None => actual == 0.0,
            Check::Compare(conds) => conds.iter().all(|(op, v)| op.holds(actual, *v)),
        }
    }

    /// Reads a comparison string: `>= 0.5`, `< 2s` (durations become seconds), `all`, `none`.
    pub fn parse(text: &str) -> Result<Check, String> {
        let t = text.trim();
        match t {
            "all" => return Ok(Check::All),
            "none" => return Ok(Check::None),
            _ => {}
        }
        let (op, rest) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("=", Op::Eq),
        ]
        .iter()
        .find_map(|(sym, op)| t.strip_prefix(sym).map(|r| (*op, r.trim())))
        .unwrap_or((Op::Eq, t));
        let value = parse_value(rest).ok_or_else(|| {
            format!("expected a comparison such as \">= 0.5\", \"< 2s\", \"all\" or \"none\" (got {text:?})")
        })?;
        Ok(Check::Compare(vec![(op, value)]))
    }
}

fn parse_value(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    if let Some(p) = s.strip_suffix('%') {
        return p.trim().parse::<f64>().ok().map(|v| v / 100.0);
    }
    humantime::parse_duration(s)
        .ok()
        .map(|d: Duration| d.as_secs_f64())
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::All => f.write_str("all"),
            Check::None => f.write_str("none"),
            Check::Compare(conds) => {
                let parts: Vec<String> = conds
                    .iter()
                    .map(|(op, v)| format!("{} {}", op.symbol(), trim_number(*v)))
                    .collect();
                f.write_str(&parts.join(" and "))
            }
        }
    }
}

/// A number without trailing zeros.
pub fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCheck {
    Text(String),
    Number(f64),
    Bounds {
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
}

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawCheck::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a comparison such as \">= 0.5\", a number, or { min = .., max = .. }",
            )
        })? {
            RawCheck::Text(t) => Check::parse(&t).map_err(serde::de::Error::custom),
            RawCheck::Number(n) => Ok(Check::Compare(vec![(Op::Eq, n)])),
            RawCheck::Bounds { min, max } => {
                let mut conds = Vec::new();
                if let Some(m) = min {
                    conds.push((Op::Ge, m));
                }
                if let Some(m) = max {
                    conds.push((Op::Le, m));
                }
                if conds.is_empty() {
                    return Err(serde::de::Error::custom(
                        "a bounds table needs `min` or `max`",
                    ));
                }
                Ok(Check::Compare(conds))
            }
        }
    }
}

/// The `[expect]` table.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Client responses by status (`0`: no response at all): count of that status.
    #[serde(default)]
    pub client_status: BTreeMap<String, Check>,
    /// 429s the mocks sent, over every key.
    pub upstream_429: Option<Check>,
    /// Every mock key's peak stayed within every window's limit.
    pub peak_within_limits: Option<bool>,
    /// Share of the requests answered upstream that each provider (mock name) or key alias
    /// (`groq#2`) served.
    #[serde(default)]
    pub served_by: BTreeMap<String, Check>,
    /// Share of client requests answered from the cache.
    pub cache_hit_ratio: Option<Check>,
    /// Share of the last pass's requests answered from the cache.
    pub final_pass_hit_ratio: Option<Check>,
    /// Requests that joined an identical in-flight request.
    pub coalesced: Option<Check>,
    /// Times the proxy moved a request to another key or target after a failed attempt.
    pub fallbacks: Option<Check>,
    /// Median client latency (simulated time).
    pub p50_latency: Option<Check>,
    /// 99th-percentile client latency (simulated time).
    pub p99_latency: Option<Check>,
    /// Slowest client request (simulated time): nothing hangs.
    pub max_latency: Option<Check>,
    /// Every client 429's `retry-after` (seconds).
    pub client_retry_after: Option<Check>,
    /// No request reached a key before the `retry-after` the key had given.
    pub retry_after_honored: Option<bool>,
    /// First request sent to last response received (simulated time).
    pub makespan: Option<Check>,
}

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
}

impl Expect {
    /// Checks names the schema cannot (status codes); on error, the field and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        for status in self.client_status.keys() {
            if status_code(status).is_none() {
                return Err((
                    format!("client_status.{status}"),
                    format!(
                        "expected an HTTP status such as 200 or 429, or \"error\" (got {status:?})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A `client_status` key as a status (`error`: 0, no response).
pub fn status_code(key: &str) -> Option<u16> {
    match key {
        "error" => Some(0),
        k => k.parse::<u16>().ok().filter(|s| (100..600).contains(s)),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latency percentiles (simulated seconds) of a run's client requests.
pub fn latencies(r: &RunResult) -> (f64, f64, f64) {
    let mut l: Vec<f64> = r.clients.iter().map(|c| c.latency).collect();
    l.sort_by(f64::total_cmp);
    (
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(0.0),
    )
}

/// True for a client request the cache answered (hit or coalesced).
pub fn from_cache(c: &ClientRecord) -> bool {
    matches!(c.cache.as_deref(), Some("hit") | Some("coalesced"))
}

/// Keys of mocks that received a request before the `retry-after` they had given on that
/// model, as `mock/key: at t, told to wait r, came back after d`.
pub fn retry_after_violations(r: &RunResult) -> Vec<String> {
    let mut out = Vec::new();
    for mock in &r.mocks {
        let mut last_429: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
        for e in &mock.journal {
            let (Some(key), Some(model)) = (&e.key, &e.model) else {
                continue;
            };
            let slot = (key.clone(), model.clone());
            if let Some((at, wait)) = last_429.get(&slot)
                && e.at + 0.1 < at + wait
            {
                out.push(format!(
                    "{}/{key}: 429 at {at:.1}s said wait {wait}s, next request at {:.1}s",
                    mock.name, e.at
                ));
            }
            if e.status == 429 {
                last_429.insert(slot, (e.at, e.retry_after.unwrap_or(0) as f64));
            } else if e.status != 0 {
                last_429.remove(&slot);
            }
        }
    }
    out
}

/// Evaluates every expectation against a run.
pub fn evaluate(expect: &Expect, r: &RunResult) -> Vec<Verdict> {
    let total = r.clients.len() as f64;
    let mut out = Vec::new();
    for (status, check) in &expect.client_status {
        let code = status_code(status).unwrap_or(0);
        let n = r.clients.iter().filter(|c| c.status == code).count();
        out.push(Verdict::number(
            format!("client_status.{status}"),
            check,
            n as f64,
            total,
        ));
    }
    if let Some(check) = &expect.upstream_429 {
        let n: u64 = r.mocks.iter().map(|m| m.stats.responses(429)).sum();
        out.push(Verdict::number("upstream_429", check, n as f64, total));
    }
    if let Some(expected) = expect.peak_within_limits {
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
        out.push(Verdict::flag(
            "peak_within_limits",
            expected,
            over.is_empty(),
            over.join(", "),
        ));
    }
    let upstream: Vec<&ClientRecord> = r
        .clients
        .iter()
        .filter(|c| c.status == 200 && !from_cache(c))
        .collect();
    for (name, check) in &expect.served_by {
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
        out.push(v);
    }
    let hits = |cs: &[&ClientRecord]| {
        cs.iter()
            .filter(|c| c.cache.as_deref() == Some("hit"))
            .count()
    };
    if let Some(check) = &expect.cache_hit_ratio {
        let all: Vec<&ClientRecord> = r.clients.iter().collect();
        let share = if all.is_empty() {
            0.0
        } else {
            hits(&all) as f64 / all.len() as f64
        };
        out.push(Verdict::number("cache_hit_ratio", check, share, 1.0));
    }
    if let Some(check) = &expect.final_pass_hit_ratio {
        let last: Vec<&ClientRecord> = r.clients.iter().filter(|c| c.pass == r.passes).collect();
        let share = if last.is_empty() {
            0.0
        } else {
            hits(&last) as f64 / last.len() as f64
        };
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
        out.push(Verdict::number(
            "fallbacks",
            check,
            r.fallbacks as f64,
            total,
        ));
    }
    let (p50, p99, max) = latencies(r);
    for (name, check, v) in [
        ("p50_latency", &expect.p50_latency, p50),
        ("p99_latency", &expect.p99_latency, p99),
        ("max_latency", &expect.max_latency, max),
    ] {
        if let Some(check) = check {
            let mut verdict = Verdict::number(name, check, v, 0.0);
            verdict.actual = format!("{}s", trim_number(v));
            out.push(verdict);
        }
    }
    if let Some(check) = &expect.client_retry_after {
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
        out.push(Verdict {
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
        });
    }
    if let Some(expected) = expect.retry_after_honored {
        let violations = retry_after_violations(r);
        let given: u64 = r.mocks.iter().map(|m| m.stats.responses(429)).sum();
        let detail = if violations.is_empty() {
            format!("{given} retry-after given")
        } else {
            violations.join("; ")
        };
        out.push(Verdict::flag(
            "retry_after_honored",
            expected,
            violations.is_empty(),
            detail,
        ));
    }
    if let Some(check) = &expect.makespan {
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
        let span = if first.is_finite() { last - first } else { 0.0 };
        let mut v = Verdict::number("makespan", check, span, 0.0);
        v.actual = format!("{}s", trim_number(span));
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_read_numbers_ratios_and_durations() {
        assert_eq!(
            Check::parse(">= 0.5").unwrap(),
            Check::Compare(vec![(Op::Ge, 0.5)])
        );
        assert_eq!(
            Check::parse("< 2s").unwrap(),
            Check::Compare(vec![(Op::Lt, 2.0)])
        );
        assert_eq!(
            Check::parse("<= 1m").unwrap(),
            Check::Compare(vec![(Op::Le, 60.0)])
        );
        assert_eq!(
            Check::parse("== 25%").unwrap(),
            Check::Compare(vec![(Op::Eq, 0.25)])
        );
        assert_eq!(
            Check::parse("7").unwrap(),
            Check::Compare(vec![(Op::Eq, 7.0)])
        );
        assert_eq!(Check::parse("all").unwrap(), Check::All);
        assert!(Check::parse("lots").is_err());
    }

    #[test]
    fn checks_hold_or_not() {
        assert!(Check::parse("> 0").unwrap().holds(1.0, 10.0));
        assert!(!Check::parse("> 0").unwrap().holds(0.0, 10.0));
        assert!(Check::All.holds(10.0, 10.0));
        assert!(!Check::All.holds(9.0, 10.0));
        assert!(Check::None.holds(0.0, 10.0));
    }

    #[test]
    fn bounds_tables_and_numbers_deserialize() {
        #[derive(Deserialize)]
        struct T {
            a: Check,
            b: Check,
            c: Check,
        }
        let t: T = toml::from_str("a = { max = 0 }\nb = 3\nc = \">= 0.5\"\n").unwrap();
        assert_eq!(t.a, Check::Compare(vec![(Op::Le, 0.0)]));
        assert_eq!(t.b, Check::Compare(vec![(Op::Eq, 3.0)]));
        assert_eq!(t.c.to_string(), ">= 0.5");
    }
}
