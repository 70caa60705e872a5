//! Rolling-window rate limiting per API key and model, as Groq enforces it, and the peaks that
//! make the mock an independent witness of a client's pacing (ARCHITECTURE.md, invariant 1).
//!
//! A unit admitted at clock time `t` counts against a window of length `W` until `t + W`. A
//! request is admitted when, for every limited window, what is in the window plus what the
//! request costs fits the limit. A refusal says exactly when the request would fit.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::{LimitKind, Limits, MockSpec, Quantity, Window};

/// What one request costs, or what a window holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Requests.
    pub requests: u64,
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// The cost of one request with these prompt and completion token counts.
    pub fn request(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            requests: 1,
            tokens: input_tokens + output_tokens,
            input_tokens,
            output_tokens,
        }
    }

    /// One quantity of this usage.
    pub fn get(&self, q: Quantity) -> u64 {
        match q {
            Quantity::Requests => self.requests,
            Quantity::Tokens => self.tokens,
            Quantity::InputTokens => self.input_tokens,
            Quantity::OutputTokens => self.output_tokens,
        }
    }

    fn add(&mut self, other: Usage) {
        self.requests += other.requests;
        self.tokens += other.tokens;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }

    fn sub(&mut self, other: Usage) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.tokens = self.tokens.saturating_sub(other.tokens);
        self.input_tokens = self.input_tokens.saturating_sub(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(other.output_tokens);
    }

    fn max(&mut self, other: Usage) {
        self.requests = self.requests.max(other.requests);
        self.tokens = self.tokens.max(other.tokens);
        self.input_tokens = self.input_tokens.max(other.input_tokens);
        self.output_tokens = self.output_tokens.max(other.output_tokens);
    }
}

/// The state of one limited window as the rate-limit headers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge {
    /// The limit.
    pub limit: u64,
    /// What is left of it now.
    pub remaining: u64,
    /// Clock time until everything now counted has left the window (the limit is whole again).
    pub reset: Duration,
}

/// Every limited window's gauge at one moment, for the response headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    gauges: [Option<Gauge>; 6],
}

impl Snapshot {
    /// The gauge of one limit kind, when that kind is limited.
    pub fn get(&self, kind: LimitKind) -> Option<Gauge> {
        self.gauges[kind_index(kind)]
    }
}

fn kind_index(kind: LimitKind) -> usize {
    match kind {
        LimitKind::RequestsPerMinute => 0,
        LimitKind::TokensPerMinute => 1,
        LimitKind::InputTokensPerMinute => 2,
        LimitKind::OutputTokensPerMinute => 3,
        LimitKind::RequestsPerDay => 4,
        LimitKind::TokensPerDay => 5,
    }
}

/// A refusal: which limit, the figures Groq's message quotes, and when the request would fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The limit that needs the longest wait.
    pub kind: LimitKind,
    /// Its value.
    pub limit: u64,
    /// What the window holds now.
    pub used: u64,
    /// What the request would add.
    pub requested: u64,
    /// Clock time until the request would be admitted (every limit considered).
    pub wait: Duration,
}

/// The limiter's answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Admitted and counted.
    Admit(Snapshot),
    /// Over a limit now; would be admitted after `wait`.
    Deny(Denial, Snapshot),
    /// Larger than a whole token limit: waiting cannot help (Groq answers 413).
    TooLarge {
        /// The token limit the request exceeds on its own.
        kind: LimitKind,
        /// Its value.
        limit: u64,
        /// The request's size.
        requested: u64,
        /// Gauges at the moment of refusal.
        snapshot: Snapshot,
    },
}

#[derive(Clone, Copy, Debug)]
struct Event {
    at: u64,
    usage: Usage,
}

/// One rolling window's log of admitted usage.
#[derive(Debug)]
struct WindowLog {
    span: u64,
    events: VecDeque<Event>,
    used: Usage,
    peak: Usage,
}

impl WindowLog {
    fn new(window: Window) -> Self {
        WindowLog {
            span: micros(window.length()),
            events: VecDeque::new(),
            used: Usage::default(),
            peak: Usage::default(),
        }
    }

