//! The router: walks a route's chain, sends each request through a key the ledger admits it
//! to, waits (boundedly) when none has room, and moves a failed attempt to the next key or
//! target before the client sees anything. The only place in the proxy that waits
//! (ARCHITECTURE.md, invariants 1, 2 and 5). [`job`] is what it takes and gives back, [`body`]
//! the body each target is sent, [`ticket`] a reservation in flight, [`verdict`] what a failed
//! attempt means.

pub mod body;
mod carry;
mod fleet_share;
pub mod job;
pub mod queue;
pub mod ticket;
pub mod verdict;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use spillway_clock::{Clock, Instant};

use crate::config::Config;
use crate::error::ProxyError;
use crate::fleet::{Fleet, Held, Slot, Verdict as FleetVerdict, Windows};
use crate::limits::concurrency::ConcurrencyPolicy;
use crate::limits::headers::{self, RateLimitSnapshot};
use crate::limits::kind::{Kind, Window};
use crate::limits::ledger::{
    Admission, Aftermath, Ask, Failure, Grant, HeldBack, Ledger, Passed, Pool, ProviderSpec,
    Refusal, TargetId, TargetSnapshot, TargetSpec, Verdict,
};
use crate::limits::local::LocalLedger;
use crate::metrics::{Headroom, Metrics};
use crate::trail::{CallSpan, Step};
use crate::upstream::{Answer, Call, Disposition, Transport, UpstreamError};
pub use job::{Job, Served};
pub use ticket::Ticket;

/// A target: one provider's model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    provider: usize,
    model: String,
}

/// The targets every route's chain names, each once.
#[derive(Debug)]
struct Plan {
    targets: Vec<Target>,
    chains: Vec<Vec<TargetId>>,
    /// Per route: the most attempts one request makes.
    max_attempts: Vec<u32>,
}

impl Plan {
    fn of(config: &Config) -> Self {
        let mut targets: Vec<Target> = Vec::new();
        let chains = config
            .routes
            .iter()
            .map(|route| {
                route
                    .targets
                    .iter()
                    .map(|t| {
                        let target = Target {
                            provider: t.provider,
                            model: t.model.clone(),
                        };
                        targets
                            .iter()
                            .position(|s| *s == target)
                            .unwrap_or_else(|| {
                                targets.push(target);
                                targets.len() - 1
                            })
                    })
                    .collect()
            })
            .collect();
        let max_attempts = config
            .routes
            .iter()
            .map(|r| {
                let keys: usize = r
                    .targets
                    .iter()
                    .map(|t| config.providers[t.provider].keys.len())
                    .sum();
                u32::try_from(2 * keys + r.targets.len() + 2).unwrap_or(u32::MAX)
            })
            .collect();
        Plan {
            targets,
            chains,
            max_attempts,
        }
    }

    /// What the ledger is told about the targets and providers.
    fn specs(&self, config: &Config) -> (Vec<TargetSpec>, Vec<ProviderSpec>) {
        let targets = self
            .targets
            .iter()
            .map(|t| {
                let provider = &config.providers[t.provider];
                TargetSpec {
                    provider: t.provider,
                    limits: provider.limits.get(&t.model).copied().unwrap_or_default(),
                    concurrency: ConcurrencyPolicy::from_setting(provider.unknown_limits_in_flight),
                }
            })
            .collect();
        let providers = config
            .providers
            .iter()
            .map(|p| ProviderSpec {
                keys: p.keys.len(),
                circuit: p.circuit(),
                key_retry: p.key_retry,
                max_key_retry: p.max_key_retry,
            })
            .collect();
        (targets, providers)
    }
}

/// Routes requests over the configured chains.
#[derive(Debug)]
pub struct Router {
    config: Arc<Config>,
    transport: Arc<dyn Transport>,
    clock: Clock,
    metrics: Arc<Metrics>,
    ledger: Arc<dyn Ledger>,
    plan: Plan,
    /// The fleet this gateway shares its keys' windows with, if any.
    fleet: Option<Arc<Fleet>>,
    /// Per target, per key: its name and limits in the fleet.
    slots: Vec<Vec<Arc<Slot>>>,
    /// The requests waiting for headroom.
    queue: queue::Queue,
    /// Its hand-over to the router of a reload.
    handover: carry::Handover,
}

