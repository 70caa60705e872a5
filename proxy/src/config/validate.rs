//! From what the file says to what the program uses: every reference resolved, every secret read
//! from the environment, every error naming the file, the field and what was expected.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use crate::cache::policy::{CacheConfig, CacheMode, CacheWhen, IndexKind, parse_size};
use crate::config::raw::{RawCache, RawConfig, RawLimits, RawProvider, RawRoute};
use crate::config::secret::{ApiKey, Env};
use crate::limits::headers::Dialect;
use crate::limits::kind::{Kind, Limits};

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
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer tokens clients must send (empty: no authentication, loopback only).
    pub client_keys: Vec<ApiKey>,
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
    /// Its rate-limit header dialect.
    pub dialect: Dialect,
    /// Requests in flight per key and model while requests-per-minute is unknown (0: no cap).
    pub unknown_limits_in_flight: u32,
    /// First cooldown after a failure.
    pub cooldown: Duration,
    /// Longest cooldown.
    pub max_cooldown: Duration,
    /// Known limits per upstream model.
    pub limits: BTreeMap<String, Limits>,
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
/// Default route `max_wait`.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);
/// Default first cooldown.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
/// Default longest cooldown.
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(60);

struct Checker<'a> {
    file: &'a str,
    env: &'a dyn Env,
}

impl Checker<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Resolves an `env:NAME` reference.
    fn secret(&self, field: &str, reference: &str) -> Result<(String, ApiKey), ConfigError> {
        let Some(name) = reference.strip_prefix("env:") else {
            return Err(self.err(
                field,
                "secrets are given by environment variable name, as \"env:NAME\", never inline",
            ));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(self.err(field, "expected \"env:NAME\" with a variable name"));
        }
        match self.env.var(name) {
            Some(v) if !v.trim().is_empty() => Ok((name.to_string(), ApiKey::new(v.trim()))),
            Some(_) => Err(self.err(field, format!("environment variable {name} is empty"))),
            None => Err(self.err(field, format!("environment variable {name} is not set"))),
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

fn provider(c: &Checker<'_>, i: usize, raw: &RawProvider) -> Result<Provider, ConfigError> {
    let at = |f: &str| format!("providers[{i}].{f}");
    let name = match raw.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => return Err(c.err(at("name"), "expected a non-empty provider name")),
    };
    let base_url = match raw.base_url.as_deref().map(str::trim) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            u.trim_end_matches('/').to_string()
        }
        Some(u) => {
            return Err(c.err(
                at("base_url"),
                format!("expected an http:// or https:// URL (got {u:?})"),
            ));
        }
        None => return Err(c.err(at("base_url"), "expected the provider's base URL")),
    };
    if raw.keys.is_empty() {
        return Err(c.err(at("keys"), "expected at least one key, as \"env:NAME\""));
    }
    let mut keys = Vec::new();
    for (k, reference) in raw.keys.iter().enumerate() {
        let (env, key) = c.secret(&at(&format!("keys[{k}]")), reference)?;
        keys.push(ProviderKey {
            alias: format!("{name}#{}", k + 1),
            env,
            key,
        });
    }
    let dialect = match raw.dialect.as_deref() {
        None => dialect_for_url(&base_url),
        Some(d) => Dialect::parse(d).ok_or_else(|| {
            c.err(
                at("dialect"),
                format!("expected groq, openai, cerebras or anthropic (got {d:?})"),
            )
        })?,
    };
    let mut model_limits = BTreeMap::new();
    for (model, raw_limits) in &raw.limits {
        model_limits.insert(
            model.clone(),
            limits(c, &at(&format!("limits.\"{model}\"")), raw_limits)?,
        );
    }
    let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(c.err(at("timeout"), "expected a duration greater than 0"));
    }
    let cooldown = raw.cooldown.unwrap_or(DEFAULT_COOLDOWN);
    let max_cooldown = raw
        .max_cooldown
        .unwrap_or(DEFAULT_MAX_COOLDOWN.max(cooldown));
    if max_cooldown < cooldown {
        return Err(c.err(at("max_cooldown"), "expected at least `cooldown`"));
    }
    Ok(Provider {
        name,
        base_url,
        keys,
        timeout,
        connect_timeout: raw.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        dialect,
        unknown_limits_in_flight: raw.unknown_limits_in_flight.unwrap_or(1),
        cooldown,
        max_cooldown,
        limits: model_limits,
    })
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

