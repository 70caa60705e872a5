//! From what the file says to what the program uses: every reference resolved, every secret read
//! from the environment (but provider keys in replay mode, which calls no provider), every error
//! naming the file, the field and what was expected.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::cache::{CacheConfig, CacheMode, CacheWhen, FsyncPolicy, IndexKind, parse_size};
use crate::config::fleet::{DEFAULT_FLEET_TIMEOUT, DEFAULT_SHARED_MAX_ENTRY_SIZE, FleetConfig};
use crate::config::log::{LogConfig, LogFormat};
use crate::config::raw::{
    RawCache, RawClient, RawConfig, RawFleet, RawLimits, RawLog, RawProvider, RawRoute, RawServer,
    RawTelemetry,
};
use crate::config::secret::{ApiKey, Env};
use crate::config::telemetry::{
    DEFAULT_EXPORT_TIMEOUT, DEFAULT_SERVICE_NAME, TelemetryConfig, traces_url,
};
use crate::config::tiers::{self, Tier};
use crate::limits::headers::Dialect;
use crate::limits::kind::{Kind, Limits};
use spillway_plumbing::env::EnvError;

/// A configuration error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// The field, as a path (`providers[0].keys[1]`).
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (for messages).
    pub source: String,
    /// `[server]`.
    pub server: ServerConfig,
    /// Providers, in file order.
    pub providers: Vec<Provider>,
    /// Routes, in file order.
    pub routes: Vec<Route>,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[fleet]`: `None` when this gateway keeps its limits alone.
    pub fleet: Option<FleetConfig>,
    /// `[log]`.
    pub log: LogConfig,
    /// `[[clients]]`, in file order.
    pub clients: Vec<Client>,
    /// `[telemetry]`: `None` when no traces are sent.
    pub telemetry: Option<TelemetryConfig>,
}

impl Config {
    /// Whether clients must authenticate (some client key is configured, in `[server]
    /// client_keys` or `[[clients]]`).
    pub fn authenticates_clients(&self) -> bool {
        !self.server.client_keys.is_empty() || !self.clients.is_empty()
    }
}

/// One `[[clients]]` entry, validated.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its name: what logs, metrics, recordings and the status view show (never its key).
    pub name: String,
    /// The variable its key was read from.
    pub env: String,
    /// Its bearer token.
    pub key: ApiKey,
    /// The routes it may use, as indices into [`Config::routes`] (`None`: every route).
    pub routes: Option<Vec<usize>>,
    /// Its own limits (requests and tokens per minute and per day); empty: none.
    pub limits: Limits,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer tokens clients must send (empty: no authentication, loopback only), besides
    /// the keys of `[[clients]]`.
    pub client_keys: Vec<ApiKey>,
    /// Bearer tokens the admin endpoints take (empty: the admin endpoints refuse everyone).
    pub admin_keys: Vec<ApiKey>,
    /// `/metrics` takes an admin key.
    pub metrics_admin_only: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest a client may take to send a request's headers (an idle keep-alive connection
    /// is closed after this long too), or its body (then 408).
    pub client_timeout: Duration,
    /// Completion tokens assumed when a request names no `max_tokens`.
    pub default_max_tokens: u64,
    /// Clock seconds per wall second.
    pub time_scale: f64,
    /// Record traffic to this JSONL file.
    pub record: Option<std::path::PathBuf>,
    /// Record request bodies (otherwise only keys and token counts).
    pub record_bodies: bool,
    /// Longest a shutdown waits for requests in progress (streams included) to finish; then
    /// open streams end with an error event and the process exits.
    pub shutdown_grace: Duration,
}

/// One key of a provider: its secret, the variable it came from, and a printable alias.
#[derive(Debug, Clone)]
pub struct ProviderKey {
    /// `groq#1`: what logs, headers and metrics show.
    pub alias: String,
    /// The environment variable it was read from.
    pub env: String,
    /// The secret.
    pub key: ApiKey,
}

