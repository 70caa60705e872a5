//! What every handler shares: the config, the pipeline (cache and router), metrics, the
//! clock, the client-key digests and the recorder; and [`Live`], the state in force, which a
//! reload replaces whole.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use spillway_clock::Clock;

use crate::cache::Cache;
use crate::config::Config;
use crate::config::fleet::FleetConfig;
use crate::fleet::Fleet;
use crate::limits::quota::ClientQuota;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::record::Recorder;
use crate::router::Router;
use crate::upstream::Upstream;

/// One `[[clients]]` entry as the endpoints use it.
#[derive(Debug)]
pub struct ClientState {
    /// Its name.
    pub name: String,
    /// The routes it may use (`None`: every route).
    pub routes: Option<Vec<usize>>,
    /// Its own windows.
    pub quota: ClientQuota,
}

impl ClientState {
    /// Whether it may use route `route`.
    pub fn allows(&self, route: usize) -> bool {
        self.routes.as_ref().is_none_or(|r| r.contains(&route))
    }
}

/// Shared state of one proxy.
#[derive(Debug)]
pub struct AppState {
    /// The validated config.
    pub config: Arc<Config>,
    /// The request's way: cache, single-flight, router.
    pub pipeline: Arc<Pipeline>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The clock everything runs on.
    pub clock: Clock,
    /// blake3 digests of the client keys (compared in constant time), each with the index of
    /// its `[[clients]]` entry (`None` for a `[server] client_keys` key).
    pub client_keys: Vec<(blake3::Hash, Option<usize>)>,
    /// blake3 digests of the admin keys.
    pub admin_keys: Vec<blake3::Hash>,
    /// The named clients, in config order, with their own windows.
    pub clients: Vec<ClientState>,
    /// Route index by client-facing model name.
    pub routes: HashMap<String, usize>,
    /// Traffic recording, when enabled.
    pub recorder: Option<Arc<Recorder>>,
    /// The fleet this gateway shares its keys' windows with, if any.
    pub fleet: Option<Arc<Fleet>>,
    /// Cancelled when the shutdown grace has passed: every stream in progress ends.
    pub stop_streams: tokio_util::sync::CancellationToken,
    /// Where spans go, with `[telemetry]`.
    #[cfg(feature = "otel")]
    pub tracer: Option<Arc<crate::telemetry::Tracer>>,
}

/// What outlives a reload: the process's clock, metrics, cache, recording, traces and
/// shutdown.
struct Lasting {
    clock: Clock,
    metrics: Arc<Metrics>,
    cache: Arc<Cache>,
    recorder: Option<Arc<Recorder>>,
    stop_streams: tokio_util::sync::CancellationToken,
    #[cfg(feature = "otel")]
    tracer: Option<Arc<crate::telemetry::Tracer>>,
}

impl AppState {
    /// State for a config, on `clock`.
    pub fn new(config: Config, clock: Clock) -> Result<Arc<Self>, String> {
        let metrics = Arc::new(Metrics::default());
        let cache =
            Arc::new(Cache::open(config.cache.clone(), clock.clone()).map_err(|e| e.to_string())?);
        let recorder = match &config.server.record {
            Some(path) => Some(Arc::new(
                Recorder::open(path, config.server.record_bodies, clock.now())
                    .map_err(|e| format!("cannot record to {}: {e}", path.display()))?,
            )),
            None => None,
        };
        let lasting = Lasting {
            clock,
            metrics,
            cache,
            recorder,
            stop_streams: tokio_util::sync::CancellationToken::new(),
            #[cfg(feature = "otel")]
            tracer: config
                .telemetry
                .as_ref()
                .map(|t| {
                    crate::telemetry::Tracer::start(&crate::telemetry::Destination {
                        traces_url: t.traces_url.expose().to_string(),
                        service_name: t.service_name.clone(),
                        headers: t
                            .headers
                            .iter()
                            .map(|(name, value)| (name.clone(), value.expose().to_string()))
                            .collect(),
                        timeout: t.timeout,
                    })
                })
                .transpose()?,
        };
        let fleet = join_fleet(&config, &lasting)?;
        Self::assemble(config, lasting, fleet, None)
    }

