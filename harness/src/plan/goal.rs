//! The goal a candidate must meet (`--goal 'client_429 == 0 && wait_p99 <= 2s'`): terms joined
//! by `&&`, each a metric and a check written as `[expect]` writes one (`== 0`, `<= 2s`, `< 5`,
//! `none`; read by [`crate::expect::Check::parse`]).
//!
//! Every metric here can only fall as keys are added, so a goal may only bound it from above;
//! that is what makes the search sound, and what lets a run stop as soon as the answers so
//! far prove a term broken (the first client 429 under `client_429 == 0`).

use serde::Serialize;

use crate::expect::{Check, Op, trim_number};
use crate::record::{ClientRecord, RunResult};

/// What a goal term measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Client responses with status 429.
    Client429,
    /// Client requests that got neither a 200 nor a 429 (no answer, another status).
    ClientErrors,
    /// 429s the mocks sent, over every key.
    Upstream429,
    /// Times the proxy moved a request to another key or target after a failed attempt.
    Fallbacks,
    /// Median client wait: sent to answered (simulated seconds).
    WaitP50,
    /// 99th-percentile client wait (simulated seconds).
    WaitP99,
    /// Longest client wait (simulated seconds).
    WaitMax,
}

impl Metric {
    /// Every metric, as `--goal` names it.
    pub const ALL: [(&'static str, Metric); 7] = [
        ("client_429", Metric::Client429),
        ("client_errors", Metric::ClientErrors),
        ("upstream_429", Metric::Upstream429),
        ("fallbacks", Metric::Fallbacks),
        ("wait_p50", Metric::WaitP50),
        ("wait_p99", Metric::WaitP99),
        ("wait_max", Metric::WaitMax),
    ];

    /// The name `--goal` uses.
    pub fn name(self) -> &'static str {
        Metric::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }

    /// The quantile of client waits this metric is (p50, p99, max), if it is one.
    fn quantile(self) -> Option<f64> {
        match self {
            Metric::WaitP50 => Some(0.5),
            Metric::WaitP99 => Some(0.99),
            Metric::WaitMax => Some(1.0),
            _ => None,
        }
    }

    /// True for a duration (shown with its unit).
    pub fn is_wait(self) -> bool {
        self.quantile().is_some()
    }

    /// This metric's value over a run (on what was answered, for a run stopped early).
    pub fn of(self, r: &RunResult) -> f64 {
        let (p50, p99, max) = r.latencies();
        match self {
            Metric::Client429 => r.clients.iter().filter(|c| c.status == 429).count() as f64,
            Metric::ClientErrors => r.clients.iter().filter(|c| is_error(c)).count() as f64,
            Metric::Upstream429 => {
                r.mocks.iter().map(|m| m.stats.responses(429)).sum::<u64>() as f64
            }
            Metric::Fallbacks => r.fallbacks as f64,
            Metric::WaitP50 => p50,
            Metric::WaitP99 => p99,
            Metric::WaitMax => max,
        }
    }

    /// A value of this metric, readably (`3`, `1.25s`).
    pub fn show(self, v: f64) -> String {
        if self.is_wait() {
            format!("{}s", trim_number((v * 100.0).round() / 100.0))
        } else {
            trim_number(v)
        }
    }
}

/// Neither a 200 nor a 429.
fn is_error(c: &ClientRecord) -> bool {
    c.status != 200 && c.status != 429
}

/// One term of a goal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Term {
    /// What it measures.
    pub metric: Metric,
    /// The bound, as `[expect]` writes it.
    #[serde(serialize_with = "as_text")]
    pub check: Check,
}

fn as_text<S: serde::Serializer>(check: &Check, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&check.to_string())
}

impl Term {
    /// The term as written back (`client_429 == 0`).
    pub fn text(&self) -> String {
        let check = self.check.to_string();
        match self.check {
            Check::Compare(_) if self.metric.is_wait() => {
                let parts: Vec<String> = check.split(" and ").map(|p| format!("{p}s")).collect();
                format!("{} {}", self.metric.name(), parts.join(" and "))
            }
            _ => format!("{} {check}", self.metric.name()),
        }
    }

