//! The status document (`GET /spillway/status`), filled in from each component's own snapshot:
//! the router's routes and targets (through the ledger), the metrics' last minute, the cache's
//! counts and the clients' windows. Every clock-time span becomes wall-clock time here, by the
//! rule `retry-after` follows (ARCHITECTURE.md, invariant 9): a real client is never told
//! simulated seconds.

use std::time::Duration;

use spillway_clock::{Clock, Instant};

use crate::limits::circuit::CircuitSnapshot;
use crate::limits::window::{KeySnapshot, WindowSnapshot};
use crate::metrics::Tally;
use crate::router::{RouteStatus, TargetStatus};
use crate::state::{AppState, ClientState};
use crate::status::{
    CacheView, CircuitView, ClientView, Cooling, Disabled, KeyView, LastMinute, Moment, QueueView,
    RouteView, StatusDocument, TargetView, WindowView,
};

/// The moment a document is made: clock time, and the wall-clock calendar time.
struct Now<'a> {
    clock: &'a Clock,
    at: Instant,
    wall: Duration,
}

impl Now<'_> {
    /// Clock instant `t` as a moment: wall-clock seconds from now and a calendar time.
    fn moment(&self, t: Instant) -> Moment {
        let wall = self.clock.to_wall(t.saturating_duration_since(self.at));
        Moment {
            in_s: round_ms(wall),
            at: rfc3339(self.wall + wall),
        }
    }

    /// Clock time since instant `t`, in wall-clock seconds.
    fn since(&self, t: Instant) -> f64 {
        round_ms(self.clock.to_wall(self.at.saturating_duration_since(t)))
    }
}

/// Seconds, rounded to the millisecond.
fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A time since the Unix epoch as RFC 3339 (UTC, milliseconds).
fn rfc3339(since_epoch: Duration) -> String {
    let t = std::time::UNIX_EPOCH
        .checked_add(since_epoch)
        .unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The status document as things stand.
pub fn document(state: &AppState) -> StatusDocument {
    let now = Now {
        clock: &state.clock,
        at: state.clock.instant(),
        wall: state.clock.wall_unix_now(),
    };
    let router = &state.pipeline.router;
    let routes = router
        .status(now.at)
        .into_iter()
        .enumerate()
        .map(|(i, r)| route(state, &now, i, r))
        .collect();
    let (hits, lookups) = state.metrics.cache_totals();
    StatusDocument {
        version: env!("CARGO_PKG_VERSION").to_string(),
        generated_at: rfc3339(now.wall),
        time_scale: state.clock.scale(),
        fleet_members: router.fleet_members(),
        cache: CacheView {
            mode: state.config.cache.mode.name().to_string(),
            hits,
            lookups,
            hit_ratio: ratio(hits, lookups),
        },
        routes,
        clients: state
            .clients
            .iter()
            .map(|c| client(state, &now, c))
            .collect(),
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 1000.0).round() / 1000.0)
}

fn last_minute(t: Tally) -> LastMinute {
    LastMinute {
        requests: t.requests,
        fallbacks: t.fallbacks,
        upstream_429s: t.upstream_429,
        answered_429s: t.answered_429,
        cache_hit_ratio: ratio(t.cache_hits, t.cache_lookups),
    }
}

fn route(state: &AppState, now: &Now<'_>, i: usize, r: RouteStatus) -> RouteView {
    let config = &state.config.routes[i];
    RouteView {
        route: config.model.clone(),
        max_wait_s: round_ms(config.max_wait),
        queue: QueueView {
            length: r.queued,
            oldest_wait_s: r.oldest.map(|t| now.since(t)),
        },
        last_minute: last_minute(
            state
                .metrics
                .recent_route(&config.model, now.at.since_origin()),
        ),
        targets: r
            .targets
            .into_iter()
            .map(|t| target(state, now, t))
            .collect(),
    }
}

fn target(state: &AppState, now: &Now<'_>, t: TargetStatus) -> TargetView {
    let provider = &state.config.providers[t.provider];
    let keys = t
        .state
        .keys
        .iter()
        .zip(&t.state.refused)
        .zip(&provider.keys)
        .map(|((snapshot, refused), key)| KeyView {
            key: key.alias.clone(),
            in_flight: snapshot.in_flight,
            cooling: snapshot.blocked.map(|(until, kind)| Cooling {
                until: now.moment(until),
                limit: kind.map(|k| k.short().to_string()),
            }),
            disabled: refused.as_ref().map(|r| Disabled {
                reason: r.why.clone(),
                retry: now.moment(r.retry_at),
                probing: r.probing,
            }),
            windows: windows(now, snapshot),
        })
        .collect();
    TargetView {
        provider: provider.name.clone(),
        model: t.model,
        circuit: circuit(now, t.state.circuit),
        keys,
    }
}

fn circuit(now: &Now<'_>, c: CircuitSnapshot) -> CircuitView {
    let (state, cooldown_until) = match c.open_until {
        None => ("closed", None),
        Some(Instant::NEVER) => ("probing", None),
        Some(until) if until > now.at => ("open", Some(now.moment(until))),
        Some(_) => ("half-open", None),
    };
    CircuitView {
        state: state.to_string(),
        failures: c.failures,
        cooldown_until,
    }
}

fn windows(now: &Now<'_>, snapshot: &KeySnapshot) -> Vec<WindowView> {
    snapshot
        .windows
        .iter()
        .map(|w: &WindowSnapshot| WindowView {
            window: w.kind.short().to_string(),
            limit: w.limit,
            source: if w.learned { "learned" } else { "configured" }.to_string(),
            used: w.used,
            reserved: w.reserved,
            remaining: w.remaining,
            reset: now.moment(w.resets_at),
        })
        .collect()
}

fn client(state: &AppState, now: &Now<'_>, c: &ClientState) -> ClientView {
    let snapshot = c.quota.snapshot(now.at);
    ClientView {
        name: c.name.clone(),
        routes: c.routes.as_ref().map(|routes| {
            routes
                .iter()
                .map(|&r| state.config.routes[r].model.clone())
                .collect()
        }),
        in_flight: snapshot.in_flight,
        windows: windows(now, &snapshot),
        last_minute: last_minute(state.metrics.recent_client(&c.name, now.at.since_origin())),
    }
}
