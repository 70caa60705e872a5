//! What every handler shares: the config, the router, metrics, the clock, and the client-key
//! digests.

use std::collections::HashMap;
use std::sync::Arc;

use spillway_clock::Clock;

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::record::Recorder;
use crate::router::Router;

/// Shared state of one proxy.
#[derive(Debug)]
pub struct AppState {
    /// The validated config.
    pub config: Arc<Config>,
    /// Key pool, pacing and fallback.
    pub router: Arc<Router>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The clock everything runs on.
    pub clock: Clock,
    /// blake3 digests of the client keys (compared in constant time).
    pub client_keys: Vec<blake3::Hash>,
    /// Route index by client-facing model name.
    pub routes: HashMap<String, usize>,
    /// The response cache.
    pub cache: Arc<Cache>,
    /// Traffic recording, when enabled.
    pub recorder: Option<Arc<Recorder>>,
}

impl AppState {
    /// State for a config, on `clock`.
    pub fn new(config: Config, clock: Clock) -> Result<Arc<Self>, String> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::default());
        let router = Arc::new(Router::new(config.clone(), clock.clone(), metrics.clone())?);
        let cache =
            Arc::new(Cache::open(config.cache.clone(), clock.clone()).map_err(|e| e.to_string())?);
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
            router,
            metrics,
            clock,
            cache,
            recorder,
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
