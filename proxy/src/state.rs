//! What every handler shares: the config, the pipeline (cache and router), metrics, the
//! clock, the client-key digests and the recorder.

use std::collections::HashMap;
use std::sync::Arc;

use spillway_clock::Clock;

use crate::cache::Cache;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::record::Recorder;
use crate::router::Router;
use crate::upstream::Upstream;

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
    /// blake3 digests of the client keys (compared in constant time).
    pub client_keys: Vec<blake3::Hash>,
    /// Route index by client-facing model name.
    pub routes: HashMap<String, usize>,
    /// Traffic recording, when enabled.
    pub recorder: Option<Arc<Recorder>>,
    /// Cancelled when the shutdown grace has passed: every stream in progress ends.
    pub stop_streams: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// State for a config, on `clock`.
    pub fn new(config: Config, clock: Clock) -> Result<Arc<Self>, String> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let stop_streams = tokio_util::sync::CancellationToken::new();
        let upstream = Upstream::new(&config.providers, clock.clone(), stop_streams.clone())?;
        let fleet = match &config.fleet {
            Some(f) => {
                let fleet = Fleet::new(f, metrics.clone(), clock.clone())?;
                metrics.fleet_joined();
                tracing::info!(fleet = %f.name, redis = %format!("${}", f.redis_env), "fleet: sharing the keys' per-minute windows (and, unless shared_cache = false, answers) through Redis");
                let fleet = Arc::new(fleet);
                fleet.start_heartbeat();
                Some(fleet)
            }
            None => None,
        };
        let router = Arc::new(Router::new(
            config.clone(),
            clock.clone(),
            metrics.clone(),
            Arc::new(upstream),
            fleet.clone(),
        ));
        let cache =
            Arc::new(Cache::open(config.cache.clone(), clock.clone()).map_err(|e| e.to_string())?);
        let pipeline = Arc::new(Pipeline {
            config: config.clone(),
            router,
            cache,
            metrics: metrics.clone(),
            fleet: fleet.filter(|f| f.shares_answers()),
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
        let recorder = match &config.server.record {
            Some(path) => Some(Arc::new(
                Recorder::open(path, config.server.record_bodies, clock.now())
                    .map_err(|e| format!("cannot record to {}: {e}", path.display()))?,
            )),
            None => None,
        };
        Ok(Arc::new(AppState {
            client_keys: config
                .server
                .client_keys
                .iter()
                .map(|k| blake3::hash(k.expose().as_bytes()))
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
            stop_streams,
        }))
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
}
