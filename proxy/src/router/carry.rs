//! A reload's router takes over its predecessor's limit state for every key that is still
//! there: the same provider (by name), the same model and the same key alias. Anything new
//! starts fresh; anything gone is forgotten. The predecessor admits nothing more: requests
//! still walking its chains (waiting for room, or between attempts) move to the new router,
//! so the two never both spend a key's window (ARCHITECTURE.md, invariant 14).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

use crate::config::Config;
use crate::limits::ledger::CarryMap;
use crate::router::{Attempts, Job, Plan, Router};

/// A router's hand-over to the one a reload puts in its place.
#[derive(Debug, Default)]
pub(super) struct Handover {
    /// Set first: from then on this router admits nothing.
    retiring: AtomicBool,
    /// The router that took over, once it has the state.
    successor: OnceLock<Arc<Router>>,
    /// Fires once the successor is set.
    done: Notify,
}

impl Router {
    /// Takes over from `previous`: it stops admitting, its state (windows, learned limits,
    /// blocks, circuits, refused keys) is carried here for the targets and keys this router
    /// shares with it, and the requests walking its chains wake up and move here. Called
    /// before this router serves.
    pub fn take_over(self: &Arc<Self>, previous: &Router) {
        // Retiring before the carry: any grant the old ledger gives after the carry's
        // snapshot is taken after this store, and its request sees the flag and gives it back.
        previous.handover.retiring.store(true, Ordering::SeqCst);
        self.carry_from(previous);
        let _ = previous.handover.successor.set(self.clone());
        previous.handover.done.notify_waiters();
        previous.ledger.changed().notify_waiters();
    }

    /// Whether a reload has replaced this router.
    pub(super) fn retiring(&self) -> bool {
        self.handover.retiring.load(Ordering::SeqCst)
    }

    /// The router that replaced this one (waits the moment between retiring and hand-over).
    pub(super) async fn successor(&self) -> Arc<Router> {
        loop {
            let done = self.handover.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if let Some(next) = self.handover.successor.get() {
                return next.clone();
            }
            done.await;
        }
    }

    /// `job` as this router routes it (the same route, by name), with `run` fitted to its
    /// chain; `None` when this config has no such route (the request finishes where it was).
    pub(super) fn adopt(&self, job: &Job, run: &mut Attempts, route_name: &str) -> Option<Job> {
        let route = self
            .config
            .routes
            .iter()
            .position(|r| r.model == route_name)?;
        let chain = self.plan.chains[route].len();
        run.skip = vec![false; chain];
        run.failed = vec![false; chain];
        let mut moved = job.clone();
        moved.route = route;
        Some(moved)
    }

    /// Takes over `previous`'s state for the targets and keys this router shares with it.
    fn carry_from(&self, previous: &Router) {
        let map = carry_map(
            (&self.config, &self.plan),
            (&previous.config, &previous.plan),
        );
        let carried = previous.ledger.carry_out(previous.clock.instant());
        self.ledger.carry_in(carried, &map);
    }
}

/// Which old target and key each new one continues.
fn carry_map(new: (&Config, &Plan), old: (&Config, &Plan)) -> CarryMap {
    let (new_config, new_plan) = new;
    let (old_config, old_plan) = old;
    let old_provider = |name: &str| old_config.providers.iter().position(|p| p.name == name);
    let old_key = |provider: usize, alias: &str| {
        old_config.providers[provider]
            .keys
            .iter()
            .position(|k| k.alias == alias)
    };
    let mut map = CarryMap::default();
    for target in &new_plan.targets {
        let provider = &new_config.providers[target.provider];
        let old_target = old_provider(&provider.name).and_then(|op| {
            old_plan
                .targets
                .iter()
                .position(|t| t.provider == op && t.model == target.model)
        });
        let keys = provider
            .keys
            .iter()
            .map(|k| {
                let old_target = &old_plan.targets[old_target?];
                old_key(old_target.provider, &k.alias)
            })
            .collect();
        map.targets.push(old_target);
        map.target_keys.push(keys);
    }
    map.provider_keys = new_config
        .providers
        .iter()
        .map(|p| {
            let op = old_provider(&p.name);
            p.keys
                .iter()
                .map(|k| op.and_then(|op| Some((op, old_key(op, &k.alias)?))))
                .collect()
        })
        .collect();
    map
}
