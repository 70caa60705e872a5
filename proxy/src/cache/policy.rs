//! When the cache is consulted and written: the store's mode, which requests may be cached,
//! and what a request's own headers ask for.

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::server::names::X_SPILLWAY_CACHE;

pub use crate::cache::index::IndexKind;

/// How the store is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheMode {
    /// Serve hits, store new answers (the default).
    ReadWrite,
    /// Serve hits, never store.
    ReadOnly,
    /// Offline: serve hits; a miss is a 404 `cache_miss`; no provider is ever called.
    Replay,
    /// No cache, no coalescing.
    Off,
}

impl CacheMode {
    /// Reads a mode name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read-write" => Some(CacheMode::ReadWrite),
            "read-only" => Some(CacheMode::ReadOnly),
            "replay" => Some(CacheMode::Replay),
            "off" => Some(CacheMode::Off),
            _ => None,
        }
    }

    /// The mode's name.
    pub const fn name(self) -> &'static str {
        match self {
            CacheMode::ReadWrite => "read-write",
            CacheMode::ReadOnly => "read-only",
            CacheMode::Replay => "replay",
            CacheMode::Off => "off",
        }
    }
}

/// Which requests may be cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheWhen {
    /// Only requests with `temperature` 0 or a `seed` (an omitted temperature means 1.0).
    Deterministic,
    /// Every request (eval runs).
    Always,
    /// None.
    Never,
}

impl CacheWhen {
    /// Reads a policy name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deterministic" => Some(CacheWhen::Deterministic),
            "always" => Some(CacheWhen::Always),
            "never" => Some(CacheWhen::Never),
            _ => None,
        }
    }

    /// Whether a request body may be cached under this policy.
    pub fn allows(self, body: &Map<String, Value>) -> bool {
        match self {
            CacheWhen::Always => true,
            CacheWhen::Never => false,
            CacheWhen::Deterministic => {
                let zero_temperature = body
                    .get("temperature")
                    .and_then(Value::as_f64)
                    .is_some_and(|t| t == 0.0);
                let seeded = body.get("seed").is_some_and(|s| !s.is_null());
                zero_temperature || seeded
            }
        }
    }
}

/// The `[cache]` section, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// The store's directory.
    pub path: PathBuf,
    /// How the store is used.
    pub mode: CacheMode,
    /// Which requests may be cached.
    pub when: CacheWhen,
    /// Entries older than this are misses (none by default).
    pub ttl: Option<Duration>,
    /// Largest store size in bytes; the oldest entries are evicted first (none by default).
    pub max_size: Option<u64>,
    /// Which index the store keeps (default: the file index, whose memory does not grow with
    /// the number of entries).
    pub index: IndexKind,
    /// Memory for the sled index's page cache (`index = "sled"` only; default 64 MB: lookups
    /// stay fast with a million entries).
    pub index_memory: u64,
    /// Memory for decoded copies of the most used entries, served without touching the store
    /// (default 16 MB; 0 turns it off).
    pub hot_memory: u64,
}

/// Default memory for hot entries.
pub const DEFAULT_HOT_MEMORY: u64 = 16 * 1024 * 1024;

/// Default memory for the sled index's page cache.
pub const DEFAULT_INDEX_MEMORY: u64 = 64 * 1024 * 1024;

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            path: PathBuf::from(".spillway/cache"),
            mode: CacheMode::ReadWrite,
            when: CacheWhen::Deterministic,
            ttl: None,
            max_size: None,
            index: IndexKind::default(),
            index_memory: DEFAULT_INDEX_MEMORY,
            hot_memory: DEFAULT_HOT_MEMORY,
        }
    }
}

/// What a request's `x-spillway-cache` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    /// The configured behaviour.
    Normal,
    /// Neither read nor write the cache for this request.
    Bypass,
    /// Skip the lookup, fetch a fresh answer, store it.
    Refresh,
    /// Answer from the cache or not at all (504 `cache_miss`).
    OnlyIfCached,
}

