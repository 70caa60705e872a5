//! The ledger: the one seam between the router and the state of its targets and keys. Every
//! question the router asks of that state is a method of [`Ledger`], and each is atomic: may
//! this request go now, through which key, with what reserved ([`Ledger::admit`]); what the
//! provider's answer said ([`Ledger::answered`], [`Ledger::failed`]); what the request cost in
//! the end ([`Ledger::settle`], [`Ledger::abandoned`]); who has headroom and when a window is
//! whole again ([`Ledger::readings`], [`Ledger::pool`]); which keys are set aside
//! ([`Ledger::refused_keys`]); and, through [`Ledger::changed`], when anything frees.
//!
//! The state behind it: per key and model, the limit windows ([`super::window`]); per target,
//! its circuit ([`super::circuit`]) and token estimates ([`super::estimate`]); per provider
//! key, whether the provider accepts it ([`super::key_health`]). The in-process ledger
//! ([`super::local::LocalLedger`]) holds it in memory; a ledger shared by several gateways
//! answers the same questions from a store they share, without the router or the pacer
//! changing (ARCHITECTURE.md, invariant 10).

use std::fmt;
use std::time::Duration;

use spillway_clock::Instant;
use tokio::sync::Notify;

use crate::limits::circuit::{Circuit, CircuitPolicy, CircuitSnapshot};
use crate::limits::concurrency::ConcurrencyPolicy;
use crate::limits::estimate::{CompletionEstimate, Correction};
use crate::limits::headers::RateLimitSnapshot;
use crate::limits::key_health::{KeyHealth, Refused};
use crate::limits::kind::{Kind, Limits};
pub use crate::limits::pacer::{Pass, Passed, Refusal};
use crate::limits::window::{KeyModelLimits, KeySnapshot, Reservation};

/// A target's index in the ledger: one provider's model, with that provider's keys.
pub type TargetId = usize;

/// A target as the ledger is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// The provider's index (its keys' standing is shared by all its targets).
    pub provider: usize,
    /// The model's configured limits, per key.
    pub limits: Limits,
    /// How many requests may be in flight per key while requests per minute are unknown.
    pub concurrency: ConcurrencyPolicy,
}

/// A provider as the ledger is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSpec {
    /// How many keys it has.
    pub keys: usize,
    /// When its targets' circuits open and for how long.
    pub circuit: CircuitPolicy,
    /// How long a key the provider refused is set aside at first.
    pub key_retry: Duration,
    /// The longest a refused key is set aside.
    pub max_key_retry: Duration,
}

/// What a request asks the ledger for: a key with room for it at one of its chain's targets.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The route's targets, in fallback order.
    pub chain: &'a [TargetId],
    /// Per chain position: skipped for this request (it failed there already, or the target
    /// said it is too large for it).
    pub skip: &'a [bool],
    /// Prompt tokens by the local tokenizer, once counted (see [`Admission::NeedPrompt`]).
    pub prompt: Option<u64>,
    /// Completion tokens the request may use; `None`: each target estimates from what its
    /// answers used, starting from `default_completion`.
    pub completion: Option<u64>,
    /// The completion estimate before a target has answered anything.
    pub default_completion: u64,
    /// The latest moment the request may be sent.
    pub deadline: Instant,
}

/// The ledger's answer to an [`Ask`].
#[derive(Debug)]
pub enum Admission {
    /// Send now, with this reservation.
    Go(Grant),
    /// A target of the chain counts tokens: count the prompt and ask again.
    NeedPrompt,
    /// Nothing has room now; ask again at this time, or when [`Ledger::changed`] fires.
    /// `None`: only a settlement can help.
    Wait(Option<Instant>),
    /// No target can take it before the deadline; what the decision passed over, and why
    /// (every key of every target not skipped).
    Refused(Refusal, Vec<Passed>),
}