    /// Drops what has left the window `(now - span, now]`.
    fn expire(&mut self, now: u64) {
        while let Some(front) = self.events.front() {
            if front.at + self.span <= now {
                self.used.sub(front.usage);
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Microseconds until `cost` more of `q` fits under `limit` (0 when it fits now).
    fn wait_for(&self, now: u64, q: Quantity, limit: u64, cost: u64) -> u64 {
        let used = self.used.get(q);
        if used + cost <= limit {
            return 0;
        }
        let excess = used + cost - limit;
        let mut freed = 0;
        for event in &self.events {
            freed += event.usage.get(q);
            if freed >= excess {
                return (event.at + self.span).saturating_sub(now);
            }
        }
        self.span
    }

    /// Microseconds until nothing of `q` is left in the window.
    fn reset_in(&self, now: u64, q: Quantity) -> u64 {
        self.events
            .iter()
            .rev()
            .find(|e| e.usage.get(q) > 0)
            .map(|e| (e.at + self.span).saturating_sub(now))
            .unwrap_or(0)
    }

    fn push(&mut self, now: u64, usage: Usage) {
        match self.events.back_mut() {
            Some(last) if last.at == now => last.usage.add(usage),
            _ => self.events.push_back(Event { at: now, usage }),
        }
        self.used.add(usage);
        self.peak.max(self.used);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The limits, windows and counters of one (key, model) pair.
#[derive(Debug)]
struct Cell {
    limits: Limits,
    minute: Option<WindowLog>,
    day: Option<WindowLog>,
    latest: u64,
    requests_admitted: u64,
    tokens_admitted: u64,
    by_status: BTreeMap<u16, u64>,
}

impl Cell {
    fn new(limits: Limits) -> Self {
        let has = |kinds: &[LimitKind]| kinds.iter().any(|k| limits.get(*k).is_some());
        let minute = has(&[
            LimitKind::RequestsPerMinute,
            LimitKind::TokensPerMinute,
            LimitKind::InputTokensPerMinute,
            LimitKind::OutputTokensPerMinute,
        ])
        .then(|| WindowLog::new(Window::Minute));
        let day = has(&[LimitKind::RequestsPerDay, LimitKind::TokensPerDay])
            .then(|| WindowLog::new(Window::Day));
        Cell {
            limits,
            minute,
            day,
            latest: 0,
            requests_admitted: 0,
            tokens_admitted: 0,
            by_status: BTreeMap::new(),
        }
    }

    fn log(&self, window: Window) -> Option<&WindowLog> {
        match window {
            Window::Minute => self.minute.as_ref(),
            Window::Day => self.day.as_ref(),
        }
    }

    fn expire(&mut self, now: u64) {
        for log in [self.minute.as_mut(), self.day.as_mut()]
            .into_iter()
            .flatten()
        {
            log.expire(now);
        }
    }

    fn snapshot(&self, now: u64) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for kind in LimitKind::ALL {
            if let (Some(limit), Some(log)) = (self.limits.get(kind), self.log(kind.window())) {
                let q = kind.quantity();
                snapshot.gauges[kind_index(kind)] = Some(Gauge {
                    limit,
                    remaining: limit.saturating_sub(log.used.get(q)),
                    reset: Duration::from_micros(log.reset_in(now, q)),
                });
            }
        }
        snapshot
    }

    fn decide(&mut self, now: u64, cost: Usage) -> Decision {
        // Requests may reach the lock slightly out of order; time never runs backwards here.
        let now = now.max(self.latest);
        self.latest = now;
        self.expire(now);
        for kind in LimitKind::ALL {
            if let Some(limit) = self.limits.get(kind) {
                let requested = cost.get(kind.quantity());
                if kind.quantity() != Quantity::Requests && requested > limit {
                    return Decision::TooLarge {
                        kind,
                        limit,
                        requested,
                        snapshot: self.snapshot(now),
                    };
                }
            }
        }
        let mut worst: Option<Denial> = None;
        for kind in LimitKind::ALL {
            let (Some(limit), Some(log)) = (self.limits.get(kind), self.log(kind.window())) else {
                continue;
            };
            let q = kind.quantity();
            let wait = log.wait_for(now, q, limit, cost.get(q));
            if wait > 0 && worst.is_none_or(|w| Duration::from_micros(wait) > w.wait) {
                worst = Some(Denial {
                    kind,
                    limit,
                    used: log.used.get(q),
                    requested: cost.get(q),
                    wait: Duration::from_micros(wait),
                });
            }
        }
        if let Some(denial) = worst {
            return Decision::Deny(denial, self.snapshot(now));
        }
        for log in [self.minute.as_mut(), self.day.as_mut()]
            .into_iter()
            .flatten()
        {
            log.push(now, cost);
        }
        self.requests_admitted += cost.requests;
        self.tokens_admitted += cost.tokens;
        Decision::Admit(self.snapshot(now))
    }

    fn stats(&self) -> KeyModelStats {
        let mut windows = BTreeMap::new();
        for window in Window::ALL {
            if let Some(log) = self.log(window) {
                windows.insert(
                    window.name().to_string(),
                    WindowPeak {
                        seconds: window.length().as_secs(),
                        peak_requests: log.peak.requests,
                        peak_tokens: log.peak.tokens,
                        peak_input_tokens: log.peak.input_tokens,
                        peak_output_tokens: log.peak.output_tokens,
                    },
                );
            }
        }
        KeyModelStats {
            requests_admitted: self.requests_admitted,
            tokens_admitted: self.tokens_admitted,
            by_status: self.by_status.clone(),
            limits: self.limits,
            windows,
        }
    }
}

/// The most admitted in any window of one length: the figure that shows whether a client paced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowPeak {
    /// The window's length in seconds (60 or 86,400).
    pub seconds: u64,
    /// Most requests admitted in any window of this length.
    pub peak_requests: u64,
    /// Most tokens admitted in any window of this length.
    pub peak_tokens: u64,
    /// Most prompt tokens admitted in any window of this length.
    pub peak_input_tokens: u64,
    /// Most completion tokens admitted in any window of this length.
    pub peak_output_tokens: u64,
}

/// What one key sent for one model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyModelStats {
    /// Requests admitted (counted against the limits).
    pub requests_admitted: u64,
    /// Tokens admitted (prompt plus completion).
    pub tokens_admitted: u64,
    /// Responses by status, admitted or not.
    pub by_status: BTreeMap<u16, u64>,
    /// The limits this key and model run under.
    pub limits: Limits,
    /// Peaks per configured window, by window name (`minute`, `day`).
    pub windows: BTreeMap<String, WindowPeak>,
}

impl KeyModelStats {
    /// Responses with this status.
    pub fn responses(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// True when no window's peak went over its limit.
    pub fn peaks_within_limits(&self) -> bool {
        LimitKind::ALL.iter().all(|kind| {
            let Some(limit) = self.limits.get(*kind) else {
                return true;
            };
            let Some(peak) = self.windows.get(kind.window().name()) else {
                return true;
            };
            let seen = match kind.quantity() {
                Quantity::Requests => peak.peak_requests,
                Quantity::Tokens => peak.peak_tokens,
                Quantity::InputTokens => peak.peak_input_tokens,
                Quantity::OutputTokens => peak.peak_output_tokens,
            };
            seen <= limit
        })
    }
}

/// Every (key, model) pair's limits, windows and counters.
#[derive(Debug)]
pub struct Limiter {
    key_index: HashMap<String, usize>,
    model_index: HashMap<String, usize>,
    keys: Vec<String>,
    models: Vec<String>,
    model_limits: Vec<Limits>,
    cells: Vec<Mutex<Cell>>,
}

impl Limiter {
    /// A limiter for the spec's keys and models, with nothing admitted yet.
    pub fn new(spec: &MockSpec) -> Self {
        let keys = spec.keys.clone();
        let models = spec.models.clone();
        let model_limits: Vec<Limits> = models.iter().map(|m| spec.limits_for(m)).collect();
        let cells = keys
            .iter()
            .flat_map(|_| model_limits.iter().map(|l| Mutex::new(Cell::new(*l))))
            .collect();
        Limiter {
            key_index: keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), i))
                .collect(),
            model_index: models
                .iter()
                .enumerate()
                .map(|(i, m)| (m.clone(), i))
                .collect(),
            keys,
            models,
            model_limits,
            cells,
        }
    }

