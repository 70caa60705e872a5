//! For any sequence of (time, key, model, tokens), the limiter admits and refuses exactly as a
//! plain reference model of a rolling window does, says truthfully when a refused request would
//! fit, and its reported peaks never exceed the limits.

use std::time::Duration;

use proptest::prelude::*;
use spillway_mock::limiter::{Decision, Limiter, Usage};
use spillway_mock::spec::{LimitKind, Limits, MockSpec};

const KEYS: [&str; 2] = ["k1", "k2"];
const MODELS: [&str; 2] = ["m1", "m2"];

/// The reference: every admitted request remembered; a window is summed from scratch.
#[derive(Default)]
struct Reference {
    admitted: Vec<(u64, usize, usize, u64, u64)>, // (time µs, key, model, input, output)
}

impl Reference {
    fn used(&self, now: u64, key: usize, model: usize, kind: LimitKind) -> u64 {
        let span = kind.window().length().as_micros() as u64;
        self.admitted
            .iter()
            .filter(|(t, k, m, _, _)| *k == key && *m == model && *t <= now && t + span > now)
            .map(|(_, _, _, i, o)| amount(kind, *i, *o))
            .sum()
    }

    fn admits(&self, now: u64, key: usize, model: usize, limits: &Limits, i: u64, o: u64) -> bool {
        LimitKind::ALL.iter().all(|kind| match limits.get(*kind) {
            Some(limit) => self.used(now, key, model, *kind) + amount(*kind, i, o) <= limit,
            None => true,
        })
    }

    /// Most of `kind` in any window, over windows ending at each admitted request.
    fn peak(&self, key: usize, model: usize, kind: LimitKind) -> u64 {
        self.admitted
            .iter()
            .filter(|(_, k, m, _, _)| *k == key && *m == model)
            .map(|(t, ..)| self.used(*t, key, model, kind))
            .max()
            .unwrap_or(0)
    }
}

fn amount(kind: LimitKind, input: u64, output: u64) -> u64 {
    match kind {
        LimitKind::RequestsPerMinute | LimitKind::RequestsPerDay => 1,
        LimitKind::TokensPerMinute | LimitKind::TokensPerDay => input + output,
        LimitKind::InputTokensPerMinute => input,
        LimitKind::OutputTokensPerMinute => output,
    }
}

fn limits_strategy() -> impl Strategy<Value = Limits> {
    (
        proptest::option::of(1u64..8),
        proptest::option::of(200u64..2_000),
        proptest::option::of(5u64..30),
        proptest::option::of(1_000u64..10_000),
        proptest::option::of(100u64..1_500),
        proptest::option::of(100u64..1_500),
    )
        .prop_map(|(rpm, tpm, rpd, tpd, itpm, otpm)| Limits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            requests_per_day: rpd,
            tokens_per_day: tpd,
            input_tokens_per_minute: itpm,
            output_tokens_per_minute: otpm,
        })
}

/// Requests as (gap since the previous one in ms, key, model, input, output).
fn arrivals() -> impl Strategy<Value = Vec<(u64, usize, usize, u64, u64)>> {
    proptest::collection::vec(
        (
            prop_oneof![0u64..50, 0u64..5_000, 0u64..90_000, 0u64..3_600_000],
            0usize..2,
            0usize..2,
            0u64..400,
            0u64..400,
        ),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn limiter_matches_a_plain_rolling_window_model(
        limits in limits_strategy(),
        requests in arrivals(),
    ) {
        let mut spec = MockSpec {
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            models: MODELS.iter().map(|m| m.to_string()).collect(),
            ..MockSpec::default()
        };
        spec.limits.insert("m1".into(), limits);
        let limiter = Limiter::new(&spec);
        let mut reference = Reference::default();
        let mut now_ms = 0;
        for (gap, key, model, input, output) in requests {
            now_ms += gap;
            let now = now_ms * 1000;
            let model_limits = spec.limits_for(MODELS[model]);
            let too_large = LimitKind::ALL.iter().any(|k| {
                !matches!(k, LimitKind::RequestsPerMinute | LimitKind::RequestsPerDay)
                    && model_limits.get(*k).is_some_and(|l| amount(*k, input, output) > l)
            });
            let expected = reference.admits(now, key, model, &model_limits, input, output);
            let decision = limiter.decide(key, model, Duration::from_micros(now), Usage::request(input, output));
            match decision {
                Decision::Admit(_) => {
                    prop_assert!(expected, "admitted at {now_ms} ms what the reference refuses");
                    reference.admitted.push((now, key, model, input, output));
                }
                Decision::TooLarge { .. } => prop_assert!(too_large),
                Decision::Deny(denial, _) => {
                    prop_assert!(!expected && !too_large, "refused at {now_ms} ms what the reference admits");
                    // The wait is exact: not admissible one microsecond earlier, admissible then.
                    let at = now + denial.wait.as_micros() as u64;
                    prop_assert!(reference.admits(at, key, model, &model_limits, input, output));
                    prop_assert!(!reference.admits(at - 1, key, model, &model_limits, input, output));
                }
            }
        }
        let stats = limiter.stats();
        for (k, key) in KEYS.iter().enumerate() {
            for (m, model) in MODELS.iter().enumerate() {
                let s = &stats[*key][*model];
                prop_assert!(s.peaks_within_limits());
                if let Some(minute) = s.windows.get("minute") {
                    prop_assert_eq!(minute.peak_requests, reference.peak(k, m, LimitKind::RequestsPerMinute));
                    prop_assert_eq!(minute.peak_tokens, reference.peak(k, m, LimitKind::TokensPerMinute));
                }
                if let Some(day) = s.windows.get("day") {
                    prop_assert_eq!(day.peak_tokens, reference.peak(k, m, LimitKind::TokensPerDay));
                }
            }
        }
    }
}
