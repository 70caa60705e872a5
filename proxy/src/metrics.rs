//! Prometheus metrics, per proxy instance (several can run in one test process): requests,
//! upstream attempts by provider and status, 429s per key, fallbacks, queue wait, and — filled
//! in at scrape time — each key and model's remaining headroom. Labels carry key aliases, never
//! keys.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the queue-wait histogram's buckets.
const WAIT_BUCKETS: [f64; 10] = [0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0];

/// Counts by two labels; looked up by borrowed keys so the hot path does not allocate.
#[derive(Debug, Default)]
struct Counts2 {
    by: HashMap<String, HashMap<String, u64>>,
}

impl Counts2 {
    fn add(&mut self, a: &str, b: &str) {
        if let Some(inner) = self.by.get_mut(a) {
            if let Some(n) = inner.get_mut(b) {
                *n += 1;
                return;
            }
            inner.insert(b.to_string(), 1);
            return;
        }
        self.by
            .insert(a.to_string(), HashMap::from([(b.to_string(), 1)]));
    }

    fn sorted(&self) -> BTreeMap<(&str, &str), u64> {
        self.by
            .iter()
            .flat_map(|(a, inner)| {
                inner
                    .iter()
                    .map(move |(b, n)| ((a.as_str(), b.as_str()), *n))
            })
            .collect()
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: HashMap<String, HashMap<u16, u64>>,
    attempts: Counts2,
    rate_limited: Counts2,
    fallbacks: HashMap<String, u64>,
    cache: HashMap<String, u64>,
    wait_buckets: [u64; WAIT_BUCKETS.len()],
    wait_count: u64,
    wait_sum: f64,
    /// `Some` in a fleet: whether Redis is out of reach now, and how often it was lost.
    fleet: Option<(bool, u64)>,
    /// In a fleet: the seconds (the gateway's clock) spent degraded, in spans that ended.
    fleet_degraded_seconds: f64,
    /// Requests by client name, route and status.
    clients: HashMap<(String, String, u16), u64>,
    /// The last minute (clock time) per route.
    recent_routes: HashMap<String, Rolling>,
    /// The last minute (clock time) per client.
    recent_clients: HashMap<String, Rolling>,
}

/// What happened in a span of time: the counts the status view shows for the last minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Client requests answered.
    pub requests: u64,
    /// Of those, answered 429 by the gateway.
    pub answered_429: u64,
    /// Attempts after which a request moved on to another key or target.
    pub fallbacks: u64,
    /// 429s from providers.
    pub upstream_429: u64,
    /// Requests the cache answered from the store.
    pub cache_hits: u64,
    /// Requests the cache looked up (hits, misses and joined flights).
    pub cache_lookups: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.answered_429 += o.answered_429;
        self.fallbacks += o.fallbacks;
        self.upstream_429 += o.upstream_429;
        self.cache_hits += o.cache_hits;
        self.cache_lookups += o.cache_lookups;
    }
}

/// Seconds a [`Rolling`] tally covers.
const RECENT_SECS: u64 = 60;

/// A tally per second of clock time over the last [`RECENT_SECS`].
#[derive(Debug, Clone)]
struct Rolling([(u64, Tally); RECENT_SECS as usize]);

impl Default for Rolling {
    fn default() -> Self {
        Rolling([(u64::MAX, Tally::default()); RECENT_SECS as usize])
    }
}

impl Rolling {
    fn note(&mut self, now: Duration, f: impl FnOnce(&mut Tally)) {
        let sec = now.as_secs();
        let slot = &mut self.0[(sec % RECENT_SECS) as usize];
        if slot.0 != sec {
            *slot = (sec, Tally::default());
        }
        f(&mut slot.1);
    }

    fn sum(&self, now: Duration) -> Tally {
        let sec = now.as_secs();
        let mut out = Tally::default();
        for (at, tally) in &self.0 {
            if *at <= sec && sec - *at < RECENT_SECS {
                out.add(tally);
            }
        }
        out
    }
}

fn note_in(
    map: &mut HashMap<String, Rolling>,
    name: &str,
    now: Duration,
    f: impl FnOnce(&mut Tally),
) {
    match map.get_mut(name) {
        Some(r) => r.note(now, f),
        None => {
            let mut r = Rolling::default();
            r.note(now, f);
            map.insert(name.to_string(), r);
        }
    }
}