/// Validates `[cache]`; needs no secrets, so the cache tools can use it alone.
pub fn cache_section(raw: &RawCache, file: &str) -> Result<CacheConfig, ConfigError> {
    let err = |field: &str, message: String| ConfigError {
        file: file.to_string(),
        field: format!("cache.{field}"),
        message,
    };
    let defaults = CacheConfig::default();
    let mode = match raw.mode.as_deref() {
        None => defaults.mode,
        Some(m) => CacheMode::parse(m).ok_or_else(|| {
            err(
                "mode",
                format!("expected read-write, read-only, replay or off (got {m:?})"),
            )
        })?,
    };
    let when = match raw.when.as_deref() {
        None => defaults.when,
        Some(w) => CacheWhen::parse(w).ok_or_else(|| {
            err(
                "when",
                format!("expected deterministic, always or never (got {w:?})"),
            )
        })?,
    };
    let max_size = match &raw.max_size {
        None => None,
        Some(v) => Some(parse_size(v).ok_or_else(|| {
            err(
                "max_size",
                format!("expected a size in bytes or with a unit, such as \"500MB\" (got {v})"),
            )
        })?),
    };
    let index = match raw.index.as_deref() {
        None => defaults.index,
        Some(s) => IndexKind::parse(s).ok_or_else(|| {
            err(
                "index",
                format!("expected \"file\" or \"sled\" (got \"{s}\")"),
            )
        })?,
    };
    let index_memory = match &raw.index_memory {
        None => defaults.index_memory,
        Some(v) => parse_size(v).ok_or_else(|| {
            err(
                "index_memory",
                format!("expected a size in bytes or with a unit, such as \"64MB\" (got {v})"),
            )
        })?,
    };
    let hot_memory = match &raw.hot_memory {
        None => defaults.hot_memory,
        Some(toml::Value::Integer(0)) => 0,
        Some(v) => parse_size(v).ok_or_else(|| {
            err(
                "hot_memory",
                format!("expected a size in bytes or with a unit, such as \"16MB\" (got {v})"),
            )
        })?,
    };
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
        max_size,
        index,
        index_memory,
        hot_memory,
    })
}

/// Validates a parsed file; `file` names it in errors, `env` resolves `env:NAME`.
pub fn validate(raw: &RawConfig, file: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let c = Checker { file, env };
    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        c.err(
            "server.listen",
            format!("expected an address such as 127.0.0.1:8080 (got {listen_text:?})"),
        )
    })?;
    let mut client_keys = Vec::new();
    for (i, reference) in raw.server.client_keys.iter().enumerate() {
        client_keys.push(c.secret(&format!("server.client_keys[{i}]"), reference)?.1);
    }
    let time_scale = raw.server.time_scale.unwrap_or(1.0);
    if !(time_scale.is_finite() && time_scale > 0.0) {
        return Err(c.err("server.time_scale", "expected a number greater than 0"));
    }
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        return Err(c.err("server.max_body_bytes", "expected at least 1"));
    }
    let client_timeout = raw.server.client_timeout.unwrap_or(DEFAULT_CLIENT_TIMEOUT);
    if client_timeout.is_zero() {
        return Err(c.err(
            "server.client_timeout",
            "expected a duration greater than 0, such as \"30s\"",
        ));
    }
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
    let cache = cache_section(&raw.cache, file)?;
    Ok(Config {
        source: file.to_string(),
        cache,
        server: ServerConfig {
            listen,
            client_keys,
            max_body_bytes,
            client_timeout,
            default_max_tokens: raw.server.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            time_scale,
            record: raw.server.record.as_ref().map(std::path::PathBuf::from),
            record_bodies: raw.server.record_bodies.unwrap_or(true),
        },
        providers,
        routes,
    })
}

/// Refuses to serve without client keys on an address other machines can reach.
pub fn check_exposure(listen: SocketAddr, client_keys: &[ApiKey]) -> Result<(), String> {
    if client_keys.is_empty() && !listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without client keys: set [server] client_keys = [\"env:SPILLWAY_CLIENT_KEY\"], or listen on 127.0.0.1"
        ));
    }
    Ok(())
}