/// A reservation on one key of one target, to be settled exactly once ([`Ledger::settle`],
/// [`Ledger::failed`] or [`Ledger::abandoned`]).
#[derive(Debug)]
#[must_use = "a grant holds a reservation until it is settled"]
pub struct Grant {
    /// The target.
    pub target: TargetId,
    /// The target's position in the request's chain.
    pub position: usize,
    /// The key, among the provider's keys.
    pub key: usize,
    /// What was reserved.
    pub reservation: Reservation,
    /// The local prompt count the decision used, when it needed one.
    pub prompt: Option<u64>,
    /// The request is the probe of an open circuit.
    pub probe: bool,
    /// The request is trying a key its provider refused before.
    pub key_probe: bool,
    /// What the decision passed over before this key, and why.
    pub passed: Vec<Passed>,
}

/// What a failed attempt means for its key and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A 429: the key waits until `until`; `learned` is a limit the provider's message named.
    RateLimited {
        /// When the key may be used again (clock time).
        until: Instant,
        /// The limit that was hit, when known.
        kind: Option<Kind>,
        /// A limit value read from the message.
        learned: Option<(Kind, u64)>,
    },
    /// The provider refused the key itself (401, 403, out of credit): set aside.
    KeyRefused {
        /// What the provider said (status and code).
        why: String,
    },
    /// The target is failing (5xx, 529, no answer, an unusable answer).
    Outage {
        /// The provider may have counted the request (it timed out after sending).
        counted: bool,
    },
    /// The target answered, but cannot take this request (too large for it, and the like).
    Declined,
    /// The provider refused the request itself; the client gets its answer.
    RequestRefused,
}

/// A failed attempt as the ledger learns it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What the answer's rate-limit headers said (empty when there was no answer).
    pub snapshot: RateLimitSnapshot,
    /// What it means.
    pub verdict: Verdict,
    /// The provider answered with a status (a key being tried again is then accepted unless
    /// the answer refused it).
    pub answered: bool,
}

/// What a failure changed, for the router's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aftermath {
    /// The target's consecutive outages.
    pub circuit_failures: u32,
    /// Until when the target's circuit is open, when this failure left it open (clock time).
    pub circuit_open_until: Option<Instant>,
    /// How long a refused key is now set aside.
    pub key_set_aside_for: Option<Duration>,
    /// A key taken back: what it had been refused for.
    pub key_accepted: Option<String>,
}

/// What the other gateways of a fleet found that keeps a grant's send back (ARCHITECTURE.md,
/// invariant 12): applied to this ledger as if this gateway had found it itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldBack {
    /// The key waits until then: its shared window is full, or a 429 blocks it (clock time).
    Key {
        /// When it may be tried again.
        until: Instant,
    },
    /// The provider refused the key on another gateway: set aside until then.
    KeyRefused {
        /// What the provider said (status and code).
        why: String,
        /// When one request may try it again.
        until: Instant,
    },
    /// The target's circuit is open on another gateway until then.
    CircuitOpen {
        /// When a probe may go.
        until: Instant,
    },
}

/// One known limit of one key at one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The target.
    pub target: TargetId,
    /// The key.
    pub key: usize,
    /// Which limit.
    pub kind: Kind,
    /// Its value (configured or learned).
    pub limit: u64,
    /// What is left now, reservations counted.
    pub remaining: u64,
}

/// A limit summed over every key of a route's targets that knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolReading {
    /// The sum of the limits.
    pub limit: u64,
    /// The sum of what is left.
    pub remaining: u64,
    /// Clock time until the last of those windows is whole again.
    pub resets_in: Duration,
}

/// [`PoolReading`]s by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pool([Option<PoolReading>; Kind::ALL.len()]);

impl Pool {
    /// The reading for `kind`, when some key knows that limit.
    pub fn get(&self, kind: Kind) -> Option<PoolReading> {
        self.0[kind.index()]
    }

    /// Sets the reading for `kind`.
    pub fn set(&mut self, kind: Kind, reading: Option<PoolReading>) {
        self.0[kind.index()] = reading;
    }
}

/// A key its provider refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedKey {
    /// The provider's index.
    pub provider: usize,
    /// The key's index.
    pub key: usize,
    /// What the provider said.
    pub why: String,
}

/// One target's state as a reload hands it from the old ledger to the new.
#[derive(Debug, Clone)]
pub struct CarriedTarget {
    /// Its circuit.
    pub circuit: Circuit,
    /// Its prompt-token correction.
    pub correction: Correction,
    /// Its completion-length estimate.
    pub completions: CompletionEstimate,
    /// Per key: its limit state ([`KeyModelLimits::handed_over`]).
    pub keys: Vec<KeyModelLimits>,
}