    /// The index of an accepted key.
    pub fn key_index(&self, key: &str) -> Option<usize> {
        self.key_index.get(key).copied()
    }

    /// The index of a served model.
    pub fn model_index(&self, model: &str) -> Option<usize> {
        self.model_index.get(model).copied()
    }

    /// The name of key number `key`.
    pub fn key_name(&self, key: usize) -> &str {
        &self.keys[key]
    }

    /// The id of model number `model`.
    pub fn model_name(&self, model: usize) -> &str {
        &self.models[model]
    }

    /// Every served model id, in order.
    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// The limits of model number `model`.
    pub fn limits(&self, model: usize) -> Limits {
        self.model_limits[model]
    }

    fn cell(&self, key: usize, model: usize) -> std::sync::MutexGuard<'_, Cell> {
        let cell = &self.cells[key * self.models.len() + model];
        // A panic while holding the lock cannot leave a cell half-updated in a way that matters
        // more than losing the mock, so keep serving.
        cell.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits `cost` for (key, model) at clock time `now`, or says why not.
    pub fn decide(&self, key: usize, model: usize, now: Duration, cost: Usage) -> Decision {
        self.cell(key, model).decide(micros(now), cost)
    }

    /// The gauges of (key, model) at clock time `now`, without admitting anything.
    pub fn snapshot(&self, key: usize, model: usize, now: Duration) -> Snapshot {
        let mut cell = self.cell(key, model);
        let now = micros(now).max(cell.latest);
        cell.expire(now);
        cell.snapshot(now)
    }

    /// Counts a response status for (key, model).
    pub fn note_status(&self, key: usize, model: usize, status: u16) {
        *self.cell(key, model).by_status.entry(status).or_insert(0) += 1;
    }

