//! The status document `GET /spillway/status` answers and `spillway status` shows: per route,
//! per target, per key, each window's limit and headroom, cool-downs, circuits, keys set aside,
//! the queue, the last minute's traffic, and the named clients' own windows. Plain data, read
//! and written as JSON; `server::status` fills it in, [`render`] draws it for a terminal.
//!
//! Every time in it is wall-clock time, whatever the proxy's time scale: a span as seconds from
//! the document's moment (`in_s`) and as a calendar time (`at`, RFC 3339), as `retry-after` is.
//! Keys appear by alias only.

pub mod fetch;
pub mod render;

use serde::{Deserialize, Serialize};

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// spillway's version.
    pub version: String,
    /// When the document was made (RFC 3339, wall clock).
    pub generated_at: String,
    /// Clock seconds per wall-clock second (1 outside tests and scenarios); windows and the
    /// last minute are counted in clock time.
    pub time_scale: f64,
    /// In a fleet: the gateways seen alive at the last heartbeat.
    pub fleet_members: Option<u64>,
    /// The response cache.
    pub cache: CacheView,
    /// Every route, in config order.
    pub routes: Vec<RouteView>,
    /// Every named client (`[[clients]]`), in config order.
    pub clients: Vec<ClientView>,
}

/// The response cache since the start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheView {
    /// `read-write`, `read-only`, `replay` or `off`.
    pub mode: String,
    /// Requests answered from the store.
    pub hits: u64,
    /// Requests looked up (hits, misses, joined flights).
    pub lookups: u64,
    /// `hits / lookups`; `None` before any lookup.
    pub hit_ratio: Option<f64>,
}

/// A moment after the document's: seconds from it and the calendar time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Moment {
    /// Wall-clock seconds from `generated_at`.
    pub in_s: f64,
    /// RFC 3339, wall clock.
    pub at: String,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    /// The model name clients send.
    pub route: String,
    /// The longest a request may queue for headroom, in wall-clock seconds.
    pub max_wait_s: f64,
    /// Requests waiting for headroom now.
    pub queue: QueueView,
    /// The last minute (clock time).
    pub last_minute: LastMinute,
    /// The chain, in fallback order.
    pub targets: Vec<TargetView>,
}

/// Requests waiting for headroom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueView {
    /// How many.
    pub length: u64,
    /// How long the one waiting longest has waited (wall-clock seconds); `None` when empty.
    pub oldest_wait_s: Option<f64>,
}

/// Counts over the last minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastMinute {
    /// Requests answered.
    pub requests: u64,
    /// Attempts after which a request moved on to another key or target.
    pub fallbacks: u64,
    /// 429s providers answered.
    pub upstream_429s: u64,
    /// 429s the gateway answered its clients.
    pub answered_429s: u64,
    /// Cache hits over lookups; `None` when nothing was looked up.
    pub cache_hit_ratio: Option<f64>,
}

/// One target: a provider's model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetView {
    /// The provider's name.
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// Its circuit.
    pub circuit: CircuitView,
    /// Its keys, in config order.
    pub keys: Vec<KeyView>,
}

/// A target's circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitView {
    /// `closed`, `open` (cooling down), `half-open` (the next request probes) or `probing`
    /// (a probe is out).
    pub state: String,
    /// Consecutive outages.
    pub failures: u32,
    /// While `open`: when the cool-down ends.
    pub cooldown_until: Option<Moment>,
}

/// One key at one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    /// The key's alias (`groq#1`), never its value.
    pub key: String,
    /// Requests sent through it and not yet answered.
    pub in_flight: u32,
    /// Blocked after a provider's 429: until when, and the limit it named.
    pub cooling: Option<Cooling>,
    /// Set aside because its provider refused it.
    pub disabled: Option<Disabled>,
    /// Every known limit.
    pub windows: Vec<WindowView>,
}

/// A 429's block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cooling {
    /// When it lifts.
    pub until: Moment,
    /// The limit the 429 named (`rpm`, `tpd`...), when it named one.
    pub limit: Option<String>,
}

/// A key its provider refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disabled {
    /// What the provider said (status and code).
    pub reason: String,
    /// When one request tries it again.
    pub retry: Moment,
    /// A request is trying it now.
    pub probing: bool,
}

/// One known limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowView {
    /// `rpm`, `tpm`, `itpm`, `otpm`, `rpd` or `tpd`.
    pub window: String,
    /// The value in force.
    pub limit: u64,
    /// `configured` or `learned` (from the provider's headers or a 429 message).
    pub source: String,
    /// What the window holds now (settled usage, the provider's reported usage included).
    pub used: u64,
    /// What requests in flight reserved of it.
    pub reserved: u64,
    /// What is left, reservations counted.
    pub remaining: u64,
    /// When the window has forgotten everything it holds now.
    pub reset: Moment,
}

/// One named client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientView {
    /// Its name (never its key).
    pub name: String,
    /// The routes it may use; `None`: every route.
    pub routes: Option<Vec<String>>,
    /// Its requests not yet answered (counted when it has limits of its own).
    pub in_flight: u32,
    /// Its own limits.
    pub windows: Vec<WindowView>,
    /// Its last minute: requests, the gateway's 429s and cache hits (fallbacks and providers'
    /// 429s are counted per route, and are 0 here).
    pub last_minute: LastMinute,
}
