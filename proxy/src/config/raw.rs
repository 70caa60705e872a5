//! What a `spillway.toml` says, as serde reads it: unknown fields are errors, durations are
//! humantime strings (`"30s"`). [`super::validate`] turns it into the typed config.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[[providers]]`.
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// `[cache]`.
    #[serde(default)]
    pub cache: RawCache,
    /// `[fleet]`; absent: this gateway keeps its limits alone.
    pub fleet: Option<RawFleet>,
    /// `[log]`.
    #[serde(default)]
    pub log: RawLog,
    /// `[[clients]]`: named client keys, each with its own routes and limits.
    #[serde(default)]
    pub clients: Vec<RawClient>,
    /// `[telemetry]`; absent: no traces.
    pub telemetry: Option<RawTelemetry>,
}

/// `[telemetry]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP/HTTP collector: a URL, or `env:NAME` for one held in a variable.
    pub otlp_endpoint: Option<String>,
    /// The resource's `service.name`.
    pub service_name: Option<String>,
    /// Headers each export sends, each value as `env:NAME`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The longest one export may take.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// `[log]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: Option<String>,
}

/// One `[[clients]]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// What logs, metrics, recordings and the status view call it.
    pub name: Option<String>,
    /// Its bearer token, as `env:NAME`.
    pub key: Option<String>,
    /// The routes it may use (absent: every route).
    pub routes: Option<Vec<String>>,
    /// Its own requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Its own tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Its own requests per day.
    pub requests_per_day: Option<u64>,
    /// Its own tokens per day.
    pub tokens_per_day: Option<u64>,
}

/// `[fleet]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// `"env:NAME"`: the variable holding the Redis URL.
    pub redis: Option<String>,
    /// The fleet's name (the prefix of its keys in Redis).
    pub name: Option<String>,
    /// The longest one Redis call may take.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Share answers through Redis (a second cache tier and fleet-wide single-flight).
    pub shared_cache: Option<bool>,
    /// Largest answer written to the shared tier.
    pub shared_max_entry_size: Option<toml::Value>,
}

/// `[cache]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// The store's directory.
    pub path: Option<String>,
    /// `read-write`, `read-only`, `replay` or `off`.
    pub mode: Option<String>,
    /// `deterministic`, `always` or `never`.
    pub when: Option<String>,
    /// Entries older than this are misses.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// Largest store size: bytes, or a string with a unit (`"500MB"`, `"2GiB"`), or `"none"`.
    pub max_size: Option<toml::Value>,
    /// Largest entry stored: bytes or with a unit.
    pub max_entry_size: Option<toml::Value>,
    /// `"always"`, `"shutdown"`, or an interval such as `"1s"`.
    pub fsync: Option<String>,
    /// `file` (default) or `sled`.
    pub index: Option<String>,
    /// Memory for the sled index's page cache: bytes or with a unit.
    pub index_memory: Option<toml::Value>,
    /// Memory for decoded hot entries: bytes or with a unit (0: off).
    pub hot_memory: Option<toml::Value>,
}

/// `[server]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Listen address.
    pub listen: Option<String>,
    /// Bearer tokens clients must send, as `env:NAME`.
    #[serde(default)]
    pub client_keys: Vec<String>,
    /// Bearer tokens for the admin endpoints, as `env:NAME`.
    #[serde(default)]
    pub admin_keys: Vec<String>,
    /// `/metrics` takes an admin key (default false: open like `/healthz`).
    pub metrics_admin_only: Option<bool>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Longest a client may take to send a request's headers, or its body.
    #[serde(default, with = "humantime_serde")]
    pub client_timeout: Option<Duration>,
    /// Completion tokens assumed when a request names no `max_tokens`.
    pub default_max_tokens: Option<u64>,
    /// Clock seconds per wall second (tests and scenarios).
    pub time_scale: Option<f64>,
    /// Record traffic to this JSONL file.
    pub record: Option<String>,
    /// Record request bodies (default true); otherwise only keys and token counts.
    pub record_bodies: Option<bool>,
    /// Longest a shutdown waits for requests in progress before ending them.
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
}

/// One `[[providers]]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Name routes refer to.
    pub name: Option<String>,
    /// Base URL up to and including the version (`https://api.groq.com/openai/v1`).
    pub base_url: Option<String>,
    /// Keys, as `env:NAME`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Time allowed for an answer (for streams: for its first byte).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Time allowed to connect.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Longest a stream may go without sending anything (real time).
    #[serde(default, with = "humantime_serde")]
    pub stream_idle_timeout: Option<Duration>,
    /// Rate-limit header dialect: `groq`, `openai`, `cerebras` or `anthropic`.
    pub dialect: Option<String>,
    /// Requests in flight per key and model while its requests-per-minute limit is unknown.
    pub unknown_limits_in_flight: Option<u32>,
    /// Consecutive outages of a target that open its circuit.
    pub failures_to_open: Option<u32>,
    /// Cooldown after a first failure; doubles with each consecutive one.
    #[serde(default, with = "humantime_serde")]
    pub cooldown: Option<Duration>,
    /// Longest cooldown.
    #[serde(default, with = "humantime_serde")]
    pub max_cooldown: Option<Duration>,
    /// How long a key the provider refused (401, 403, out of credit) is set aside before one
    /// request tries it again; doubles while it keeps being refused.
    #[serde(default, with = "humantime_serde")]
    pub key_retry: Option<Duration>,
    /// Longest a refused key is set aside between two tries.
    #[serde(default, with = "humantime_serde")]
    pub max_key_retry: Option<Duration>,
    /// Known limits per upstream model id.
    #[serde(default)]
    pub limits: BTreeMap<String, RawLimits>,
    /// A Groq plan whose published limits fill in every model's: `free` or `developer`.
    pub tier: Option<String>,
    /// A TOML file of limits per model (`["MODEL"]` tables with the fields of
    /// `[providers.limits."MODEL"]`), over the tier's and under the config's own.
    pub limits_file: Option<String>,
}

/// `[providers.limits."MODEL"]`.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// RPM.
    pub requests_per_minute: Option<u64>,
    /// TPM.
    pub tokens_per_minute: Option<u64>,
    /// RPD.
    pub requests_per_day: Option<u64>,
    /// TPD.
    pub tokens_per_day: Option<u64>,
    /// ITPM.
    pub input_tokens_per_minute: Option<u64>,
    /// OTPM.
    pub output_tokens_per_minute: Option<u64>,
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The model name clients send.
    pub model: Option<String>,
    /// The chain, tried in order.
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    /// Longest a request may queue for headroom.
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// Cache namespace for this route's entries.
    pub cache_namespace: Option<String>,
}

/// One target of a route.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// A provider's name.
    pub provider: Option<String>,
    /// The provider's model id.
    pub model: Option<String>,
}
