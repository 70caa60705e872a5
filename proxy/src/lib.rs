//! # spillway
//!
//! An OpenAI-compatible gateway that keeps LLM calls flowing when providers rate-limit: it holds
//! many provider keys, knows each key's per-model limits (from config, headers and 429
//! messages), paces requests so no key is pushed over, and moves a request that fails with a
//! 429, a 5xx or a timeout to the next key or target before the client sees anything.
//!
//! # Layout
//! - [`cache`]: content-addressed response cache, single-flight, cassettes;
//! - [`config`]: `spillway.toml`: raw → validated, secrets from the environment;
//! - [`limits`]: header dialects, per key+model windows, the pure pacer, token estimates;
//! - [`router`]: the chain walk, fallback and circuits; the only place that waits;
//! - [`upstream`]: the HTTP client to providers and what each failure means;
//! - [`server`]: endpoints, auth, stream relaying, the one error type;
//! - [`record`]: traffic recording (JSONL);
//! - [`metrics`]: Prometheus text; [`state`]: what handlers share;
//! - [`log_sink`]: the buffered stderr the binary logs to.

pub mod cache;
pub mod config;
pub mod limits;
pub mod log_sink;
pub mod metrics;
pub mod record;
pub mod router;
pub mod server;
pub mod state;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

pub use server::build_app;
pub use spillway_clock::Clock;
pub use state::AppState;

/// How long shutdown waits for in-flight upstream calls to finish and be stored.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps one timer pending in the runtime at all times. Every upstream call arms a timeout;
/// when the runtime's timer wheel is otherwise empty, arming one wakes the thread parked in the
/// I/O driver so it can shorten its sleep, which cost a cross-thread wake-up (a futex and an
/// eventfd write) per request in a trace. With a timer always due within a second, a timeout
/// of seconds or more never needs that wake-up. Real time on purpose: it paces nothing.
async fn metronome() {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Serves the proxy on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cache = state.cache.clone();
    let recorder = state.recorder.clone();
    let metronome = tokio::spawn(metronome());
    let app = build_app(state.clone());
    let served = server::listen::serve(listener, state, app, shutdown).await;
    metronome.abort();
    // Upstream calls still in flight finish and are stored (bounded: a stuck provider must not
    // hold shutdown hostage).
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, cache.flights.wait_idle()).await;
    cache.flush_async().await;
    if let Some(recorder) = recorder {
        recorder.close().await;
    }
    served
}