    /// Whether a value meets it.
    pub fn holds(&self, v: f64) -> bool {
        self.check.holds(v, 0.0)
    }
}

/// A goal: every term must hold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goal {
    /// Its terms, as given.
    pub terms: Vec<Term>,
}

/// The goal when none is given: no client ever sees a 429.
pub const DEFAULT_GOAL: &str = "client_429 == 0";

impl Goal {
    /// Reads `METRIC CHECK && METRIC CHECK ...`.
    pub fn parse(text: &str) -> Result<Goal, String> {
        let terms = text
            .split("&&")
            .map(parse_term)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Goal { terms })
    }

    /// The goal as written back.
    pub fn text(&self) -> String {
        let parts: Vec<String> = self.terms.iter().map(Term::text).collect();
        parts.join(" && ")
    }

    /// Each term's value over a run, and whether it held.
    pub fn evaluate(&self, r: &RunResult) -> Vec<TermOutcome> {
        self.terms
            .iter()
            .map(|t| {
                let actual = t.metric.of(r);
                TermOutcome {
                    term: t.text(),
                    actual: t.metric.show(actual),
                    value: actual,
                    pass: t.holds(actual),
                }
            })
            .collect()
    }
}

/// One term held against a run.
#[derive(Clone, Debug, Serialize)]
pub struct TermOutcome {
    /// The term, as written.
    pub term: String,
    /// What the run produced, readably.
    pub actual: String,
    /// What the run produced, as a number (seconds for waits).
    pub value: f64,
    /// Whether it held.
    pub pass: bool,
}

fn parse_term(text: &str) -> Result<Term, String> {
    let t = text.trim();
    let end = t
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '='))
        .unwrap_or(t.len());
    let (name, check) = (&t[..end], t[end..].trim());
    let known = || {
        let names: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
        names.join(", ")
    };
    let metric = Metric::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            format!(
                "goal term {t:?}: unknown metric {name:?} (known: {})",
                known()
            )
        })?;
    if check.is_empty() {
        return Err(format!(
            "goal term {t:?}: expected METRIC CHECK, such as \"client_429 == 0\" or \"wait_p99 <= 2s\""
        ));
    }
    let check = Check::parse(check).map_err(|e| format!("goal term {t:?}: {e}"))?;
    if !bounds_from_above(&check) {
        return Err(format!(
            "goal term {t:?}: a goal bounds what more keys can only lower: write it with <, <=, == 0 or none"
        ));
    }
    Ok(Term { metric, check })
}

/// True when the check only fails for values above some bound (so a value that fails it stays
/// failed as the count grows).
fn bounds_from_above(check: &Check) -> bool {
    match check {
        Check::None => true,
        Check::All => false,
        Check::Compare(conds) => conds
            .iter()
            .all(|(op, v)| matches!(op, Op::Lt | Op::Le) || (*op == Op::Eq && *v == 0.0)),
    }
}

/// Watches a run's answers as they arrive and says when the goal is broken for good, whatever
/// the rest of the answers are.
#[derive(Debug)]
pub struct Watch<'a> {
    goal: &'a Goal,
    total: usize,
    seen: usize,
    client_429: u64,
    errors: u64,
    fallbacks: u64,
    /// Per term: answers whose wait already fails it.
    slow: Vec<usize>,
    /// The first term found broken, and after how many answers.
    pub broken: Option<String>,
}

impl<'a> Watch<'a> {
    /// A watch over a run of `total` requests.
    pub fn new(goal: &'a Goal, total: usize) -> Self {
        Watch {
            goal,
            total,
            seen: 0,
            client_429: 0,
            errors: 0,
            fallbacks: 0,
            slow: vec![0; goal.terms.len()],
            broken: None,
        }
    }

