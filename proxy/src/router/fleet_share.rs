//! What an attempt found that the other gateways of a fleet must know at once (ARCHITECTURE.md,
//! invariant 12): limits learned from the provider's headers or 429 message, a key the provider
//! refused, a target whose circuit opened (by failed attempts or a stream that stalled). The
//! fleet writes them where every member's next reservation reads them.

use std::sync::Arc;

use spillway_clock::Instant;

use crate::fleet::{Fleet, Slot};
use crate::limits::headers::RateLimitSnapshot;
use crate::limits::kind::Kind;
use crate::limits::ledger::{Aftermath, Failure, Grant, HeldBack, TargetId, Verdict};
use crate::router::Router;

/// The limits a response's headers (and a 429's message) name.
fn limits_named(snapshot: &RateLimitSnapshot, verdict: Option<&Verdict>) -> Vec<(Kind, u64)> {
    let mut out: Vec<(Kind, u64)> = snapshot
        .readings
        .iter()
        .filter_map(|r| Some((r.kind, r.limit?)))
        .collect();
    if let Some(Verdict::RateLimited {
        learned: Some(pair),
        ..
    }) = verdict
    {
        out.retain(|(k, _)| *k != pair.0);
        out.push(*pair);
    }
    out
}

impl Router {
    /// The fleet's slot of `key` at every target of `target`'s provider (a key is refused for
    /// all its models).
    fn slots_of_key(&self, target: TargetId, key: usize) -> Vec<Arc<Slot>> {
        let provider = self.plan.targets[target].provider;
        self.plan
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.provider == provider)
            .filter_map(|(id, _)| self.slots[id].get(key).cloned())
            .collect()
    }

    /// Says in the log what another member found, the first time this gateway hears of it
    /// (then its ledger passes over the key or target by itself): a key refused, a circuit
    /// open. A window that is full is no news.
    pub(super) fn log_fleet_hold(&self, grant: &Grant, why: &HeldBack) {
        let t = &self.plan.targets[grant.target];
        let provider = &self.config.providers[t.provider];
        let wait = |until: &Instant| {
            self.clock
                .to_wall(until.saturating_duration_since(self.clock.instant()))
        };
        match why {
            HeldBack::KeyRefused { why, until } => {
                let alias = &provider.keys[grant.key].alias;
                tracing::warn!(provider = %provider.name, key = %alias, reason = %why, retry_in = ?wait(until), "key set aside: the provider refused it on another gateway of the fleet");
            }
            HeldBack::CircuitOpen { until } => {
                tracing::warn!(provider = %provider.name, model = %t.model, cooldown = ?wait(until), "target passed over: its circuit is open on another gateway of the fleet");
            }
            HeldBack::Key { .. } => {}
        }
    }

    /// Shares the limits an answer's headers named for `key` at `target`, without holding
    /// the answer back.
    pub(super) fn share_learned(&self, target: TargetId, key: usize, snapshot: &RateLimitSnapshot) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        let learned = limits_named(snapshot, None);
        let slot = self.slots[target][key].clone();
        let fresh = fleet.fresh_learned(&slot, &learned);
        if !fresh.is_empty() {
            tokio::spawn(async move { fleet.share_learned(&slot, &fresh).await });
        }
    }

    /// Shares the circuit a stream of `target` that stalled at `now` opened, if it did,
    /// without holding the stream's end back.
    pub(super) fn share_stall(&self, target: TargetId, now: Instant) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        let Some(until) = self
            .ledger
            .snapshot(now)
            .get(target)
            .and_then(|t| t.circuit.open_until)
            .filter(|&until| until < Instant::NEVER)
        else {
            return;
        };
        let open = self.clock.to_wall(until.saturating_duration_since(now));
        let slots = self.slots[target].clone();
        tokio::spawn(async move { fleet.open_circuit(&slots, open).await });
    }

    /// Shares what a failed attempt of `key` at `target` found at `now`, before its request
    /// goes on: the limits it named, the key's refusal, the circuit it opened.
    pub(super) async fn share_failure(
        &self,
        fleet: &Fleet,
        (target, key): (TargetId, usize),
        failure: &Failure,
        after: &Aftermath,
        now: Instant,
    ) {
        let slot = &self.slots[target][key];
        let learned = limits_named(&failure.snapshot, Some(&failure.verdict));
        fleet
            .share_learned(slot, &fleet.fresh_learned(slot, &learned))
            .await;
        if let (Verdict::KeyRefused { why }, Some(aside)) =
            (&failure.verdict, after.key_set_aside_for)
        {
            let slots = self.slots_of_key(target, key);
            fleet
                .refuse_key(&slots, why, self.clock.to_wall(aside))
                .await;
        }
        if let Some(until) = after.circuit_open_until {
            let open = self.clock.to_wall(until.saturating_duration_since(now));
            fleet.open_circuit(&self.slots[target], open).await;
        }
    }
}