/// Everything a ledger holds, as a reload hands it over.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    /// Per old target.
    pub targets: Vec<CarriedTarget>,
    /// Per old provider, per key: whether the provider accepts it.
    pub keys: Vec<Vec<KeyHealth>>,
}

/// Where a new ledger's state comes from: the old target and key of the same provider, model
/// and key alias; `None` starts fresh.
#[derive(Debug, Clone, Default)]
pub struct CarryMap {
    /// Per new target: the old target of the same provider and model.
    pub targets: Vec<Option<TargetId>>,
    /// Per new target, per key: the key of the same alias at that old target.
    pub target_keys: Vec<Vec<Option<usize>>>,
    /// Per new provider, per key: the old provider and key of the same names.
    pub provider_keys: Vec<Vec<Option<(usize, usize)>>>,
}

/// One target's state as it stands, for the status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSnapshot {
    /// Its circuit.
    pub circuit: CircuitSnapshot,
    /// Per key of its provider: its windows and block.
    pub keys: Vec<KeySnapshot>,
    /// Per key of its provider: the provider's refusal, when it is set aside.
    pub refused: Vec<Option<Refused>>,
}

/// The state of every target and key, and the only way the router reads or changes it.
pub trait Ledger: Send + Sync + fmt::Debug {
    /// Decides for a request at `now`: the first target of its chain with a key that has room
    /// wins, and that key's reservation is made in the same step.
    fn admit(&self, ask: &Ask<'_>, now: Instant) -> Admission;

    /// The provider answered `grant`'s attempt: reads its headers, closes the target's circuit,
    /// and takes back a key being tried again. Returns what that key had been refused for.
    fn answered(
        &self,
        grant: &mut Grant,
        snapshot: &RateLimitSnapshot,
        now: Instant,
    ) -> Option<String>;

    /// Settles an answered attempt with the usage it reported (`None`: the estimate stands).
    fn settle(&self, grant: Grant, usage: Option<(u64, u64)>, now: Instant);

    /// Settles a failed attempt and applies what the failure means.
    fn failed(&self, grant: Grant, failure: &Failure, now: Instant) -> Aftermath;

    /// Settles an attempt given up without an answer (its client left): the estimate stays
    /// counted, as the provider may have counted it.
    fn abandoned(&self, grant: Grant, now: Instant);

    /// Takes back a grant that was never sent (the fleet's window for its key was full):
    /// nothing of it is counted.
    fn released(&self, grant: Grant, now: Instant);

    /// Takes back a grant that was never sent because the fleet holds its key or target back,
    /// and learns why, so the next decision passes over them.
    fn held_back(&self, grant: Grant, why: &HeldBack, now: Instant);

    /// Limits of `key` at `target` that another gateway of the fleet learned from the
    /// provider.
    fn learn(&self, target: TargetId, key: usize, learned: &[(Kind, u64)]);

    /// A stream of `target` stalled: the target counts as failing. Returns its consecutive
    /// outages.
    fn stalled(&self, target: TargetId, now: Instant) -> u32;

    /// Whether any key of these targets has a limit that counts tokens.
    fn counts_tokens(&self, chain: &[TargetId]) -> bool;

    /// Every known limit of every key at every target.
    fn readings(&self, now: Instant) -> Vec<Reading>;

    /// The limits of a chain's keys summed per kind.
    fn pool(&self, chain: &[TargetId], now: Instant) -> Pool;

    /// Keys their provider refused.
    fn refused_keys(&self) -> Vec<RefusedKey>;

    /// Every target's state at `now`, by target id.
    fn snapshot(&self, now: Instant) -> Vec<TargetSnapshot>;

    /// Fires whenever something is settled or freed: a waiting request asks again.
    fn changed(&self) -> &Notify;

    /// Everything this ledger holds at `now`, for the ledger of a reloaded config.
    fn carry_out(&self, now: Instant) -> Carried;

    /// Takes over the state `map` names from an old ledger's `carried` (before any request).
    fn carry_in(&self, carried: Carried, map: &CarryMap);
}
