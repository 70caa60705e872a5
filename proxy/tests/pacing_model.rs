//! The pacer against a model of time, for any arrivals, sizes, answer latencies and waits
//! (ARCHITECTURE.md invariants 1 and 5):
//! - the load it admits never exceeds any window's limit on any key, counted as the provider
//!   counts it (each request's real cost, from the moment it is sent);
//! - a waiting request is admitted at the first moment some key has headroom, not before;
//! - a request is refused only if no moment within its `max_wait` would have let it through:
//!   an oracle replays the history (every other request's send, settlement and real cost) and
//!   checks every moment at which anything changes.

use proptest::prelude::*;
use spillway::limits::concurrency::ConcurrencyPolicy;
use spillway::limits::kind::{Cost, Kind, Limits};
use spillway::limits::pacer::{Decision, KeyView, Refusal, TargetView, decide};
use spillway::limits::window::{KeyModelLimits, Reservation};
use spillway_clock::Instant;

const MINUTE: u64 = 60_000_000;
const DAY: u64 = 86_400_000_000;

fn t(us: u64) -> Instant {
    Instant::from_micros(us)
}

fn views(keys: &[KeyModelLimits], cost: Cost) -> Vec<TargetView<'_>> {
    vec![TargetView {
        open_until: None,
        keys: keys
            .iter()
            .map(|limits| KeyView {
                limits,
                disabled: false,
            })
            .collect(),
        cost,
        calibrating: false,
        skip: false,
    }]
}

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (
        1u64..6,
        proptest::option::of(300u64..3_000),
        proptest::option::of(3u64..40),
    )
        .prop_map(|(rpm, tpm, rpd)| {
            let mut l = Limits::default().with(Kind::RequestsPerMinute, rpm);
            l.set(Kind::TokensPerMinute, tpm);
            l.set(Kind::RequestsPerDay, rpd);
            l
        })
}

fn new_key(limits: Limits) -> KeyModelLimits {
    KeyModelLimits::new(limits, ConcurrencyPolicy::Unlimited)
}

/// (gap before arrival in ms, prompt tokens, completion budget, share of the budget used %).
fn arrivals() -> impl Strategy<Value = Vec<(u64, u64, u64, u64)>> {
    proptest::collection::vec(
        (
            prop_oneof![0u64..100, 0u64..20_000, 0u64..120_000],
            1u64..400,
            1u64..400,
            0u64..=100,
        ),
        1..60,
    )
}

/// One request of the simulation: arrival, estimate, real cost, answer latency, deadline.
#[derive(Clone, Copy, Debug)]
struct Request {
    arrival: u64,
    estimate: Cost,
    actual: Cost,
    latency: u64,
    deadline: u64,
}

/// What happened to a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    /// Sent at `at` on `key`, settled at `settled`.
    Sent { at: u64, key: usize, settled: u64 },
    /// Refused at `at`.
    Refused { at: u64 },
}

/// (gap ms, prompt, budget, used %, latency ms, max_wait ms).
fn requests_with_latency() -> impl Strategy<Value = Vec<(u64, u64, u64, u64, u64, u64)>> {
    proptest::collection::vec(
        (
            prop_oneof![0u64..50, 0u64..5_000, 0u64..70_000],
            1u64..300,
            1u64..300,
            0u64..=100,
            prop_oneof![1u64..50, 50u64..3_000],
            prop_oneof![Just(0u64), 1u64..5_000, 5_000u64..90_000],
        ),
        1..25,
    )
}

/// Runs the requests through the pacer on two keys, with settlements coming back after each
/// request's latency, as the router does: every waiting request is reconsidered at each
/// settlement, at the moment its wait ends, and at its deadline.
fn simulate(limits: Limits, requests: &[Request]) -> Vec<Fate> {
    let mut keys = vec![new_key(limits), new_key(limits)];
    let mut fates: Vec<Option<Fate>> = vec![None; requests.len()];
    // (settle at, request, key, reservation)
    let mut in_flight: Vec<(u64, usize, usize, Reservation)> = Vec::new();
    let mut wakes: Vec<Option<u64>> = vec![None; requests.len()];
    let mut now = 0u64;
    for _ in 0..100_000 {
        // Settlements due now, oldest first.
        in_flight.sort_by_key(|f| f.0);
        while let Some(&(at, i, key, reservation)) = in_flight.first() {
            if at > now {
                break;
            }
            keys[key].settle(reservation, Some(requests[i].actual), t(at));
            in_flight.remove(0);
        }
        for k in &mut keys {
            k.expire(t(now));
        }
        // Every request that has arrived and waits is considered, in arrival order.
        for (i, r) in requests.iter().enumerate() {
            if fates[i].is_some() || r.arrival > now {
                continue;
            }
            match decide(t(now), &views(&keys, r.estimate), t(r.deadline)) {
                Decision::Go { key, .. } => {
                    let reservation = keys[key].reserve(r.estimate);
                    in_flight.push((now + r.latency, i, key, reservation));
                    fates[i] = Some(Fate::Sent {
                        at: now,
                        key,
                        settled: now + r.latency,
                    });
                }
                Decision::Wait(at) => wakes[i] = at.map(|a| a.as_micros()),
                _ => fates[i] = Some(Fate::Refused { at: now }),
            }
        }
        // The next moment anything can change.
        let next = requests
            .iter()
            .enumerate()
            .filter(|(i, _)| fates[*i].is_none())
            .flat_map(|(i, r)| {
                let waiting = r.arrival <= now;
                [
                    (!waiting).then_some(r.arrival),
                    waiting.then_some(r.deadline),
                    wakes[i].filter(|w| waiting && *w > now),
                ]
            })
            .flatten()
            .chain(in_flight.iter().map(|f| f.0))
            .filter(|at| *at > now)
            .min();
        match next {
            Some(at) => now = at,
            None => break,
        }
    }
    fates
        .into_iter()
        .map(|f| f.expect("every request is sent or refused"))
        .collect()
}