/// One provider, validated.
#[derive(Debug, Clone)]
pub struct Provider {
    /// Its name.
    pub name: String,
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Its keys.
    pub keys: Vec<ProviderKey>,
    /// Time allowed for an answer (streams: first byte).
    pub timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Longest a stream may go without sending anything (real time); then it is ended with
    /// an error event and the target counts as failing.
    pub stream_idle_timeout: Duration,
    /// Its rate-limit header dialect.
    pub dialect: Dialect,
    /// Requests in flight per key and model while requests-per-minute is unknown: `None`
    /// adaptive (a congestion window), `Some(0)` no cap, `Some(n)` at most n.
    pub unknown_limits_in_flight: Option<u32>,
    /// Consecutive outages of a target that open its circuit.
    pub failures_to_open: u32,
    /// First cooldown after a failure.
    pub cooldown: Duration,
    /// Longest cooldown.
    pub max_cooldown: Duration,
    /// How long a refused key is set aside before one request tries it again.
    pub key_retry: Duration,
    /// Longest a refused key is set aside between two tries.
    pub max_key_retry: Duration,
    /// Known limits per upstream model (the tier's, under the limits file's, under the
    /// config's own).
    pub limits: BTreeMap<String, Limits>,
    /// The Groq plan whose limits fill in the table, when given.
    pub tier: Option<Tier>,
}

impl Provider {
    /// When a target of this provider stops being tried after outages, and for how long.
    pub fn circuit(&self) -> crate::limits::circuit::CircuitPolicy {
        crate::limits::circuit::CircuitPolicy {
            failures_to_open: self.failures_to_open,
            cooldown: self.cooldown,
            max_cooldown: self.max_cooldown,
        }
    }
}

/// One target: a provider and its model id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index into [`Config::providers`].
    pub provider: usize,
    /// The provider's model id.
    pub model: String,
}

/// One route, validated.
#[derive(Debug, Clone)]
pub struct Route {
    /// The model name clients send.
    pub model: String,
    /// The chain, in order.
    pub targets: Vec<Target>,
    /// Longest a request may queue for headroom.
    pub max_wait: Duration,
    /// Cache namespace for the route's entries (none: shared).
    pub cache_namespace: Option<String>,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default body limit: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// `[server] client_timeout` when absent.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default completion allowance for requests without `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;
/// Default upstream timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest silence within a stream.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default shutdown grace.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default route `max_wait`.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
/// Default consecutive outages that open a circuit.
pub const DEFAULT_FAILURES_TO_OPEN: u32 = 3;
/// Default first cooldown.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
/// Default longest cooldown.
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// Default first set-aside of a refused key.
pub const DEFAULT_KEY_RETRY: Duration = Duration::from_secs(300);
/// Default longest set-aside of a refused key.
pub const DEFAULT_MAX_KEY_RETRY: Duration = Duration::from_secs(3600);

struct Checker<'a> {
    file: &'a str,
    env: &'a dyn Env,
    /// Replay mode: no provider is called, so provider keys are not read.
    offline: bool,
}

impl Checker<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Resolves an `env:NAME` reference: the variable's name and the key it holds.
    fn secret(&self, field: &str, reference: &str) -> Result<(String, ApiKey), ConfigError> {
        match self.env.resolve(reference) {
            Ok((name, value)) => Ok((name.to_string(), ApiKey::new(value))),
            Err(e) => Err(self.err(field, e.to_string())),
        }
    }

    /// The variable an `env:NAME` reference names, without reading it: a reference written
    /// wrong (a key inline, no name) is still an error.
    fn variable(&self, field: &str, reference: &str) -> Result<String, ConfigError> {
        let name = reference.strip_prefix("env:").ok_or(EnvError::Inline);
        match name.map(str::trim) {
            Ok("") => Err(self.err(field, EnvError::NoName.to_string())),
            Ok(name) => Ok(name.to_string()),
            Err(e) => Err(self.err(field, e.to_string())),
        }
    }
}

/// The dialect a base URL's host speaks when the config does not say.
pub fn dialect_for_url(base_url: &str) -> Dialect {
    let host = base_url
        .split("://")
        .nth(1)
        .unwrap_or(base_url)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if host.ends_with("openai.com") {
        Dialect::OpenAi
    } else if host.ends_with("cerebras.ai") {
        Dialect::Cerebras
    } else if host.ends_with("anthropic.com") {
        Dialect::Anthropic
    } else {
        Dialect::Groq
    }
}

