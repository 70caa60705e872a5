//! What spillway knows about one provider key's use of one model: its limits (configured, or
//! learned from headers and 429 messages), what it has sent and not yet settled (reservations
//! in flight, at their estimates), a rolling log of what settled (the provider's own counts,
//! stamped when the answer came back), usage the provider reports that spillway did not send,
//! any block a 429 imposed, and how many requests may be in flight while requests per minute
//! are unknown. Keeps ARCHITECTURE.md invariant 1 with [`super::pacer`].
//!
//! A reservation in flight is not spent for a window: it is settled to the provider's count
//! within moments (usually far less than the estimate). So a request that fits once the
//! reservations settle waits for a settlement ([`Readiness::WhenSettled`]) rather than for a
//! window to expire. The log groups settled usage into buckets of 1/6000 of the window (10 ms
//! for a minute) stamped with the bucket's end, so usage is forgotten no earlier than the
//! provider forgets it and memory stays bounded.

use std::collections::VecDeque;
use std::time::Duration;

use spillway_clock::Instant;

use crate::limits::concurrency::{Concurrency, ConcurrencyPolicy};
use crate::limits::headers::{RateLimitSnapshot, Reading};
use crate::limits::kind::{Cost, Kind, Limits, Window};

/// Buckets a window's log groups its usage into.
const BUCKETS_PER_WINDOW: u32 = 6000;

/// Logs keep their stamps this far ahead of clock time, so usage reported at clock time 0 can
/// still be back-dated by up to a day.
const OFFSET: Duration = Duration::from_secs(2 * 86_400);

/// The smallest step of time: a log never stamps usage earlier than one step into its window.
const STEP: Duration = Duration::from_micros(1);

/// A rolling log of usage over one window length. Stamps are clock instants moved
/// [`OFFSET`] ahead.
#[derive(Debug, Clone)]
struct Log {
    span: Duration,
    bucket: Duration,
    events: VecDeque<(Instant, Cost)>,
    used: Cost,
}

/// `at` rounded up to a whole number of `bucket`s.
fn round_up(at: Instant, bucket: Duration) -> Instant {
    let bucket = u64::try_from(bucket.as_micros()).unwrap_or(u64::MAX).max(1);
    Instant::from_micros(at.as_micros().div_ceil(bucket).saturating_mul(bucket))
}

/// Saturating: whatever a request claims, the accounting never overflows (and never panics
/// between a reservation and its settlement).
fn add(a: &mut Cost, b: &Cost) {
    a.requests = a.requests.saturating_add(b.requests);
    a.input_tokens = a.input_tokens.saturating_add(b.input_tokens);
    a.output_tokens = a.output_tokens.saturating_add(b.output_tokens);
}

fn sub(a: &mut Cost, b: &Cost) {
    a.requests = a.requests.saturating_sub(b.requests);
    a.input_tokens = a.input_tokens.saturating_sub(b.input_tokens);
    a.output_tokens = a.output_tokens.saturating_sub(b.output_tokens);
}

impl Log {
    fn new(window: Window) -> Self {
        let span = window.length();
        Log {
            span,
            bucket: span / BUCKETS_PER_WINDOW,
            events: VecDeque::new(),
            used: Cost::default(),
        }
    }