    /// Takes one answer; false once the goal is broken for good.
    pub fn see(&mut self, r: &ClientRecord) -> bool {
        self.seen += 1;
        self.client_429 += u64::from(r.status == 429);
        self.errors += u64::from(is_error(r));
        if !r.from_cache() {
            self.fallbacks += u64::from(r.attempts.saturating_sub(1));
        }
        for (i, term) in self.goal.terms.iter().enumerate() {
            if term.metric.is_wait() && !term.holds(r.latency) {
                self.slow[i] += 1;
            }
            if self.broken.is_none() && self.breaks(i, term) {
                self.broken = Some(format!(
                    "{} broken after {} of {} answers",
                    term.text(),
                    self.seen,
                    self.total
                ));
            }
        }
        self.broken.is_none()
    }

    /// True when term `i` fails whatever the answers still to come: a count only grows, and a
    /// wait quantile fails once more answers fail its bound than can sit above that quantile.
    fn breaks(&self, i: usize, term: &Term) -> bool {
        let count = match term.metric {
            Metric::Client429 => self.client_429,
            Metric::ClientErrors => self.errors,
            Metric::Fallbacks => self.fallbacks,
            // Seen only from the mocks' side, at the end.
            Metric::Upstream429 => return false,
            wait => {
                let q = wait.quantile().unwrap_or(1.0);
                // The quantile is the answer at this index of the sorted waits
                // (`RunResult::latencies`); it fails once `total - index` answers do.
                let index = ((self.total.max(1) - 1) as f64 * q).round() as usize;
                return self.slow[i] > 0 && self.slow[i] >= self.total - index.min(self.total);
            }
        };
        !term.holds(count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, latency: f64) -> ClientRecord {
        ClientRecord {
            status,
            latency,
            attempts: 1,
            ..ClientRecord::default()
        }
    }

    #[test]
    fn goals_read_metrics_and_expect_style_checks() {
        let g = Goal::parse("client_429 == 0 && wait_p99 <= 2s").unwrap();
        assert_eq!(g.terms.len(), 2);
        assert_eq!(g.terms[1].metric, Metric::WaitP99);
        assert!(g.terms[1].holds(2.0) && !g.terms[1].holds(2.01));
        assert_eq!(g.text(), "client_429 == 0 && wait_p99 <= 2s");
        assert!(Goal::parse("upstream_429 < 5 && fallbacks none").is_ok());
    }

    #[test]
    fn a_wrong_goal_says_what_is_wrong() {
        let unknown = Goal::parse("client_428 == 0").unwrap_err();
        assert!(
            unknown.contains("unknown metric") && unknown.contains("client_429"),
            "{unknown}"
        );
        let lower = Goal::parse("client_429 >= 1").unwrap_err();
        assert!(lower.contains("<, <="), "{lower}");
        assert!(Goal::parse("client_429 == 3").is_err());
        assert!(Goal::parse("wait_p99").is_err());
        assert!(Goal::parse("wait_p99 <= soon").is_err());
    }

    #[test]
    fn the_first_client_429_breaks_a_zero_goal() {
        let g = Goal::parse("client_429 == 0").unwrap();
        let mut w = Watch::new(&g, 10);
        assert!(w.see(&answer(200, 0.1)));
        assert!(!w.see(&answer(429, 0.1)));
        assert!(w.broken.as_deref().unwrap().contains("after 2 of 10"));
    }

    #[test]
    fn a_quantile_breaks_once_too_many_waits_exceed_it() {
        // Of 100 waits, p99 is the 99th smallest (index 98): two slow answers break it.
        let g = Goal::parse("wait_p99 <= 2s").unwrap();
        let mut w = Watch::new(&g, 100);
        assert!(w.see(&answer(200, 5.0)));
        assert!(!w.see(&answer(200, 5.0)));
        let max = Goal::parse("wait_max < 1s").unwrap();
        let mut w = Watch::new(&max, 100);
        assert!(w.see(&answer(200, 0.5)));
        assert!(!w.see(&answer(200, 1.0)));
        let upstream = Goal::parse("upstream_429 == 0").unwrap();
        let mut w = Watch::new(&upstream, 3);
        assert!(
            w.see(&answer(429, 0.0)),
            "upstream 429s are counted at the end"
        );
    }
}