fn limits(c: &Checker<'_>, field: &str, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let mut out = Limits::default();
    for (kind, value, name) in [
        (
            Kind::RequestsPerMinute,
            raw.requests_per_minute,
            "requests_per_minute",
        ),
        (
            Kind::TokensPerMinute,
            raw.tokens_per_minute,
            "tokens_per_minute",
        ),
        (
            Kind::RequestsPerDay,
            raw.requests_per_day,
            "requests_per_day",
        ),
        (Kind::TokensPerDay, raw.tokens_per_day, "tokens_per_day"),
        (
            Kind::InputTokensPerMinute,
            raw.input_tokens_per_minute,
            "input_tokens_per_minute",
        ),
        (
            Kind::OutputTokensPerMinute,
            raw.output_tokens_per_minute,
            "output_tokens_per_minute",
        ),
    ] {
        match value {
            Some(0) => {
                return Err(c.err(
                    format!("{field}.{name}"),
                    "expected a number of at least 1 (leave the field out for no limit)",
                ));
            }
            Some(v) => out.set(kind, Some(v)),
            None => {}
        }
    }
    Ok(out)
}

/// Reads a limits file: `["MODEL"]` tables with the fields of `[providers.limits."MODEL"]`.
fn limits_file(
    c: &Checker<'_>,
    field: &str,
    path: &str,
) -> Result<BTreeMap<String, Limits>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| c.err(field, format!("cannot read {path}: {e}")))?;
    let raw: BTreeMap<String, RawLimits> =
        toml::from_str(&text).map_err(|e| c.err(field, format!("{path}: {}", e.message())))?;
    raw.iter()
        .map(|(model, l)| {
            Ok((
                model.clone(),
                limits(c, &format!("{field} ({path}) \"{model}\""), l)?,
            ))
        })
        .collect()
}

fn provider(c: &Checker<'_>, i: usize, raw: &RawProvider) -> Result<Provider, ConfigError> {
    let at = |f: &str| format!("providers[{i}].{f}");
    let name = match raw.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => return Err(c.err(at("name"), "expected a non-empty provider name")),
    };
    let base_url = provider_base_url(c, &at, raw.base_url.as_deref())?;
    let keys = provider_keys(c, &at, &name, &raw.keys)?;
    let dialect = match raw.dialect.as_deref() {
        None => dialect_for_url(&base_url),
        Some(d) => Dialect::parse(d).map_err(|e| c.err(at("dialect"), e.to_string()))?,
    };
    let tier = match raw.tier.as_deref() {
        None => None,
        Some(t) => Some(Tier::parse(t).ok_or_else(|| {
            c.err(
                at("tier"),
                format!("expected \"free\" or \"developer\" (got {t:?})"),
            )
        })?),
    };
    let model_limits = provider_limits(c, &at, tier, raw)?;
    let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(c.err(at("timeout"), "expected a duration greater than 0"));
    }
    let stream_idle_timeout = raw
        .stream_idle_timeout
        .unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT);
    if stream_idle_timeout.is_zero() {
        return Err(c.err(
            at("stream_idle_timeout"),
            "expected a duration greater than 0, such as \"30s\"",
        ));
    }
    let cooldown = raw.cooldown.unwrap_or(DEFAULT_COOLDOWN);
    let max_cooldown = raw
        .max_cooldown
        .unwrap_or(DEFAULT_MAX_COOLDOWN.max(cooldown));
    if max_cooldown < cooldown {
        return Err(c.err(at("max_cooldown"), "expected at least `cooldown`"));
    }
    let key_retry = raw.key_retry.unwrap_or(DEFAULT_KEY_RETRY);
    let max_key_retry = raw
        .max_key_retry
        .unwrap_or(DEFAULT_MAX_KEY_RETRY.max(key_retry));
    if max_key_retry < key_retry {
        return Err(c.err(at("max_key_retry"), "expected at least `key_retry`"));
    }
    Ok(Provider {
        name,
        base_url,
        keys,
        timeout,
        connect_timeout: raw.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        stream_idle_timeout,
        dialect,
        unknown_limits_in_flight: raw.unknown_limits_in_flight,
        failures_to_open: match raw.failures_to_open {
            Some(0) => {
                return Err(c.err(at("failures_to_open"), "expected at least 1"));
            }
            Some(n) => n,
            None => DEFAULT_FAILURES_TO_OPEN,
        },
        cooldown,
        max_cooldown,
        key_retry,
        max_key_retry,
        limits: model_limits,
        tier,
    })
}