    /// The state for `config` replacing this one: the same cache, metrics, recording and clock
    /// (so `[cache]`, `[log]`, `[telemetry]` and the server's `listen`, `client_timeout`, `record`, `record_bodies` and
    /// `time_scale` stay as they were at start, and are taken from the running config), the
    /// same fleet membership when `[fleet]` is unchanged, and the limit state of every key
    /// still configured (same provider, model and alias).
    pub fn reloaded(&self, mut config: Config) -> Result<Arc<Self>, String> {
        config.cache = self.config.cache.clone();
        config.log = self.config.log;
        config.server.listen = self.config.server.listen;
        config.server.client_timeout = self.config.server.client_timeout;
        config.server.record = self.config.server.record.clone();
        config.server.record_bodies = self.config.server.record_bodies;
        config.server.time_scale = self.config.server.time_scale;
        config.telemetry = self.config.telemetry.clone();
        let lasting = Lasting {
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
            cache: self.pipeline.cache.clone(),
            recorder: self.recorder.clone(),
            stop_streams: self.stop_streams.clone(),
            #[cfg(feature = "otel")]
            tracer: self.tracer.clone(),
        };
        let fleet = match (&self.fleet, &self.config.fleet, &config.fleet) {
            (Some(fleet), Some(old), Some(new)) if same_fleet(old, new) => Some(fleet.clone()),
            _ => join_fleet(&config, &lasting)?,
        };
        Self::assemble(config, lasting, fleet, Some(&self.pipeline.router))
    }

    /// The state over `lasting` for `config`, its router continuing `previous`'s limit state.
    fn assemble(
        config: Config,
        lasting: Lasting,
        fleet: Option<Arc<Fleet>>,
        previous: Option<&Router>,
    ) -> Result<Arc<Self>, String> {
        let config = Arc::new(config);
        let Lasting {
            clock,
            metrics,
            cache,
            recorder,
            stop_streams,
            #[cfg(feature = "otel")]
            tracer,
        } = lasting;
        let upstream = Upstream::new(&config.providers, clock.clone(), stop_streams.clone())?;
        let router = Arc::new(Router::new(
            config.clone(),
            clock.clone(),
            metrics.clone(),
            Arc::new(upstream),
            fleet.clone(),
        ));
        if let Some(previous) = previous {
            router.take_over(previous);
        }
        let pipeline = Arc::new(Pipeline {
            config: config.clone(),
            router,
            cache,
            metrics: metrics.clone(),
            fleet: fleet.clone().filter(|f| f.shares_answers()),
        });
        // The tokenizer takes ~35 MB; load it now only when a configured limit counts tokens
        // (limits learned from headers later load it on first need).
        let counts_tokens = config.providers.iter().any(|p| {
            p.limits
                .values()
                .any(|l| l.iter().any(|(kind, _)| !kind.counts_requests()))
        });
        if counts_tokens {
            crate::limits::estimate::warm_up();
        }
        Ok(Arc::new(AppState {
            client_keys: config
                .server
                .client_keys
                .iter()
                .map(|k| (digest(k), None))
                .chain(
                    config
                        .clients
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (digest(&c.key), Some(i))),
                )
                .collect(),
            admin_keys: config.server.admin_keys.iter().map(digest).collect(),
            clients: config
                .clients
                .iter()
                .map(|c| ClientState {
                    name: c.name.clone(),
                    routes: c.routes.clone(),
                    quota: ClientQuota::new(c.limits),
                })
                .collect(),
            routes: config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (r.model.clone(), i))
                .collect(),
            config,
            pipeline,
            metrics,
            clock,
            recorder,
            fleet,
            stop_streams,
            #[cfg(feature = "otel")]
            tracer,
        }))
    }

    /// The name of client `caller`, when it is a named one.
    pub fn client_name(&self, caller: Option<usize>) -> Option<&str> {
        caller.map(|i| self.clients[i].name.as_str())
    }

    /// The route names, comma-separated (for messages).
    pub fn route_names(&self) -> String {
        self.config
            .routes
            .iter()
            .map(|r| r.model.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Ready to serve: the config is loaded and the cache open (this state exists only once
    /// both are), and with a fleet, Redis has answered and is not out of reach; or why not.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(fleet) = &self.fleet {
            fleet.readiness().map_err(str::to_string)?;
        }
        Ok(())
    }
}