/// A request's cache controls: its directive, and whether it forbids storing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestControls {
    /// `x-spillway-cache`.
    pub directive: Directive,
    /// `Cache-Control: no-store`.
    pub no_store: bool,
}

/// Reads `x-spillway-cache` and `Cache-Control`; an unknown directive is an error naming it.
pub fn request_controls(headers: &HeaderMap) -> Result<RequestControls, String> {
    let directive = match headers
        .get(X_SPILLWAY_CACHE)
        .map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase())
    {
        None => Directive::Normal,
        Some(v) => match v.as_str() {
            "bypass" => Directive::Bypass,
            "refresh" => Directive::Refresh,
            "only-if-cached" => Directive::OnlyIfCached,
            other => {
                return Err(format!(
                    "x-spillway-cache: expected bypass, refresh or only-if-cached (got {other:?})"
                ));
            }
        },
    };
    let cache_control: Vec<String> = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    let no_store = cache_control.iter().any(|d| d == "no-store");
    let directive =
        if directive == Directive::Normal && cache_control.iter().any(|d| d == "no-cache") {
            Directive::Refresh
        } else {
            directive
        };
    Ok(RequestControls {
        directive,
        no_store,
    })
}

/// Reads a size: a number of bytes, or a string with a unit (`500MB`, `2GiB`, `64k`).
pub fn parse_size(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(n) if *n > 0 => Some(*n as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (number, unit) = s.split_at(split);
            let number: f64 = number.parse().ok()?;
            let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1.0,
                "k" | "kb" => 1e3,
                "m" | "mb" => 1e6,
                "g" | "gb" => 1e9,
                "t" | "tb" => 1e12,
                "kib" => 1024.0,
                "mib" => 1024.0 * 1024.0,
                "gib" => 1024.0 * 1024.0 * 1024.0,
                "tib" => 1024.0_f64.powi(4),
                _ => return None,
            };
            let bytes = number * factor;
            (bytes >= 1.0 && bytes.is_finite()).then_some(bytes as u64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn deterministic_means_temperature_zero_or_a_seed() {
        let w = CacheWhen::Deterministic;
        assert!(w.allows(&body(json!({"temperature": 0}))));
        assert!(w.allows(&body(json!({"temperature": 0.0}))));
        assert!(w.allows(&body(json!({"temperature": 0.7, "seed": 3}))));
        assert!(!w.allows(&body(json!({"temperature": 0.7}))));
        assert!(
            !w.allows(&body(json!({})),),
            "an omitted temperature means 1.0"
        );
        assert!(CacheWhen::Always.allows(&body(json!({"temperature": 0.7}))));
        assert!(!CacheWhen::Never.allows(&body(json!({"temperature": 0}))));
    }

    #[test]
    fn headers_give_directives() {
        let mut h = HeaderMap::new();
        assert_eq!(request_controls(&h).unwrap().directive, Directive::Normal);
        h.insert("x-spillway-cache", "only-if-cached".parse().unwrap());
        assert_eq!(
            request_controls(&h).unwrap().directive,
            Directive::OnlyIfCached
        );
        h.insert("x-spillway-cache", "sometimes".parse().unwrap());
        assert!(request_controls(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert("cache-control", "no-store, max-age=0".parse().unwrap());
        assert!(request_controls(&h).unwrap().no_store);
        h.insert("cache-control", "no-cache".parse().unwrap());
        assert_eq!(request_controls(&h).unwrap().directive, Directive::Refresh);
    }

    #[test]
    fn sizes_read_with_units() {
        assert_eq!(parse_size(&toml::Value::Integer(1000)), Some(1000));
        assert_eq!(
            parse_size(&toml::Value::String("500MB".into())),
            Some(500_000_000)
        );
        assert_eq!(
            parse_size(&toml::Value::String("2GiB".into())),
            Some(2 * 1024 * 1024 * 1024)
        );
        assert_eq!(parse_size(&toml::Value::String("lots".into())), None);
        assert_eq!(parse_size(&toml::Value::Integer(0)), None);
    }
}
