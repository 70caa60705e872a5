//! A send in progress on one key: it settles the key's reservation in the ledger exactly once,
//! when the answer is in, when the attempt failed, or, if neither happens (its client left),
//! when it is dropped; then the estimate stays counted, as the provider may have counted it.
//! The fleet's reservation, when there is one, follows the same way.

use std::sync::Arc;

use crate::fleet::Held;
use crate::limits::headers::RateLimitSnapshot;
use crate::limits::ledger::{Aftermath, Failure, Grant, Verdict};
use crate::router::Router;
use crate::upstream::StreamEnd;

/// A reservation in flight and the router that settles it.
#[derive(Debug)]
pub struct Ticket {
    router: Arc<Router>,
    grant: Option<Grant>,
    /// The fleet's reservation for the same send.
    held: Option<Held>,
}

impl Ticket {
    pub(super) fn new(router: Arc<Router>, grant: Grant, held: Option<Held>) -> Self {
        Ticket {
            router,
            grant: Some(grant),
            held,
        }
    }

    /// The provider answered: its headers are read, a key being tried again is taken back.
    /// Returns what that key had been refused for.
    pub(super) fn answered(&mut self, snapshot: &RateLimitSnapshot) -> Option<String> {
        let now = self.router.clock.instant();
        let grant = self.grant.as_mut()?;
        self.router.share_learned(grant.target, grant.key, snapshot);
        self.router.ledger.answered(grant, snapshot, now)
    }

    /// Settles a failed attempt. In a fleet, a 429 blocks the key for every member until its
    /// reset, and a refused key, an opened circuit and the limits the answer named are shared,
    /// before the request goes on (so no member sends to the key after this one's client heard
    /// of it; at most the fleet's timeout each), and an attempt the provider did not count is
    /// taken back.
    pub(super) async fn fail(mut self, failure: &Failure) -> Aftermath {
        let now = self.router.clock.instant();
        let Some(grant) = self.grant.take() else {
            return Aftermath::default();
        };
        let (target, key) = (grant.target, grant.key);
        // The ledger learns first: it must, even if this request is dropped while it waits.
        let after = self.router.ledger.failed(grant, failure, now);
        if let Some(fleet) = self.router.fleet.clone() {
            let slot = self.router.slots[target][key].clone();
            let counted = matches!(failure.verdict, Verdict::Outage { counted: true });
            if let Some(held) = self.held.take().filter(|_| !counted) {
                let fleet = fleet.clone();
                tokio::spawn(async move { fleet.release(held).await });
            }
            if let Verdict::RateLimited { until, .. } = &failure.verdict {
                let wait = self
                    .router
                    .clock
                    .to_wall(until.saturating_duration_since(now));
                fleet.block(&slot, wait).await;
            }
            self.router
                .share_failure(&fleet, (target, key), failure, &after, now)
                .await;
        }
        after
    }

    /// Settles a finished answer with the usage it reported (`None`: keep the estimate).
    pub fn finish(mut self, usage: Option<(u64, u64)>) {
        if let (Some(fleet), Some(held)) = (self.router.fleet.clone(), self.held.take()) {
            let tokens = usage.map(|(prompt, completion)| prompt + completion);
            tokio::spawn(async move { fleet.settle(held, tokens).await });
        }
        if let Some(grant) = self.grant.take() {
            let now = self.router.clock.instant();
            self.router.ledger.settle(grant, usage, now);
        }
    }

    /// Settles a stream that ended as `end`, with the usage it reported (`None`: keep the
    /// estimate). A stream that stalled counts as an outage of its target.
    pub fn finish_stream(self, usage: Option<(u64, u64)>, end: &StreamEnd) {
        let router = self.router.clone();
        let target = self.grant.as_ref().map(|g| g.target);
        self.finish(usage);
        if let (StreamEnd::Stalled(_), Some(target)) = (end, target) {
            router.stream_stalled(target);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            let now = self.router.clock.instant();
            self.router.ledger.abandoned(grant, now);
        }
    }
}