/// A provider's base URL: http or https, without a trailing slash.
fn provider_base_url(
    c: &Checker<'_>,
    at: &dyn Fn(&str) -> String,
    value: Option<&str>,
) -> Result<String, ConfigError> {
    match value.map(str::trim) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            Ok(u.trim_end_matches('/').to_string())
        }
        Some(u) => Err(c.err(
            at("base_url"),
            format!("expected an http:// or https:// URL (got {u:?})"),
        )),
        None => Err(c.err(at("base_url"), "expected the provider's base URL")),
    }
}

/// A provider's keys, each read from its environment variable and named `NAME#N`. In replay
/// mode the variables are named but not read: the key is left empty, and nothing sends it.
fn provider_keys(
    c: &Checker<'_>,
    at: &dyn Fn(&str) -> String,
    name: &str,
    references: &[String],
) -> Result<Vec<ProviderKey>, ConfigError> {
    if references.is_empty() {
        return Err(c.err(at("keys"), "expected at least one key, as \"env:NAME\""));
    }
    let mut keys = Vec::new();
    for (k, reference) in references.iter().enumerate() {
        let field = at(&format!("keys[{k}]"));
        let (env, key) = if c.offline {
            (c.variable(&field, reference)?, ApiKey::new(""))
        } else {
            c.secret(&field, reference)?
        };
        keys.push(ProviderKey {
            alias: format!("{name}#{}", k + 1),
            env,
            key,
        });
    }
    Ok(keys)
}

/// A provider's limits per model: its tier's published table, overlaid by its limits file,
/// overlaid by the limits written in the config (each layer overrides the windows it names).
fn provider_limits(
    c: &Checker<'_>,
    at: &dyn Fn(&str) -> String,
    tier: Option<Tier>,
    raw: &RawProvider,
) -> Result<BTreeMap<String, Limits>, ConfigError> {
    let mut model_limits = tier.map(tiers::groq_table).unwrap_or_default();
    if let Some(path) = &raw.limits_file {
        for (model, from_file) in limits_file(c, &at("limits_file"), path)? {
            let base = model_limits.get(&model).copied().unwrap_or_default();
            model_limits.insert(model, tiers::overlay(base, from_file));
        }
    }
    for (model, raw_limits) in &raw.limits {
        let own = limits(c, &at(&format!("limits.\"{model}\"")), raw_limits)?;
        let base = model_limits.get(model).copied().unwrap_or_default();
        model_limits.insert(model.clone(), tiers::overlay(base, own));
    }
    Ok(model_limits)
}

fn route(
    c: &Checker<'_>,
    i: usize,
    raw: &RawRoute,
    providers: &[Provider],
) -> Result<Route, ConfigError> {
    let at = |f: &str| format!("routes[{i}].{f}");
    let model = match raw.model.as_deref().map(str::trim) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => return Err(c.err(at("model"), "expected the model name clients send")),
    };
    if raw.targets.is_empty() {
        return Err(c.err(
            at("targets"),
            "expected at least one { provider, model } target",
        ));
    }
    let mut targets = Vec::new();
    for (t, target) in raw.targets.iter().enumerate() {
        let field = at(&format!("targets[{t}]"));
        let name = target
            .provider
            .as_deref()
            .ok_or_else(|| c.err(format!("{field}.provider"), "expected a provider name"))?;
        let provider = providers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
                c.err(
                    format!("{field}.provider"),
                    format!("no provider named {name:?} (known: {})", known.join(", ")),
                )
            })?;
        let upstream = match target.model.as_deref().map(str::trim) {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => return Err(c.err(format!("{field}.model"), "expected the provider's model id")),
        };
        targets.push(Target {
            provider,
            model: upstream,
        });
    }
    Ok(Route {
        model,
        targets,
        max_wait: raw.max_wait.unwrap_or(DEFAULT_MAX_WAIT),
        cache_namespace: raw.cache_namespace.clone(),
    })
}

