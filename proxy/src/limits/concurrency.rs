//! How many requests a key may have in flight while its requests-per-minute limit is unknown
//! (Groq's headers never report it; many OpenAI-compatible servers report nothing). Adaptive by
//! default, as a congestion window: slow start (one more per answer), then additive increase
//! (one more per window's worth of answers), and halved by a 429. A key whose provider sustains
//! any load reaches it within seconds; a hidden limit is found with one multiplicative step per
//! 429, and once a 429 names the limit (Groq's messages do) pacing takes over.

/// Requests in flight a key starts with.
const INITIAL_WINDOW: f64 = 2.0;
/// The most the window grows to (far beyond any client's concurrency).
const MAX_WINDOW: f64 = 4096.0;

/// `[providers] unknown_limits_in_flight`, as a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    /// A congestion window (the default: the setting left out).
    #[default]
    Adaptive,
    /// At most this many in flight (a number).
    Fixed(u32),
    /// No cap (0).
    Unlimited,
}

impl ConcurrencyPolicy {
    /// The policy a config value gives: none → adaptive, 0 → no cap, n → at most n.
    pub fn from_setting(setting: Option<u32>) -> Self {
        match setting {
            None => ConcurrencyPolicy::Adaptive,
            Some(0) => ConcurrencyPolicy::Unlimited,
            Some(n) => ConcurrencyPolicy::Fixed(n),
        }
    }
}

/// One key's in-flight allowance while its requests per minute are unknown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Concurrency {
    policy: ConcurrencyPolicy,
    window: f64,
    threshold: f64,
}

impl Concurrency {
    /// The policy it follows.
    pub fn policy(&self) -> ConcurrencyPolicy {
        self.policy
    }

    /// A fresh allowance under `policy`.
    pub fn new(policy: ConcurrencyPolicy) -> Self {
        Concurrency {
            policy,
            window: INITIAL_WINDOW,
            threshold: f64::INFINITY,
        }
    }

    /// The most requests that may be in flight now (`None`: no cap).
    pub fn limit(&self) -> Option<u32> {
        match self.policy {
            ConcurrencyPolicy::Unlimited => None,
            ConcurrencyPolicy::Fixed(n) => Some(n),
            ConcurrencyPolicy::Adaptive => Some(self.window.floor().max(1.0) as u32),
        }
    }

    /// Whether one more request may go with `in_flight` already out.
    pub fn allows(&self, in_flight: u32) -> bool {
        self.limit().is_none_or(|cap| in_flight < cap)
    }

    /// Whether a request sent with `in_flight` already out fills the window: only answers to
    /// such requests grow it (a client that never fills the window proves nothing about the
    /// provider).
    pub fn at_edge(&self, in_flight: u32) -> bool {
        self.limit().is_some_and(|cap| in_flight + 1 >= cap)
    }

    /// An answer came back (not a 429) for a request sent at the window's edge.
    pub fn on_success(&mut self) {
        if self.policy != ConcurrencyPolicy::Adaptive {
            return;
        }
        self.window += if self.window < self.threshold {
            1.0
        } else {
            1.0 / self.window
        };
        self.window = self.window.min(MAX_WINDOW);
    }

    /// A 429: halve the window, and grow additively from there on.
    pub fn on_rate_limited(&mut self) {
        if self.policy != ConcurrencyPolicy::Adaptive {
            return;
        }
        self.threshold = (self.window / 2.0).max(1.0);
        self.window = self.threshold;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_slow_grows_fast_then_additively_and_halves_on_a_429() {
        let mut c = Concurrency::new(ConcurrencyPolicy::Adaptive);
        assert_eq!(c.limit(), Some(2));
        assert!(c.allows(1) && !c.allows(2));
        for _ in 0..30 {
            c.on_success();
        }
        assert_eq!(c.limit(), Some(32), "slow start: one more per answer");
        c.on_rate_limited();
        assert_eq!(c.limit(), Some(16));
        for _ in 0..16 {
            c.on_success();
        }
        assert_eq!(
            c.limit(),
            Some(16),
            "additive: under one more per window of answers"
        );
        c.on_success();
        assert_eq!(c.limit(), Some(17));
        for _ in 0..100 {
            c.on_rate_limited();
        }
        assert_eq!(c.limit(), Some(1), "never below one");
        assert!(c.at_edge(0));
    }

    #[test]
    fn a_fixed_or_absent_cap_does_not_adapt() {
        let mut fixed = Concurrency::new(ConcurrencyPolicy::from_setting(Some(3)));
        fixed.on_success();
        fixed.on_rate_limited();
        assert_eq!(fixed.limit(), Some(3));
        let none = Concurrency::new(ConcurrencyPolicy::from_setting(Some(0)));
        assert!(none.allows(u32::MAX - 1) && !none.at_edge(1_000));
        assert_eq!(
            ConcurrencyPolicy::from_setting(None),
            ConcurrencyPolicy::Adaptive
        );
    }
}
