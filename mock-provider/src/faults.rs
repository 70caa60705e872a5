//! Deciding, per request, which fault (if any) strikes and how long the answer is delayed.
//! Decisions are pure functions of the fault spec, the seed and the request's number, so a run
//! with the same traffic and seed fails the same requests.

use std::time::Duration;

use crate::spec::{Fault, Faults, Latency, Trigger};

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// The fault that strikes, if any.
    pub fault: Option<Fault>,
    /// Delay before the response headers (fixed latency plus jitter).
    pub delay: Duration,
    /// The latency settings in force (for stream pacing).
    pub latency: Latency,
}

/// A uniform number in `[0, 1)` from (seed, request number, salt).
fn uniform(seed: u64, seq: u64, salt: u64) -> f64 {
    // splitmix64 finalizer over a mix of the inputs.
    let mut z = seed
        .wrapping_add(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The plan for a request to `model`, number `seq` among all requests and `model_seq` among
/// this model's requests (both counted from 1).
pub fn plan(faults: &Faults, model: &str, seq: u64, model_seq: u64) -> FaultPlan {
    let latency = faults.latency_for(model);
    let jitter = latency
        .jitter
        .map(|j| j.mul_f64(uniform(faults.seed, seq, u64::MAX)))
        .unwrap_or_default();
    let delay = latency.latency.unwrap_or_default() + jitter;
    let fault = faults.rules.iter().enumerate().find_map(|(i, rule)| {
        if rule.model.as_deref().is_some_and(|m| m != model) {
            return None;
        }
        let n = if rule.model.is_some() { model_seq } else { seq };
        let fires = match rule.trigger {
            Trigger::Probability(p) => uniform(faults.seed, n, i as u64) < p,
            Trigger::Requests { from, to } => (from..=to).contains(&n),
        };
        fires.then_some(rule.fault)
    });
    FaultPlan {
        fault,
        delay,
        latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FaultRule;

    fn rule(fault: Fault, trigger: Trigger, model: Option<&str>) -> FaultRule {
        FaultRule {
            fault,
            trigger,
            model: model.map(str::to_string),
        }
    }

    #[test]
    fn scripted_sequence_hits_exactly_the_numbered_requests() {
        let faults = Faults::none().with_rule(rule(
            Fault::Status(503),
            Trigger::Requests { from: 10, to: 20 },
            None,
        ));
        let hit: Vec<u64> = (1..=30)
            .filter(|n| plan(&faults, "m", *n, *n).fault.is_some())
            .collect();
        assert_eq!(hit, (10..=20).collect::<Vec<_>>());
    }

    #[test]
    fn probability_is_close_to_its_rate_and_repeatable() {
        let faults = Faults::none().with_rule(rule(Fault::Reset, Trigger::Probability(0.2), None));
        let hits = (1..=10_000)
            .filter(|n| plan(&faults, "m", *n, *n).fault.is_some())
            .count();
        assert!((1800..2200).contains(&hits), "{hits}");
        let again = (1..=10_000)
            .filter(|n| plan(&faults, "m", *n, *n).fault.is_some())
            .count();
        assert_eq!(hits, again);
    }

    #[test]
    fn model_rules_count_that_models_requests_and_spare_others() {
        let faults = Faults::none().with_rule(rule(
            Fault::Hang,
            Trigger::Requests { from: 1, to: 1 },
            Some("a"),
        ));
        assert_eq!(plan(&faults, "a", 5, 1).fault, Some(Fault::Hang));
        assert_eq!(plan(&faults, "b", 1, 1).fault, None);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let faults = Faults {
            latency: Some(Duration::from_millis(20)),
            jitter: Some(Duration::from_millis(10)),
            ..Faults::none()
        };
        for n in 1..100 {
            let d = plan(&faults, "m", n, n).delay;
            assert!(d >= Duration::from_millis(20) && d < Duration::from_millis(30));
        }
    }
}