/// `value` parsed with `parse`; `default` when absent; `fail(value)` when it does not parse.
fn parsed<T>(
    value: Option<&str>,
    default: T,
    parse: impl Fn(&str) -> Option<T>,
    fail: impl FnOnce(&str) -> ConfigError,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => parse(v).ok_or_else(|| fail(v)),
    }
}

/// The cache's sizes, as `[cache]` gives them or their defaults.
struct CacheSizes {
    max_size: Option<u64>,
    max_entry_size: u64,
    index_memory: u64,
    hot_memory: u64,
}

/// Reads the sizes of `[cache]`; `err(field, message)` makes the error for a field.
fn cache_sizes(
    raw: &RawCache,
    defaults: &CacheConfig,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<CacheSizes, ConfigError> {
    // A size in bytes or with a unit: the default when absent, else its parse or an error
    // with an example.
    let size = |field: &str, value: &Option<toml::Value>, default: u64, example: &str| match value {
        None => Ok(default),
        Some(v) => parse_size(v).ok_or_else(|| {
            err(
                field,
                format!("expected a size in bytes or with a unit, such as \"{example}\" (got {v})"),
            )
        }),
    };
    let max_size = match &raw.max_size {
        None => defaults.max_size,
        Some(toml::Value::String(s)) if s.trim() == "none" => None,
        Some(v) => Some(parse_size(v).ok_or_else(|| {
            err(
                "max_size",
                format!(
                    "expected a size in bytes or with a unit, such as \"500MB\", or \"none\" (got {v})"
                ),
            )
        })?),
    };
    let hot_memory = match &raw.hot_memory {
        Some(toml::Value::Integer(0)) => 0,
        value => size("hot_memory", value, defaults.hot_memory, "16MB")?,
    };
    Ok(CacheSizes {
        max_size,
        max_entry_size: size(
            "max_entry_size",
            &raw.max_entry_size,
            defaults.max_entry_size,
            "4MB",
        )?,
        index_memory: size(
            "index_memory",
            &raw.index_memory,
            defaults.index_memory,
            "64MB",
        )?,
        hot_memory,
    })
}

/// Validates `[cache]`; needs no secrets, so the cache tools can use it alone.
pub fn cache_section(raw: &RawCache, file: &str) -> Result<CacheConfig, ConfigError> {
    let err = |field: &str, message: String| ConfigError {
        file: file.to_string(),
        field: format!("cache.{field}"),
        message,
    };
    // A word from a list: the default when absent, else its parse or an error naming the list.
    let word = |field: &str, expected: &str| {
        let field = field.to_string();
        let expected = expected.to_string();
        move |v: &str| err(&field, format!("expected {expected} (got {v:?})"))
    };
    let defaults = CacheConfig::default();
    let mode = parsed(
        raw.mode.as_deref(),
        defaults.mode,
        CacheMode::parse,
        word("mode", "read-write, read-only, replay or off"),
    )?;
    let when = parsed(
        raw.when.as_deref(),
        defaults.when,
        CacheWhen::parse,
        word("when", "deterministic, always or never"),
    )?;
    let fsync = parsed(
        raw.fsync.as_deref(),
        defaults.fsync,
        FsyncPolicy::parse,
        word(
            "fsync",
            "\"always\", \"shutdown\" or an interval such as \"1s\"",
        ),
    )?;
    let index = parsed(
        raw.index.as_deref(),
        defaults.index,
        IndexKind::parse,
        word("index", "\"file\" or \"sled\""),
    )?;
    let sizes = cache_sizes(raw, &defaults, &err)?;
    let path = match raw.path.as_deref().map(str::trim) {
        None => defaults.path,
        Some("") => return Err(err("path", "expected a directory".into())),
        Some(p) => p.into(),
    };
    Ok(CacheConfig {
        path,
        mode,
        when,
        ttl: raw.ttl,
        max_size: sizes.max_size,
        max_entry_size: sizes.max_entry_size,
        fsync,
        index,
        index_memory: sizes.index_memory,
        hot_memory: sizes.hot_memory,
    })
}

/// Validates `[server]`; its client keys are read, whatever the cache's mode.
fn server_section(c: &Checker<'_>, raw: &RawServer) -> Result<ServerConfig, ConfigError> {
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        c.err(
            "server.listen",
            format!("expected an address such as 127.0.0.1:8080 (got {listen_text:?})"),
        )
    })?;
    let mut client_keys = Vec::new();
    for (i, reference) in raw.client_keys.iter().enumerate() {
        client_keys.push(c.secret(&format!("server.client_keys[{i}]"), reference)?.1);
    }
    let mut admin_keys = Vec::new();
    for (i, reference) in raw.admin_keys.iter().enumerate() {
        admin_keys.push(c.secret(&format!("server.admin_keys[{i}]"), reference)?.1);
    }
    let metrics_admin_only = raw.metrics_admin_only.unwrap_or(false);
    if metrics_admin_only && admin_keys.is_empty() {
        return Err(c.err(
            "server.metrics_admin_only",
            "expected [server] admin_keys too: with no admin key, nobody could read /metrics",
        ));
    }
    let time_scale = raw.time_scale.unwrap_or(1.0);
    if !(time_scale.is_finite() && time_scale > 0.0) {
        return Err(c.err("server.time_scale", "expected a number greater than 0"));
    }
    let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        return Err(c.err("server.max_body_bytes", "expected at least 1"));
    }
    let client_timeout = raw.client_timeout.unwrap_or(DEFAULT_CLIENT_TIMEOUT);
    if client_timeout.is_zero() {
        return Err(c.err(
            "server.client_timeout",
            "expected a duration greater than 0, such as \"30s\"",
        ));
    }
    Ok(ServerConfig {
        listen,
        client_keys,
        admin_keys,
        metrics_admin_only,
        max_body_bytes,
        client_timeout,
        default_max_tokens: raw.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        time_scale,
        record: raw.record.as_ref().map(std::path::PathBuf::from),
        record_bodies: raw.record_bodies.unwrap_or(true),
        shutdown_grace: raw.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE),
    })
}

