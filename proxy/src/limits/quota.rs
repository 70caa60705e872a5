//! A client's own limits (`[[clients]]` with `requests_per_minute` and the like): the same
//! windows a provider key keeps ([`super::window::KeyModelLimits`]), asked at the door, before a
//! request reaches the cache or a provider. A client over its limit is refused at once, never
//! queued: waiting is for provider limits, which the client cannot see.

use std::sync::Mutex;
use std::time::Duration;

use spillway_clock::Instant;

use crate::limits::concurrency::ConcurrencyPolicy;
use crate::limits::kind::{Cost, Kind, Limits};
use crate::limits::window::{KeyModelLimits, KeySnapshot, Readiness, Reservation};

/// How long a client held back only by its own requests in flight is told to wait: one of
/// them settles within moments.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// Why a client's request does not fit its own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// Full now: it fits after `retry_after` (clock time).
    Later {
        /// Clock time until it fits.
        retry_after: Duration,
        /// The limit that is full.
        kind: Kind,
        /// Its value.
        limit: u64,
    },
    /// Larger than one of the client's limits: it never fits.
    TooLarge {
        /// The limit.
        kind: Kind,
        /// Its value.
        limit: u64,
    },
}

/// One client's own windows.
#[derive(Debug)]
pub struct ClientQuota {
    limits: Limits,
    windows: Mutex<KeyModelLimits>,
}

impl ClientQuota {
    /// Windows for `limits`, with nothing sent yet.
    pub fn new(limits: Limits) -> Self {
        ClientQuota {
            limits,
            windows: Mutex::new(KeyModelLimits::new(limits, ConcurrencyPolicy::Unlimited)),
        }
    }

    /// The client's configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether a limit counts tokens (then a request's prompt is counted at the door).
    pub fn counts_tokens(&self) -> bool {
        self.limits.iter().any(|(kind, _)| !kind.counts_requests())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyModelLimits> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `cost` at `now` when it fits the client's limits; the decision and the
    /// reservation are one step.
    pub fn admit(&self, now: Instant, cost: Cost) -> Result<Reservation, QuotaRefusal> {
        let mut w = self.lock();
        w.expire(now);
        let full = |kind: Option<Kind>| {
            let kind = kind
                .or_else(|| {
                    w.known()
                        .iter()
                        .map(|(k, _)| k)
                        .find(|k| w.remaining(*k).is_some_and(|left| left < k.amount(&cost)))
                })
                .unwrap_or(Kind::RequestsPerMinute);
            (kind, w.known().get(kind).unwrap_or(0))
        };
        let (retry_after, (kind, limit)) = match w.readiness(now, &cost, false) {
            Readiness::Now => return Ok(w.reserve(cost)),
            Readiness::TooLarge(kind) => {
                let limit = w.known().get(kind).unwrap_or(0);
                return Err(QuotaRefusal::TooLarge { kind, limit });
            }
            Readiness::At(at) => (
                at.saturating_duration_since(now),
                full(w.binding(now, &cost)),
            ),
            Readiness::WhenSettled(frees) => (
                frees.map_or(IN_FLIGHT_RETRY, |at| {
                    at.saturating_duration_since(now).min(IN_FLIGHT_RETRY)
                }),
                full(None),
            ),
        };
        Err(QuotaRefusal::Later {
            retry_after,
            kind,
            limit,
        })
    }

    /// Settles a reservation at `now`: `Some(actual)` counts what the request cost, `None`
    /// takes it back (nothing reached a provider).
    pub fn settle(&self, reservation: Reservation, actual: Option<Cost>, now: Instant) {
        self.lock().settle(reservation, actual, now);
    }

    /// The client's windows as they stand at `now`.
    pub fn snapshot(&self, now: Instant) -> KeySnapshot {
        let mut w = self.lock();
        w.expire(now);
        w.snapshot(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn t(us: u64) -> Instant {
        Instant::from_micros(us)
    }

    #[test]
    fn a_client_over_its_requests_per_minute_is_told_when_the_oldest_leaves() {
        let q = ClientQuota::new(Limits::default().with(Kind::RequestsPerMinute, 2));
        let one = Cost::request(5, 5);
        for at in [0, 10 * S] {
            let r = q.admit(t(at), one).expect("fits");
            q.settle(r, Some(one), t(at));
        }
        assert_eq!(
            q.admit(t(20 * S), one),
            Err(QuotaRefusal::Later {
                retry_after: Duration::from_secs(40),
                kind: Kind::RequestsPerMinute,
                limit: 2
            })
        );
        assert!(q.admit(t(60 * S), one).is_ok());
    }

    #[test]
    fn tokens_count_what_was_used_and_a_taken_back_reservation_costs_nothing() {
        let q = ClientQuota::new(Limits::default().with(Kind::TokensPerDay, 1000));
        assert!(q.counts_tokens());
        let r = q.admit(t(0), Cost::request(100, 800)).expect("fits");
        assert!(matches!(
            q.admit(t(0), Cost::request(100, 100)),
            Err(QuotaRefusal::Later { retry_after, kind: Kind::TokensPerDay, .. }) if retry_after == IN_FLIGHT_RETRY
        ));
        q.settle(r, Some(Cost::request(100, 50)), t(S));
        let r = q.admit(t(S), Cost::request(100, 100)).expect("fits now");
        q.settle(r, None, t(S));
        let snap = q.snapshot(t(S));
        assert_eq!(snap.windows[0].used, 150);
        assert_eq!(snap.windows[0].remaining, 850);
        assert_eq!(
            q.admit(t(S), Cost::request(900, 200)),
            Err(QuotaRefusal::TooLarge {
                kind: Kind::TokensPerDay,
                limit: 1000
            })
        );
    }
}
