//! What spillway knows about one provider key's use of one model: its limits (configured, or
//! learned from headers and 429 messages), a rolling log of what it sent (estimates, corrected
//! from `usage` when answers arrive), usage the provider reports that spillway did not send, and
//! any block a 429 imposed. Keeps DESIGN.md invariant 1 with [`super::pacer`].
//!
//! Times are microseconds of clock time. The log groups sends into buckets of 1/6000 of the
//! window (10 ms for a minute) stamped with the bucket's end, so a send is forgotten no earlier
//! than the provider forgets it and memory stays bounded.

use std::collections::VecDeque;
use std::time::Duration;

use crate::limits::headers::RateLimitSnapshot;
use crate::limits::kind::{Cost, Kind, Limits, Window};

/// Microseconds of a duration, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

const BUCKETS_PER_WINDOW: u64 = 6000;

/// Logs keep their stamps this far ahead of clock time, so usage reported at clock time 0 can
/// still be back-dated by up to a day.
const OFFSET: u64 = 2 * 86_400 * 1_000_000;

/// A rolling log of usage over one window length.
#[derive(Debug, Clone)]
struct Log {
    span: u64,
    bucket: u64,
    events: VecDeque<(u64, Cost)>,
    used: Cost,
}

fn add(a: &mut Cost, b: &Cost) {
    a.requests += b.requests;
    a.input_tokens += b.input_tokens;
    a.output_tokens += b.output_tokens;
}

fn sub(a: &mut Cost, b: &Cost) {
    a.requests = a.requests.saturating_sub(b.requests);
    a.input_tokens = a.input_tokens.saturating_sub(b.input_tokens);
    a.output_tokens = a.output_tokens.saturating_sub(b.output_tokens);
}

impl Log {
    fn new(window: Window) -> Self {
        let span = micros(window.length());
        Log {
            span,
            bucket: span / BUCKETS_PER_WINDOW,
            events: VecDeque::new(),
            used: Cost::default(),
        }
    }

    fn expire(&mut self, now: u64) {
        let now = now + OFFSET;
        while let Some((at, cost)) = self.events.front() {
            if at + self.span <= now {
                sub(&mut self.used, cost);
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Adds usage at `now`; returns the stamp to settle it by.
    fn push(&mut self, now: u64, cost: &Cost) -> u64 {
        let at = (now + OFFSET).div_ceil(self.bucket) * self.bucket;
        match self.events.back_mut() {
            Some((last, c)) if *last == at => add(c, cost),
            Some((last, _)) if *last > at => return self.insert(at, cost),
            _ => self.events.push_back((at, *cost)),
        }
        add(&mut self.used, cost);
        at
    }

    /// Adds usage that leaves the window `expires_in` µs after `now` (usage reported by the
    /// provider, back-dated so that it leaves when the provider says it will).
    fn insert_expiring(&mut self, now: u64, expires_in: u64, cost: &Cost) {
        let at = now + OFFSET + expires_in.min(self.span) - self.span;
        self.insert(at.max(now + OFFSET - self.span + 1), cost);
    }

    /// Adds usage stamped `at` (offset time) in its place.
    fn insert(&mut self, at: u64, cost: &Cost) -> u64 {
        let pos = self.events.partition_point(|(t, _)| *t <= at);
        if pos > 0 && self.events[pos - 1].0 == at {
            add(&mut self.events[pos - 1].1, cost);
        } else {
            self.events.insert(pos, (at, *cost));
        }
        add(&mut self.used, cost);
        at
    }

    /// Replaces `from` by `to` in the bucket stamped `at`, if it is still in the window.
    fn adjust(&mut self, at: u64, from: &Cost, to: &Cost) {
        if let Ok(pos) = self.events.binary_search_by_key(&at, |(t, _)| *t) {
            let c = &mut self.events[pos].1;
            sub(c, from);
            add(c, to);
            sub(&mut self.used, from);
            add(&mut self.used, to);
        }
    }

    /// Microseconds from `now` until `amount` more of `kind` fits under `limit`; `None` when it
    /// never will (it is larger than the limit).
    fn wait_for(&self, now: u64, kind: Kind, limit: u64, amount: u64) -> Option<u64> {
        if amount > limit {
            return None;
        }
        let now = now + OFFSET;
        let used = kind.amount(&self.used);
        if used + amount <= limit {
            return Some(0);
        }
        let excess = used + amount - limit;
        let mut freed = 0;
        for (at, cost) in &self.events {
            freed += kind.amount(cost);
            if freed >= excess {
                return Some((at + self.span).saturating_sub(now));
            }
        }
        Some(self.span)
    }
}

/// Where a send is recorded, so its estimate can be corrected or released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    minute: u64,
    day: Option<u64>,
    /// What was reserved.
    pub cost: Cost,
}

/// When a key could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Now.
    Now,
    /// At this clock time (µs).
    At(u64),
    /// When one of its requests in flight finishes (limits unknown: probing one at a time).
    WhenSettled,
    /// Never: the request is larger than this limit.
    TooLarge(Kind),
}

/// One key's limit state for one model.
#[derive(Debug, Clone)]
pub struct KeyModelLimits {
    configured: Limits,
    learned: Limits,
    minute: Log,
    day: Option<Log>,
    blocked_until: u64,
    blocked_by: Option<Kind>,
    in_flight: u32,
}

impl KeyModelLimits {
    /// State for a key whose configured limits are `configured` (possibly none).
    pub fn new(configured: Limits) -> Self {
        let has_day = configured.get(Kind::RequestsPerDay).is_some()
            || configured.get(Kind::TokensPerDay).is_some();
        KeyModelLimits {
            configured,
            learned: Limits::default(),
            minute: Log::new(Window::Minute),
            day: has_day.then(|| Log::new(Window::Day)),
            blocked_until: 0,
            blocked_by: None,
            in_flight: 0,
        }
    }