/// Validates a parsed file; `file` names it in errors, `env` resolves `env:NAME`.
pub fn validate(raw: &RawConfig, file: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    validate_with_cache_mode(raw, file, env, None)
}

/// Validates a parsed file with `mode` over its `[cache] mode`. In replay mode provider keys
/// are not read (no provider is called); client keys are, since clients still authenticate.
pub fn validate_with_cache_mode(
    raw: &RawConfig,
    file: &str,
    env: &dyn Env,
    mode: Option<CacheMode>,
) -> Result<Config, ConfigError> {
    let mut cache = cache_section(&raw.cache, file)?;
    if let Some(mode) = mode {
        cache.mode = mode;
    }
    let c = Checker {
        file,
        env,
        offline: cache.mode == CacheMode::Replay,
    };
    let server = server_section(&c, &raw.server)?;
    if raw.providers.is_empty() {
        return Err(c.err("providers", "expected at least one [[providers]] entry"));
    }
    let mut providers = Vec::new();
    let mut names = HashSet::new();
    for (i, p) in raw.providers.iter().enumerate() {
        let p = provider(&c, i, p)?;
        if !names.insert(p.name.clone()) {
            return Err(c.err(
                format!("providers[{i}].name"),
                format!("provider {:?} is defined twice", p.name),
            ));
        }
        providers.push(p);
    }
    if raw.routes.is_empty() {
        return Err(c.err("routes", "expected at least one [[routes]] entry"));
    }
    let mut routes = Vec::new();
    let mut models = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let r = route(&c, i, r, &providers)?;
        if !models.insert(r.model.clone()) {
            return Err(c.err(
                format!("routes[{i}].model"),
                format!("route {:?} is defined twice", r.model),
            ));
        }
        routes.push(r);
    }
    let fleet = raw
        .fleet
        .as_ref()
        .map(|f| fleet_section(&c, f))
        .transpose()?;
    let log = log_section(file, &raw.log)?;
    let clients = raw
        .clients
        .iter()
        .enumerate()
        .map(|(i, client)| client_section(&c, i, client, &routes))
        .collect::<Result<Vec<_>, _>>()?;
    distinct_keys(&c, &server, &clients)?;
    let telemetry = raw
        .telemetry
        .as_ref()
        .map(|t| telemetry_section(&c, t))
        .transpose()?;
    Ok(Config {
        source: file.to_string(),
        telemetry,
        cache,
        fleet,
        log,
        clients,
        server,
        providers,
        routes,
    })
}

