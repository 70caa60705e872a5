//! # spillway-mock
//!
//! A faithful mock of Groq's API for tests, scenarios, benchmarks and any project's CI: it
//! enforces configurable per-key, per-model rate limits on rolling windows and answers exactly
//! as Groq does when they bite (429 bodies, `retry-after`, the six `x-ratelimit-*` headers), can
//! speak OpenAI's, Cerebras's or Anthropic's header dialect instead, and injects faults and
//! latency on demand. Replies are deterministic, so caches and replays can be checked.
//!
//! ```no_run
//! # async fn demo() {
//! use spillway_mock::{Limits, MockProvider};
//! let mock = MockProvider::builder()
//!     .key("k1")
//!     .limits("llama-3.1-8b-instant", Limits::rpm(30).with_tpm(6_000))
//!     .start()
//!     .await;
//! let base_url = mock.url(); // http://127.0.0.1:PORT/openai/v1
//! // ... drive traffic, then:
//! assert!(mock.stats().peaks_within_limits());
//! # }
//! ```
//!
//! # Layout
//! - [`spec`]: the mock's behaviour as data (keys, models, limits, dialect, faults);
//! - [`config`]: the TOML config file and command-line overrides → a spec;
//! - [`limiter`]: rolling windows per key and model, admission decisions, peaks;
//! - [`headers`]: rate-limit headers per dialect, Go-style durations;
//! - [`tokens`]: the one token estimator;
//! - [`request`]: request bodies read (size limit, read timeout) and validated (400s naming
//!   the field);
//! - [`reply`]: deterministic replies, completion bodies and SSE chunks;
//! - [`bodies`]: response bodies as faults shape them (cut, garbled, stalled), streams paced;
//! - [`faults`]: which fault strikes which request, and latency;
//! - [`error`]: every error body, per dialect;
//! - [`routes`]: the API endpoints; [`control`]: `/_mock/*`; [`admin`]: its optional token;
//! - [`journal`], [`stats`]: what the mock saw; [`mask`]: keys as `/_mock/*` shows them;
//! - [`state`]: what handlers share;
//! - [`server`]: the accept loop (read timeouts, resettable connections, graceful shutdown);
//!   [`exposure`]: the warning logged when it listens beyond loopback.

pub mod admin;
pub mod admin_token;
pub mod bodies;
pub mod config;
pub mod control;
pub mod error;
pub mod exposure;
pub mod faults;
pub mod headers;
pub mod journal;
pub mod limiter;
pub mod mask;
pub mod reply;
pub mod request;
pub mod routes;
pub mod server;
pub mod spec;
pub mod state;
pub mod stats;
pub mod tokens;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use spillway_clock::Clock;

pub use crate::admin_token::AdminToken;
pub use crate::error::MockError;
pub use crate::journal::JournalEntry;
pub use crate::limiter::{KeyModelStats, WindowPeak};
pub use crate::spec::{Dialect, Fault, FaultRule, Faults, Latency, Limits, MockSpec, Trigger};
pub use crate::state::MockState;
pub use crate::stats::Stats;

/// The mock's HTTP application: the API under `/openai/v1` and `/v1`, the control plane under
/// `/_mock`, and Groq's 404 for anything else.
pub fn build_app(state: Arc<MockState>) -> Router {
    Router::new()
        .nest("/openai/v1", routes::api_routes())
        .nest("/v1", routes::api_routes())
        .nest("/_mock", control::control_routes())
        .fallback(routes::unknown_url)
        .with_state(state)
}

/// Serves a mock on `listener` until `shutdown` resolves, then finishes in-flight responses
/// (hanging ones are released) and returns. Logs a warning first when `listener` is not on a
/// loopback address (see [`exposure::exposure_warning`]).
pub async fn run(
    listener: TcpListener,
    state: Arc<MockState>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    if let Some(warning) = exposure::exposure_warning(addr, state.spec.admin_token.is_some()) {
        tracing::warn!(%addr, "{warning}");
    }
    let app = build_app(state.clone());
    let read_timeout = state.spec.read_timeout;
    // Hanging responses are released as accepting stops, so the connections can finish.
    let shutdown = async move {
        shutdown.await;
        state.shutdown.cancel();
    };
    server::serve(listener, app, read_timeout, shutdown).await;
    Ok(())
}

/// Why a mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spec contradicts itself.
    #[error("invalid mock spec: {0}")]
    Spec(String),
    /// The port could not be bound.
    #[error("cannot listen: {0}")]
    Bind(#[from] io::Error),
}

/// Builds a [`MockProvider`]: every setting has a default (one key `mock-key`, Groq's production
/// models, no limits, Groq's dialect, real time, no faults).
#[derive(Debug, Default)]
pub struct MockProviderBuilder {
    spec: MockSpec,
    keys: Option<Vec<String>>,
    models: Option<Vec<String>>,
    clock: Option<Clock>,
    listen: Option<SocketAddr>,
}