/// One target of a route's chain as it stands, for the status view.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    /// The provider's index in the config.
    pub provider: usize,
    /// The provider's model id.
    pub model: String,
    /// Its state (clock time).
    pub state: TargetSnapshot,
}

/// One route as it stands, for the status view (clock time).
#[derive(Debug, Clone)]
pub struct RouteStatus {
    /// Requests waiting for headroom.
    pub queued: u64,
    /// When the longest waiting one arrived.
    pub oldest: Option<Instant>,
    /// The chain, in order.
    pub targets: Vec<TargetStatus>,
}

/// What keeps a send the ledger granted from going, in a fleet.
enum FleetHold {
    /// The key or target, for every request: the ledger learns it.
    Ledger(HeldBack),
    /// This request, for this long (wall-clock time): its tokens do not fit the key's
    /// fleet-wide window, or a degraded gateway's share.
    Request(Duration),
}

/// One request's way through the chain so far.
struct Attempts {
    /// The request stays in this router even after a reload (its route is gone there).
    stays: bool,
    deadline: Instant,
    started: Instant,
    waited: Option<Duration>,
    prompt: Option<u64>,
    /// Per chain position: left out of this request, because the target declined it (for
    /// good) or failed it (until every other target has had its turn).
    skip: Vec<bool>,
    /// Per chain position: left out because it failed this request.
    failed: Vec<bool>,
    failures: Vec<String>,
    count: u32,
    /// Each key or target tried or passed over, and why it was left (`groq#1:429`).
    trail: Vec<Step>,
    /// It waited for headroom at some point.
    held_back: bool,
}

impl Attempts {
    /// Lets the targets that failed this request be tried again.
    fn retry_failed(&mut self) {
        for (skip, failed) in self.skip.iter_mut().zip(&mut self.failed) {
            if std::mem::take(failed) {
                *skip = false;
            }
        }
    }
}

impl Router {
    /// A router for `config` that sends through `transport`, with an in-process ledger,
    /// sharing its keys' windows with `fleet` when there is one, and nothing sent yet.
    pub fn new(
        config: Arc<Config>,
        clock: Clock,
        metrics: Arc<Metrics>,
        transport: Arc<dyn Transport>,
        fleet: Option<Arc<Fleet>>,
    ) -> Self {
        let plan = Plan::of(&config);
        let config_routes = config.routes.len();
        let (targets, providers) = plan.specs(&config);
        let ledger = Arc::new(LocalLedger::new(&targets, providers));
        let fleet_name = fleet.as_ref().map_or("", |f| f.name());
        let slots = plan
            .targets
            .iter()
            .map(|t| {
                let provider = &config.providers[t.provider];
                let limits = provider.limits.get(&t.model).copied().unwrap_or_default();
                provider
                    .keys
                    .iter()
                    .map(|k| Arc::new(Slot::new(fleet_name, &k.alias, &t.model, &limits)))
                    .collect()
            })
            .collect();
        Router {
            config,
            transport,
            clock,
            metrics,
            ledger,
            plan,
            fleet,
            slots,
            queue: queue::Queue::new(config_routes),
            handover: carry::Handover::default(),
        }
    }