/// Stamps as the window's log keeps them: the end of the bucket (1/6000 of the window).
fn stamp(at: u64, span: u64) -> u64 {
    let bucket = span / 6000;
    at.div_ceil(bucket) * bucket
}

/// Whether request `r` would have fit on `key` at `at`, counting the others as the pacer does:
/// a reservation (the estimate) from send to settlement, then the real cost for a window from
/// the settlement.
fn fits_at(
    limits: Limits,
    requests: &[Request],
    fates: &[Fate],
    r: usize,
    key: usize,
    at: u64,
) -> bool {
    limits.iter().all(|(kind, limit)| {
        let span = if kind.window() == spillway::limits::kind::Window::Day {
            DAY
        } else {
            MINUTE
        };
        let used: u64 = fates
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != r)
            .map(|(i, fate)| match *fate {
                Fate::Sent {
                    at: sent,
                    key: k,
                    settled,
                } if k == key => {
                    if sent <= at && at < settled {
                        kind.amount(&requests[i].estimate)
                    } else if settled <= at && at < stamp(settled, span) + span {
                        kind.amount(&requests[i].actual)
                    } else {
                        0
                    }
                }
                _ => 0,
            })
            .sum();
        used + kind.amount(&requests[r].estimate) <= limit
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn admitted_load_never_exceeds_a_window_and_waits_end_at_the_first_free_moment(
        limits in limits_strategy(),
        requests in arrivals(),
    ) {
        let mut keys = vec![new_key(limits), new_key(limits)];
        let mut admitted: Vec<(u64, usize, Cost)> = Vec::new();
        let mut now = 0u64;
        for (gap_ms, input, budget, used_pct) in requests {
            now += gap_ms * 1000;
            let estimate = Cost::request(input, budget);
            let actual = Cost::request(input, budget * used_pct / 100);
            let mut at_time = now;
            for _ in 0..1_000 {
                for k in &mut keys {
                    k.expire(t(at_time));
                }
                match decide(t(at_time), &views(&keys, estimate), Instant::NEVER) {
                    Decision::Go { key, .. } => {
                        let r = keys[key].reserve(estimate);
                        keys[key].settle(r, Some(actual), t(at_time));
                        admitted.push((at_time, key, actual));
                        break;
                    }
                    Decision::Wait(Some(at)) => {
                        let at = at.as_micros();
                        prop_assert!(at > at_time, "a wait must end in the future");
                        // Nothing changes until `at`: one microsecond before, still no room...
                        let mut probe = keys.clone();
                        for k in &mut probe {
                            k.expire(t(at - 1));
                        }
                        let before = decide(t(at - 1), &views(&probe, estimate), Instant::NEVER);
                        prop_assert!(!matches!(before, Decision::Go { .. }), "room existed before the wait ended");
                        // ...and at `at`, there is.
                        for k in &mut probe {
                            k.expire(t(at));
                        }
                        let then = decide(t(at), &views(&probe, estimate), Instant::NEVER);
                        prop_assert!(matches!(then, Decision::Go { .. }), "no room when the wait ended: {then:?}");
                        at_time = at;
                    }
                    Decision::Refused(Refusal::TooLarge(_)) => {
                        prop_assert!(limits.get(Kind::TokensPerMinute).is_some_and(|l| estimate.tokens() > l));
                        break;
                    }
                    other => prop_assert!(false, "unexpected decision {other:?}"),
                }
            }
            now = now.max(at_time);
        }
        // Brute force: every window ending at an admission, on every key, within every limit.
        for key in 0..2 {
            for (end, _, _) in admitted.iter().filter(|a| a.1 == key) {
                let in_window = |span: u64| admitted
                    .iter()
                    .filter(move |(t, k, _)| *k == key && *t <= *end && t + span > *end);
                let minute_requests = in_window(MINUTE).count() as u64;
                let minute_tokens: u64 = in_window(MINUTE).map(|(_, _, c)| c.tokens()).sum();
                let day_requests = in_window(DAY).count() as u64;
                prop_assert!(minute_requests <= limits.get(Kind::RequestsPerMinute).unwrap());
                if let Some(tpm) = limits.get(Kind::TokensPerMinute) {
                    prop_assert!(minute_tokens <= tpm, "{minute_tokens} tokens in a minute over {tpm}");
                }
                if let Some(rpd) = limits.get(Kind::RequestsPerDay) {
                    prop_assert!(day_requests <= rpd);
                }
            }
        }
    }

    #[test]
    fn with_answers_in_flight_a_request_is_refused_only_when_no_moment_of_its_wait_had_room(
        limits in limits_strategy(),
        raw in requests_with_latency(),
    ) {
        let mut arrival = 0;
        let requests: Vec<Request> = raw
            .iter()
            .map(|&(gap_ms, input, budget, used_pct, latency_ms, wait_ms)| {
                arrival += gap_ms * 1000;
                Request {
                    arrival,
                    estimate: Cost::request(input, budget),
                    actual: Cost::request(input, budget * used_pct / 100),
                    latency: latency_ms * 1000,
                    deadline: arrival + wait_ms * 1000,
                }
            })
            .collect();
        let fates = simulate(limits, &requests);
        // The oracle: at every moment of a refused request's wait when something changed (its
        // arrival, a settlement, a window forgetting a settlement, its deadline), no key had
        // room for it.
        for (i, fate) in fates.iter().enumerate() {
            let Fate::Refused { .. } = fate else { continue };
            let r = requests[i];
            if limits.iter().any(|(kind, limit)| kind.amount(&r.estimate) > limit) {
                continue; // too large for the limit: no moment ever has room
            }
            let mut moments = vec![r.arrival, r.deadline];
            for f in &fates {
                if let Fate::Sent { settled, .. } = *f {
                    moments.extend([settled, stamp(settled, MINUTE) + MINUTE, stamp(settled, DAY) + DAY]);
                }
            }
            for at in moments.into_iter().filter(|at| (r.arrival..=r.deadline).contains(at)) {
                for key in 0..2 {
                    prop_assert!(
                        !fits_at(limits, &requests, &fates, i, key, at),
                        "request {i} was refused, but key {key} had room at {at} µs (arrived {}, deadline {}): {fates:?}",
                        r.arrival,
                        r.deadline
                    );
                }
            }
        }
        // Safety, as the provider counts: real costs from the moment each request is sent.
        for key in 0..2 {
            let sent: Vec<(u64, Cost)> = fates
                .iter()
                .enumerate()
                .filter_map(|(i, f)| match *f {
                    Fate::Sent { at, key: k, .. } if k == key => Some((at, requests[i].actual)),
                    _ => None,
                })
                .collect();
            for (end, _) in &sent {
                for (kind, limit) in limits.iter() {
                    let span = if kind.window() == spillway::limits::kind::Window::Day { DAY } else { MINUTE };
                    let total: u64 = sent
                        .iter()
                        .filter(|(at, _)| *at <= *end && at + span > *end)
                        .map(|(_, c)| kind.amount(c))
                        .sum();
                    prop_assert!(total <= limit, "{total} of {kind:?} in a window over {limit}");
                }
            }
        }
    }
}

#[test]
fn a_burst_without_max_tokens_waits_for_settlements_instead_of_a_window() {
    // The burst in miniature: 6,000 tokens per minute, requests reserving 1,224 tokens
    // each (no max_tokens) that use about 150: the fifth waits for the first answer, not a
    // minute.
    let limits = Limits::default()
        .with(Kind::RequestsPerMinute, 30)
        .with(Kind::TokensPerMinute, 6_000);
    let requests: Vec<Request> = (0..12)
        .map(|_| Request {
            arrival: 0,
            estimate: Cost::request(200, 1024),
            actual: Cost::request(200, 150),
            latency: 500_000,
            deadline: 30_000_000,
        })
        .collect();
    let fates = simulate(limits, &requests);
    let sent_at: Vec<u64> = fates
        .iter()
        .map(|f| match f {
            Fate::Sent { at, .. } => *at,
            Fate::Refused { at } => panic!("refused at {at}"),
        })
        .collect();
    assert!(
        sent_at.iter().all(|at| *at <= 1_500_000),
        "every request went within three answers' time: {sent_at:?}"
    );
}
