//! The pacing decision as a pure function: given the chain's targets, their keys' limit state
//! and the time, send now (to which key), wait until when, or give up with an honest
//! `retry-after`. Nothing here sleeps or reads a clock; the router does both (DESIGN.md
//! invariants 1 and 5).

use crate::limits::kind::{Cost, Kind};
use crate::limits::window::{KeyModelLimits, Readiness};

/// One key as the pacer sees it.
#[derive(Debug, Clone, Copy)]
pub struct KeyView<'a> {
    /// Its limit state for the target's model (already expired to `now`).
    pub limits: &'a KeyModelLimits,
    /// Disabled after a 401/403 or an out-of-credit 429.
    pub disabled: bool,
}

/// One target of the chain as the pacer sees it.
#[derive(Debug, Clone)]
pub struct TargetView<'a> {
    /// Clock µs from which the target may be tried (its circuit's cooldown); `u64::MAX` while
    /// a probe is in flight.
    pub available_at: u64,
    /// Keys, in configured order.
    pub keys: Vec<KeyView<'a>>,
    /// What the request is estimated to cost at this target.
    pub cost: Cost,
    /// Requests in flight per key while requests per minute are unknown (0: no cap).
    pub probe_cap: u32,
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
    /// Nothing can take it now; try again at this clock time (µs), or earlier if something
    /// settles. `None`: only a settle can help.
    Wait(Option<u64>),
    /// Nothing can take it before the deadline: the earliest time anything could (µs from now),
    /// and the limit that holds it back.
    Exhausted {
        /// Clock µs from now until the earliest target frees.
        retry_after: u64,
        /// The limit responsible, when known.
        kind: Option<Kind>,
    },
    /// Larger than a limit of every usable target: waiting cannot help.
    TooLarge(Kind),
    /// No target can ever take it (every key disabled, every target skipped).
    Unavailable,
}

