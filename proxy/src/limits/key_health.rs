//! Whether a provider accepts a key: a key it refused (401, 403, out of credit) is set aside,
//! then tried again with one request after a back-off that doubles while the provider keeps
//! refusing it, and taken back as soon as the provider accepts it.

use std::time::Duration;

use spillway_clock::Instant;

/// A key the provider refused, and when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What the provider said (status and code).
    pub why: String,
    /// From when one request may try it again.
    pub retry_at: Instant,
    /// The back-off that set `retry_at`.
    pub backoff: Duration,
    /// A request is trying it now.
    pub probing: bool,
}

/// One key's standing with its provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHealth(Option<Refused>);

impl KeyHealth {
    /// Whether a request may use the key at `now`: always, unless it was refused; then only
    /// one request, once its back-off has passed.
    pub fn usable(&self, now: Instant) -> bool {
        match &self.0 {
            None => true,
            Some(r) => !r.probing && now >= r.retry_at,
        }
    }

    /// A request is sent with the key; returns whether it is the one trying a refused key.
    pub fn on_dispatch(&mut self) -> bool {
        match &mut self.0 {
            Some(r) => {
                r.probing = true;
                true
            }
            None => false,
        }
    }

    /// The provider refused the key at `now`: set aside for `first`, or for twice the last
    /// back-off (at most `max`) when it was refused before.
    pub fn refused(&mut self, now: Instant, why: String, first: Duration, max: Duration) {
        let backoff = match &self.0 {
            Some(r) => r.backoff.saturating_mul(2).min(max),
            None => first,
        };
        self.0 = Some(Refused {
            why,
            retry_at: now + backoff,
            backoff,
            probing: false,
        });
    }

    /// The provider refused the key on another gateway of the fleet, which sets it aside until
    /// `until`: set aside here at least as long (a request trying it stays the one).
    pub fn refused_elsewhere(&mut self, now: Instant, why: String, until: Instant) {
        match &mut self.0 {
            Some(r) => {
                r.retry_at = r.retry_at.max(until);
                r.why = why;
            }
            None => {
                self.0 = Some(Refused {
                    why,
                    retry_at: until,
                    backoff: until.saturating_duration_since(now),
                    probing: false,
                });
            }
        }
    }

    /// The provider answered without refusing the key: it is usable again. Returns what it
    /// was refused for, if it was.
    pub fn accepted(&mut self) -> Option<Refused> {
        self.0.take()
    }

    /// The request trying the key got no verdict (no answer, or its client left): another
    /// one may try.
    pub fn undecided(&mut self) {
        if let Some(r) = &mut self.0 {
            r.probing = false;
        }
    }

    /// Why the key is set aside, if it is.
    pub fn refusal(&self) -> Option<&Refused> {
        self.0.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    #[test]
    fn a_refused_key_is_retried_by_one_request_with_a_doubling_back_off() {
        let (first, max) = (Duration::from_secs(60), Duration::from_secs(150));
        let mut k = KeyHealth::default();
        assert!(k.usable(s(0)));
        assert!(!k.on_dispatch(), "a healthy key's requests are not probes");
        k.refused(s(0), "401".into(), first, max);
        assert!(!k.usable(s(59)));
        assert!(k.usable(s(60)));
        assert!(k.on_dispatch());
        assert!(!k.usable(s(60)), "one probe at a time");
        k.refused(s(61), "401".into(), first, max);
        assert_eq!(k.refusal().unwrap().retry_at, s(181), "doubled");
        k.on_dispatch();
        k.undecided();
        assert!(k.usable(s(181)), "no verdict: another request may try");
        k.refused(s(181), "401".into(), first, max);
        assert_eq!(k.refusal().unwrap().backoff, max, "capped");
        assert_eq!(k.accepted().map(|r| r.why), Some("401".into()));
        assert!(k.usable(s(0)) && k.refusal().is_none());
    }

    #[test]
    fn a_key_refused_elsewhere_is_set_aside_here_until_then() {
        let (first, max) = (Duration::from_secs(60), Duration::from_secs(600));
        let mut k = KeyHealth::default();
        k.refused_elsewhere(s(10), "401".into(), s(70));
        assert!(!k.usable(s(69)));
        assert!(k.usable(s(70)));
        assert_eq!(k.refusal().unwrap().backoff, first);
        k.refused_elsewhere(s(20), "403".into(), s(50));
        assert_eq!(k.refusal().unwrap().retry_at, s(70), "never shortened");
        assert!(k.on_dispatch());
        k.refused(s(71), "401".into(), first, max);
        assert_eq!(
            k.refusal().unwrap().retry_at,
            s(191),
            "its own refusal doubles"
        );
    }
}
