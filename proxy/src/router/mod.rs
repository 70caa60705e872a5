//! The router: walks a route's chain, sends each request to a target with headroom, waits
//! (boundedly) when none has, and moves a failed attempt to the next key or target before the
//! client sees anything. The only place in the proxy that waits (DESIGN.md invariants 1, 2, 5).
//! [`body`] makes the body each target is sent; [`circuit`] keeps each target's failures.

pub mod body;
pub mod circuit;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use spillway_clock::Clock;
use tokio::sync::Notify;

use crate::config::Config;
use crate::limits::estimate::Correction;
use crate::limits::headers::{self, RateLimitSnapshot};
use crate::limits::kind::{Cost, Kind};
use crate::limits::pacer::{self, Decision, KeyView, TargetView};
use crate::limits::window::{KeyModelLimits, Reservation, micros};
use crate::metrics::{Headroom, Metrics};
use crate::server::error::ProxyError;
use crate::upstream::{Answer, Disposition, Endpoint, Upstream, UpstreamError};
use circuit::Circuit;

/// One request, ready to route.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index of the route in the config.
    pub route: usize,
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// The client's JSON body, parsed; `model` is replaced per target.
    pub body: Map<String, Value>,
    /// The client's JSON body as it arrived (sent on with only `model` replaced).
    pub raw: Bytes,
    /// `"stream": true`.
    pub stream: bool,
    /// Prompt tokens by the local tokenizer (before per-target correction), counted on first
    /// use: a cache hit never needs them.
    pub prompt_estimate: std::sync::OnceLock<u64>,
    /// Completion tokens the request may use.
    pub max_output: u64,
}

impl Job {
    /// Prompt tokens by the local tokenizer, counted once.
    pub fn prompt_tokens(&self) -> u64 {
        *self.prompt_estimate.get_or_init(|| match self.endpoint {
            Endpoint::Chat => self
                .body
                .get("messages")
                .and_then(Value::as_array)
                .map(|m| crate::limits::estimate::chat_prompt_tokens(m))
                .unwrap_or(0),
            Endpoint::Embeddings => self
                .body
                .get("input")
                .map(crate::limits::estimate::embeddings_input_tokens)
                .unwrap_or(0),
        })
    }
}

/// A successful answer and where it came from.
#[derive(Debug)]
pub struct Served {
    /// The answer.
    pub answer: Answer,
    /// Provider name.
    pub provider: String,
    /// Upstream model id.
    pub model: String,
    /// Key alias.
    pub key_alias: String,
    /// Attempts made (1 when the first target answered).
    pub attempts: u32,
    /// For streams: settles the key's limit state when the stream ends.
    pub ticket: Option<Ticket>,
}

/// One target (provider and model) and its keys' state.
#[derive(Debug)]
struct TargetState {
    provider: usize,
    model: String,
    circuit: Circuit,
    correction: Correction,
    keys: Vec<KeyModelLimits>,
}

#[derive(Debug)]
struct PoolState {
    targets: Vec<TargetState>,
    disabled: Vec<Vec<bool>>,
}

/// The limit state and circuits of every key and target, and the logic that uses them.
#[derive(Debug)]
pub struct Router {
    config: Arc<Config>,
    upstream: Upstream,
    clock: Clock,
    metrics: Arc<Metrics>,
    state: Mutex<PoolState>,
    changed: Notify,
    chains: Vec<Vec<usize>>,
    max_attempts: Vec<u32>,
}

/// A send in progress on one key: settles the key's limit state exactly once, also when the
/// request is abandoned (then the estimate stays counted, as the provider may have counted it).
#[derive(Debug)]
pub struct Ticket {
    router: Arc<Router>,
    target: usize,
    key: usize,
    reservation: Reservation,
    /// The local prompt count, when the decision needed one.
    prompt_estimate: Option<u64>,
    probe: bool,
    open: bool,
}

impl Ticket {
    /// Settles a finished stream with the usage it reported (`None`: keep the estimate).
    pub fn finish(mut self, usage: Option<(u64, u64)>) {
        self.open = false;
        self.router.settle_success(
            self.target,
            self.key,
            self.reservation,
            self.prompt_estimate,
            usage,
        );
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.open {
            self.open = false;
            let now = self.router.now_us();
            let mut st = self.router.lock();
            let target = &mut st.targets[self.target];
            let key = &mut target.keys[self.key];
            key.confirm(&mut self.reservation, now);
            key.settle(self.reservation, Some(self.reservation.cost));
            if self.probe {
                target.circuit.on_abandoned_probe();
            }
            drop(st);
            self.router.changed.notify_waiters();
        }
    }
}