/// Decides for a request at clock time `now` (µs) that may wait until `deadline` (µs).
///
/// The first target in chain order with a key ready now wins; among its ready keys, the one
/// with the most headroom. Otherwise the earliest moment any target frees decides between
/// waiting and giving up.
pub fn decide(now: u64, targets: &[TargetView<'_>], deadline: u64) -> Decision {
    let mut earliest: Option<(u64, Option<Kind>)> = None;
    let mut settle_may_help = false;
    let mut too_large: Option<Kind> = None;
    let mut usable = false;
    for (t, target) in targets.iter().enumerate() {
        if target.skip {
            continue;
        }
        // Most headroom first; between equals, the key used least this minute.
        let mut best: Option<(usize, f64, u64)> = None;
        for (k, key) in target.keys.iter().enumerate() {
            if key.disabled {
                continue;
            }
            let readiness =
                key.limits
                    .readiness(now, &target.cost, target.probe_cap, target.calibrating);
            if let Readiness::TooLarge(kind) = readiness {
                too_large.get_or_insert(kind);
                continue;
            }
            usable = true;
            let ready_at = match readiness {
                Readiness::Now => now.max(target.available_at),
                Readiness::At(t) => t.max(target.available_at),
                Readiness::WhenSettled => {
                    settle_may_help = true;
                    continue;
                }
                Readiness::TooLarge(_) => continue,
            };
            if ready_at <= now {
                let headroom = key.limits.headroom();
                let recent = key.limits.recent_requests();
                if best.is_none_or(|(_, h, r)| headroom > h || (headroom == h && recent < r)) {
                    best = Some((k, headroom, recent));
                }
            } else if target.available_at == u64::MAX {
                // A probe is out: the circuit decides when it settles.
                settle_may_help = true;
            } else {
                let kind = if ready_at == target.available_at {
                    None
                } else {
                    key.limits.binding(now, &target.cost)
                };
                if earliest.is_none_or(|(e, _)| ready_at < e) {
                    earliest = Some((ready_at, kind));
                }
            }
        }
        if let Some((key, _, _)) = best {
            return Decision::Go { target: t, key };
        }
    }
    match earliest {
        Some((at, _)) if at <= deadline => Decision::Wait(Some(at)),
        Some((at, kind)) if !settle_may_help => Decision::Exhausted {
            retry_after: at - now,
            kind,
        },
        _ if settle_may_help && now < deadline => Decision::Wait(earliest.map(|(at, _)| at)),
        Some((at, kind)) => Decision::Exhausted {
            retry_after: at - now,
            kind,
        },
        None if settle_may_help => Decision::Exhausted {
            retry_after: 1_000_000,
            kind: None,
        },
        None => match (usable, too_large) {
            (false, Some(kind)) => Decision::TooLarge(kind),
            _ => Decision::Unavailable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::kind::Limits;

    const S: u64 = 1_000_000;

    fn key(limits: &KeyModelLimits) -> KeyView<'_> {
        KeyView {
            limits,
            disabled: false,
        }
    }

    fn target<'a>(keys: Vec<KeyView<'a>>) -> TargetView<'a> {
        TargetView {
            available_at: 0,
            keys,
            cost: Cost::request(10, 10),
            probe_cap: 1,
            calibrating: false,
            skip: false,
        }
    }

    fn rpm(n: u64) -> KeyModelLimits {
        KeyModelLimits::new(Limits::default().with(Kind::RequestsPerMinute, n))
    }

    #[test]
    fn first_target_with_headroom_wins_and_the_roomiest_key_within_it() {
        let mut a1 = rpm(10);
        a1.reserve(0, Cost::request(1, 1));
        let a2 = rpm(10);
        let b = rpm(10);
        let d = decide(
            S,
            &[target(vec![key(&a1), key(&a2)]), target(vec![key(&b)])],
            S,
        );
        assert_eq!(d, Decision::Go { target: 0, key: 1 });
    }

    #[test]
    fn a_full_first_target_spills_to_the_next() {
        let mut a = rpm(1);
        a.reserve(0, Cost::request(1, 1));
        let b = rpm(1);
        let d = decide(S, &[target(vec![key(&a)]), target(vec![key(&b)])], S);
        assert_eq!(d, Decision::Go { target: 1, key: 0 });
    }

    #[test]
    fn everything_full_waits_until_the_earliest_frees_within_the_deadline() {
        let mut a = rpm(1);
        a.reserve(0, Cost::request(1, 1));
        let mut b = rpm(1);
        b.reserve(30 * S, Cost::request(1, 1));
        let chain = [target(vec![key(&a)]), target(vec![key(&b)])];
        assert_eq!(
            decide(40 * S, &chain, 100 * S),
            Decision::Wait(Some(60 * S))
        );
        assert_eq!(
            decide(40 * S, &chain, 40 * S),
            Decision::Exhausted {
                retry_after: 20 * S,
                kind: Some(Kind::RequestsPerMinute)
            }
        );
    }

    #[test]
    fn a_cooling_target_is_skipped_until_its_cooldown_ends() {
        let a = rpm(10);
        let b = rpm(10);
        let mut cooling = target(vec![key(&a)]);
        cooling.available_at = 5 * S;
        let chain = [cooling, target(vec![key(&b)])];
        assert_eq!(decide(S, &chain, S), Decision::Go { target: 1, key: 0 });
    }

    #[test]
    fn disabled_keys_are_never_chosen() {
        let a = rpm(10);
        let view = KeyView {
            limits: &a,
            disabled: true,
        };
        assert_eq!(decide(0, &[target(vec![view])], S), Decision::Unavailable);
    }

    #[test]
    fn too_large_for_every_target_is_reported_as_such() {
        let a = KeyModelLimits::new(Limits::default().with(Kind::TokensPerMinute, 5));
        assert_eq!(
            decide(0, &[target(vec![key(&a)])], S),
            Decision::TooLarge(Kind::TokensPerMinute)
        );
    }
}