/// Joins the fleet `config` names, if any, and starts its heartbeat.
fn join_fleet(config: &Config, lasting: &Lasting) -> Result<Option<Arc<Fleet>>, String> {
    let Some(f) = &config.fleet else {
        return Ok(None);
    };
    let fleet = Fleet::new(f, lasting.metrics.clone(), lasting.clock.clone())?;
    lasting.metrics.fleet_joined();
    tracing::info!(fleet = %f.name, redis = %format!("${}", f.redis_env), "fleet: sharing the keys' per-minute windows (and, unless shared_cache = false, answers) through Redis");
    let fleet = Arc::new(fleet);
    fleet.start_heartbeat();
    Ok(Some(fleet))
}

/// Whether two `[fleet]` sections name the same fleet through the same Redis.
fn same_fleet(a: &FleetConfig, b: &FleetConfig) -> bool {
    a.name == b.name && a.timeout == b.timeout && a.redis_url.expose() == b.redis_url.expose()
}

/// Where a reload reads its config from: the binary's config file and flags (`None` when the
/// state was built in code and has no file behind it).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// The state in force. Each request takes the state current when it arrives and keeps it to
/// its end, so a reload drops nothing: requests in flight finish on the old state, the next
/// ones start on the new.
pub struct Live {
    current: ArcSwap<AppState>,
    /// One reload at a time (each continues the state the last one left).
    reloading: std::sync::Mutex<()>,
    /// What SIGHUP and `POST /spillway/reload` read again.
    source: Option<ConfigSource>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("current", &self.current)
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl Live {
    /// `state` in force, with no config file to reload from.
    pub fn new(state: Arc<AppState>) -> Arc<Self> {
        Self::build(state, None)
    }

    /// `state` in force, reloaded from `source` on request ([`Self::reload_from_source`]).
    pub fn with_source(state: Arc<AppState>, source: ConfigSource) -> Arc<Self> {
        Self::build(state, Some(source))
    }

    fn build(state: Arc<AppState>, source: Option<ConfigSource>) -> Arc<Self> {
        Arc::new(Live {
            current: ArcSwap::new(state),
            reloading: std::sync::Mutex::new(()),
            source,
        })
    }

    /// The state in force now.
    pub fn current(&self) -> Arc<AppState> {
        self.current.load_full()
    }

    /// Puts `config` in force (see [`AppState::reloaded`]); on an error the state in force
    /// stays.
    pub fn reload(&self, config: Config) -> Result<Arc<AppState>, String> {
        let _one = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.current().reloaded(config)?;
        self.current.store(next.clone());
        Ok(next)
    }

    /// Reads the config source again and puts it in force, logging the result either way
    /// (SIGHUP and `POST /spillway/reload` both come here). Blocks on file reads and on
    /// opening what the new config names: call it off the async workers.
    pub fn reload_from_source(&self, trigger: &str) -> Result<Arc<AppState>, ReloadError> {
        let Some(source) = &self.source else {
            return Err(ReloadError::NoSource);
        };
        let reloaded = source().and_then(|config| self.reload(config));
        match reloaded {
            Ok(state) => {
                tracing::info!(
                    trigger,
                    routes = state.config.routes.len(),
                    providers = state.config.providers.len(),
                    "config reloaded"
                );
                Ok(state)
            }
            Err(error) => {
                tracing::error!(
                    trigger,
                    error = %error,
                    "config reload refused: the config in force stays"
                );
                Err(ReloadError::Refused(error))
            }
        }
    }
}

/// Why a reload put nothing in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The state was built in code: there is no config file to read again.
    NoSource,
    /// The config read is invalid (or could not be read, or not put in force): why.
    Refused(String),
}

/// A key's blake3 digest, which is what authentication compares.
fn digest(key: &crate::config::ApiKey) -> blake3::Hash {
    blake3::hash(key.expose().as_bytes())
}