enum Step {
    Go(Ticket),
    /// A target of the chain counts tokens: count the prompt's (outside the lock) and ask again.
    NeedPrompt,
    Wait(Option<u64>),
    Done(ProxyError),
}

fn outcome_label(err: &UpstreamError) -> String {
    match err {
        UpstreamError::Status { status, .. } => status.as_u16().to_string(),
        UpstreamError::Timeout(_) => "timeout".into(),
        UpstreamError::Connection(_) => "error".into(),
        UpstreamError::InvalidBody(_) => "invalid".into(),
    }
}

impl Router {
    /// A router for `config`, with nothing sent yet.
    pub fn new(config: Arc<Config>, clock: Clock, metrics: Arc<Metrics>) -> Result<Self, String> {
        let upstream = Upstream::new(&config.providers)?;
        let mut targets: Vec<TargetState> = Vec::new();
        let mut chains = Vec::new();
        for route in &config.routes {
            let mut chain = Vec::new();
            for t in &route.targets {
                let id = match targets
                    .iter()
                    .position(|s| s.provider == t.provider && s.model == t.model)
                {
                    Some(id) => id,
                    None => {
                        let provider = &config.providers[t.provider];
                        let limits = provider.limits.get(&t.model).copied().unwrap_or_default();
                        targets.push(TargetState {
                            provider: t.provider,
                            model: t.model.clone(),
                            circuit: Circuit::default(),
                            correction: Correction::default(),
                            keys: provider
                                .keys
                                .iter()
                                .map(|_| KeyModelLimits::new(limits))
                                .collect(),
                        });
                        targets.len() - 1
                    }
                };
                chain.push(id);
            }
            chains.push(chain);
        }
        let max_attempts = config
            .routes
            .iter()
            .map(|r| {
                let keys: usize = r
                    .targets
                    .iter()
                    .map(|t| config.providers[t.provider].keys.len())
                    .sum();
                (2 * keys + r.targets.len() + 2) as u32
            })
            .collect();
        let disabled = config
            .providers
            .iter()
            .map(|p| vec![false; p.keys.len()])
            .collect();
        Ok(Router {
            config,
            upstream,
            clock,
            metrics,
            state: Mutex::new(PoolState { targets, disabled }),
            changed: Notify::new(),
            chains,
            max_attempts,
        })
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        micros(self.clock.now())
    }

    /// Decides under the lock, and reserves the chosen key at once.
    /// `prompt`: the request's local prompt count, once counted; it is only counted when a
    /// target of the chain limits tokens (configured or learned), as tokenizing costs more
    /// than the rest of a decision.
    fn step(
        self: &Arc<Self>,
        job: &Job,
        prompt_estimate: Option<u64>,
        skip: &[bool],
        deadline: u64,
    ) -> Step {
        let route = &self.config.routes[job.route];
        let chain = &self.chains[job.route];
        let mut st = self.lock();
        let now = self.now_us();
        for &id in chain {
            for key in &mut st.targets[id].keys {
                key.expire(now);
            }
        }
        let counts_tokens = chain.iter().any(|&id| {
            st.targets[id]
                .keys
                .iter()
                .any(KeyModelLimits::counts_tokens)
        });
        if counts_tokens && prompt_estimate.is_none() {
            return Step::NeedPrompt;
        }
        let prompt = prompt_estimate.unwrap_or(0);
        let decision = {
            let views: Vec<TargetView<'_>> = chain
                .iter()
                .zip(skip)
                .map(|(&id, &skip)| {
                    let target = &st.targets[id];
                    let provider = &self.config.providers[target.provider];
                    TargetView {
                        available_at: target.circuit.available_at(),
                        keys: target
                            .keys
                            .iter()
                            .enumerate()
                            .map(|(k, limits)| KeyView {
                                limits,
                                disabled: st.disabled[target.provider][k],
                            })
                            .collect(),
                        cost: Cost::request(target.correction.apply(prompt), job.max_output),
                        probe_cap: provider.unknown_limits_in_flight,
                        calibrating: !target.correction.calibrated(),
                        skip,
                    }
                })
                .collect();
            pacer::decide(now, &views, deadline)
        };
        match decision {
            Decision::Go { target, key } => {
                let id = chain[target];
                let t = &mut st.targets[id];
                let probe = t.circuit.on_dispatch();
                let cost = Cost::request(t.correction.apply(prompt), job.max_output);
                let reservation = t.keys[key].reserve(now, cost);
                Step::Go(Ticket {
                    router: self.clone(),
                    target: id,
                    key,
                    reservation,
                    prompt_estimate,
                    probe,
                    open: true,
                })
            }
            Decision::Wait(until) => Step::Wait(until),
            Decision::Exhausted { retry_after, kind } => Step::Done(ProxyError::Exhausted {
                route: route.model.clone(),
                retry_after: Duration::from_micros(retry_after),
                kind,
            }),
            Decision::TooLarge(kind) => Step::Done(ProxyError::TooLarge {
                route: route.model.clone(),
                kind,
            }),
            Decision::Unavailable => Step::Done(ProxyError::Unavailable {
                route: route.model.clone(),
            }),
        }
    }

