//! The in-process ledger: every target's and key's state in memory, behind one lock, so a
//! decision and the reservation it makes are one step (ARCHITECTURE.md, invariant 1).

use std::sync::{Mutex, MutexGuard};

use spillway_clock::Instant;
use tokio::sync::Notify;

use crate::limits::circuit::Circuit;
use crate::limits::estimate::{CompletionEstimate, Correction};
use crate::limits::headers::RateLimitSnapshot;
use crate::limits::key_health::KeyHealth;
use crate::limits::kind::{Cost, Kind};
use crate::limits::ledger::{
    Admission, Aftermath, Ask, Carried, CarriedTarget, CarryMap, Failure, Grant, HeldBack, Ledger,
    Passed, Pool, PoolReading, ProviderSpec, Reading, RefusedKey, TargetId, TargetSnapshot,
    TargetSpec, Verdict,
};
use crate::limits::pacer::{self, Decision, KeyView, TargetView};
use crate::limits::window::KeyModelLimits;

/// One target's state.
#[derive(Debug)]
struct TargetState {
    provider: usize,
    circuit: Circuit,
    correction: Correction,
    completions: CompletionEstimate,
    keys: Vec<KeyModelLimits>,
}

impl TargetState {
    /// What a request is estimated to cost here.
    fn cost(&self, ask: &Ask<'_>) -> Cost {
        let completion = ask
            .completion
            .unwrap_or_else(|| self.completions.estimate(ask.default_completion));
        Cost::request(self.correction.apply(ask.prompt.unwrap_or(0)), completion)
    }
}

#[derive(Debug)]
struct State {
    targets: Vec<TargetState>,
    /// Per provider, per key: whether the provider accepts it.
    keys: Vec<Vec<KeyHealth>>,
}

/// The ledger of one gateway process.
#[derive(Debug)]
pub struct LocalLedger {
    state: Mutex<State>,
    providers: Vec<ProviderSpec>,
    changed: Notify,
}

