//! The pacing decision as a pure function: given the chain's targets, their keys' limit state
//! and the time, send now (to which key), wait until when, or give up with an honest
//! `retry-after`. Nothing here sleeps or reads a clock; the router does both (ARCHITECTURE.md
//! invariants 1 and 5).

use std::time::Duration;

use spillway_clock::Instant;

use crate::limits::kind::{Cost, Kind};
use crate::limits::window::{KeyModelLimits, Readiness};

/// One key as the pacer sees it.
#[derive(Debug, Clone, Copy)]
pub struct KeyView<'a> {
    /// Its limit state for the target's model (already expired to `now`).
    pub limits: &'a KeyModelLimits,
    /// Set aside after a 401/403 or an out-of-credit 429 (and not due a retry now).
    pub disabled: bool,
}

/// One target of the chain as the pacer sees it.
#[derive(Debug, Clone)]
pub struct TargetView<'a> {
    /// Until when its circuit is open after outages (`Instant::NEVER` while a probe is out);
    /// `None` when closed. A target whose circuit is open is skipped, never waited for (but
    /// a probe's answer, moments away, is).
    pub open_until: Option<Instant>,
    /// Keys, in configured order.
    pub keys: Vec<KeyView<'a>>,
    /// What the request is estimated to cost at this target.
    pub cost: Cost,
    /// The target has not reported its token counts yet (see [`KeyModelLimits::readiness`]).
    pub calibrating: bool,
    /// Skipped for this request (it already failed here, or the provider said it is too large).
    pub skip: bool,
}

/// The pacer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send to this target through this key now.
    Go {
        /// Index in the chain.
        target: usize,
        /// Index among the target's keys.
        key: usize,
    },
    /// Nothing can take it now; try again at this clock time, or earlier if something settles.
    /// `None`: only a settlement can help.
    Wait(Option<Instant>),
    /// No target can take it before the deadline.
    Refused(Refusal),
}

/// Why no target can take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Rate limits: nothing can take it before the deadline; when the earliest target frees,
    /// and the limit that holds it back.
    Exhausted {
        /// Clock time until the earliest target frees.
        retry_after: Duration,
        /// The limit responsible, when known.
        kind: Option<Kind>,
    },
    /// Larger than a limit of every usable target: waiting cannot help.
    TooLarge(Kind),
    /// No target can take it now for reasons other than rate limits (every circuit open, every
    /// key set aside, every target skipped).
    Unavailable {
        /// Clock time until the earliest circuit lets a request through, if one will.
        retry_after: Option<Duration>,
    },
}

/// What a scan of the chain found besides a key ready now.
#[derive(Debug, Default)]
struct Scan {
    /// The earliest moment a key frees, and the limit holding it back.
    earliest: Option<(Instant, Option<Kind>)>,
    /// A settlement of a request in flight would free a key.
    settle_may_help: bool,
    /// The request is larger than this limit of some key.
    too_large: Option<Kind>,
    /// Some key could take the request some day.
    usable: bool,
    /// The earliest moment an open circuit lets a probe through.
    circuit_opens: Option<Instant>,
    /// A probe is out: its answer, moments away, decides.
    probe_out: bool,
}

impl Scan {
    fn note_earliest(&mut self, at: Instant, kind: Option<Kind>) {
        if self.earliest.is_none_or(|(e, _)| at < e) {
            self.earliest = Some((at, kind));
        }
    }

    /// Looks at one target: the key to send through now (most headroom first; between
    /// equals, the key used least this minute), else what its keys wait for.
    fn target(&mut self, now: Instant, target: &TargetView<'_>) -> Option<usize> {
        if target.skip {
            return None;
        }
        if let Some(until) = target.open_until
            && until > now
        {
            if until == Instant::NEVER {
                self.probe_out = true;
            } else {
                self.circuit_opens = Some(self.circuit_opens.map_or(until, |c| c.min(until)));
            }
            return None;
        }
        let mut best: Option<(usize, f64, u64)> = None;
        for (k, key) in target.keys.iter().enumerate() {
            if key.disabled {
                continue;
            }
            match key.limits.readiness(now, &target.cost, target.calibrating) {
                Readiness::TooLarge(kind) => {
                    self.too_large.get_or_insert(kind);
                }
                Readiness::Now => {
                    self.usable = true;
                    let headroom = key.limits.headroom();
                    let recent = key.limits.recent_requests();
                    if best.is_none_or(|(_, h, r)| headroom > h || (headroom == h && recent < r)) {
                        best = Some((k, headroom, recent));
                    }
                }
                Readiness::WhenSettled(frees) => {
                    self.usable = true;
                    self.settle_may_help = true;
                    // Older usage may leave the window before anything settles.
                    if let Some(at) = frees {
                        self.note_earliest(at, key.limits.binding(now, &target.cost));
                    }
                }
                Readiness::At(at) => {
                    self.usable = true;
                    self.note_earliest(at, key.limits.binding(now, &target.cost));
                }
            }
        }
        best.map(|(k, _, _)| k)
    }