    fn expire(&mut self, now: Instant) {
        let now = now + OFFSET;
        while let Some((at, cost)) = self.events.front() {
            if *at + self.span <= now {
                sub(&mut self.used, cost);
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Adds usage at `now`.
    fn push(&mut self, now: Instant, cost: &Cost) {
        let at = round_up(now + OFFSET, self.bucket);
        match self.events.back_mut() {
            Some((last, c)) if *last == at => add(c, cost),
            Some((last, _)) if *last > at => {
                self.insert(at, cost);
                return;
            }
            _ => self.events.push_back((at, *cost)),
        }
        add(&mut self.used, cost);
    }

    /// Adds usage that leaves the window `expires_in` after `now` (usage reported by the
    /// provider, back-dated so that it leaves when the provider says it will).
    fn insert_expiring(&mut self, now: Instant, expires_in: Duration, cost: &Cost) {
        let at = now + OFFSET + expires_in.min(self.span) - self.span;
        self.insert(at.max(now + OFFSET + STEP - self.span), cost);
    }

    /// Adds usage stamped `at` (offset time) in its place.
    fn insert(&mut self, at: Instant, cost: &Cost) {
        let pos = self.events.partition_point(|(t, _)| *t <= at);
        if pos > 0 && self.events[pos - 1].0 == at {
            add(&mut self.events[pos - 1].1, cost);
        } else {
            self.events.insert(pos, (at, *cost));
        }
        add(&mut self.used, cost);
    }

    /// How long from `now` until `amount` more of `kind` fits under `limit` with what the log
    /// holds; `None` when it never will (it is larger than the limit).
    fn wait_for(&self, now: Instant, kind: Kind, limit: u64, amount: u64) -> Option<Duration> {
        if amount > limit {
            return None;
        }
        let now = now + OFFSET;
        let used = kind.amount(&self.used);
        if used.saturating_add(amount) <= limit {
            return Some(Duration::ZERO);
        }
        let excess = used.saturating_add(amount) - limit;
        let mut freed: u64 = 0;
        for (at, cost) in &self.events {
            freed = freed.saturating_add(kind.amount(cost));
            if freed >= excess {
                return Some((*at + self.span).saturating_duration_since(now));
            }
        }
        Some(self.span)
    }
}

/// A send in flight: what was reserved for it, until it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// What was reserved (the estimate).
    pub cost: Cost,
    /// It was sent with the in-flight allowance full: its answer may widen it.
    at_edge: bool,
}

/// When a key could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Now.
    Now,
    /// At this clock time.
    At(Instant),
    /// When one of its requests in flight is settled: only reservations still in flight (or
    /// the in-flight allowance of a key whose requests per minute are unknown) keep it back.
    /// `Some(at)`: at this clock time the windows free enough room even if nothing settles
    /// (older usage leaves them), whichever comes first.
    WhenSettled(Option<Instant>),
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
    /// What the sends in flight reserved, in all.
    reserved: Cost,
    in_flight: u32,
    blocked_until: Instant,
    blocked_by: Option<Kind>,
    concurrency: Concurrency,
}

impl KeyModelLimits {
    /// State for a key whose configured limits are `configured` (possibly none), with
    /// `concurrency` as its in-flight allowance while requests per minute are unknown.
    pub fn new(configured: Limits, concurrency: ConcurrencyPolicy) -> Self {
        let has_day = configured.get(Kind::RequestsPerDay).is_some()
            || configured.get(Kind::TokensPerDay).is_some();
        KeyModelLimits {
            configured,
            learned: Limits::default(),
            minute: Log::new(Window::Minute),
            day: has_day.then(|| Log::new(Window::Day)),
            reserved: Cost::default(),
            in_flight: 0,
            blocked_until: Instant::ORIGIN,
            blocked_by: None,
            concurrency: Concurrency::new(concurrency),
        }
    }

    /// This key's state as a reload hands it over at `now`: the windows, learned limits, a
    /// 429's block and the in-flight allowance as they are, and what the sends in flight
    /// reserved counted as spent at `now`. Those sends settle in the state they left; counted
    /// here in full from now, they are never forgotten before the provider forgets them.
    pub fn handed_over(&self, now: Instant) -> Self {
        let mut out = self.clone();
        if out.in_flight > 0 {
            out.minute.push(now, &self.reserved);
            if let Some(day) = &mut out.day {
                day.push(now, &self.reserved);
            }
        }
        out.in_flight = 0;
        out.reserved = Cost::default();
        out
    }

