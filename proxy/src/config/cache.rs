//! The `[cache]` section, validated: where the store lives, how it is used, which requests
//! may be cached, and its sizes.

use std::path::PathBuf;
use std::time::Duration;

pub use spillway_store::{FsyncPolicy, IndexKind};

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
}

/// `[cache] fsync` when absent.
pub const DEFAULT_FSYNC: FsyncPolicy = FsyncPolicy::Interval(Duration::from_secs(1));

/// `[cache] max_size` when absent: 2 GB of records.
pub const DEFAULT_MAX_SIZE: u64 = 2_000_000_000;

/// `[cache] max_entry_size` when absent: 4 MiB (the answer and its canonical request).
pub const DEFAULT_MAX_ENTRY_SIZE: u64 = 4 * 1024 * 1024;

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
    /// Largest store size in bytes; the oldest entries are evicted first (default
    /// [`DEFAULT_MAX_SIZE`]; `None`: unbounded).
    pub max_size: Option<u64>,
    /// Largest entry stored (answer and canonical request, before compression); larger answers
    /// are served but not stored, and counted.
    pub max_entry_size: u64,
    /// When writes are made durable.
    pub fsync: FsyncPolicy,
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
            max_size: Some(DEFAULT_MAX_SIZE),
            max_entry_size: DEFAULT_MAX_ENTRY_SIZE,
            fsync: DEFAULT_FSYNC,
            index: IndexKind::default(),
            index_memory: DEFAULT_INDEX_MEMORY,
            hot_memory: DEFAULT_HOT_MEMORY,
        }
    }
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