/// Validates `[log]` (needs no secrets: the binary reads it before anything else).
pub fn log_section(file: &str, raw: &RawLog) -> Result<LogConfig, ConfigError> {
    let format = match raw.format.as_deref() {
        None => LogFormat::Text,
        Some(name) => LogFormat::parse(name).ok_or_else(|| ConfigError {
            file: file.to_string(),
            field: "log.format".into(),
            message: format!("expected \"text\" or \"json\" (got {name:?})"),
        })?,
    };
    Ok(LogConfig { format })
}

/// Validates `[telemetry]`: an http(s) collector URL (inline or by variable), header values by
/// variable only; refused in a build without the `otel` feature.
fn telemetry_section(c: &Checker<'_>, raw: &RawTelemetry) -> Result<TelemetryConfig, ConfigError> {
    if !cfg!(feature = "otel") {
        return Err(c.err(
            "telemetry",
            "this spillway was built without the `otel` feature (cargo build --features otel)",
        ));
    }
    let endpoint = raw.otlp_endpoint.as_deref().ok_or_else(|| {
        c.err(
            "telemetry.otlp_endpoint",
            "expected the OTLP/HTTP collector's URL, such as \"http://127.0.0.1:4318\"",
        )
    })?;
    let (shown, url) = if endpoint.starts_with("env:") {
        let (name, value) = c.secret("telemetry.otlp_endpoint", endpoint)?;
        (format!("${name}"), value.expose().to_string())
    } else {
        (format!("{endpoint:?}"), endpoint.to_string())
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(c.err(
            "telemetry.otlp_endpoint",
            format!("expected an http:// or https:// URL (got {shown})"),
        ));
    }
    let service_name = raw
        .service_name
        .as_deref()
        .unwrap_or(DEFAULT_SERVICE_NAME)
        .trim()
        .to_string();
    if service_name.is_empty() {
        return Err(c.err("telemetry.service_name", "expected a name"));
    }
    let headers = raw
        .headers
        .iter()
        .map(|(name, reference)| {
            let field = format!("telemetry.headers.{name}");
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(c.err(&field, "expected a header name"));
            }
            let (_, value) = c.secret(&field, reference)?;
            if http::HeaderValue::from_str(value.expose()).is_err() {
                return Err(c.err(&field, "the variable holds a value no header can carry"));
            }
            Ok((name.clone(), value))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = raw.timeout.unwrap_or(DEFAULT_EXPORT_TIMEOUT);
    if timeout.is_zero() {
        return Err(c.err("telemetry.timeout", "expected a duration greater than 0"));
    }
    Ok(TelemetryConfig {
        traces_url: ApiKey::new(traces_url(&url)),
        service_name,
        headers,
        timeout,
    })
}

/// Validates `[fleet]`: the Redis URL by variable name only, a name that is a plain word.
fn fleet_section(c: &Checker<'_>, raw: &RawFleet) -> Result<FleetConfig, ConfigError> {
    let reference = raw.redis.as_deref().ok_or_else(|| {
        c.err(
            "fleet.redis",
            "expected the Redis URL's variable, such as \"env:SPILLWAY_REDIS_URL\"",
        )
    })?;
    let (redis_env, redis_url) = c.secret("fleet.redis", reference)?;
    let url = redis_url.expose();
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(c.err(
            "fleet.redis",
            format!("expected ${redis_env} to hold a redis:// or rediss:// URL"),
        ));
    }
    let name = raw.name.as_deref().unwrap_or("spillway").trim().to_string();
    let plain = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if name.is_empty() || !name.chars().all(plain) {
        return Err(c.err(
            "fleet.name",
            format!("expected letters, digits, '-', '_' or '.' (got {name:?})"),
        ));
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_FLEET_TIMEOUT);
    if timeout.is_zero() {
        return Err(c.err("fleet.timeout", "expected a duration greater than 0"));
    }
    let shared_max_entry_size = match &raw.shared_max_entry_size {
        None => DEFAULT_SHARED_MAX_ENTRY_SIZE,
        Some(v) => parse_size(v).ok_or_else(|| {
            c.err(
                "fleet.shared_max_entry_size",
                format!("expected a size in bytes or with a unit, such as \"1MB\" (got {v})"),
            )
        })?,
    };
    Ok(FleetConfig {
        redis_env,
        redis_url,
        name,
        timeout,
        shared_cache: raw.shared_cache.unwrap_or(true),
        shared_max_entry_size,
    })
}

