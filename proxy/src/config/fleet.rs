//! `[fleet]`: several gateways sharing their keys' limits through Redis.

use std::time::Duration;

use crate::config::secret::ApiKey;

/// The fleet's default `timeout`: the longest a request waits on Redis before the gateway
/// goes on alone.
pub const DEFAULT_FLEET_TIMEOUT: Duration = Duration::from_millis(50);

/// The fleet's default `shared_max_entry_size`: larger answers stay in each gateway's own
/// cache, so one large answer does not fill Redis's memory.
pub const DEFAULT_SHARED_MAX_ENTRY_SIZE: u64 = 1024 * 1024;

/// `[fleet]`, validated.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The environment variable the Redis URL came from (for messages; the URL may hold a
    /// password).
    pub redis_env: String,
    /// The Redis URL (`redis://`, `rediss://`), which may carry credentials: never logged.
    pub redis_url: ApiKey,
    /// The fleet's name: the prefix of its keys in Redis; gateways with the same name share.
    pub name: String,
    /// The longest one Redis call may take before the gateway goes on with its own limits.
    pub timeout: Duration,
    /// Whether answers are shared through Redis: a second cache tier behind each gateway's
    /// own, and one upstream call for identical requests in flight on different gateways.
    pub shared_cache: bool,
    /// The largest answer (its record, in bytes) written to the shared tier.
    pub shared_max_entry_size: u64,
}