    /// The limits in force: for each kind, the smaller of configured and learned.
    pub fn known(&self) -> Limits {
        let mut out = Limits::default();
        for kind in Kind::ALL {
            let v = match (self.configured.get(kind), self.learned.get(kind)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.set(kind, v);
        }
        out
    }

    fn log(&self, window: Window) -> Option<&Log> {
        match window {
            Window::Minute => Some(&self.minute),
            Window::Day => self.day.as_ref(),
        }
    }

    /// Whether any limit in force counts tokens (then requests need a prompt estimate).
    pub fn counts_tokens(&self) -> bool {
        self.known().iter().any(|(kind, _)| !kind.counts_requests())
    }

    /// Forgets what has left the windows at `now`.
    pub fn expire(&mut self, now: u64) {
        self.minute.expire(now);
        if let Some(day) = &mut self.day {
            day.expire(now);
        }
    }

    /// Requests sent and not yet settled.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// When (clock µs) a block imposed by a 429 lifts, and which limit it named.
    pub fn blocked(&self) -> (u64, Option<Kind>) {
        (self.blocked_until, self.blocked_by)
    }

    /// When this key could send `cost` (call [`Self::expire`] first). `probe_cap` limits requests
    /// in flight while requests per minute are unknown (0: no cap). `calibrating`: the target
    /// has not yet reported how it counts tokens, so while a token limit is known one request at
    /// a time goes, and its `usage` calibrates the estimate before the next.
    pub fn readiness(&self, now: u64, cost: &Cost, probe_cap: u32, calibrating: bool) -> Readiness {
        let known = self.known();
        let mut at = self.blocked_until.max(now);
        for (kind, limit) in known.iter() {
            let Some(log) = self.log(kind.window()) else {
                continue;
            };
            match log.wait_for(now, kind, limit, kind.amount(cost)) {
                None => return Readiness::TooLarge(kind),
                Some(wait) => at = at.max(now + wait),
            }
        }
        if at > now {
            return Readiness::At(at);
        }
        if probe_cap > 0
            && known.get(Kind::RequestsPerMinute).is_none()
            && self.in_flight >= probe_cap
        {
            return Readiness::WhenSettled;
        }
        let counts_tokens = known.iter().any(|(kind, _)| !kind.counts_requests());
        if calibrating && counts_tokens && self.in_flight >= 1 {
            return Readiness::WhenSettled;
        }
        Readiness::Now
    }

    /// The limit (or block) that keeps `cost` waiting longest at `now`, if any does.
    pub fn binding(&self, now: u64, cost: &Cost) -> Option<Kind> {
        let mut worst = (self.blocked_until, self.blocked_by);
        for (kind, limit) in self.known().iter() {
            let Some(log) = self.log(kind.window()) else {
                continue;
            };
            if let Some(wait) = log.wait_for(now, kind, limit, kind.amount(cost))
                && now + wait > worst.0
            {
                worst = (now + wait, Some(kind));
            }
        }
        if worst.0 > now { worst.1 } else { None }
    }

    /// The smallest share left of any known limit (1.0 when none is known): how much room the
    /// key has, for choosing among keys.
    pub fn headroom(&self) -> f64 {
        self.known()
            .iter()
            .filter_map(|(kind, limit)| {
                let log = self.log(kind.window())?;
                let used = kind.amount(&log.used);
                Some(limit.saturating_sub(used) as f64 / limit as f64)
            })
            .fold(1.0, f64::min)
    }

    /// Requests counted in the minute window (own sends and provider-reported ones).
    pub fn recent_requests(&self) -> u64 {
        self.minute.used.requests
    }

    /// What is left of a known limit now (after [`Self::expire`]).
    pub fn remaining(&self, kind: Kind) -> Option<u64> {
        let limit = self.known().get(kind)?;
        let log = self.log(kind.window())?;
        Some(limit.saturating_sub(kind.amount(&log.used)))
    }

    /// Records a send of `cost` at `now`.
    pub fn reserve(&mut self, now: u64, cost: Cost) -> Reservation {
        self.in_flight += 1;
        Reservation {
            minute: self.minute.push(now, &cost),
            day: self.day.as_mut().map(|d| d.push(now, &cost)),
            cost,
        }
    }

    /// Re-stamps a send at `now`, when its answer arrived: the provider counted it at some
    /// moment between sending and answering, so counting it from the answer on never forgets it
    /// before the provider does (transit time matters at scaled time).
    pub fn confirm(&mut self, reservation: &mut Reservation, now: u64) {
        let cost = reservation.cost;
        let zero = Cost::default();
        self.minute.adjust(reservation.minute, &cost, &zero);
        reservation.minute = self.minute.push(now, &cost);
        if let (Some(day), Some(at)) = (self.day.as_mut(), reservation.day) {
            day.adjust(at, &cost, &zero);
            reservation.day = Some(day.push(now, &cost));
        }
    }

    /// Settles a send: `Some(actual)` replaces the estimate with what the provider counted;
    /// `None` releases it (the provider did not count it).
    pub fn settle(&mut self, reservation: Reservation, actual: Option<Cost>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let to = actual.unwrap_or_default();
        self.minute
            .adjust(reservation.minute, &reservation.cost, &to);
        if let (Some(day), Some(at)) = (self.day.as_mut(), reservation.day) {
            day.adjust(at, &reservation.cost, &to);
        }
    }

    /// Blocks the key until `until` (clock µs) because the provider refused with a 429.
    pub fn block(&mut self, until: u64, kind: Option<Kind>) {
        if until > self.blocked_until {
            self.blocked_until = until;
            self.blocked_by = kind;
        }
    }

    /// Learns a limit (from a header or a 429 message).
    pub fn learn(&mut self, kind: Kind, limit: u64) {
        if limit == 0 {
            return;
        }
        self.learned.set(kind, Some(limit));
        if kind.window() == Window::Day && self.day.is_none() {
            self.day = Some(Log::new(Window::Day));
        }
    }

    /// Keeps in step with what a response said at `now`: learns reported limits, and counts
    /// usage the provider reports but spillway did not send (other clients of the key, or
    /// another proxy) until the provider's reset.
    pub fn observe(&mut self, now: u64, snapshot: &RateLimitSnapshot) {
        self.expire(now);
        for reading in &snapshot.readings {
            if let Some(limit) = reading.limit {
                self.learn(reading.kind, limit);
            }
            let (Some(limit), Some(remaining)) =
                (self.known().get(reading.kind), reading.remaining)
            else {
                continue;
            };
            let window = reading.kind.window();
            let span = micros(window.length());
            let provider_used = limit.saturating_sub(remaining);
            let Some(log) = self.log(window) else {
                continue;
            };
            let own = reading.kind.amount(&log.used);
            if provider_used <= own {
                continue;
            }
            let extra = provider_used - own;
            let expires_in = reading.reset.map(micros).unwrap_or(span);
            let cost = if reading.kind.counts_requests() {
                Cost {
                    requests: extra,
                    ..Cost::default()
                }
            } else {
                Cost {
                    input_tokens: extra,
                    ..Cost::default()
                }
            };
            match window {
                Window::Minute => self.minute.insert_expiring(now, expires_in, &cost),
                Window::Day => {
                    if let Some(day) = self.day.as_mut() {
                        day.insert_expiring(now, expires_in, &cost);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::headers::Reading;

    const S: u64 = 1_000_000;

    fn rpm(n: u64) -> Limits {
        Limits::default().with(Kind::RequestsPerMinute, n)
    }

    #[test]
    fn a_full_window_says_when_the_oldest_send_leaves() {
        let mut k = KeyModelLimits::new(rpm(2));
        let one = Cost::request(10, 10);
        k.reserve(0, one);
        k.reserve(10 * S, one);
        assert_eq!(k.readiness(20 * S, &one, 1, false), Readiness::At(60 * S));
        k.expire(60 * S);
        assert_eq!(k.readiness(60 * S, &one, 1, false), Readiness::Now);
    }

    #[test]
    fn settling_replaces_the_estimate_with_the_actual_count() {
        let mut k = KeyModelLimits::new(Limits::default().with(Kind::TokensPerMinute, 1000));
        let r = k.reserve(0, Cost::request(100, 800));
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(100));
        k.settle(r, Some(Cost::request(100, 50)));
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(850));
        let r = k.reserve(S, Cost::request(10, 10));
        k.settle(r, None);
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(850));
        assert_eq!(k.in_flight(), 0);
    }

    #[test]
    fn a_confirmed_send_counts_from_its_answer() {
        let mut k = KeyModelLimits::new(rpm(1));
        let one = Cost::request(1, 1);
        let mut r = k.reserve(0, one);
        k.confirm(&mut r, 2 * S);
        k.settle(r, Some(one));
        k.expire(60 * S);
        assert_eq!(k.readiness(60 * S, &one, 1, false), Readiness::At(62 * S));
    }

    #[test]
    fn too_large_for_a_limit_is_never_ready() {
        let k = KeyModelLimits::new(Limits::default().with(Kind::TokensPerMinute, 100));
        assert_eq!(
            k.readiness(0, &Cost::request(90, 20), 1, false),
            Readiness::TooLarge(Kind::TokensPerMinute)
        );
    }

    #[test]
    fn unknown_request_limits_probe_one_at_a_time() {
        let mut k = KeyModelLimits::new(Limits::default());
        let c = Cost::request(1, 1);
        let r = k.reserve(0, c);
        assert_eq!(k.readiness(0, &c, 1, false), Readiness::WhenSettled);
        assert_eq!(
            k.readiness(0, &c, 0, false),
            Readiness::Now,
            "cap 0: no probing"
        );
        k.settle(r, Some(c));
        assert_eq!(k.readiness(0, &c, 1, false), Readiness::Now);
        k.learn(Kind::RequestsPerMinute, 30);
        k.reserve(0, c);
        assert_eq!(
            k.readiness(0, &c, 1, false),
            Readiness::Now,
            "known limits pace instead"
        );
    }

    #[test]
    fn an_uncalibrated_target_with_token_limits_sends_one_at_a_time() {
        let mut k = KeyModelLimits::new(rpm(30).with(Kind::TokensPerMinute, 10_000));
        let c = Cost::request(100, 100);
        assert_eq!(k.readiness(0, &c, 1, true), Readiness::Now);
        let r = k.reserve(0, c);
        assert_eq!(k.readiness(0, &c, 1, true), Readiness::WhenSettled);
        assert_eq!(
            k.readiness(0, &c, 1, false),
            Readiness::Now,
            "calibrated: pace freely"
        );
        k.settle(r, Some(c));
        assert_eq!(k.readiness(0, &c, 1, true), Readiness::Now);
        let only_requests = KeyModelLimits::new(rpm(30));
        let mut busy = only_requests.clone();
        busy.reserve(0, c);
        assert_eq!(
            busy.readiness(0, &c, 1, true),
            Readiness::Now,
            "no token limit: nothing to calibrate"
        );
    }

    #[test]
    fn provider_reported_usage_counts_until_its_reset() {
        let mut k = KeyModelLimits::new(Limits::default());
        k.observe(
            0,
            &RateLimitSnapshot {
                readings: vec![Reading {
                    kind: Kind::TokensPerMinute,
                    limit: Some(1000),
                    remaining: Some(400),
                    reset: Some(Duration::from_secs(20)),
                }],
                retry_after: None,
            },
        );
        assert_eq!(k.known().get(Kind::TokensPerMinute), Some(1000));
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(400));
        let big = Cost::request(300, 300);
        assert_eq!(k.readiness(S, &big, 0, false), Readiness::At(20 * S));
        k.expire(20 * S);
        assert_eq!(k.readiness(20 * S, &big, 0, false), Readiness::Now);
    }

    #[test]
    fn a_block_holds_until_its_time() {
        let mut k = KeyModelLimits::new(rpm(10));
        k.block(5 * S, Some(Kind::RequestsPerMinute));
        assert_eq!(
            k.readiness(S, &Cost::request(1, 1), 1, false),
            Readiness::At(5 * S)
        );
        assert_eq!(
            k.readiness(5 * S, &Cost::request(1, 1), 1, false),
            Readiness::Now
        );
    }
}