impl LocalLedger {
    /// A ledger for these targets and providers, with nothing sent yet.
    pub fn new(targets: &[TargetSpec], providers: Vec<ProviderSpec>) -> Self {
        let targets = targets
            .iter()
            .map(|t| TargetState {
                provider: t.provider,
                circuit: Circuit::default(),
                correction: Correction::default(),
                completions: CompletionEstimate::default(),
                keys: (0..providers[t.provider].keys)
                    .map(|_| KeyModelLimits::new(t.limits, t.concurrency))
                    .collect(),
            })
            .collect();
        let keys = providers
            .iter()
            .map(|p| vec![KeyHealth::default(); p.keys])
            .collect();
        LocalLedger {
            state: Mutex::new(State { targets, keys }),
            providers,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The pacer's decision over a chain's targets as they stand, and on a `Go`, what it passed
/// over.
fn decide(st: &State, ask: &Ask<'_>, now: Instant) -> (Decision, Vec<Passed>) {
    let views: Vec<TargetView<'_>> = ask
        .chain
        .iter()
        .zip(ask.skip)
        .map(|(&id, &skip)| {
            let target = &st.targets[id];
            let health = &st.keys[target.provider];
            TargetView {
                open_until: target.circuit.open_until(),
                keys: target
                    .keys
                    .iter()
                    .zip(health)
                    .map(|(limits, health)| KeyView {
                        limits,
                        disabled: !health.usable(now),
                    })
                    .collect(),
                cost: target.cost(ask),
                calibrating: !target.correction.calibrated(),
                skip,
            }
        })
        .collect();
    let decision = pacer::decide(now, &views, ask.deadline);
    let passed = match decision {
        Decision::Go { target, key } => pacer::passed(now, &views, target, key),
        // No key is chosen: every key of every target is one passed over.
        Decision::Refused(_) if !views.is_empty() => {
            pacer::passed(now, &views, views.len() - 1, usize::MAX)
        }
        _ => Vec::new(),
    };
    (decision, passed)
}

impl Ledger for LocalLedger {
    fn admit(&self, ask: &Ask<'_>, now: Instant) -> Admission {
        let mut st = self.lock();
        for &id in ask.chain {
            for key in &mut st.targets[id].keys {
                key.expire(now);
            }
        }
        if ask.prompt.is_none() && counts_tokens(&st, ask.chain) {
            return Admission::NeedPrompt;
        }
        let (decision, passed) = decide(&st, ask, now);
        match decision {
            Decision::Go { target, key } => {
                let id = ask.chain[target];
                let provider = st.targets[id].provider;
                let key_probe = st.keys[provider][key].on_dispatch();
                let t = &mut st.targets[id];
                let cost = t.cost(ask);
                let probe = t.circuit.on_dispatch();
                Admission::Go(Grant {
                    target: id,
                    position: target,
                    key,
                    reservation: t.keys[key].reserve(cost),
                    prompt: ask.prompt,
                    probe,
                    key_probe,
                    passed,
                })
            }
            Decision::Wait(until) => Admission::Wait(until),
            Decision::Refused(refusal) => Admission::Refused(refusal, passed),
        }
    }

    fn answered(
        &self,
        grant: &mut Grant,
        snapshot: &RateLimitSnapshot,
        now: Instant,
    ) -> Option<String> {
        let mut st = self.lock();
        let t = &mut st.targets[grant.target];
        t.keys[grant.key].observe(now, snapshot);
        t.circuit.on_answer();
        let provider = t.provider;
        if !std::mem::take(&mut grant.key_probe) {
            return None;
        }
        st.keys[provider][grant.key].accepted().map(|r| r.why)
    }

    fn settle(&self, grant: Grant, usage: Option<(u64, u64)>, now: Instant) {
        let mut st = self.lock();
        let t = &mut st.targets[grant.target];
        let actual = match usage {
            Some((prompt, completion)) => {
                if let Some(estimate) = grant.prompt {
                    t.correction.learn(estimate, prompt);
                }
                t.completions.learn(completion);
                Cost::request(prompt, completion)
            }
            None => grant.reservation.cost,
        };
        let key = &mut t.keys[grant.key];
        key.answered(&grant.reservation);
        key.settle(grant.reservation, Some(actual), now);
        drop(st);
        self.changed.notify_waiters();
    }

    fn failed(&self, grant: Grant, failure: &Failure, now: Instant) -> Aftermath {
        let mut st = self.lock();
        let provider = st.targets[grant.target].provider;
        let mut after = Aftermath::default();
        let t = &mut st.targets[grant.target];
        t.keys[grant.key].observe(now, &failure.snapshot);
        match &failure.verdict {
            Verdict::Outage { .. } => {
                t.circuit.on_outage(now, self.providers[provider].circuit);
                after.circuit_failures = t.circuit.failures();
                after.circuit_open_until = t.circuit.open_until();
            }
            _ => t.circuit.on_answer(),
        }
        if let Verdict::RateLimited {
            until,
            kind,
            learned,
        } = &failure.verdict
        {
            let key = &mut t.keys[grant.key];
            if let Some((kind, limit)) = learned {
                key.learn(*kind, *limit);
            }
            key.block(*until, *kind);
        }
        // A timeout may have been counted by the provider; anything it refused was not.
        let counted = matches!(failure.verdict, Verdict::Outage { counted: true });
        let reservation = grant.reservation;
        t.keys[grant.key].settle(reservation, counted.then_some(reservation.cost), now);
        let health = &mut st.keys[provider][grant.key];
        if let Verdict::KeyRefused { why } = &failure.verdict {
            let spec = &self.providers[provider];
            health.refused(now, why.clone(), spec.key_retry, spec.max_key_retry);
            after.key_set_aside_for = health.refusal().map(|r| r.backoff);
        } else if grant.key_probe {
            // An answer that does not refuse the key accepts it; no answer decides nothing.
            if failure.answered {
                after.key_accepted = health.accepted().map(|r| r.why);
            } else {
                health.undecided();
            }
        }
        drop(st);
        self.changed.notify_waiters();
        after
    }

    fn abandoned(&self, grant: Grant, now: Instant) {
        let mut st = self.lock();
        let t = &mut st.targets[grant.target];
        let reservation = grant.reservation;
        t.keys[grant.key].settle(reservation, Some(reservation.cost), now);
        if grant.probe {
            t.circuit.on_abandoned_probe();
        }
        if grant.key_probe {
            let provider = t.provider;
            st.keys[provider][grant.key].undecided();
        }
        drop(st);
        self.changed.notify_waiters();
    }

    fn released(&self, grant: Grant, now: Instant) {
        release(&mut self.lock(), grant, now);
        self.changed.notify_waiters();
    }

    fn held_back(&self, grant: Grant, why: &HeldBack, now: Instant) {
        let (target, key) = (grant.target, grant.key);
        let mut st = self.lock();
        release(&mut st, grant, now);
        let provider = st.targets[target].provider;
        match why {
            HeldBack::Key { until } => st.targets[target].keys[key].hold(*until),
            HeldBack::KeyRefused { why, until } => {
                st.keys[provider][key].refused_elsewhere(now, why.clone(), *until);
            }
            HeldBack::CircuitOpen { until } => {
                let policy = self.providers[provider].circuit;
                st.targets[target].circuit.opened_elsewhere(*until, policy);
            }
        }
        drop(st);
        self.changed.notify_waiters();
    }

    fn learn(&self, target: TargetId, key: usize, learned: &[(Kind, u64)]) {
        let mut st = self.lock();
        if let Some(limits) = st.targets.get_mut(target).and_then(|t| t.keys.get_mut(key)) {
            for &(kind, limit) in learned {
                limits.learn(kind, limit);
            }
        }
    }

    fn stalled(&self, target: TargetId, now: Instant) -> u32 {
        let mut st = self.lock();
        let t = &mut st.targets[target];
        t.circuit.on_outage(now, self.providers[t.provider].circuit);
        let failures = t.circuit.failures();
        drop(st);
        self.changed.notify_waiters();
        failures
    }

    fn counts_tokens(&self, chain: &[TargetId]) -> bool {
        counts_tokens(&self.lock(), chain)
    }

    fn readings(&self, now: Instant) -> Vec<Reading> {
        let mut st = self.lock();
        let mut out = Vec::new();
        for (target, t) in st.targets.iter_mut().enumerate() {
            for (k, key) in t.keys.iter_mut().enumerate() {
                key.expire(now);
                for (kind, limit) in key.known().iter() {
                    out.push(Reading {
                        target,
                        key: k,
                        kind,
                        limit,
                        remaining: key.remaining(kind).unwrap_or(limit),
                    });
                }
            }
        }
        out
    }

    fn pool(&self, chain: &[TargetId], now: Instant) -> Pool {
        let mut st = self.lock();
        let mut sums: [Option<(u64, u64, Instant)>; Kind::ALL.len()] = Default::default();
        for &id in chain {
            for key in &mut st.targets[id].keys {
                key.expire(now);
                for (kind, limit) in key.known().iter() {
                    let remaining = key.remaining(kind).unwrap_or(limit);
                    let reset = key.resets_at(now, kind).unwrap_or(now);
                    let (l, r, at) = sums[kind.index()].get_or_insert((0, 0, now));
                    *l = l.saturating_add(limit);
                    *r = r.saturating_add(remaining);
                    *at = (*at).max(reset);
                }
            }
        }
        let mut pool = Pool::default();
        for kind in Kind::ALL {
            pool.set(
                kind,
                sums[kind.index()].map(|(limit, remaining, at)| PoolReading {
                    limit,
                    remaining,
                    resets_in: at.saturating_duration_since(now),
                }),
            );
        }
        pool
    }

    fn refused_keys(&self) -> Vec<RefusedKey> {
        let st = self.lock();
        let mut out = Vec::new();
        for (provider, keys) in st.keys.iter().enumerate() {
            for (key, health) in keys.iter().enumerate() {
                if let Some(r) = health.refusal() {
                    out.push(RefusedKey {
                        provider,
                        key,
                        why: r.why.clone(),
                    });
                }
            }
        }
        out
    }

    fn snapshot(&self, now: Instant) -> Vec<TargetSnapshot> {
        let mut st = self.lock();
        let State { targets, keys } = &mut *st;
        targets
            .iter_mut()
            .map(|t| TargetSnapshot {
                circuit: t.circuit.snapshot(),
                keys: t
                    .keys
                    .iter_mut()
                    .map(|k| {
                        k.expire(now);
                        k.snapshot(now)
                    })
                    .collect(),
                refused: keys[t.provider]
                    .iter()
                    .map(|h| h.refusal().cloned())
                    .collect(),
            })
            .collect()
    }

    fn changed(&self) -> &Notify {
        &self.changed
    }

    fn carry_out(&self, now: Instant) -> Carried {
        let st = self.lock();
        Carried {
            targets: st
                .targets
                .iter()
                .map(|t| CarriedTarget {
                    circuit: t.circuit.handed_over(),
                    correction: t.correction,
                    completions: t.completions.clone(),
                    keys: t.keys.iter().map(|k| k.handed_over(now)).collect(),
                })
                .collect(),
            keys: st.keys.clone(),
        }
    }

    fn carry_in(&self, mut carried: Carried, map: &CarryMap) {
        let mut st = self.lock();
        for (id, target) in st.targets.iter_mut().enumerate() {
            let Some(old) = map.targets.get(id).copied().flatten() else {
                continue;
            };
            let Some(from) = carried.targets.get_mut(old) else {
                continue;
            };
            target.circuit = from.circuit;
            target.correction = from.correction;
            target.completions = from.completions.clone();
            for (k, key) in target.keys.iter_mut().enumerate() {
                let old_key = map
                    .target_keys
                    .get(id)
                    .and_then(|keys| keys.get(k))
                    .copied();
                if let Some(history) = old_key.flatten().and_then(|ok| from.keys.get(ok)) {
                    *key = key.clone().with_history(history.clone());
                }
            }
        }
        for (p, keys) in st.keys.iter_mut().enumerate() {
            for (k, health) in keys.iter_mut().enumerate() {
                let old = map
                    .provider_keys
                    .get(p)
                    .and_then(|keys| keys.get(k))
                    .copied();
                if let Some(h) = old
                    .flatten()
                    .and_then(|(op, ok)| carried.keys.get(op).and_then(|keys| keys.get(ok)))
                {
                    *health = h.clone();
                }
            }
        }
    }
}

/// Takes back a grant that was never sent: nothing of it is counted, and a probe it was lets
/// another request probe.
fn release(st: &mut State, grant: Grant, now: Instant) {
    let t = &mut st.targets[grant.target];
    t.keys[grant.key].settle(grant.reservation, None, now);
    if grant.probe {
        t.circuit.on_abandoned_probe();
    }
    if grant.key_probe {
        let provider = t.provider;
        st.keys[provider][grant.key].undecided();
    }
}

fn counts_tokens(st: &State, chain: &[TargetId]) -> bool {
    chain.iter().any(|&id| {
        st.targets[id]
            .keys
            .iter()
            .any(KeyModelLimits::counts_tokens)
    })
}
