//! A circuit per target (provider and model): a few consecutive outages open it with a growing
//! cooldown (a single blip does not: a failed attempt already moves its request on); after the
//! cooldown one probe request goes through, and its success closes it.

use std::time::Duration;

use spillway_clock::Instant;

/// When a circuit opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive outages that open it.
    pub failures_to_open: u32,
    /// The first cooldown; it doubles with each further outage.
    pub cooldown: Duration,
    /// The longest cooldown.
    pub max_cooldown: Duration,
}

/// A circuit as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSnapshot {
    /// Consecutive outages.
    pub failures: u32,
    /// As [`Circuit::open_until`]: `None` closed, [`Instant::NEVER`] while a probe is out.
    pub open_until: Option<Instant>,
}

/// One target's circuit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Circuit {
    failures: u32,
    threshold: u32,
    open_until: Instant,
    probing: bool,
}

impl Circuit {
    /// The circuit as a reload hands it over: the probe in flight, if any, answers to the old
    /// state, so the new one may send its own.
    pub fn handed_over(self) -> Self {
        Circuit {
            probing: false,
            ..self
        }
    }

    fn is_open(&self) -> bool {
        self.threshold > 0 && self.failures >= self.threshold
    }

    /// Until when the target may not be tried: `None` when closed, the end of the cooldown
    /// when open, [`Instant::NEVER`] while a probe is out.
    pub fn open_until(&self) -> Option<Instant> {
        if !self.is_open() {
            None
        } else if self.probing {
            Some(Instant::NEVER)
        } else {
            Some(self.open_until)
        }
    }

    /// The circuit as it stands, for the status view.
    pub fn snapshot(&self) -> CircuitSnapshot {
        CircuitSnapshot {
            failures: self.failures,
            open_until: self.open_until(),
        }
    }

    /// Consecutive outages so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A request is being sent: after a cooldown it is the probe. Returns whether it is.
    pub fn on_dispatch(&mut self) -> bool {
        if self.is_open() {
            self.probing = true;
            true
        } else {
            false
        }
    }

    /// The provider answered (any status that is not an outage): close.
    pub fn on_answer(&mut self) {
        *self = Circuit::default();
    }

    /// A probe went away without an answer (the client left): let another one try.
    pub fn on_abandoned_probe(&mut self) {
        self.probing = false;
    }

    /// Another gateway of the fleet found the target failing and opened its circuit until
    /// `until`: open here too, at least that long (a probe in flight stays the probe).
    pub fn opened_elsewhere(&mut self, until: Instant, policy: CircuitPolicy) {
        self.threshold = policy.failures_to_open.max(1);
        self.failures = self.failures.max(self.threshold);
        self.open_until = self.open_until.max(until);
    }

    /// An outage at `now`: once `policy.failures_to_open` have come in a row, open for the
    /// cooldown, doubled per further outage, at most the longest.
    pub fn on_outage(&mut self, now: Instant, policy: CircuitPolicy) {
        self.failures = self.failures.saturating_add(1);
        self.threshold = policy.failures_to_open.max(1);
        self.probing = false;
        if self.failures >= self.threshold {
            let factor = 1u32 << (self.failures - self.threshold).min(20);
            let cooldown = policy
                .cooldown
                .saturating_mul(factor)
                .min(policy.max_cooldown);
            self.open_until = now + cooldown;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    #[test]
    fn outages_open_with_growing_cooldown_and_one_probe_closes() {
        let policy = CircuitPolicy {
            failures_to_open: 2,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(3),
        };
        let mut c = Circuit::default();
        assert_eq!(c.open_until(), None);
        c.on_outage(s(9), policy);
        assert_eq!(c.open_until(), None, "one blip does not open it");
        assert!(!c.on_dispatch());
        c.on_outage(s(10), policy);
        assert_eq!(c.open_until(), Some(s(11)));
        assert!(
            c.on_dispatch(),
            "the first request after the cooldown is the probe"
        );
        assert_eq!(c.open_until(), Some(Instant::NEVER), "one probe at a time");
        c.on_outage(s(11), policy);
        assert_eq!(c.open_until(), Some(s(13)), "doubled");
        c.on_dispatch();
        c.on_outage(s(13), policy);
        assert_eq!(c.open_until(), Some(s(16)), "capped at max");
        c.on_dispatch();
        c.on_answer();
        assert_eq!(c.open_until(), None);
        assert!(!c.on_dispatch());
    }

    #[test]
    fn a_circuit_opened_elsewhere_is_open_here_and_its_next_outage_doubles_the_cooldown() {
        let policy = CircuitPolicy {
            failures_to_open: 3,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(60),
        };
        let mut c = Circuit::default();
        c.opened_elsewhere(s(20), policy);
        assert_eq!(c.open_until(), Some(s(20)));
        c.opened_elsewhere(s(15), policy);
        assert_eq!(c.open_until(), Some(s(20)), "never shortened");
        assert!(c.on_dispatch(), "after it, one probe");
        c.on_outage(s(20), policy);
        assert_eq!(c.open_until(), Some(s(22)));
    }
}