    fn settle_success(
        &self,
        target: usize,
        key: usize,
        reservation: Reservation,
        prompt_estimate: Option<u64>,
        usage: Option<(u64, u64)>,
    ) {
        let mut st = self.lock();
        let t = &mut st.targets[target];
        let actual = match usage {
            Some((prompt, completion)) => {
                if let Some(estimate) = prompt_estimate {
                    t.correction.learn(estimate, prompt);
                }
                Cost::request(prompt, completion)
            }
            None => reservation.cost,
        };
        t.keys[key].settle(reservation, Some(actual));
        drop(st);
        self.changed.notify_waiters();
    }

    /// Records what a successful answer's headers say.
    fn after_success(&self, ticket: &mut Ticket, answer: &Answer) {
        let mut st = self.lock();
        let t = &mut st.targets[ticket.target];
        let dialect = self.config.providers[t.provider].dialect;
        let snapshot = headers::parse(dialect, answer.headers(), self.clock.unix_now());
        let now = self.now_us();
        let key = &mut t.keys[ticket.key];
        key.confirm(&mut ticket.reservation, now);
        key.observe(now, &snapshot);
        t.circuit.on_answer();
    }

    /// Records a failed attempt: headers, blocks, disabled keys, circuits; settles the ticket.
    fn after_failure(&self, mut ticket: Ticket, err: &UpstreamError) {
        ticket.open = false;
        let now = self.now_us();
        let mut st = self.lock();
        let provider_index = st.targets[ticket.target].provider;
        let provider = &self.config.providers[provider_index];
        let alias = &provider.keys[ticket.key].alias;
        let snapshot = match err {
            UpstreamError::Status { headers, .. } => {
                headers::parse(provider.dialect, headers, self.clock.unix_now())
            }
            _ => RateLimitSnapshot::default(),
        };
        let learned = err
            .error_message()
            .and_then(|m| headers::parse_limit_message(&m));
        let t = &mut st.targets[ticket.target];
        let model = t.model.clone();
        let key = &mut t.keys[ticket.key];
        key.observe(now, &snapshot);
        if let Some((kind, limit)) = learned {
            key.learn(kind, limit);
        }
        let mut release = true;
        match err.disposition() {
            Disposition::NextKey => {
                let kind = learned.map(|(k, _)| k);
                let wait = snapshot
                    .retry_after
                    .or_else(|| {
                        snapshot
                            .readings
                            .iter()
                            .find(|r| Some(r.kind) == kind)
                            .and_then(|r| r.reset)
                    })
                    .unwrap_or(Duration::from_secs(1));
                key.block(now + micros(wait), kind);
                t.circuit.on_answer();
                self.metrics.rate_limited(&provider.name, alias);
                tracing::warn!(provider = %provider.name, key = %alias, model = %model, wait = ?wait, limit = kind.map(Kind::short), "rate limited by the provider; key blocked until its reset");
            }
            Disposition::DisableKey => {
                t.circuit.on_answer();
                st.disabled[provider_index][ticket.key] = true;
                tracing::error!(provider = %provider.name, key = %alias, status = ?err.status(), code = ?err.error_code(), "key disabled: the provider refused it");
            }
            Disposition::NextTarget => {
                if err.is_outage() {
                    t.circuit
                        .on_outage(now, provider.cooldown, provider.max_cooldown);
                    tracing::warn!(provider = %provider.name, key = %alias, model = %model, error = %err, failures = t.circuit.failures(), "target failed; cooling down");
                } else {
                    t.circuit.on_answer();
                }
                if matches!(err, UpstreamError::Timeout(_)) {
                    // The provider may have counted it.
                    release = false;
                }
            }
            Disposition::ReturnToClient => t.circuit.on_answer(),
        }
        if ticket.probe && !err.is_outage() {
            st.targets[ticket.target].circuit.on_answer();
        }
        let mut reservation = ticket.reservation;
        let key = &mut st.targets[ticket.target].keys[ticket.key];
        if release {
            key.settle(reservation, None);
        } else {
            key.confirm(&mut reservation, now);
            key.settle(reservation, Some(reservation.cost));
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Routes one request: returns the first usable answer, the provider's own answer when the
    /// request itself was refused, or an error once every target is exhausted or failed.
    pub async fn execute(self: &Arc<Self>, job: &Job) -> Result<Served, ProxyError> {
        let route = &self.config.routes[job.route];
        let chain = &self.chains[job.route];
        let started = self.clock.now();
        let deadline = micros(started + route.max_wait);
        let mut skip = vec![false; chain.len()];
        let mut failures: Vec<String> = Vec::new();
        let mut attempts = 0u32;
        let max_attempts = self.max_attempts[job.route];
        let mut prompt = None;
        let mut wait_recorded = false;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.step(job, prompt, &skip, deadline) {
                Step::NeedPrompt => prompt = Some(job.prompt_tokens()),
                Step::Done(err) => {
                    if !wait_recorded {
                        self.metrics.queue_wait(self.clock.now() - started);
                    }
                    return Err(match err {
                        ProxyError::Exhausted { kind: None, .. }
                        | ProxyError::Unavailable { .. }
                            if !failures.is_empty() =>
                        {
                            ProxyError::AllFailed {
                                route: route.model.clone(),
                                attempts: failures,
                            }
                        }
                        other => other,
                    });
                }
                Step::Wait(until) => {
                    let wake = until.unwrap_or(deadline).min(deadline);
                    tokio::select! {
                        () = self.clock.sleep_until(Duration::from_micros(wake)) => {}
                        () = &mut notified => {}
                    }
                }
                Step::Go(ticket) => {
                    if !wait_recorded {
                        self.metrics.queue_wait(self.clock.now() - started);
                        wait_recorded = true;
                    }
                    attempts += 1;
                    let (provider_index, model) = {
                        let st = self.lock();
                        let t = &st.targets[ticket.target];
                        (t.provider, t.model.clone())
                    };
                    let provider = &self.config.providers[provider_index];
                    let key = &provider.keys[ticket.key];
                    let bytes =
                        Bytes::from(body::with_model(&job.raw, &job.body, &model).map_err(
                            |e| ProxyError::Internal(format!("cannot encode the request: {e}")),
                        )?);
                    let result = self
                        .upstream
                        .send(
                            provider_index,
                            provider,
                            ticket.key,
                            job.endpoint,
                            bytes,
                            job.stream,
                            &self.clock,
                        )
                        .await;
                    match result {
                        Ok(answer) => {
                            self.metrics.attempt(&provider.name, "200");
                            let mut ticket = ticket;
                            self.after_success(&mut ticket, &answer);
                            let ticket = match &answer {
                                Answer::Full { usage, .. } => {
                                    ticket.finish(*usage);
                                    None
                                }
                                Answer::Stream { .. } => Some(ticket),
                            };
                            return Ok(Served {
                                answer,
                                provider: provider.name.clone(),
                                model,
                                key_alias: key.alias.clone(),
                                attempts,
                                ticket,
                            });
                        }
                        Err(err) => {
                            self.metrics.attempt(&provider.name, &outcome_label(&err));
                            let disposition = err.disposition();
                            let target_pos = chain.iter().position(|&id| id == ticket.target);
                            self.after_failure(ticket, &err);
                            failures.push(format!("{} {}: {}", key.alias, model, err));
                            match disposition {
                                Disposition::ReturnToClient => {
                                    if let UpstreamError::Status {
                                        status,
                                        headers,
                                        body,
                                    } = err
                                    {
                                        return Err(ProxyError::Passthrough {
                                            status,
                                            content_type: headers
                                                .get(http::header::CONTENT_TYPE)
                                                .cloned(),
                                            body,
                                        });
                                    }
                                }
                                Disposition::NextTarget if !err.is_outage() => {
                                    // Too large or unavailable for this target: skip it for
                                    // this request without waiting.
                                    if let Some(pos) = target_pos {
                                        skip[pos] = true;
                                    }
                                }
                                _ => {}
                            }
                            if attempts >= max_attempts {
                                return Err(ProxyError::AllFailed {
                                    route: route.model.clone(),
                                    attempts: failures,
                                });
                            }
                            self.metrics.fallback(&route.model);
                        }
                    }
                }
            }
        }
    }

    /// Remaining headroom of every known limit, for `/metrics`.
    pub fn headroom(&self) -> Vec<Headroom> {
        let now = self.now_us();
        let mut st = self.lock();
        let mut out = Vec::new();
        for t in &mut st.targets {
            let provider = &self.config.providers[t.provider];
            for (k, key) in t.keys.iter_mut().enumerate() {
                key.expire(now);
                for (kind, limit) in key.known().iter() {
                    out.push(Headroom {
                        provider: provider.name.clone(),
                        key: provider.keys[k].alias.clone(),
                        model: t.model.clone(),
                        window: kind.short(),
                        remaining: key.remaining(kind).unwrap_or(limit),
                        limit,
                    });
                }
            }
        }
        out
    }

    /// The proxy's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}