/// One gauge of remaining headroom, gathered at scrape time.
#[derive(Debug, Clone)]
pub struct Headroom {
    /// Provider name.
    pub provider: String,
    /// Key alias (`groq#1`).
    pub key: String,
    /// Upstream model id.
    pub model: String,
    /// Limit kind (`rpm`, `tpm`, ...).
    pub window: &'static str,
    /// What is left.
    pub remaining: u64,
    /// The limit.
    pub limit: u64,
}

/// The metrics of one proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        f(&mut self.counters.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A client request answered with `status` on `route`.
    pub fn request(&self, route: &str, status: u16) {
        self.with(|c| match c.requests.get_mut(route) {
            Some(by_status) => *by_status.entry(status).or_default() += 1,
            None => {
                c.requests
                    .insert(route.to_string(), HashMap::from([(status, 1)]));
            }
        });
    }

    /// An upstream attempt; `outcome` is the status or `error` / `timeout`.
    pub fn attempt(&self, provider: &str, outcome: &str) {
        self.with(|c| c.attempts.add(provider, outcome));
    }

    /// A 429 from a provider on a key.
    pub fn rate_limited(&self, provider: &str, key_alias: &str) {
        self.with(|c| c.rate_limited.add(provider, key_alias));
    }

    /// A request moved on after a failed attempt.
    pub fn fallback(&self, route: &str) {
        self.with(|c| bump(&mut c.fallbacks, route));
    }

    /// A cache outcome (`hit`, `miss`, `coalesced`, `bypass`, `skip`).
    pub fn cache(&self, outcome: &str) {
        self.with(|c| bump(&mut c.cache, outcome));
    }

    /// Time a request spent waiting for headroom (clock time).
    pub fn queue_wait(&self, wait: Duration) {
        let secs = wait.as_secs_f64();
        self.with(|c| {
            for (i, bound) in WAIT_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    c.wait_buckets[i] += 1;
                }
            }
            c.wait_count += 1;
            c.wait_sum += secs;
        });
    }

    /// This gateway is a member of a fleet (its gauges appear from now on).
    pub fn fleet_joined(&self) {
        self.with(|c| {
            c.fleet.get_or_insert((false, 0));
        });
    }

    /// The gateway rejoined its fleet after `span` (the gateway's clock) on its own limits.
    pub fn fleet_degraded_for(&self, span: std::time::Duration) {
        self.with(|c| c.fleet_degraded_seconds += span.as_secs_f64());
    }

    /// The fleet's Redis was lost (`true`) or answers again (`false`).
    pub fn fleet_degraded(&self, degraded: bool) {
        self.with(|c| {
            let (now, lost) = c.fleet.get_or_insert((false, 0));
            *lost += u64::from(degraded && !*now);
            *now = degraded;
        });
    }

    /// A client request answered at clock time `now`, for the last minute's tallies (and, for
    /// a named client, `spillway_client_requests_total`).
    pub fn recent_request(
        &self,
        route: &str,
        client: Option<&str>,
        status: u16,
        cache: &str,
        now: Duration,
    ) {
        let count = |t: &mut Tally| {
            t.requests += 1;
            t.answered_429 += u64::from(status == 429);
            t.cache_hits += u64::from(cache == "hit");
            t.cache_lookups += u64::from(matches!(cache, "hit" | "miss" | "coalesced"));
        };
        self.with(|c| {
            note_in(&mut c.recent_routes, route, now, count);
            if let Some(client) = client {
                note_in(&mut c.recent_clients, client, now, count);
                *c.clients
                    .entry((client.to_string(), route.to_string(), status))
                    .or_default() += 1;
            }
        });
    }

    /// A request of `route` moved on after a failed attempt at clock time `now` (the last
    /// minute's tally; [`Self::fallback`] counts it for Prometheus).
    pub fn recent_fallback(&self, route: &str, now: Duration) {
        self.with(|c| note_in(&mut c.recent_routes, route, now, |t| t.fallbacks += 1));
    }

    /// A provider answered a request of `route` with a 429 at clock time `now`.
    pub fn recent_rate_limited(&self, route: &str, now: Duration) {
        self.with(|c| note_in(&mut c.recent_routes, route, now, |t| t.upstream_429 += 1));
    }

    /// The last minute (clock time, up to `now`) of a route.
    pub fn recent_route(&self, route: &str, now: Duration) -> Tally {
        self.with(|c| {
            c.recent_routes
                .get(route)
                .map(|r| r.sum(now))
                .unwrap_or_default()
        })
    }

    /// The last minute (clock time, up to `now`) of a client.
    pub fn recent_client(&self, client: &str, now: Duration) -> Tally {
        self.with(|c| {
            c.recent_clients
                .get(client)
                .map(|r| r.sum(now))
                .unwrap_or_default()
        })
    }

    /// Cache hits and lookups since the start (every route).
    pub fn cache_totals(&self) -> (u64, u64) {
        self.with(|c| {
            let n = |k: &str| c.cache.get(k).copied().unwrap_or(0);
            (n("hit"), n("hit") + n("miss") + n("coalesced"))
        })
    }

    /// Total fallbacks.
    pub fn fallbacks(&self) -> u64 {
        self.with(|c| c.fallbacks.values().sum())
    }

    /// The Prometheus text exposition, with `headroom` gauges appended.
    pub fn render(&self, headroom: &[Headroom]) -> String {
        let mut out = String::new();
        self.with(|c| {
            let _ = writeln!(out, "# HELP spillway_requests_total Client requests by route and status.");
            let _ = writeln!(out, "# TYPE spillway_requests_total counter");
            let requests: BTreeMap<(&str, u16), u64> = c
                .requests
                .iter()
                .flat_map(|(r, by)| by.iter().map(move |(s, n)| ((r.as_str(), *s), *n)))
                .collect();
            for ((route, status), n) in &requests {
                let _ = writeln!(out, "spillway_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", esc(route));
            }
            let _ = writeln!(out, "# HELP spillway_upstream_attempts_total Upstream attempts by provider and outcome.");
            let _ = writeln!(out, "# TYPE spillway_upstream_attempts_total counter");
            for ((provider, outcome), n) in &c.attempts.sorted() {
                let _ = writeln!(out, "spillway_upstream_attempts_total{{provider=\"{}\",status=\"{}\"}} {n}", esc(provider), esc(outcome));
            }
            let _ = writeln!(out, "# HELP spillway_upstream_rate_limited_total 429s from providers, by key alias.");
            let _ = writeln!(out, "# TYPE spillway_upstream_rate_limited_total counter");
            for ((provider, key), n) in &c.rate_limited.sorted() {
                let _ = writeln!(out, "spillway_upstream_rate_limited_total{{provider=\"{}\",key=\"{}\"}} {n}", esc(provider), esc(key));
            }
            let _ = writeln!(out, "# HELP spillway_fallbacks_total Requests moved to another key or target after a failed attempt.");
            let _ = writeln!(out, "# TYPE spillway_fallbacks_total counter");
            for (route, n) in &c.fallbacks.iter().collect::<BTreeMap<_, _>>() {
                let _ = writeln!(out, "spillway_fallbacks_total{{route=\"{}\"}} {n}", esc(route));
            }
            let _ = writeln!(out, "# HELP spillway_cache_requests_total Cache outcomes.");
            let _ = writeln!(out, "# TYPE spillway_cache_requests_total counter");
            for (outcome, n) in &c.cache.iter().collect::<BTreeMap<_, _>>() {
                let _ = writeln!(out, "spillway_cache_requests_total{{outcome=\"{}\"}} {n}", esc(outcome));
            }
            let _ = writeln!(out, "# HELP spillway_queue_wait_seconds Time requests waited for headroom.");
            let _ = writeln!(out, "# TYPE spillway_queue_wait_seconds histogram");
            for (i, bound) in WAIT_BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "spillway_queue_wait_seconds_bucket{{le=\"{bound}\"}} {}", c.wait_buckets[i]);
            }
            let _ = writeln!(out, "spillway_queue_wait_seconds_bucket{{le=\"+Inf\"}} {}", c.wait_count);
            let _ = writeln!(out, "spillway_queue_wait_seconds_sum {}", c.wait_sum);
            let _ = writeln!(out, "spillway_queue_wait_seconds_count {}", c.wait_count);
            fleet_lines(&mut out, c.fleet, c.fleet_degraded_seconds);
            client_lines(&mut out, &c.clients);
        });
        let _ = writeln!(
            out,
            "# HELP spillway_headroom_remaining What is left of each known limit, per key and model."
        );
        let _ = writeln!(out, "# TYPE spillway_headroom_remaining gauge");
        for h in headroom {
            let _ = writeln!(
                out,
                "spillway_headroom_remaining{{provider=\"{}\",key=\"{}\",model=\"{}\",window=\"{}\"}} {}",
                esc(&h.provider),
                esc(&h.key),
                esc(&h.model),
                h.window,
                h.remaining
            );
        }
        let _ = writeln!(
            out,
            "# HELP spillway_headroom_limit Each known limit, per key and model."
        );
        let _ = writeln!(out, "# TYPE spillway_headroom_limit gauge");
        for h in headroom {
            let _ = writeln!(
                out,
                "spillway_headroom_limit{{provider=\"{}\",key=\"{}\",model=\"{}\",window=\"{}\"}} {}",
                esc(&h.provider),
                esc(&h.key),
                esc(&h.model),
                h.window,
                h.limit
            );
        }
        out
    }
}