    /// With no key ready now: wait, or refuse and say why and until when.
    fn verdict(self, now: Instant, deadline: Instant) -> Decision {
        match self.earliest {
            Some((at, _)) if at <= deadline => Decision::Wait(Some(at)),
            _ if (self.settle_may_help || self.probe_out) && now < deadline => {
                Decision::Wait(self.earliest.map(|(at, _)| at))
            }
            Some((at, kind)) => Decision::Refused(Refusal::Exhausted {
                retry_after: at.saturating_duration_since(now),
                kind,
            }),
            // Only settlements could help and the deadline has come: they are a moment away.
            None if self.settle_may_help => Decision::Refused(Refusal::Exhausted {
                retry_after: Duration::from_secs(1),
                kind: None,
            }),
            None => match (self.usable, self.too_large) {
                (false, Some(kind)) if self.circuit_opens.is_none() && !self.probe_out => {
                    Decision::Refused(Refusal::TooLarge(kind))
                }
                _ => Decision::Refused(Refusal::Unavailable {
                    retry_after: self
                        .circuit_opens
                        .map(|at| at.saturating_duration_since(now)),
                }),
            },
        }
    }
}

/// Why a key, or a whole target, was passed over for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Blocked after a 429 until its reset.
    Cooling,
    /// A window is full.
    Full,
    /// Held back by its requests in flight.
    Busy,
    /// Its provider refused the key (set aside).
    Refused,
    /// The target's circuit is open after outages.
    Open,
    /// The request is larger than one of its limits.
    TooLarge,
}

impl Pass {
    /// The word the `x-spillway-fallback` trail uses.
    pub const fn name(self) -> &'static str {
        match self {
            Pass::Cooling => "cooling",
            Pass::Full => "full",
            Pass::Busy => "busy",
            Pass::Refused => "refused",
            Pass::Open => "open",
            Pass::TooLarge => "too-large",
        }
    }
}

/// A key (or, with `key` `None`, a whole target) passed over, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed {
    /// The target's position in the chain.
    pub position: usize,
    /// The key, or `None` for the whole target.
    pub key: Option<usize>,
    /// Why.
    pub why: Pass,
}