    /// Every route as it stands at `now` (clock time), in config order.
    pub fn status(&self, now: Instant) -> Vec<RouteStatus> {
        let targets = self.ledger.snapshot(now);
        self.plan
            .chains
            .iter()
            .enumerate()
            .map(|(route, chain)| {
                let (queued, oldest) = self.queue.of(route);
                RouteStatus {
                    queued,
                    oldest,
                    targets: chain
                        .iter()
                        .map(|&id| TargetStatus {
                            provider: self.plan.targets[id].provider,
                            model: self.plan.targets[id].model.clone(),
                            state: targets[id].clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Routes one request: returns the first usable answer, the provider's own answer when the
    /// request itself was refused, or an error once every target is exhausted or failed.
    pub async fn execute(self: &Arc<Self>, job: &Job) -> Result<Served, ProxyError> {
        self.execute_traced(job).await.0
    }

    /// Routes one request as [`Self::execute`] does, and says which keys and targets it tried
    /// or passed over and why each was left (an answer's [`Served::trail`] holds the same).
    pub async fn execute_traced(
        self: &Arc<Self>,
        job: &Job,
    ) -> (Result<Served, ProxyError>, Vec<Step>) {
        let route = &self.config.routes[job.route];
        let chain = &self.plan.chains[job.route];
        let started = self.clock.instant();
        let mut run = Attempts {
            stays: false,
            deadline: started + route.max_wait,
            started,
            waited: None,
            prompt: None,
            skip: vec![false; chain.len()],
            failed: vec![false; chain.len()],
            failures: Vec::new(),
            count: 0,
            trail: Vec::new(),
            held_back: false,
        };
        let result = self.walk(job, &mut run).await;
        (result, run.trail)
    }

    /// The chain walk of one request, keeping what it did in `run`.
    async fn walk(self: &Arc<Self>, job: &Job, run: &mut Attempts) -> Result<Served, ProxyError> {
        let chain = &self.plan.chains[job.route];
        let started = run.started;
        let mut queued = None;
        loop {
            if self.retiring() && !run.stays {
                let next = self.successor().await;
                let name = &self.config.routes[job.route].model;
                match next.adopt(job, run, name) {
                    Some(moved) => return Box::pin(next.walk(&moved, run)).await,
                    None => run.stays = true,
                }
            }
            let notified = self.ledger.changed().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ask = Ask {
                chain,
                skip: &run.skip,
                prompt: run.prompt,
                completion: job.completion(),
                default_completion: self.config.server.default_max_tokens,
                deadline: run.deadline,
            };
            match self.ledger.admit(&ask, self.clock.instant()) {
                Admission::NeedPrompt => {
                    run.prompt = Some(crate::heavy::for_body(job.raw.len(), || {
                        job.prompt_tokens()
                    }));
                }
                // Every other target has had its turn: the ones that failed this request may
                // be tried again (their circuits permitting).
                Admission::Refused(..) if run.failed.contains(&true) => run.retry_failed(),
                Admission::Refused(refusal, passed) => {
                    self.note_passed(job.route, &passed, run);
                    self.note_wait(run);
                    return Err(self.refusal(job, refusal, std::mem::take(&mut run.failures)));
                }
                Admission::Wait(until) => {
                    queued.get_or_insert_with(|| self.queue.enter(job.route, started));
                    run.held_back = true;
                    let wake = until.unwrap_or(run.deadline).min(run.deadline);
                    tokio::select! {
                        () = self.clock.sleep_until(wake.since_origin()) => {}
                        () = &mut notified => {}
                    }
                }
                // A reload retired this router while it decided: the grant goes back, and the
                // request moves to the new router at the top of the loop.
                Admission::Go(grant) if self.retiring() && !run.stays => {
                    self.ledger.released(grant, self.clock.instant());
                }
                Admission::Go(grant) => {
                    self.note_passed(job.route, &grant.passed, run);
                    queued = None;
                    let held = match self.fleet_reserve(&grant).await {
                        Ok(held) => held,
                        Err(FleetHold::Ledger(why)) => {
                            // The fleet holds the key or target back (its window has all the
                            // requests it allows, or a member found it blocked, refused or
                            // failing): nothing was sent; the ledger learns why and decides
                            // again, so another key or target goes, or the request waits or
                            // is refused as for a limit of its own.
                            self.log_fleet_hold(&grant, &why);
                            self.ledger.held_back(grant, &why, self.clock.instant());
                            continue;
                        }
                        Err(FleetHold::Request(wall)) => {
                            // The fleet's window for this key has no room for this request's
                            // tokens yet, or a degraded gateway's share has none (a smaller
                            // one may fit): nothing was sent.
                            self.ledger.released(grant, self.clock.instant());
                            let wake = self.clock.instant() + self.clock.from_wall(wall);
                            if wake > run.deadline {
                                self.note_wait(run);
                                return Err(ProxyError::Exhausted {
                                    route: self.config.routes[job.route].model.clone(),
                                    retry_after: wall,
                                    kind: None,
                                });
                            }
                            queued.get_or_insert_with(|| self.queue.enter(job.route, started));
                            run.held_back = true;
                            self.clock.sleep_until(wake.since_origin()).await;
                            continue;
                        }
                    };
                    self.note_wait(run);
                    if let Some(done) = self.attempt(job, grant, held, run).await {
                        return done;
                    }
                }
            }
        }
    }

    /// How the trail names a key of a route's chain position (`None`: the whole target): its
    /// alias, or its provider's name; with the model too when the chain has another target
    /// of the same provider.
    fn label(&self, route: usize, position: usize, key: Option<usize>) -> String {
        let chain = &self.plan.chains[route];
        let target = &self.plan.targets[chain[position]];
        let provider = &self.config.providers[target.provider];
        let name = key.map_or(provider.name.as_str(), |k| provider.keys[k].alias.as_str());
        let shared = chain
            .iter()
            .filter(|&&t| self.plan.targets[t].provider == target.provider)
            .count()
            > 1;
        if shared {
            format!("{name}/{}", target.model)
        } else {
            name.to_string()
        }
    }

    /// Adds to the trail what a decision passed over, each key once (one tried already, or
    /// passed over before, is not named again).
    fn note_passed(&self, route: usize, passed: &[Passed], run: &mut Attempts) {
        for passed in passed {
            let label = self.label(route, passed.position, passed.key);
            if !run.trail.iter().any(|t| t.label == label) {
                run.trail.push(Step::passed(label, passed.why.name()));
            }
        }
    }

    /// In a fleet: the members seen alive at the last heartbeat (this gateway included).
    pub fn fleet_members(&self) -> Option<u64> {
        self.fleet.as_ref().map(|f| f.members())
    }

    /// Reserves a grant's send on its key's fleet-wide windows: `Ok` to go (with the fleet's
    /// reservation, if it holds one), `Err` with what holds it back. Limits another member
    /// learned from the provider are learned here too.
    async fn fleet_reserve(&self, grant: &Grant) -> Result<Option<Held>, FleetHold> {
        let Some(fleet) = &self.fleet else {
            return Ok(None);
        };
        let slot = &self.slots[grant.target][grant.key];
        let windows = Windows {
            minute: self.clock.to_wall(Window::Minute.length()),
            day: self.clock.to_wall(Window::Day.length()),
        };
        let (verdict, learned) = fleet
            .reserve(slot, grant.reservation.cost.tokens(), windows)
            .await;
        if !learned.is_empty() {
            self.ledger.learn(grant.target, grant.key, &learned);
        }
        let until = |wall| self.clock.instant() + self.clock.from_wall(wall);
        let why = match verdict {
            FleetVerdict::Go(held) => return Ok(held),
            FleetVerdict::RequestWaits(wall) => return Err(FleetHold::Request(wall)),
            FleetVerdict::Wait(wall) => HeldBack::Key { until: until(wall) },
            FleetVerdict::KeyRefused { wait, why } => HeldBack::KeyRefused {
                why,
                until: until(wait),
            },
            FleetVerdict::CircuitOpen(wall) => HeldBack::CircuitOpen { until: until(wall) },
        };
        Err(FleetHold::Ledger(why))
    }

    /// Records the time a request waited for headroom, once: zero unless it was held back
    /// (the moments spent deciding are no wait).
    fn note_wait(&self, run: &mut Attempts) {
        if run.waited.is_none() {
            let waited = if run.held_back {
                self.clock.instant().saturating_duration_since(run.started)
            } else {
                Duration::ZERO
            };
            self.metrics.queue_wait(waited);
            run.waited = Some(waited);
        }
    }

    /// The client's error for a request no target can take, with the attempts that failed
    /// before: a route whose targets are all failing is unavailable (503, every attempt
    /// listed), never "at its rate limits"; a route with a target at its limits is exhausted
    /// (429, with that target's honest `retry-after`), whatever the others did.
    fn refusal(&self, job: &Job, refusal: Refusal, failures: Vec<String>) -> ProxyError {
        let route = self.config.routes[job.route].model.clone();
        match refusal {
            Refusal::Exhausted { retry_after, kind } => ProxyError::Exhausted {
                route,
                retry_after: self.clock.to_wall(retry_after),
                kind,
            },
            Refusal::TooLarge(kind) => ProxyError::TooLarge { route, kind },
            Refusal::Unavailable { retry_after } => ProxyError::Unavailable {
                route,
                retry_after: retry_after.map(|d| self.clock.to_wall(d)),
                attempts: failures,
            },
        }
    }

    /// Sends one attempt; `Some` when the request is answered (an answer, or an error the
    /// client gets), `None` to go on to the next key or target.
    async fn attempt(
        self: &Arc<Self>,
        job: &Job,
        grant: Grant,
        held: Option<Held>,
        run: &mut Attempts,
    ) -> Option<Result<Served, ProxyError>> {
        run.count += 1;
        let target = &self.plan.targets[grant.target];
        let (key, position) = (grant.key, grant.position);
        let label = self.label(job.route, position, Some(key));
        let ticket = Ticket::new(self.clone(), grant, held);
        let body = match body::with_model(&job.raw, &job.body, &target.model) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                let e = format!("cannot encode the request: {e}");
                return Some(Err(ProxyError::Internal(e)));
            }
        };
        let call = Call {
            provider: target.provider,
            key,
            endpoint: job.endpoint,
            body,
            stream: job.stream,
        };
        let began = SystemTime::UNIX_EPOCH + self.clock.wall_unix_now();
        let sent = self.transport.send(call).await;
        let call = Some(CallSpan {
            provider: self.config.providers[target.provider].name.clone(),
            model: target.model.clone(),
            began,
            ended: SystemTime::UNIX_EPOCH + self.clock.wall_unix_now(),
        });
        match sent {
            Ok(answer) => {
                run.trail.push(Step {
                    label,
                    why: "200".into(),
                    call,
                });
                Some(Ok(self.served(target, key, ticket, answer, run)))
            }
            Err(err) => {
                run.trail.push(Step {
                    label,
                    why: verdict::outcome_label(&err).to_string(),
                    call,
                });
                self.failed(job, target, (key, position), ticket, err, run)
                    .await
            }
        }
    }

    /// An answer: its headers read, its reservation settled (a stream's when it ends).
    fn served(
        &self,
        target: &Target,
        key: usize,
        mut ticket: Ticket,
        answer: Answer,
        run: &Attempts,
    ) -> Served {
        let provider = &self.config.providers[target.provider];
        let alias = &provider.keys[key].alias;
        self.metrics.attempt(&provider.name, "200");
        let snapshot = self.snapshot(target.provider, answer.headers());
        if let Some(was) = ticket.answered(&snapshot) {
            tracing::info!(provider = %provider.name, key = %alias, refused_for = %was, "key accepted again by the provider");
        }
        let ticket = match &answer {
            Answer::Full { usage, .. } => {
                ticket.finish(*usage);
                None
            }
            Answer::Stream { .. } => Some(ticket),
        };
        Served {
            answer,
            provider: provider.name.clone(),
            model: target.model.clone(),
            key_alias: alias.clone(),
            attempts: run.count,
            waited: self.clock.to_wall(run.waited.unwrap_or_default()),
            trail: run.trail.clone(),
            ticket,
        }
    }

    /// A failed attempt: the ledger learns what it means, the log and metrics say so, and the
    /// request either ends (the client gets the provider's answer, or every attempt is spent)
    /// or goes on.
    async fn failed(
        &self,
        job: &Job,
        target: &Target,
        (key, position): (usize, usize),
        ticket: Ticket,
        err: UpstreamError,
        run: &mut Attempts,
    ) -> Option<Result<Served, ProxyError>> {
        let provider = &self.config.providers[target.provider];
        self.metrics
            .attempt(&provider.name, &verdict::outcome_label(&err));
        let snapshot = match &err {
            UpstreamError::Status { headers, .. } => self.snapshot(target.provider, headers),
            _ => RateLimitSnapshot::default(),
        };
        let failure = verdict::failure(&err, snapshot, self.clock.instant(), &self.clock);
        let route_name = &self.config.routes[job.route].model;
        if matches!(failure.verdict, Verdict::RateLimited { .. }) {
            self.metrics
                .recent_rate_limited(route_name, self.clock.now());
        }
        let after = ticket.fail(&failure).await;
        self.log_failure(target, key, &failure, &after, &err);
        run.failures.push(format!(
            "{} {}: {}",
            provider.keys[key].alias, target.model, err
        ));
        match (err.disposition(), err) {
            (
                Disposition::ReturnToClient,
                UpstreamError::Status {
                    status,
                    headers,
                    body,
                },
            ) => {
                return Some(Err(ProxyError::Passthrough {
                    status,
                    content_type: headers.get(http::header::CONTENT_TYPE).cloned(),
                    body,
                }));
            }
            // Too large or unavailable for this target: skip it for this request without
            // waiting.
            _ if failure.verdict == Verdict::Declined => run.skip[position] = true,
            // A failing target: the request moves on to the others first.
            _ if matches!(failure.verdict, Verdict::Outage { .. }) => {
                run.skip[position] = true;
                run.failed[position] = true;
            }
            _ => {}
        }
        let route = &self.config.routes[job.route];
        if run.count >= self.plan.max_attempts[job.route] {
            return Some(Err(ProxyError::AllFailed {
                route: route.model.clone(),
                attempts: std::mem::take(&mut run.failures),
            }));
        }
        self.metrics.fallback(&route.model);
        self.metrics.recent_fallback(&route.model, self.clock.now());
        None
    }

    /// Says in the log (and metrics) what a failed attempt changed.
    fn log_failure(
        &self,
        target: &Target,
        key: usize,
        failure: &Failure,
        after: &Aftermath,
        err: &UpstreamError,
    ) {
        let provider = &self.config.providers[target.provider];
        let alias = &provider.keys[key].alias;
        let model = &target.model;
        match &failure.verdict {
            Verdict::RateLimited { until, kind, .. } => {
                self.metrics.rate_limited(&provider.name, alias);
                let wait = until.saturating_duration_since(self.clock.instant());
                tracing::warn!(provider = %provider.name, key = %alias, model = %model, wait = ?wait, limit = kind.map(Kind::short), "rate limited by the provider; key blocked until its reset");
            }
            Verdict::KeyRefused { why } => {
                let retry_in = after.key_set_aside_for.unwrap_or_default();
                tracing::error!(provider = %provider.name, key = %alias, reason = %why, retry_in = ?retry_in, "key set aside: the provider refused it; one request tries it again after the back-off");
            }
            Verdict::Outage { .. } => {
                tracing::warn!(provider = %provider.name, key = %alias, model = %model, error = %err, failures = after.circuit_failures, "target failed");
            }
            Verdict::Declined | Verdict::RequestRefused => {}
        }
        if let Some(was) = &after.key_accepted {
            tracing::info!(provider = %provider.name, key = %alias, refused_for = %was, "key accepted again by the provider");
        }
    }

    /// A stream of `target` stalled: the target counts as failing (its circuit opens).
    fn stream_stalled(&self, target: TargetId) {
        let now = self.clock.instant();
        let failures = self.ledger.stalled(target, now);
        self.share_stall(target, now);
        let t = &self.plan.targets[target];
        let provider = &self.config.providers[t.provider];
        tracing::warn!(provider = %provider.name, model = %t.model, failures, "a stream stalled; the target counts as failing");
    }

    /// Reads a response's rate-limit headers in `provider`'s dialect, on this clock.
    fn snapshot(&self, provider: usize, headers: &http::HeaderMap) -> RateLimitSnapshot {
        headers::parse(
            self.config.providers[provider].dialect,
            headers,
            self.clock.wall_unix_now(),
        )
        .on_clock(&self.clock)
    }

    /// Remaining headroom of every known limit, for `/metrics`.
    pub fn headroom(&self) -> Vec<Headroom> {
        self.ledger
            .readings(self.clock.instant())
            .into_iter()
            .map(|r| {
                let t = &self.plan.targets[r.target];
                let provider = &self.config.providers[t.provider];
                Headroom {
                    provider: provider.name.clone(),
                    key: provider.keys[r.key].alias.clone(),
                    model: t.model.clone(),
                    window: r.kind.short(),
                    remaining: r.remaining,
                    limit: r.limit,
                }
            })
            .collect()
    }

    /// The limits of every key of every target in a route's chain, summed per kind, as far as
    /// spillway knows them (configured or learned); resets in wall-clock time.
    pub fn pool(&self, route: usize) -> Pool {
        let mut pool = self
            .ledger
            .pool(&self.plan.chains[route], self.clock.instant());
        for kind in Kind::ALL {
            if let Some(mut reading) = pool.get(kind) {
                reading.resets_in = self.clock.to_wall(reading.resets_in);
                pool.set(kind, Some(reading));
            }
        }
        pool
    }

    /// Keys their provider refused: provider, alias and what it said.
    pub fn refused_keys(&self) -> Vec<(String, String, String)> {
        self.ledger
            .refused_keys()
            .into_iter()
            .map(|r| {
                let provider = &self.config.providers[r.provider];
                (
                    provider.name.clone(),
                    provider.keys[r.key].alias.clone(),
                    r.why,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