impl MockProviderBuilder {
    /// Accepts this key (the first call replaces the default key).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.get_or_insert_with(Vec::new).push(key.into());
        self
    }

    /// Accepts these keys (replacing the default key).
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, keys: I) -> Self {
        self.keys
            .get_or_insert_with(Vec::new)
            .extend(keys.into_iter().map(Into::into));
        self
    }

    /// Serves this model (the first call replaces Groq's model list).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.models.get_or_insert_with(Vec::new).push(model.into());
        self
    }

    /// Limits every key's use of `model` (the model is served if it was not already).
    pub fn limits(mut self, model: impl Into<String>, limits: Limits) -> Self {
        self.spec.limits.insert(model.into(), limits);
        self
    }

    /// Speaks this header dialect.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.spec.dialect = dialect;
        self
    }

    /// Starts with these faults and latency.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.spec.faults = faults;
        self
    }

    /// Answers `"service_tier": "flex"` with 498 `capacity_exceeded`.
    pub fn flex_capacity_exceeded(mut self, yes: bool) -> Self {
        self.spec.flex_capacity_exceeded = yes;
        self
    }

    /// Largest request body read.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.spec.max_body_bytes = bytes;
        self
    }

    /// How long (wall-clock time) a client gets to send a request's headers, and then its body
    /// (default 30 s): a connection that sends nothing, or too slowly, is closed; a body that
    /// does not arrive in time gets 408.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.spec.read_timeout = timeout;
        self
    }

    /// Requires `Authorization: Bearer TOKEN` on every `/_mock/*` request (the control plane is
    /// open without it). This handle's own methods ([`MockProvider::stats`] and the rest) read
    /// the state directly and keep working.
    pub fn admin_token(mut self, token: impl AsRef<str>) -> Self {
        self.spec.admin_token = Some(AdminToken::new(token.as_ref()));
        self
    }

    /// Runs on a scaled clock (`60.0`: a minute per second). Ignored when [`Self::clock`] is set.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.clock = Some(Clock::scaled(scale).unwrap_or_else(|_| Clock::real()));
        self
    }

    /// Runs on this clock (share one with a proxy, or drive a manual one by hand).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Listens here instead of an OS-chosen port on 127.0.0.1.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Starts from a complete spec (keys, models and limits as given).
    pub fn spec(mut self, spec: MockSpec) -> Self {
        self.keys = Some(spec.keys.clone());
        self.models = Some(spec.models.clone());
        self.spec = spec;
        self
    }

    /// The spec this builder describes.
    pub fn build_spec(&self) -> MockSpec {
        let mut spec = self.spec.clone();
        if let Some(keys) = &self.keys {
            spec.keys = keys.clone();
        }
        if let Some(models) = &self.models {
            spec.models = models.clone();
        }
        for model in self.spec.limits.keys() {
            if !spec.models.contains(model) {
                spec.models.push(model.clone());
            }
        }
        spec
    }

    /// Starts the mock, or says why it cannot.
    pub async fn try_start(self) -> Result<MockProvider, StartError> {
        let spec = self.build_spec();
        spec.validate().map_err(StartError::Spec)?;
        let addr = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(addr).await?;
        let clock = self.clock.unwrap_or_else(Clock::real);
        Ok(MockProvider::serve(
            listener,
            Arc::new(MockState::new(spec, clock)),
        )?)
    }

    /// Starts the mock on 127.0.0.1 and an OS-chosen port. Panics on an invalid spec: meant for
    /// tests (use [`Self::try_start`] to handle the error).
    pub async fn start(self) -> MockProvider {
        match self.try_start().await {
            Ok(mock) => mock,
            Err(e) => panic!("the mock provider could not start: {e}"),
        }
    }
}

/// A running mock. Dropping it shuts it down.
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    state: Arc<MockState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockProvider {
    /// A builder with every default.
    pub fn builder() -> MockProviderBuilder {
        MockProviderBuilder::default()
    }

    /// Serves `state` on an already bound listener.
    pub fn serve(listener: TcpListener, state: Arc<MockState>) -> io::Result<MockProvider> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(MockProvider {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for Groq's SDKs (which append `/openai/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/openai/v1`: Groq's base path, for OpenAI-style clients.
    pub fn url(&self) -> String {
        format!("http://{}/openai/v1", self.addr)
    }

    /// `http://ADDR/v1`.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// What the mock counted so far, keys whole (`/_mock/stats` masks them).
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// Every request so far, in order, keys whole (`/_mock/journal` masks them).
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state.journal.since(0)
    }

    /// Replaces faults and latency from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.faults.store(Arc::new(faults));
    }

    /// Forgets windows, counters and the journal.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// The mock's clock.
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    /// The shared state (spec, limiter, journal).
    pub fn state(&self) -> &Arc<MockState> {
        &self.state
    }

    /// Stops accepting, finishes in-flight responses and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.shutdown.cancel();
    }
}