/// Validates one `[[clients]]` entry: a plain name, a key by variable, routes that exist, and
/// its own limits (each at least 1).
fn client_section(
    c: &Checker<'_>,
    i: usize,
    raw: &RawClient,
    routes: &[Route],
) -> Result<Client, ConfigError> {
    let at = |f: &str| format!("clients[{i}].{f}");
    let name = raw.name.as_deref().unwrap_or("").trim().to_string();
    let plain = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if name.is_empty() || !name.chars().all(plain) {
        return Err(c.err(
            at("name"),
            format!("expected a name of letters, digits, '-', '_' or '.' (got {name:?})"),
        ));
    }
    let reference = raw.key.as_deref().ok_or_else(|| {
        c.err(
            at("key"),
            "expected the client's key as \"env:NAME\", such as \"env:SPILLWAY_EVAL_KEY\"",
        )
    })?;
    let (env, key) = c.secret(&at("key"), reference)?;
    let allowed = match &raw.routes {
        None => None,
        Some(names) if names.is_empty() => {
            return Err(c.err(
                at("routes"),
                "expected at least one route (leave the field out for every route)",
            ));
        }
        Some(names) => Some(
            names
                .iter()
                .enumerate()
                .map(|(r, n)| {
                    routes
                        .iter()
                        .position(|route| route.model == *n)
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                routes.iter().map(|r| r.model.as_str()).collect();
                            c.err(
                                at(&format!("routes[{r}]")),
                                format!("no route named {n:?} (routes: {})", known.join(", ")),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let own = RawLimits {
        requests_per_minute: raw.requests_per_minute,
        tokens_per_minute: raw.tokens_per_minute,
        requests_per_day: raw.requests_per_day,
        tokens_per_day: raw.tokens_per_day,
        ..RawLimits::default()
    };
    Ok(Client {
        name,
        env,
        key,
        routes: allowed,
        limits: limits(c, &format!("clients[{i}]"), &own)?,
    })
}

/// Refuses two clients of one name, and one key in two places: a key names one client, and an
/// admin key is not a client key. Errors name the fields, never the value.
fn distinct_keys(
    c: &Checker<'_>,
    server: &ServerConfig,
    clients: &[Client],
) -> Result<(), ConfigError> {
    let mut seen: Vec<(String, &ApiKey)> = Vec::new();
    let named = server
        .client_keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("server.client_keys[{i}]"), k))
        .chain(
            clients
                .iter()
                .enumerate()
                .map(|(i, cl)| (format!("clients[{i}].key"), &cl.key)),
        )
        .chain(
            server
                .admin_keys
                .iter()
                .enumerate()
                .map(|(i, k)| (format!("server.admin_keys[{i}]"), k)),
        );
    for (field, key) in named {
        if let Some((first, _)) = seen.iter().find(|(_, k)| *k == key) {
            return Err(c.err(
                field,
                format!("the same key as {first}: each key names one client, and an admin key is not a client key"),
            ));
        }
        seen.push((field, key));
    }
    for (i, client) in clients.iter().enumerate() {
        if clients[..i].iter().any(|o| o.name == client.name) {
            return Err(c.err(
                format!("clients[{i}].name"),
                format!("client {:?} is defined twice", client.name),
            ));
        }
    }
    Ok(())
}

/// Refuses to serve without client keys on an address other machines can reach.
pub fn check_exposure(listen: SocketAddr, authenticates: bool) -> Result<(), String> {
    if !authenticates && !listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without client keys: set [server] client_keys = [\"env:SPILLWAY_CLIENT_KEY\"], or listen on 127.0.0.1"
        ));
    }
    Ok(())
}
