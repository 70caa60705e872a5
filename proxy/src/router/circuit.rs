//! A circuit per target (provider and model): consecutive outages open it with a growing
//! cooldown; after the cooldown one probe request goes through, and its success closes it.

use std::time::Duration;

use crate::limits::window::micros;

/// One target's circuit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Circuit {
    failures: u32,
    open_until: u64,
    probing: bool,
}

impl Circuit {
    /// Clock µs from which the target may be tried: 0 when closed, the end of the cooldown
    /// when open, `u64::MAX` while a probe is out.
    pub fn available_at(&self) -> u64 {
        if self.failures == 0 {
            0
        } else if self.probing {
            u64::MAX
        } else {
            self.open_until
        }
    }

    /// Consecutive outages so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A request is being sent: after a cooldown it is the probe. Returns whether it is.
    pub fn on_dispatch(&mut self) -> bool {
        if self.failures > 0 {
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

    /// An outage at `now`: open for `base` doubled per consecutive outage, at most `max`.
    pub fn on_outage(&mut self, now: u64, base: Duration, max: Duration) {
        self.failures = self.failures.saturating_add(1);
        self.probing = false;
        let factor = 1u32 << (self.failures - 1).min(20);
        let cooldown = base.saturating_mul(factor).min(max);
        self.open_until = now + micros(cooldown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn outages_open_with_growing_cooldown_and_one_probe_closes() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(3));
        let mut c = Circuit::default();
        assert_eq!(c.available_at(), 0);
        c.on_outage(10 * S, base, max);
        assert_eq!(c.available_at(), 11 * S);
        assert!(
            c.on_dispatch(),
            "the first request after the cooldown is the probe"
        );
        assert_eq!(c.available_at(), u64::MAX, "one probe at a time");
        c.on_outage(11 * S, base, max);
        assert_eq!(c.available_at(), 13 * S, "doubled");
        c.on_dispatch();
        c.on_outage(13 * S, base, max);
        assert_eq!(c.available_at(), 16 * S, "capped at max");
        c.on_dispatch();
        c.on_answer();
        assert_eq!(c.available_at(), 0);
        assert!(!c.on_dispatch());
    }
}
