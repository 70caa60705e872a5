//! A request's way from a parsed request to a finished answer: the cache's policy, a lookup, a
//! flight led or joined (single-flight), the router's call, the answer published and stored,
//! and the answer rendered in the shape the client asked for. It returns an [`Outcome`]: data,
//! which the server renders as HTTP, logs and records. Nothing here speaks HTTP to clients.
//!
//! Every request with an upstream call goes through a flight, so there is one stream pipeline:
//! a request the cache keys shares its flight with identical requests; one the cache leaves
//! out has a private flight of its own. [`outcome`] is what the server gets, [`drive`] who
//! drives a flight's call, [`fly`] the call and the store, [`render`] the answer's shape.

pub mod drive;
pub mod fly;
pub mod outcome;
pub mod render;

use std::sync::Arc;

use serde_json::Value;

use crate::cache::Cache;
use crate::cache::convert::wants_usage;
use crate::cache::flight::FromFleet;
use crate::cache::flight::{End, Flight};
use crate::cache::key::{CacheKey, canonical_request, key_of_canonical};
use crate::cache::policy::{Directive, RequestControls, cacheable};
use crate::config::Config;
use crate::config::cache::{CacheMode, CacheWhen};
use crate::error::ProxyError;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::router::{Job, Router};
use crate::trail::Step;
use drive::{Driven, Driver};
use fly::Save;
pub use outcome::{CacheStatus, Origin, Outcome, Reply, ReplyBody, SkipReason};

/// A request, parsed and checked, with what it asks of the cache.
#[derive(Debug)]
pub struct Request {
    /// What to route.
    pub job: Job,
    /// Its cache controls.
    pub controls: RequestControls,
    /// The cache namespace its entries live in.
    pub namespace: String,
}

/// What a request's way needs: the cache in front, the router behind.
#[derive(Debug)]
pub struct Pipeline {
    /// The validated config.
    pub config: Arc<Config>,
    /// Key pool, pacing and fallback.
    pub router: Arc<Router>,
    /// The response cache.
    pub cache: Arc<Cache>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The fleet whose gateways share answers with this one (`None`: none, or its
    /// `shared_cache` is off).
    pub fleet: Option<Arc<Fleet>>,
}

impl Pipeline {
    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, request: Request) -> Outcome {
        let Request {
            job,
            controls,
            namespace,
        } = request;
        match self.left_out(&job, controls) {
            Some(status) => {
                self.metrics.cache(status.name());
                let (reply, trail) = self.private(job).await;
                Outcome {
                    cache: status,
                    key: None,
                    reply,
                    trail,
                }
            }
            None => self.keyed(job, namespace, controls).await,
        }
    }

    /// Why the cache leaves this request out, if it does.
    fn left_out(&self, job: &Job, controls: RequestControls) -> Option<CacheStatus> {
        let config = &self.cache.config;
        if controls.directive == Directive::Bypass {
            Some(CacheStatus::Bypass)
        } else if config.mode == CacheMode::Off {
            Some(CacheStatus::Skip(SkipReason::Off))
        } else if config.mode == CacheMode::Replay
            || cacheable(config.when, job.endpoint, &job.body)
        {
            None
        } else if config.when == CacheWhen::Never {
            Some(CacheStatus::Skip(SkipReason::Never))
        } else {
            Some(CacheStatus::Skip(SkipReason::Nondeterministic))
        }
    }

    /// A request the cache leaves out: a flight of its own, driven by this request alone.
    async fn private(self: &Arc<Self>, job: Job) -> (Result<Reply, ProxyError>, Vec<Step>) {
        let flight = Arc::new(Flight::default());
        let (want_stream, include_usage) = (job.stream, wants_usage(&job.body));
        let call = Driver::private(fly::fly(self.clone(), job, flight.clone()));
        let rendered = render::flight(flight.clone(), want_stream, include_usage);
        let reply = if want_stream {
            let reply = call.beside(rendered).await;
            reply.map(|reply| with_driver(reply, call))
        } else {
            call.run().await;
            rendered.await
        };
        let trail = failed_trail(&flight, &reply);
        (reply, trail)
    }

