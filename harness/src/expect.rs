//! Expectations as a scenario file writes them: the `[expect]` table and its small, regular
//! vocabulary of checks. Each expectation names what it compares; [`crate::verdict`] holds them
//! against a run, so reading a scenario needs nothing of how a run is recorded.
//!
//! A check is written as a comparison string (`">= 0.5"`, `"< 2s"`, `"== 0"`), a table of
//! bounds (`{ min = 1, max = 10 }`), a bare number (exactly that), or, for counts, `"all"` /
//! `"none"`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

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
    /// Requests the mocks received, over every key (what the traffic cost upstream).
    pub upstream_requests: Option<Check>,
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
    /// Every client 429's `retry-after` (wall-clock seconds, as a client reads it).
    pub client_retry_after: Option<Check>,
    /// No request reached a key before the `retry-after` the key had given.
    pub retry_after_honored: Option<bool>,
    /// First request sent to last response received (simulated time).
    pub makespan: Option<Check>,
    /// How long each gateway of a fleet went on its own share of the limits, its Redis out
    /// of reach (simulated time): every gateway's must pass.
    pub fleet_degraded: Option<Check>,
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

/// The expectations `replay` takes: the `[expect]` table of `file` (its text and its name, for
/// errors; any other table in it is ignored, so a scenario file serves), then each `--expect`
/// expression over it (an expression replaces the file's check of the same name).
pub fn from_cli(file: Option<(&str, &str)>, expressions: &[String]) -> Result<Expect, String> {
    let mut table = match file {
        Some((text, name)) => {
            let mut whole: toml::Table =
                toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
            match whole.remove("expect") {
                Some(toml::Value::Table(t)) => t,
                _ => return Err(format!("{name}: no [expect] table")),
            }
        }
        None => toml::Table::new(),
    };
    for text in expressions {
        let (path, value) = parse_expression(text)?;
        let mut slot = &mut table;
        for part in &path[..path.len() - 1] {
            let entry = slot
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            slot = entry
                .as_table_mut()
                .ok_or_else(|| format!("--expect {text:?}: {part} takes no sub-name"))?;
        }
        slot.insert(path[path.len() - 1].clone(), value);
    }
    let expect: Expect = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())?;
    expect
        .check()
        .map_err(|(field, message)| format!("{field}: {message}"))?;
    Ok(expect)
}

/// One `--expect` expression, `NAME CHECK`: the name an expectation's verdict prints
/// (`client_status.429`, `served_by.groq#2`, `upstream_429`), then its check as `[expect]`
/// writes it (`== 0`, `<= 2s`, `all`, `true` for the yes/no ones). Returns the name's parts
/// (a table and a key, or one field) and the value `[expect]` would hold.
pub fn parse_expression(text: &str) -> Result<(Vec<String>, toml::Value), String> {
    let t = text.trim();
    let end = t
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '='))
        .unwrap_or(t.len());
    let (name, check) = (&t[..end], t[end..].trim());
    if name.is_empty() || check.is_empty() {
        return Err(format!(
            "--expect {text:?}: expected NAME CHECK, such as \"client_status.429 == 0\" or \"upstream_429 <= 3\""
        ));
    }
    let value = match check.trim_start_matches('=').trim() {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => {
            Check::parse(check).map_err(|e| format!("--expect {text:?}: {e}"))?;
            toml::Value::String(check.to_string())
        }
    };
    let path = match name.split_once('.') {
        Some((table, key)) => vec![table.to_string(), key.to_string()],
        None => vec![name.to_string()],
    };
    Ok((path, value))
}

impl Expect {
    /// The expectations set here that read the mocks' side or the proxy's counters, which a run
    /// against a proxy already running (`replay --against`) cannot see.
    pub fn beyond_the_client(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.upstream_429.is_some() {
            out.push("upstream_429");
        }
        if self.upstream_requests.is_some() {
            out.push("upstream_requests");
        }
        if self.peak_within_limits.is_some() {
            out.push("peak_within_limits");
        }
        if self.retry_after_honored.is_some() {
            out.push("retry_after_honored");
        }
        if self.fallbacks.is_some() {
            out.push("fallbacks");
        }
        if self.fleet_degraded.is_some() {
            out.push("fleet_degraded");
        }
        out
    }

    /// True when nothing is expected: a run checked against it proves nothing.
    pub fn is_empty(&self) -> bool {
        self.client_status.is_empty()
            && self.served_by.is_empty()
            && self.upstream_429.is_none()
            && self.upstream_requests.is_none()
            && self.peak_within_limits.is_none()
            && self.cache_hit_ratio.is_none()
            && self.final_pass_hit_ratio.is_none()
            && self.coalesced.is_none()
            && self.fallbacks.is_none()
            && self.p50_latency.is_none()
            && self.p99_latency.is_none()
            && self.max_latency.is_none()
            && self.client_retry_after.is_none()
            && self.retry_after_honored.is_none()
            && self.makespan.is_none()
            && self.fleet_degraded.is_none()
    }
}

/// A `client_status` key as a status (`error`: 0, no response).
pub fn status_code(key: &str) -> Option<u16> {
    match key {
        "error" => Some(0),
        k => k.parse::<u16>().ok().filter(|s| (100..600).contains(s)),
    }
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

    #[test]
    fn expressions_and_a_file_make_one_table() {
        let file = "name = \"x\"\n[expect]\nupstream_429 = 0\nclient_status = { 200 = \"all\" }\n";
        let e = from_cli(
            Some((file, "x.toml")),
            &[
                "client_status.429 == 0".into(),
                "upstream_429 <= 3".into(),
                "served_by.groq#2 > 0".into(),
                "peak_within_limits true".into(),
                "p99_latency<2s".into(),
            ],
        )
        .unwrap();
        assert_eq!(e.client_status["200"], Check::All);
        assert_eq!(e.client_status["429"], Check::Compare(vec![(Op::Eq, 0.0)]));
        assert_eq!(e.upstream_429, Some(Check::Compare(vec![(Op::Le, 3.0)])));
        assert_eq!(e.served_by["groq#2"], Check::Compare(vec![(Op::Gt, 0.0)]));
        assert_eq!(e.peak_within_limits, Some(true));
        assert_eq!(e.p99_latency, Some(Check::Compare(vec![(Op::Lt, 2.0)])));
        assert!(!e.is_empty());
        assert!(from_cli(None, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_wrong_expression_is_an_error_naming_it() {
        for bad in [
            "client_429 == 0",
            "upstream_429",
            "client_status.abc == 1",
            "upstream_429 lots",
        ] {
            let e = from_cli(None, &[bad.to_string()]).expect_err(bad);
            assert!(!e.is_empty(), "{bad}");
        }
        let e = from_cli(Some(("[traffic]\n", "f.toml")), &[]).expect_err("no [expect]");
        assert!(e.contains("no [expect] table"), "{e}");
    }
}
