//! For any arrivals and token sizes, the load the pacer admits never exceeds any window's limit
//! on any key, and a waiting request is admitted at the first moment some key has headroom —
//! not a microsecond before, not later (DESIGN.md invariant 1).

use proptest::prelude::*;
use spillway::limits::kind::{Cost, Kind, Limits};
use spillway::limits::pacer::{Decision, KeyView, TargetView, decide};
use spillway::limits::window::KeyModelLimits;

const MINUTE: u64 = 60_000_000;
const DAY: u64 = 86_400_000_000;

fn views(keys: &[KeyModelLimits], cost: Cost) -> Vec<TargetView<'_>> {
    vec![TargetView {
        available_at: 0,
        keys: keys
            .iter()
            .map(|limits| KeyView {
                limits,
                disabled: false,
            })
            .collect(),
        cost,
        probe_cap: 1,
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn admitted_load_never_exceeds_a_window_and_waits_end_at_the_first_free_moment(
        limits in limits_strategy(),
        requests in arrivals(),
    ) {
        let mut keys = vec![KeyModelLimits::new(limits), KeyModelLimits::new(limits)];
        let mut admitted: Vec<(u64, usize, Cost)> = Vec::new();
        let mut now = 0u64;
        for (gap_ms, input, budget, used_pct) in requests {
            now += gap_ms * 1000;
            let estimate = Cost::request(input, budget);
            let actual = Cost::request(input, budget * used_pct / 100);
            let mut t = now;
            for _ in 0..1_000 {
                for k in &mut keys {
                    k.expire(t);
                }
                match decide(t, &views(&keys, estimate), u64::MAX) {
                    Decision::Go { key, .. } => {
                        let mut r = keys[key].reserve(t, estimate);
                        keys[key].confirm(&mut r, t);
                        keys[key].settle(r, Some(actual));
                        admitted.push((t, key, actual));
                        break;
                    }
                    Decision::Wait(Some(at)) => {
                        prop_assert!(at > t, "a wait must end in the future");
                        // Nothing changes until `at`: one microsecond before, still no room...
                        let mut probe = keys.clone();
                        for k in &mut probe {
                            k.expire(at - 1);
                        }
                        let before = decide(at - 1, &views(&probe, estimate), u64::MAX);
                        prop_assert!(!matches!(before, Decision::Go { .. }), "room existed before the wait ended");
                        // ...and at `at`, there is.
                        for k in &mut probe {
                            k.expire(at);
                        }
                        let then = decide(at, &views(&probe, estimate), u64::MAX);
                        prop_assert!(matches!(then, Decision::Go { .. }), "no room when the wait ended: {then:?}");
                        t = at;
                    }
                    Decision::TooLarge(_) => {
                        prop_assert!(limits.get(Kind::TokensPerMinute).is_some_and(|l| estimate.tokens() > l));
                        break;
                    }
                    other => prop_assert!(false, "unexpected decision {other:?}"),
                }
            }
            now = now.max(t);
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
}