    /// A request the cache keys: a hit, a replay miss, or a flight led or joined.
    async fn keyed(
        self: &Arc<Self>,
        job: Job,
        namespace: String,
        controls: RequestControls,
    ) -> Outcome {
        let route = self.config.routes[job.route].model.clone();
        let endpoint = job.endpoint.name();
        let canonical = crate::heavy::for_body(job.raw.len(), || canonical_request(&job.body));
        let key = key_of_canonical(endpoint, &route, &namespace, &canonical);
        let (want_stream, include_usage) = (job.stream, wants_usage(&job.body));
        let outcome = |cache, reply| Outcome {
            cache,
            key: Some(key),
            reply,
            trail: Vec::new(),
        };
        if controls.directive != Directive::Refresh
            && let Some(stored) = self.cache.lookup(&key)
        {
            self.metrics.cache(CacheStatus::Hit.name());
            let reply = render::hit(&stored, want_stream, include_usage);
            return outcome(CacheStatus::Hit, reply);
        }
        let mode = self.cache.config.mode;
        if mode == CacheMode::Replay || controls.directive == Directive::OnlyIfCached {
            if let Some(stored) = self.fleet_lookup(&key).await {
                self.metrics.cache(CacheStatus::FleetHit.name());
                let reply = render::hit(&stored, want_stream, include_usage);
                return outcome(CacheStatus::FleetHit, reply);
            }
            self.metrics.cache(CacheStatus::Miss.name());
            let miss = self.miss(key, route, &namespace, endpoint, &canonical, mode);
            return outcome(CacheStatus::Miss, Err(miss));
        }
        let save = (mode == CacheMode::ReadWrite && !controls.no_store).then(|| Save {
            namespace,
            route,
            endpoint: endpoint.to_string(),
            request: canonical,
        });
        let refresh = controls.directive == Directive::Refresh;
        let (status, reply, trail) = self.shared(job, key, save, refresh).await;
        Outcome {
            trail,
            ..outcome(status, reply)
        }
    }

    /// Another gateway's answer under `key`, from the fleet's shared tier (when there is one).
    async fn fleet_lookup(&self, key: &CacheKey) -> Option<Arc<crate::cache::entry::Stored>> {
        let frame = self.fleet.as_ref()?.lookup(&key.to_hex()).await?;
        self.cache.from_shared(key, &frame)
    }

    /// The error for a request that may not reach a provider and has no stored answer; in
    /// replay mode it names the closest stored request.
    fn miss(
        &self,
        key: CacheKey,
        route: String,
        namespace: &str,
        endpoint: &str,
        canonical: &[u8],
        mode: CacheMode,
    ) -> ProxyError {
        let offline = mode == CacheMode::Replay;
        let closest = offline
            .then(|| {
                let request: Value = serde_json::from_slice(canonical).unwrap_or(Value::Null);
                self.cache.closest(&route, endpoint, namespace, &request)
            })
            .flatten();
        ProxyError::CacheMiss {
            key,
            route,
            closest,
            offline,
        }
    }

    /// A flight shared by identical requests: led (the call is made) or joined.
    async fn shared(
        self: &Arc<Self>,
        job: Job,
        key: CacheKey,
        save: Option<Save>,
        refresh: bool,
    ) -> (CacheStatus, Result<Reply, ProxyError>, Vec<Step>) {
        let (want_stream, include_usage) = (job.stream, wants_usage(&job.body));
        let (flight, leader) = self.cache.flights.join(key);
        let mut beside = None;
        let status = if leader {
            let call = fly::fly_and_store(self.clone(), job, flight.clone(), key, save, refresh);
            if want_stream {
                // A stream is relayed while it arrives: the call is driven beside the response
                // until another client joins.
                beside = Some(Driver::lead(&flight, call));
            } else {
                // A plain answer: the leader makes the call itself; if its client goes away
                // first, the call goes on in a task of its own for the others.
                Driver::shared(call).run().await;
            }
            CacheStatus::Miss
        } else {
            // This client must not depend on the leader's client reading its stream.
            flight.hand_over();
            if matches!(flight.state().end, Some(End::Complete)) {
                // The answer is whole and on its way into the store: nothing was waited for,
                // so for this client it is a hit, however soon the writer gets to it.
                CacheStatus::Hit
            } else {
                CacheStatus::Coalesced
            }
        };
        let rendered = render::flight(flight.clone(), want_stream, include_usage);
        let reply = match beside {
            Some(call) => call
                .beside(rendered)
                .await
                .map(|reply| with_driver(reply, call)),
            None => rendered.await,
        };
        // The leader's call may have been answered by another gateway of the fleet: known once
        // the answer has started.
        let from_fleet = flight.state().head.as_ref().and_then(|h| h.from_fleet);
        let status = match (status, from_fleet) {
            (CacheStatus::Miss, Some(FromFleet::Stored)) => CacheStatus::FleetHit,
            (CacheStatus::Miss, Some(FromFleet::Followed)) => CacheStatus::FleetCoalesced,
            (status, _) => status,
        };
        self.metrics.cache(status.name());
        let trail = failed_trail(&flight, &reply);
        (status, reply, trail)
    }
}

/// What the router tried for a flight that failed (nothing for an answer: it carries its own).
fn failed_trail(flight: &Flight, reply: &Result<Reply, ProxyError>) -> Vec<Step> {
    match reply {
        Ok(_) => Vec::new(),
        Err(_) => flight.state().trail.clone(),
    }
}

/// A reply whose live events drive the flight's call as they are read.
fn with_driver(reply: Reply, call: Driver) -> Reply {
    match reply.body {
        ReplyBody::Live(stream) => Reply {
            body: ReplyBody::Live(Box::pin(Driven { call, stream })),
            ..reply
        },
        // The answer is whole: the call has nothing left to drive, or goes on by itself.
        body => Reply { body, ..reply },
    }
}
