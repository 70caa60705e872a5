//! # spillway
//!
//! An OpenAI-compatible gateway that keeps LLM calls flowing when providers rate-limit: it holds
//! many provider keys, knows each key's per-model limits (from config, headers and 429
//! messages), paces requests so no key is pushed over, and moves a request that fails with a
//! 429, a 5xx or a timeout to the next key or target before the client sees anything.
//!
//! # Layout
//! From the top, each layer using only those below it (ARCHITECTURE.md has the picture and
//! the rules, and CI checks them):
//! - [`server`]: HTTP only: routing, reading requests, rendering outcomes, logs, recordings;
//! - [`state`]: what the endpoints share;
//! - [`pipeline`]: a request's way: cache policy, lookup, single-flight, router, store, render;
//! - [`cache`]: request keys, entries, policy, flights, stream conversion, cassettes, the store;
//! - [`router`]: the chain walk and fallback; the only place that waits;
//! - [`upstream`]: the HTTP client to providers and what each failure means;
//! - [`config`]: `spillway.toml`: raw → validated, secrets from the environment;
//! - [`error`]: every refusal the proxy answers with, as data;
//! - [`limits`]: header dialects, windows, circuits, the pure pacer, estimates, the ledger;
//! - `telemetry` (the `otel` feature): OpenTelemetry spans and their exporter; [`trail`]: the
//!   keys and targets a request tried or passed over;
//! - [`record`]: traffic recording (JSONL); [`metrics`]: Prometheus text; [`log_sink`]: the
//!   buffered stderr the binary logs to; [`heavy`]: very large requests' work kept off the
//!   async workers' queue.

pub mod cache;
pub mod config;
pub mod error;
pub mod fleet;
pub mod heavy;
pub mod limits;
pub mod log_sink;
pub mod metrics;
pub mod pipeline;
pub mod record;
pub mod router;
pub mod server;
pub mod state;
pub mod status;
#[cfg(feature = "otel")]
pub mod telemetry;
pub mod trail;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

pub use spillway_clock::Clock;
pub use state::{AppState, Live};

/// How long, after the shutdown grace has ended the streams in progress, the server waits for
/// their connections to take the error event and close before it returns anyway.
const AFTER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps one timer pending in the runtime at all times. Every upstream call arms a timeout;
/// when the runtime's timer wheel is otherwise empty, arming one wakes the thread parked in the
/// I/O driver so it can shorten its sleep, which costs a cross-thread wake-up (a futex and an
/// eventfd write) per request. With a timer always due within a second, a timeout
/// of seconds or more never needs that wake-up. Real time on purpose: it paces nothing.
async fn metronome() {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Serves the proxy on `listener` until `shutdown` resolves, then finishes in-flight requests
/// for at most `[server] shutdown_grace` (real time): past it, the streams in progress end
/// with an error event, and the server returns even if a connection is still open.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_live(listener, Live::new(state), shutdown).await
}

/// [`run`] over the state `live` holds, which a reload ([`Live::reload`]) may replace while it
/// serves.
pub async fn run_live(
    listener: tokio::net::TcpListener,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = live.current();
    let cache = state.pipeline.cache.clone();
    let recorder = state.recorder.clone();
    let grace = state.config.server.shutdown_grace;
    let stop_streams = state.stop_streams.clone();
    #[cfg(feature = "otel")]
    let tracer = state.tracer.clone();
    let metronome = tokio::spawn(metronome());
    let (began, begun) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = began.send(());
    };
    let deadline = async move {
        if begun.await.is_err() {
            return std::future::pending().await;
        }
        tokio::time::sleep(grace).await;
        tracing::warn!(
            grace = ?grace,
            "shutdown grace passed: ending the streams still open"
        );
        stop_streams.cancel();
        tokio::time::sleep(AFTER_GRACE).await;
    };
    let served = tokio::select! {
        served = server::listen::serve(listener, live, shutdown) => served,
        () = deadline => {
            tracing::warn!("connections still open after the shutdown grace: closing them");
            Ok(())
        }
    };
    metronome.abort();
    // Upstream calls still in flight finish and are stored, within the grace (a stuck
    // provider must not hold shutdown hostage).
    let _ = tokio::time::timeout(grace, cache.flights.wait_idle()).await;
    cache.flush_async().await;
    if let Some(recorder) = recorder {
        recorder.close().await;
    }
    // The last spans go out, within the export's own timeout.
    #[cfg(feature = "otel")]
    if let Some(tracer) = tracer {
        tracer.flush().await;
    }
    served
}
