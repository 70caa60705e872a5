//! The names of the headers spillway reads and writes itself, built at compile time: a name
//! given as text is parsed and checked on every insert and lookup, and these run on every
//! request.

use axum::http::HeaderName;

/// What the cache did (`hit`, `miss`, `coalesced`, `bypass`, `skip`, `none`).
pub const X_SPILLWAY_CACHE: HeaderName = HeaderName::from_static("x-spillway-cache");
/// Why the cache left a request out (`nondeterministic`, `never`, `off`), with `skip`.
pub const X_SPILLWAY_CACHE_REASON: HeaderName = HeaderName::from_static("x-spillway-cache-reason");
/// Which tier answered a hit or a coalesced request: `local` or `fleet`.
pub const X_SPILLWAY_CACHE_TIER: HeaderName = HeaderName::from_static("x-spillway-cache-tier");
/// Milliseconds (wall-clock) a request waited for headroom before its first attempt.
pub const X_SPILLWAY_WAIT_MS: HeaderName = HeaderName::from_static("x-spillway-wait-ms");
/// Each key or target tried or passed over and why it was left, the answering one last
/// (`groq#1:429, groq#2:cooling, cerebras#1:200`); only when there was more than one.
pub const X_SPILLWAY_FALLBACK: HeaderName = HeaderName::from_static("x-spillway-fallback");
/// The answer's cache key, as 64 hex digits.
pub const X_SPILLWAY_CACHE_KEY: HeaderName = HeaderName::from_static("x-spillway-cache-key");
/// A client's cache namespace.
pub const X_SPILLWAY_CACHE_NAMESPACE: HeaderName =
    HeaderName::from_static("x-spillway-cache-namespace");
/// The provider that answered.
pub const X_SPILLWAY_PROVIDER: HeaderName = HeaderName::from_static("x-spillway-provider");
/// The upstream model id that answered.
pub const X_SPILLWAY_MODEL: HeaderName = HeaderName::from_static("x-spillway-model");
/// The alias (never the value) of the key that answered.
pub const X_SPILLWAY_KEY: HeaderName = HeaderName::from_static("x-spillway-key");
/// How many upstream attempts the answer took.
pub const X_SPILLWAY_ATTEMPTS: HeaderName = HeaderName::from_static("x-spillway-attempts");
/// The provider's request id, passed on.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