    /// `history`'s windows, learned limits and block under this state's configured limits and
    /// in-flight policy (the allowance learned so far is kept when the policy is the same).
    pub fn with_history(self, history: KeyModelLimits) -> Self {
        let concurrency = if history.concurrency.policy() == self.concurrency.policy() {
            history.concurrency
        } else {
            self.concurrency
        };
        KeyModelLimits {
            configured: self.configured,
            day: history.day.or(self.day),
            concurrency,
            ..history
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
    pub fn expire(&mut self, now: Instant) {
        self.minute.expire(now);
        if let Some(day) = &mut self.day {
            day.expire(now);
        }
    }

    /// Requests sent and not yet settled.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// What the requests in flight reserved, in all.
    pub fn reserved(&self) -> Cost {
        self.reserved
    }

    /// When a block imposed by a 429 lifts, and which limit it named.
    pub fn blocked(&self) -> (Instant, Option<Kind>) {
        (self.blocked_until, self.blocked_by)
    }

    /// What a window holds of `kind` now: settled usage (own and provider-reported).
    pub fn settled(&self, kind: Kind) -> Option<u64> {
        Some(kind.amount(&self.log(kind.window())?.used))
    }

    /// When (clock time) the window of `kind` has forgotten everything it holds now.
    pub fn resets_at(&self, now: Instant, kind: Kind) -> Option<Instant> {
        let log = self.log(kind.window())?;
        let last = log
            .events
            .iter()
            .rev()
            .find(|(_, c)| kind.amount(c) > 0)
            .map_or(now, |(at, _)| *at + log.span - OFFSET);
        Some(last.max(now))
    }

    /// When this key could send `cost` (call [`Self::expire`] first). `calibrating`: the
    /// target has not yet reported how it counts tokens, so while a token limit is known one
    /// request at a time goes, and its `usage` calibrates the estimate before the next.
    pub fn readiness(&self, now: Instant, cost: &Cost, calibrating: bool) -> Readiness {
        let known = self.known();
        let mut at = self.blocked_until.max(now);
        // Held back only by reservations in flight: ready when one settles, or when the
        // windows have forgotten enough to hold the reservations too (`NEVER`: only a
        // settlement helps).
        let mut settle_helps = false;
        let mut frees_anyway = now;
        for (kind, limit) in known.iter() {
            let Some(log) = self.log(kind.window()) else {
                continue;
            };
            let amount = kind.amount(cost);
            let settled = kind.amount(&log.used);
            let reserved = kind.amount(&self.reserved);
            if settled.saturating_add(reserved).saturating_add(amount) <= limit {
                continue;
            }
            match log.wait_for(now, kind, limit, amount) {
                None => return Readiness::TooLarge(kind),
                Some(wait) if wait.is_zero() => {
                    settle_helps = true;
                    let with_reserved = amount.saturating_add(reserved);
                    frees_anyway = match log.wait_for(now, kind, limit, with_reserved) {
                        Some(wait) => frees_anyway.max(now + wait),
                        None => Instant::NEVER,
                    };
                }
                Some(wait) => at = at.max(now + wait),
            }
        }
        if at > now {
            return Readiness::At(at);
        }
        if settle_helps {
            return Readiness::WhenSettled((frees_anyway < Instant::NEVER).then_some(frees_anyway));
        }
        if known.get(Kind::RequestsPerMinute).is_none() && !self.concurrency.allows(self.in_flight)
        {
            return Readiness::WhenSettled(None);
        }
        let counts_tokens = known.iter().any(|(kind, _)| !kind.counts_requests());
        if calibrating && counts_tokens && self.in_flight >= 1 {
            return Readiness::WhenSettled(None);
        }
        Readiness::Now
    }

    /// The limit (or block) that keeps `cost` waiting longest at `now`, if any does.
    pub fn binding(&self, now: Instant, cost: &Cost) -> Option<Kind> {
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

    /// The smallest share left of any known limit, reservations counted (1.0 when none is
    /// known): how much room the key has, for choosing among keys.
    pub fn headroom(&self) -> f64 {
        self.known()
            .iter()
            .filter_map(|(kind, limit)| {
                let log = self.log(kind.window())?;
                let used = kind
                    .amount(&log.used)
                    .saturating_add(kind.amount(&self.reserved));
                Some(limit.saturating_sub(used) as f64 / limit as f64)
            })
            .fold(1.0, f64::min)
    }

    /// Requests counted in the minute window and in flight.
    pub fn recent_requests(&self) -> u64 {
        self.minute.used.requests + u64::from(self.in_flight)
    }

    /// What is left of a known limit now (after [`Self::expire`]), reservations counted.
    pub fn remaining(&self, kind: Kind) -> Option<u64> {
        let limit = self.known().get(kind)?;
        let log = self.log(kind.window())?;
        Some(
            limit.saturating_sub(
                kind.amount(&log.used)
                    .saturating_add(kind.amount(&self.reserved)),
            ),
        )
    }

    /// Reserves `cost` for a send.
    pub fn reserve(&mut self, cost: Cost) -> Reservation {
        let at_edge = self.concurrency.at_edge(self.in_flight);
        self.in_flight += 1;
        add(&mut self.reserved, &cost);
        Reservation { cost, at_edge }
    }

    /// Settles a send at `now`, when its answer arrived (or it was given up): `Some(actual)`
    /// counts what the provider counted, from now on (the provider counted it at some moment
    /// between sending and answering, so counting it from the answer never forgets it before
    /// the provider does); `None` releases it (the provider did not count it).
    pub fn settle(&mut self, reservation: Reservation, actual: Option<Cost>, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        sub(&mut self.reserved, &reservation.cost);
        if let Some(actual) = actual {
            self.minute.push(now, &actual);
            if let Some(day) = &mut self.day {
                day.push(now, &actual);
            }
        }
    }

    /// The provider answered a send (not with a 429): a key whose requests per minute are
    /// unknown may have one more in flight when the send filled its allowance.
    pub fn answered(&mut self, reservation: &Reservation) {
        if reservation.at_edge {
            self.concurrency.on_success();
        }
    }

    /// Blocks the key until `until` because the provider refused with a 429; a key whose
    /// requests per minute are unknown also halves its in-flight allowance.
    pub fn block(&mut self, until: Instant, kind: Option<Kind>) {
        self.concurrency.on_rate_limited();
        if until > self.blocked_until {
            self.blocked_until = until;
            self.blocked_by = kind;
        }
    }

    /// Holds the key back until `until` for a reason found elsewhere (the fleet's window for
    /// it is full, or another gateway met a 429): unlike [`Self::block`], what it may have in
    /// flight is left as it is.
    pub fn hold(&mut self, until: Instant) {
        if until > self.blocked_until {
            self.blocked_until = until;
            self.blocked_by = None;
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
    pub fn observe(&mut self, now: Instant, snapshot: &RateLimitSnapshot) {
        self.expire(now);
        // Input and output tokens first: what they account for is then part of the combined
        // token count's own usage, not counted twice.
        let split = |r: &&Reading| {
            matches!(
                r.kind,
                Kind::InputTokensPerMinute | Kind::OutputTokensPerMinute
            )
        };
        for reading in snapshot.readings.iter().filter(split) {
            self.observe_reading(now, reading);
        }
        for reading in snapshot.readings.iter().filter(|r| !split(r)) {
            self.observe_reading(now, reading);
        }
    }

    /// One reading of a response: its limit learned, and usage it reports beyond spillway's own
    /// counted until its reset.
    fn observe_reading(&mut self, now: Instant, reading: &Reading) {
        if let Some(limit) = reading.limit {
            self.learn(reading.kind, limit);
        }
        let (Some(limit), Some(remaining)) = (self.known().get(reading.kind), reading.remaining)
        else {
            return;
        };
        let window = reading.kind.window();
        let provider_used = limit.saturating_sub(remaining);
        let Some(log) = self.log(window) else {
            return;
        };
        // What spillway has sent that the provider may have counted: settled, and in flight.
        let own = reading
            .kind
            .amount(&log.used)
            .saturating_add(reading.kind.amount(&self.reserved));
        if provider_used <= own {
            return;
        }
        let extra = provider_used - own;
        let expires_in = reading.reset.unwrap_or(window.length());
        // Usage counted against the very quantity the reading reports; a combined token
        // count's is taken as input (it counts against the combined limit either way).
        let cost = match reading.kind {
            Kind::RequestsPerMinute | Kind::RequestsPerDay => Cost {
                requests: extra,
                ..Cost::default()
            },
            Kind::OutputTokensPerMinute => Cost {
                output_tokens: extra,
                ..Cost::default()
            },
            Kind::InputTokensPerMinute | Kind::TokensPerMinute | Kind::TokensPerDay => Cost {
                input_tokens: extra,
                ..Cost::default()
            },
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

/// One known limit of a key as it stands (clock time), for the status view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSnapshot {
    /// Which limit.
    pub kind: Kind,
    /// Its value in force.
    pub limit: u64,
    /// The value was learned from the provider (a header or a 429 message), not configured.
    pub learned: bool,
    /// What the window holds now, settled (own and provider-reported usage).
    pub used: u64,
    /// What the requests in flight reserved of it.
    pub reserved: u64,
    /// What is left, reservations counted.
    pub remaining: u64,
    /// When the window has forgotten everything it holds now.
    pub resets_at: Instant,
}

/// A key's limit state as it stands, for the status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySnapshot {
    /// Every known limit.
    pub windows: Vec<WindowSnapshot>,
    /// Requests sent and not yet settled.
    pub in_flight: u32,
    /// A 429's block: until when, and the limit it named (`None` when not blocked now).
    pub blocked: Option<(Instant, Option<Kind>)>,
}

impl KeyModelLimits {
    /// Whether `kind`'s value in force was learned (a learned value smaller than the
    /// configured one, or one with nothing configured).
    fn is_learned(&self, kind: Kind) -> bool {
        match (self.configured.get(kind), self.learned.get(kind)) {
            (Some(c), Some(l)) => l < c,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// Every known limit and the key's block as they stand at `now` (call [`Self::expire`]
    /// first).
    pub fn snapshot(&self, now: Instant) -> KeySnapshot {
        let windows = self
            .known()
            .iter()
            .filter_map(|(kind, limit)| {
                let log = self.log(kind.window())?;
                Some(WindowSnapshot {
                    kind,
                    limit,
                    learned: self.is_learned(kind),
                    used: kind.amount(&log.used),
                    reserved: kind.amount(&self.reserved),
                    remaining: self.remaining(kind).unwrap_or(limit),
                    resets_at: self.resets_at(now, kind).unwrap_or(now),
                })
            })
            .collect();
        KeySnapshot {
            windows,
            in_flight: self.in_flight,
            blocked: (self.blocked_until > now).then_some((self.blocked_until, self.blocked_by)),
        }
    }
}

/// Readings the tests check behaviour against.
#[cfg(test)]
impl KeyModelLimits {
    /// Whether `kind`'s value was configured (else learned, when known).
    fn is_configured(&self, kind: Kind) -> bool {
        match (self.configured.get(kind), self.learned.get(kind)) {
            (Some(c), Some(l)) => c <= l,
            (Some(_), None) => true,
            _ => false,
        }
    }
    /// The most requests in flight while requests per minute are unknown (`None`: no cap, or
    /// the limit is known and pacing governs).
    fn concurrency_limit(&self) -> Option<u32> {
        if self.known().get(Kind::RequestsPerMinute).is_some() {
            return None;
        }
        self.concurrency.limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::headers::Reading;

    const S: u64 = 1_000_000;

    fn t(us: u64) -> Instant {
        Instant::from_micros(us)
    }

    fn new(limits: Limits) -> KeyModelLimits {
        KeyModelLimits::new(limits, ConcurrencyPolicy::Unlimited)
    }

    fn rpm(n: u64) -> Limits {
        Limits::default().with(Kind::RequestsPerMinute, n)
    }

    /// Reserves and settles at once at `at`.
    fn send(k: &mut KeyModelLimits, at: u64, cost: Cost) {
        let r = k.reserve(cost);
        k.settle(r, Some(cost), t(at));
    }

    #[test]
    fn a_handed_over_key_counts_its_sends_in_flight_as_spent_and_takes_the_new_limit() {
        let mut k = new(rpm(10));
        let one = Cost::request(10, 10);
        send(&mut k, 0, one);
        send(&mut k, S, one);
        let _in_flight = k.reserve(one);
        assert_eq!(k.remaining(Kind::RequestsPerMinute), Some(7));
        let handed = k.handed_over(t(2 * S));
        assert_eq!(
            handed.in_flight(),
            0,
            "its settlement goes to the old state"
        );
        assert_eq!(handed.settled(Kind::RequestsPerMinute), Some(3));
        assert_eq!(handed.remaining(Kind::RequestsPerMinute), Some(7));
        let under_five = new(rpm(5)).with_history(handed);
        assert_eq!(under_five.known().get(Kind::RequestsPerMinute), Some(5));
        assert_eq!(under_five.remaining(Kind::RequestsPerMinute), Some(2));
        // The sends leave the window when they would have: the two settled ones at 60 s and
        // 61 s, the one in flight a window after the handover.
        let mut later = under_five;
        later.expire(t(61 * S + 1));
        assert_eq!(later.remaining(Kind::RequestsPerMinute), Some(4));
        later.expire(t(62 * S + 1));
        assert_eq!(later.remaining(Kind::RequestsPerMinute), Some(5));
    }

    #[test]
    fn a_hold_found_elsewhere_keeps_the_key_back_without_halving_its_allowance() {
        let mut k = KeyModelLimits::new(Limits::default(), ConcurrencyPolicy::Adaptive);
        for _ in 0..4 {
            k.concurrency.on_success();
        }
        let before = k.concurrency.limit();
        let one = Cost::request(10, 10);
        k.hold(t(5 * S));
        assert_eq!(k.readiness(t(S), &one, false), Readiness::At(t(5 * S)));
        k.hold(t(2 * S));
        assert_eq!(
            k.blocked(),
            (t(5 * S), None),
            "a shorter hold does not shorten it"
        );
        assert_eq!(k.concurrency.limit(), before);
        k.block(t(6 * S), Some(Kind::RequestsPerMinute));
        assert_ne!(k.concurrency.limit(), before, "a 429 of its own halves it");
    }

    #[test]
    fn a_full_window_says_when_the_oldest_send_leaves() {
        let mut k = new(rpm(2));
        let one = Cost::request(10, 10);
        send(&mut k, 0, one);
        send(&mut k, 10 * S, one);
        assert_eq!(
            k.readiness(t(20 * S), &one, false),
            Readiness::At(t(60 * S))
        );
        k.expire(t(60 * S));
        assert_eq!(k.readiness(t(60 * S), &one, false), Readiness::Now);
    }

    #[test]
    fn settling_replaces_the_estimate_with_the_actual_count() {
        let mut k = new(Limits::default().with(Kind::TokensPerMinute, 1000));
        let r = k.reserve(Cost::request(100, 800));
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(100));
        k.settle(r, Some(Cost::request(100, 50)), t(0));
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(850));
        let r = k.reserve(Cost::request(10, 10));
        k.settle(r, None, t(S));
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(850));
        assert_eq!(k.in_flight(), 0);
    }

    #[test]
    fn a_request_held_back_only_by_reservations_in_flight_waits_for_a_settlement() {
        let mut k = new(Limits::default().with(Kind::TokensPerMinute, 6000));
        // Four requests in flight reserve 1,224 tokens each; their answers will use far less.
        let reserved: Vec<Reservation> = (0..4)
            .map(|_| k.reserve(Cost::request(200, 1024)))
            .collect();
        let next = Cost::request(200, 1024);
        assert_eq!(
            k.readiness(t(0), &next, false),
            Readiness::WhenSettled(None),
            "not 'in a minute': the room is only reserved"
        );
        for r in reserved {
            k.settle(r, Some(Cost::request(200, 60)), t(S));
        }
        assert_eq!(k.readiness(t(S), &next, false), Readiness::Now);
    }

    #[test]
    fn a_window_that_forgets_older_usage_before_a_settlement_frees_the_key_then() {
        let mut k = new(rpm(2));
        let one = Cost::request(1, 1);
        send(&mut k, 0, one);
        let _in_flight = k.reserve(one);
        // Full with the settled send and the one in flight; the settled one leaves the window
        // at 60 s, whether or not the other settles first.
        assert_eq!(
            k.readiness(t(40 * S), &one, false),
            Readiness::WhenSettled(Some(t(60 * S)))
        );
    }

    #[test]
    fn a_settled_send_counts_from_its_answer() {
        let mut k = new(rpm(1));
        let one = Cost::request(1, 1);
        let r = k.reserve(one);
        k.settle(r, Some(one), t(2 * S));
        k.expire(t(60 * S));
        assert_eq!(
            k.readiness(t(60 * S), &one, false),
            Readiness::At(t(62 * S))
        );
    }

    #[test]
    fn too_large_for_a_limit_is_never_ready() {
        let k = new(Limits::default().with(Kind::TokensPerMinute, 100));
        assert_eq!(
            k.readiness(t(0), &Cost::request(90, 20), false),
            Readiness::TooLarge(Kind::TokensPerMinute)
        );
    }

    #[test]
    fn unknown_request_limits_are_explored_like_a_congestion_window() {
        let mut k = KeyModelLimits::new(Limits::default(), ConcurrencyPolicy::Adaptive);
        let c = Cost::request(1, 1);
        let a = k.reserve(c);
        let b = k.reserve(c);
        assert_eq!(
            k.readiness(t(0), &c, false),
            Readiness::WhenSettled(None),
            "two at first"
        );
        k.answered(&b);
        k.settle(b, Some(c), t(0));
        assert_eq!(
            k.concurrency_limit(),
            Some(3),
            "an answer at the edge widens it"
        );
        assert_eq!(k.readiness(t(0), &c, false), Readiness::Now);
        k.block(t(S), None);
        assert_eq!(k.concurrency_limit(), Some(1), "a 429 halves it");
        k.settle(a, Some(c), t(0));
        k.learn(Kind::RequestsPerMinute, 30);
        assert_eq!(k.concurrency_limit(), None, "known limits pace instead");
    }

    #[test]
    fn an_uncalibrated_target_with_token_limits_sends_one_at_a_time() {
        let mut k = new(rpm(30).with(Kind::TokensPerMinute, 10_000));
        let c = Cost::request(100, 100);
        assert_eq!(k.readiness(t(0), &c, true), Readiness::Now);
        let r = k.reserve(c);
        assert_eq!(k.readiness(t(0), &c, true), Readiness::WhenSettled(None));
        assert_eq!(
            k.readiness(t(0), &c, false),
            Readiness::Now,
            "calibrated: pace freely"
        );
        k.settle(r, Some(c), t(0));
        assert_eq!(k.readiness(t(0), &c, true), Readiness::Now);
        let mut busy = new(rpm(30));
        busy.reserve(c);
        assert_eq!(
            busy.readiness(t(0), &c, true),
            Readiness::Now,
            "no token limit: nothing to calibrate"
        );
    }

    #[test]
    fn provider_reported_usage_counts_until_its_reset() {
        let mut k = new(Limits::default());
        k.observe(
            t(0),
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
        assert!(!k.is_configured(Kind::TokensPerMinute));
        assert_eq!(k.remaining(Kind::TokensPerMinute), Some(400));
        let big = Cost::request(300, 300);
        assert_eq!(k.readiness(t(S), &big, false), Readiness::At(t(20 * S)));
        assert_eq!(k.resets_at(t(S), Kind::TokensPerMinute), Some(t(20 * S)));
        k.expire(t(20 * S));
        assert_eq!(k.readiness(t(20 * S), &big, false), Readiness::Now);
    }

    #[test]
    fn a_block_holds_until_its_time() {
        let mut k = new(rpm(10));
        k.block(t(5 * S), Some(Kind::RequestsPerMinute));
        assert_eq!(
            k.readiness(t(S), &Cost::request(1, 1), false),
            Readiness::At(t(5 * S))
        );
        assert_eq!(
            k.readiness(t(5 * S), &Cost::request(1, 1), false),
            Readiness::Now
        );
    }
}