/// What a request passed over on its way to `Go { target, key }`: every key of the targets
/// before it that was not ready, and the keys of its own target that were not (the ready keys
/// it did not choose merely had less headroom). Skipped targets were left before. With `chosen`
/// the last position and `key` none of its keys, every key that was not ready (a refusal's).
pub fn passed(now: Instant, targets: &[TargetView<'_>], chosen: usize, key: usize) -> Vec<Passed> {
    let mut out = Vec::new();
    for (position, target) in targets.iter().enumerate().take(chosen + 1) {
        if target.skip {
            continue;
        }
        if target.open_until.is_some_and(|until| until > now) {
            out.push(Passed {
                position,
                key: None,
                why: Pass::Open,
            });
            continue;
        }
        for (k, view) in target.keys.iter().enumerate() {
            if position == chosen && k == key {
                continue;
            }
            let why = if view.disabled {
                Pass::Refused
            } else {
                match view.limits.readiness(now, &target.cost, target.calibrating) {
                    Readiness::Now => continue,
                    Readiness::TooLarge(_) => Pass::TooLarge,
                    _ if view.limits.blocked().0 > now => Pass::Cooling,
                    Readiness::At(_) => Pass::Full,
                    Readiness::WhenSettled(_) => Pass::Busy,
                }
            };
            out.push(Passed {
                position,
                key: Some(k),
                why,
            });
        }
    }
    out
}

/// Decides for a request at clock time `now` that may wait until `deadline`.
///
/// The first target in chain order with a key ready now wins; among its ready keys, the one
/// with the most headroom. Otherwise the earliest moment any target frees decides between
/// waiting and giving up. Targets whose circuit is open are skipped: a request never waits
/// through a cooldown.
pub fn decide(now: Instant, targets: &[TargetView<'_>], deadline: Instant) -> Decision {
    let mut scan = Scan::default();
    for (t, target) in targets.iter().enumerate() {
        if let Some(key) = scan.target(now, target) {
            return Decision::Go { target: t, key };
        }
    }
    scan.verdict(now, deadline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::concurrency::ConcurrencyPolicy;
    use crate::limits::kind::Limits;

    const S: u64 = 1_000_000;

    fn t(us: u64) -> Instant {
        Instant::from_micros(us)
    }

    fn key(limits: &KeyModelLimits) -> KeyView<'_> {
        KeyView {
            limits,
            disabled: false,
        }
    }

    fn target<'a>(keys: Vec<KeyView<'a>>) -> TargetView<'a> {
        TargetView {
            open_until: None,
            keys,
            cost: Cost::request(10, 10),
            calibrating: false,
            skip: false,
        }
    }

    fn rpm(n: u64) -> KeyModelLimits {
        KeyModelLimits::new(
            Limits::default().with(Kind::RequestsPerMinute, n),
            ConcurrencyPolicy::Unlimited,
        )
    }

    fn send(k: &mut KeyModelLimits, at: u64) {
        let c = Cost::request(1, 1);
        let r = k.reserve(c);
        k.settle(r, Some(c), t(at));
    }

    #[test]
    fn first_target_with_headroom_wins_and_the_roomiest_key_within_it() {
        let mut a1 = rpm(10);
        send(&mut a1, 0);
        let a2 = rpm(10);
        let b = rpm(10);
        let d = decide(
            t(S),
            &[target(vec![key(&a1), key(&a2)]), target(vec![key(&b)])],
            t(S),
        );
        assert_eq!(d, Decision::Go { target: 0, key: 1 });
    }

    #[test]
    fn a_full_first_target_spills_to_the_next() {
        let mut a = rpm(1);
        send(&mut a, 0);
        let b = rpm(1);
        let d = decide(t(S), &[target(vec![key(&a)]), target(vec![key(&b)])], t(S));
        assert_eq!(d, Decision::Go { target: 1, key: 0 });
    }

    #[test]
    fn everything_full_waits_until_the_earliest_frees_within_the_deadline() {
        let mut a = rpm(1);
        send(&mut a, 0);
        let mut b = rpm(1);
        send(&mut b, 30 * S);
        let chain = [target(vec![key(&a)]), target(vec![key(&b)])];
        assert_eq!(
            decide(t(40 * S), &chain, t(100 * S)),
            Decision::Wait(Some(t(60 * S)))
        );
        assert_eq!(
            decide(t(40 * S), &chain, t(40 * S)),
            Decision::Refused(Refusal::Exhausted {
                retry_after: Duration::from_secs(20),
                kind: Some(Kind::RequestsPerMinute)
            })
        );
    }

    #[test]
    fn a_cooling_target_is_skipped_and_never_waited_for() {
        let a = rpm(10);
        let b = rpm(10);
        let mut cooling = target(vec![key(&a)]);
        cooling.open_until = Some(t(5 * S));
        let chain = [cooling.clone(), target(vec![key(&b)])];
        assert_eq!(
            decide(t(S), &chain, t(S)),
            Decision::Go { target: 1, key: 0 }
        );
        // Alone, it is unavailable at once, with the moment its circuit lets a probe through.
        assert_eq!(
            decide(t(S), &[cooling], t(100 * S)),
            Decision::Refused(Refusal::Unavailable {
                retry_after: Some(Duration::from_secs(4))
            })
        );
    }

    #[test]
    fn a_limited_target_beside_a_failing_one_is_exhausted_not_unavailable() {
        let mut a = rpm(1);
        send(&mut a, 0);
        let b = rpm(10);
        let mut down = target(vec![key(&b)]);
        down.open_until = Some(t(3 * S));
        let d = decide(t(S), &[target(vec![key(&a)]), down], t(S));
        assert_eq!(
            d,
            Decision::Refused(Refusal::Exhausted {
                retry_after: Duration::from_secs(59),
                kind: Some(Kind::RequestsPerMinute)
            })
        );
    }

    #[test]
    fn disabled_keys_are_never_chosen() {
        let a = rpm(10);
        let view = KeyView {
            limits: &a,
            disabled: true,
        };
        assert_eq!(
            decide(t(0), &[target(vec![view])], t(S)),
            Decision::Refused(Refusal::Unavailable { retry_after: None })
        );
    }

    #[test]
    fn too_large_for_every_target_is_reported_as_such() {
        let a = KeyModelLimits::new(
            Limits::default().with(Kind::TokensPerMinute, 5),
            ConcurrencyPolicy::Unlimited,
        );
        assert_eq!(
            decide(t(0), &[target(vec![key(&a)])], t(S)),
            Decision::Refused(Refusal::TooLarge(Kind::TokensPerMinute))
        );
    }
}