    /// Per key, per model: counters and peaks.
    pub fn stats(&self) -> BTreeMap<String, BTreeMap<String, KeyModelStats>> {
        let mut out = BTreeMap::new();
        for (k, key) in self.keys.iter().enumerate() {
            let per_model: &mut BTreeMap<String, KeyModelStats> =
                out.entry(key.clone()).or_default();
            for (m, model) in self.models.iter().enumerate() {
                per_model.insert(model.clone(), self.cell(k, m).stats());
            }
        }
        out
    }

    /// Forgets everything admitted and counted.
    pub fn reset(&self) {
        for (i, cell) in self.cells.iter().enumerate() {
            let limits = self.model_limits[i % self.models.len()];
            *cell.lock().unwrap_or_else(|p| p.into_inner()) = Cell::new(limits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limits: Limits) -> Limiter {
        let mut spec = MockSpec {
            keys: vec!["k".into()],
            models: vec!["m".into()],
            ..MockSpec::default()
        };
        spec.limits.insert("m".into(), limits);
        Limiter::new(&spec)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn request_beyond_rpm_is_denied_until_the_oldest_leaves_the_window() {
        let l = limiter(Limits::rpm(2));
        assert!(matches!(
            l.decide(0, 0, S * 10, Usage::request(1, 1)),
            Decision::Admit(_)
        ));
        assert!(matches!(
            l.decide(0, 0, S * 20, Usage::request(1, 1)),
            Decision::Admit(_)
        ));
        match l.decide(0, 0, S * 30, Usage::request(1, 1)) {
            Decision::Deny(d, snap) => {
                assert_eq!(d.kind, LimitKind::RequestsPerMinute);
                assert_eq!((d.limit, d.used, d.requested), (2, 2, 1));
                assert_eq!(d.wait, S * 40, "first request leaves at 70 s");
                let g = snap.get(LimitKind::RequestsPerMinute).expect("limited");
                assert_eq!((g.remaining, g.reset), (0, S * 50));
            }
            other => panic!("expected a denial, got {other:?}"),
        }
        assert!(matches!(
            l.decide(0, 0, S * 70, Usage::request(1, 1)),
            Decision::Admit(_)
        ));
    }

    #[test]
    fn a_unit_used_at_t_counts_until_exactly_t_plus_window() {
        let l = limiter(Limits::rpm(1));
        assert!(matches!(
            l.decide(0, 0, S, Usage::request(0, 0)),
            Decision::Admit(_)
        ));
        let just_before = S * 61 - Duration::from_micros(1);
        assert!(matches!(
            l.decide(0, 0, just_before, Usage::request(0, 0)),
            Decision::Deny(..)
        ));
        assert!(matches!(
            l.decide(0, 0, S * 61, Usage::request(0, 0)),
            Decision::Admit(_)
        ));
    }

    #[test]
    fn token_limit_trips_while_requests_remain() {
        let l = limiter(Limits::rpm(30).with_tpm(1000));
        assert!(matches!(
            l.decide(0, 0, S, Usage::request(500, 300)),
            Decision::Admit(_)
        ));
        match l.decide(0, 0, S * 2, Usage::request(150, 100)) {
            Decision::Deny(d, _) => {
                assert_eq!(d.kind, LimitKind::TokensPerMinute);
                assert_eq!((d.used, d.requested), (800, 250));
            }
            other => panic!("expected a TPM denial, got {other:?}"),
        }
    }

    #[test]
    fn a_request_larger_than_the_whole_token_limit_is_too_large() {
        let l = limiter(Limits::tpm(1000));
        assert!(matches!(
            l.decide(0, 0, S, Usage::request(900, 200)),
            Decision::TooLarge {
                kind: LimitKind::TokensPerMinute,
                requested: 1100,
                ..
            }
        ));
    }

    #[test]
    fn the_longest_wait_among_tripped_limits_is_reported() {
        let l = limiter(Limits::rpm(1).with_rpd(1));
        assert!(matches!(
            l.decide(0, 0, S, Usage::request(1, 1)),
            Decision::Admit(_)
        ));
        match l.decide(0, 0, S * 2, Usage::request(1, 1)) {
            Decision::Deny(d, _) => {
                assert_eq!(d.kind, LimitKind::RequestsPerDay);
                assert_eq!(d.wait, Duration::from_secs(86_400) - S);
            }
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn peaks_record_the_fullest_window() {
        let l = limiter(Limits::rpm(3));
        for t in [1, 2, 3, 70, 71] {
            let _ = l.decide(0, 0, S * t, Usage::request(10, 5));
        }
        let stats = l.stats();
        let s = &stats["k"]["m"];
        assert_eq!(s.windows["minute"].peak_requests, 3);
        assert_eq!(s.windows["minute"].peak_tokens, 45);
        assert!(s.peaks_within_limits());
        assert_eq!(s.requests_admitted, 5);
    }
}
