//! A send in progress on one key: it settles the key's reservation in the ledger exactly once,
//! when the answer is in, when the attempt failed, or, if neither happens (its client left),
//! when it is dropped; then the estimate stays counted, as the provider may have counted it.

use std::sync::Arc;

use crate::limits::headers::RateLimitSnapshot;
use crate::limits::ledger::{Aftermath, Failure, Grant};
use crate::router::Router;
use crate::upstream::StreamEnd;

/// A reservation in flight and the router that settles it.
#[derive(Debug)]
pub struct Ticket {
    router: Arc<Router>,
    grant: Option<Grant>,
}

impl Ticket {
    pub(super) fn new(router: Arc<Router>, grant: Grant) -> Self {
        Ticket {
            router,
            grant: Some(grant),
        }
    }

    /// The provider answered: its headers are read, a key being tried again is taken back.
    /// Returns what that key had been refused for.
    pub(super) fn answered(&mut self, snapshot: &RateLimitSnapshot) -> Option<String> {
        let now = self.router.clock.instant();
        let grant = self.grant.as_mut()?;
        self.router.ledger.answered(grant, snapshot, now)
    }

    /// Settles a failed attempt.
    pub(super) fn fail(mut self, failure: &Failure) -> Aftermath {
        let now = self.router.clock.instant();
        match self.grant.take() {
            Some(grant) => self.router.ledger.failed(grant, failure, now),
            None => Aftermath::default(),
        }
    }

    /// Settles a finished answer with the usage it reported (`None`: keep the estimate).
    pub fn finish(mut self, usage: Option<(u64, u64)>) {
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