/// Requests by client name (never its key), route and status.
fn client_lines(out: &mut String, clients: &HashMap<(String, String, u16), u64>) {
    if clients.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP spillway_client_requests_total Requests of named clients ([[clients]]) by client, route and status."
    );
    let _ = writeln!(out, "# TYPE spillway_client_requests_total counter");
    for ((client, route, status), n) in clients.iter().collect::<BTreeMap<_, _>>() {
        let _ = writeln!(
            out,
            "spillway_client_requests_total{{client=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
            esc(client),
            esc(route)
        );
    }
}

/// In a fleet: whether Redis is out of reach now, and how often it was lost.
fn fleet_lines(out: &mut String, fleet: Option<(bool, u64)>, degraded_seconds: f64) {
    let Some((degraded, lost)) = fleet else {
        return;
    };
    let _ = writeln!(
        out,
        "# HELP spillway_fleet_degraded 1 while the fleet's Redis is out of reach and this gateway goes on its share of the limits."
    );
    let _ = writeln!(out, "# TYPE spillway_fleet_degraded gauge");
    let _ = writeln!(out, "spillway_fleet_degraded {}", u8::from(degraded));
    let _ = writeln!(
        out,
        "# HELP spillway_fleet_redis_lost_total Times this gateway lost the fleet's Redis."
    );
    let _ = writeln!(out, "# TYPE spillway_fleet_redis_lost_total counter");
    let _ = writeln!(out, "spillway_fleet_redis_lost_total {lost}");
    let _ = writeln!(
        out,
        "# HELP spillway_fleet_degraded_seconds_total Seconds this gateway went on its share of the limits, counted when it rejoined."
    );
    let _ = writeln!(out, "# TYPE spillway_fleet_degraded_seconds_total counter");
    let _ = writeln!(
        out,
        "spillway_fleet_degraded_seconds_total {degraded_seconds}"
    );
}

fn bump(map: &mut HashMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_minute_forgets_what_is_older() {
        let m = Metrics::default();
        let s = Duration::from_secs;
        m.recent_request("r", Some("eval"), 200, "miss", s(10));
        m.recent_request("r", None, 429, "none", s(30));
        m.recent_request("r", None, 200, "hit", s(69));
        m.recent_fallback("r", s(30));
        m.recent_rate_limited("r", s(30));
        let at_69 = m.recent_route("r", s(69));
        assert_eq!(
            (
                at_69.requests,
                at_69.answered_429,
                at_69.cache_hits,
                at_69.cache_lookups
            ),
            (3, 1, 1, 2)
        );
        assert_eq!((at_69.fallbacks, at_69.upstream_429), (1, 1));
        assert_eq!(
            m.recent_route("r", s(70)).requests,
            2,
            "10 s left the minute"
        );
        assert_eq!(m.recent_client("eval", s(69)).requests, 1);
        assert_eq!(m.recent_route("r", s(200)), Tally::default());
        assert!(m.render(&[]).contains(
            "spillway_client_requests_total{client=\"eval\",route=\"r\",status=\"200\"} 1"
        ));
    }
}
