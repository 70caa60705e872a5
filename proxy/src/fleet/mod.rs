//! The fleet: gateways with the same `[fleet] name` share their keys' per-minute and daily
//! windows through Redis, so that together they send a key no more than its limits. Each send
//! is reserved on the server in one atomic step (a Lua script reads Redis's own clock, drops
//! what left the windows, and either adds the request or says how long to wait); the answer's
//! usage settles it; an attempt the provider did not count releases it; a 429 blocks the key
//! for every member at once, and a refused key, an open circuit and the limits learned from
//! the provider are shared in the same way ([`shared_state`]; ARCHITECTURE.md, invariant 12).
//!
//! Redis is never in the way of an answer: a call that fails or takes longer than `timeout`
//! lets the request go on the gateway's share of each limit (the limit divided by the members
//! it last saw through their heartbeats, counted against what it sent itself in the window):
//! degraded, said once in the log and in `/metrics`; the next call that succeeds rejoins.
//!
//! Keys: `spillway:{NAME|ALIAS|MODEL}:r` (a sorted set of the reservations in the minute
//! window, by time), `:t` (each reservation's tokens), `:s` (their sum), `:b` (set while the
//! key is blocked after a 429); the daily window, learned limits, refused keys and open
//! circuits beside them ([`shared_state`]). The braces make them one hash slot on Redis
//! Cluster. Provider keys are named by their aliases only; no key value is written to Redis.
//!
//! [`answers`]: the answers the fleet shares (a second cache tier, fleet-wide single-flight).

pub mod answers;
pub mod shared_state;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use spillway_clock::Clock;
use tokio::sync::Mutex;

use answers::{Followers, LOOKUP_OR_LEAD, RENEW, SHARE};

use crate::config::fleet::FleetConfig;
use crate::limits::kind::{Kind, Limits};
use crate::metrics::Metrics;
pub use shared_state::Windows;
use shared_state::{Learned, RESERVE};

/// Sets a reservation's tokens to what the answer used and its time to the answer's (nothing
/// if it left the window): the provider counted the request somewhere between the two, so the
/// later time keeps its slot until the provider's own window has let it go.
/// Each window (minute, day) in turn. KEYS: per window: reservations, tokens, token sum.
/// ARGV: id, tokens (empty: keep the estimate).
const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for w = 1, #KEYS, 3 do
  if redis.call('ZSCORE', KEYS[w], ARGV[1]) then
    redis.call('ZADD', KEYS[w], 'XX', now, ARGV[1])
    if ARGV[2] ~= '' then
      local before = tonumber(redis.call('HGET', KEYS[w + 1], ARGV[1]) or '0')
      redis.call('HSET', KEYS[w + 1], ARGV[1], ARGV[2])
      redis.call('INCRBY', KEYS[w + 2], tonumber(ARGV[2]) - before)
    end
  end
end
return 0
";

/// Takes a reservation back from each window (minute, day): the provider did not count the
/// attempt. KEYS: per window: reservations, tokens, token sum. ARGV: id.
const RELEASE: &str = r"
for w = 1, #KEYS, 3 do
  if redis.call('ZREM', KEYS[w], ARGV[1]) == 1 then
    local used = tonumber(redis.call('HGET', KEYS[w + 1], ARGV[1]) or '0')
    redis.call('HDEL', KEYS[w + 1], ARGV[1])
    redis.call('DECRBY', KEYS[w + 2], used)
  end
end
return 0
";

/// Blocks a key for every member until the provider's reset, unless it is blocked longer.
/// KEYS: block. ARGV: ms.
const BLOCK: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 0
";

/// The per-minute window the fleet shares (the gateway's clock).
const WINDOW: Duration = Duration::from_secs(60);

/// While Redis is out of reach, how often (ms, wall-clock time) a call tries it again.
const RETRY_EVERY_MS: u64 = 1000;

/// How often a member says it is alive (the gateway's clock: a simulation at 60 times the
/// wall's pace heartbeats 60 times as often).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A member not heard from for this long (the gateway's clock) is no longer counted.
const MEMBER_LAPSES: Duration = Duration::from_secs(3);

/// Records this member alive and answers how many are. KEYS: members. ARGV: instance, lapse ms.
const MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
";

/// Re-adds this gateway's own sends still in a key's window after Redis was lost (a Redis
/// that restarted empty, or one that missed what was sent meanwhile); each once, by its id.
/// KEYS: reservations, tokens, token sum. ARGV: window ms, then (id, age ms, tokens) triples.
const CARRY: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV, 3 do
  local id, age, tokens = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if redis.call('ZADD', KEYS[1], 'NX', now - age, id) == 1 then
    redis.call('HSET', KEYS[2], id, tokens)
    redis.call('INCRBY', KEYS[3], tokens)
  end
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], 2 * tonumber(ARGV[1])) end
return 0
";

/// One send this gateway made: when (wall-clock ms), its tokens, its id in the fleet.
type Sent = (u64, u64, String);

/// What this gateway sent through one slot in its window.
struct OwnSends {
    slot: Arc<Slot>,
    window: Duration,
    sends: VecDeque<Sent>,
    /// What the whole fleet held in the window, as the last reservation through Redis saw it.
    seen: Option<Seen>,
}

/// The fleet's use of a slot's window as a reservation through Redis saw it (wall-clock ms
/// since the clock's origin). Degraded, it is what the other members may still have in the
/// window (ARCHITECTURE.md, invariant 12).
#[derive(Clone, Debug)]
struct Seen {
    /// The reservation whose answer it was (counted in it, so not again as a later send).
    by: String,
    /// When the call was made: this gateway's sends noted since then are not in it.
    asked: u64,
    /// When its answer came: all it counted was sent by then.
    answered: u64,
    /// Requests in the window, the reservation included.
    requests: u64,
    /// Tokens in the window, the reservation included.
    tokens: u64,
}

/// Drops the sends that left a window of `window` ending at `now` (ms). Times are whole
/// milliseconds, cut short: a send noted at `at` happened before `at + 1`, so it has surely
/// left only once `now` is past `at + window` (as Redis keeps a reservation scored `now -
/// window`).
fn forget_before(own: &mut VecDeque<Sent>, now: u64, window: Duration) {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    while own.front().is_some_and(|(at, _, _)| at + window_ms < now) {
        own.pop_front();
    }
}

/// A gateway's share of a key's per-minute limits while it cannot reach Redis (ARCHITECTURE.md,
/// invariant 12).
///
/// What the fleet held in the window when this gateway last saw it (`Seen`) may still be in
/// the window until a window after that; the rest of each limit is divided among the members
/// seen alive, and this gateway's sends since it saw the window count against its part. So
/// the members together never send more than the limit: what was there, plus each member's
/// part of what was left. Once the seen use has surely left the window, the share is the
/// limit divided among the members, against all this gateway sent in the window.
#[derive(Clone, Copy, Debug)]
struct Share {
    requests: Option<u64>,
    tokens: Option<u64>,
    members: u64,
    window_ms: u64,
}

impl Share {
    /// `None` when a send of `tokens` at `now` fits beside `sends` (this gateway's, oldest
    /// first, all in the window); else how long (ms) until it might.
    fn wait(
        &self,
        sends: &VecDeque<Sent>,
        seen: Option<&Seen>,
        tokens: u64,
        now: u64,
    ) -> Option<u64> {
        // A send on its way when Redis saw it reaches the provider a little later: the seen
        // use is kept a second (of a minute's window) longer than a window.
        let seen = seen.filter(|s| now < s.answered + self.window_ms + self.window_ms / 60);
        let (since, seen_requests, seen_tokens) =
            seen.map_or((0, 0, 0), |s| (s.asked, s.requests, s.tokens));
        let by = seen.map(|s| s.by.as_str());
        let mut fresh: Vec<(u64, u64)> = sends
            .iter()
            .filter(|(at, _, id)| *at >= since && by != Some(id.as_str()))
            .map(|(at, t, _)| (*at, *t))
            .collect();
        fresh.sort_unstable();
        let part = |limit: u64, used: u64| match seen {
            Some(_) => limit.saturating_sub(used) / self.members,
            // As before any use was seen: at least one send each, so a limit smaller than the
            // fleet still lets every member through.
            None => (limit / self.members).max(1),
        };
        // When enough of this gateway's sends have left for this one to fit (None: never).
        let mut leave: Option<u64> = Some(0);
        let mut fits = true;
        if let Some(limit) = self.requests.map(|l| part(l, seen_requests))
            && fresh.len() as u64 >= limit
        {
            fits = false;
            leave = match usize::try_from(limit).ok().filter(|&l| l > 0) {
                Some(l) => leave.map(|t| t.max(fresh[fresh.len() - l].0 + self.window_ms + 1)),
                None => None,
            };
        }
        if let Some(limit) = self.tokens.map(|l| part(l, seen_tokens)) {
            let mut used: u64 = fresh.iter().map(|(_, t)| t).sum();
            let mut gone = 0;
            while used + tokens > limit && gone < fresh.len() {
                used -= fresh[gone].1;
                gone += 1;
            }
            if used + tokens > limit {
                fits = false;
                leave = None;
            } else if gone > 0 {
                fits = false;
                leave = leave.map(|t| t.max(fresh[gone - 1].0 + self.window_ms + 1));
            }
        }
        if fits {
            return None;
        }
        let expires = seen.map(|s| s.answered + self.window_ms + self.window_ms / 60);
        let until = match (leave, expires) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => now + self.window_ms,
        };
        Some(until.saturating_sub(now).max(1))
    }
}

/// One key's model, as the fleet names it and limits it.
#[derive(Debug, Clone)]
pub struct Slot {
    /// `spillway:{NAME|ALIAS|MODEL}`: the prefix of its keys in Redis.
    prefix: String,
    /// Requests per minute, when known.
    requests: Option<u64>,
    /// Tokens per minute, when known.
    tokens: Option<u64>,
    /// Requests per day, when known.
    requests_per_day: Option<u64>,
    /// Tokens per day, when known.
    tokens_per_day: Option<u64>,
}

impl Slot {
    /// The slot of key `alias` for `model` with the per-key `limits` the config gives.
    pub fn new(fleet: &str, alias: &str, model: &str, limits: &Limits) -> Self {
        Slot {
            prefix: format!("spillway:{{{fleet}|{alias}|{model}}}"),
            requests: limits.get(Kind::RequestsPerMinute),
            tokens: limits.get(Kind::TokensPerMinute),
            requests_per_day: limits.get(Kind::RequestsPerDay),
            tokens_per_day: limits.get(Kind::TokensPerDay),
        }
    }

    fn keys(&self) -> [String; 4] {
        ["r", "t", "s", "b"].map(|k| format!("{}:{k}", self.prefix))
    }
}

/// A reservation held in the fleet's window, to be settled or released.
#[derive(Debug)]
pub struct Held {
    slot: Arc<Slot>,
    id: String,
}

/// What the fleet says to a send the gateway's own ledger admitted.
#[derive(Debug)]
pub enum Verdict {
    /// Go; `Some` when the fleet holds a reservation for it (`None`: degraded, so the send
    /// is counted in this gateway's own record only).
    Go(Option<Held>),
    /// The fleet's window for this key has all the requests it allows, or a 429 met by a
    /// member blocks it: no request goes through it for this long (wall-clock time).
    Wait(Duration),
    /// The provider refused the key on a member: set aside this long (wall-clock time).
    KeyRefused {
        /// How long.
        wait: Duration,
        /// What the provider said (status and code).
        why: String,
    },
    /// The target's circuit is open on a member for this long (wall-clock time).
    CircuitOpen(Duration),
    /// This request waits this long (wall-clock time): the fleet's window for this key has no
    /// room for its tokens yet, or, degraded, this gateway's share of the key has none; a
    /// smaller request may fit sooner.
    RequestWaits(Duration),
}

/// This gateway's membership of a fleet.
pub struct Fleet {
    name: String,
    client: redis::Client,
    conn: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
    wall: Clock,
    /// The gateway's clock, which paces the heartbeats.
    clock: Clock,
    instance: String,
    next_id: AtomicU64,
    degraded: AtomicBool,
    /// Whether Redis has answered once since this gateway started.
    answered: AtomicBool,
    /// While degraded: the wall-clock time (since the clock's origin) before which Redis is
    /// not asked again, so requests do not each wait out the timeout.
    retry_at: AtomicU64,
    metrics: Arc<Metrics>,
    /// Members seen alive at the last heartbeat (this one included).
    members: AtomicU64,
    /// What this gateway sent in each slot's window, oldest first: what it counts against its
    /// share while degraded, and carries over to Redis when it rejoins.
    sent: std::sync::Mutex<HashMap<String, OwnSends>>,
    /// The members the shares divide the limits among: those seen alive when Redis was lost
    /// (heartbeats through a restarted Redis count the members as they come back).
    share_members: AtomicU64,
    /// After a rejoin, the wall-clock time (ms) until which this gateway also keeps to its
    /// share, as other members may still be on theirs, their sends not carried over yet (0:
    /// not on probation).
    probation_until: AtomicU64,
    /// When (wall-clock ms) the gateway went degraded, while it is.
    degraded_since: AtomicU64,
    /// Wall-clock ms spent degraded, the current span excluded.
    degraded_ms: AtomicU64,
    carry: Script,
    ping: Script,
    members_script: Script,
    reserve: Script,
    settle: Script,
    release: Script,
    block: Script,
    /// The limits learned from the provider, as this gateway last saw them in Redis.
    learned: Learned,
    /// Whether answers are shared (`[fleet] shared_cache`).
    shared_cache: bool,
    /// The largest answer frame written to the shared tier.
    shared_max_entry_size: u64,
    /// Who waits for another gateway's answer, and the connection that tells them.
    followers: Arc<Mutex<Followers>>,
    lead_script: Script,
    share_script: Script,
    renew_script: Script,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("name", &self.name)
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A member of the fleet `config` names. Nothing is sent to Redis yet: the first call
    /// connects, so a gateway starts (degraded) while Redis is down.
    pub fn new(config: &FleetConfig, metrics: Arc<Metrics>, clock: Clock) -> Result<Self, String> {
        let client = redis::Client::open(config.redis_url.expose()).map_err(|e| {
            format!(
                "fleet.redis: ${} is not a usable Redis URL ({:?})",
                config.redis_env,
                e.kind()
            )
        })?;
        let wall = Clock::real();
        let instance = format!(
            "{:x}-{:x}",
            std::process::id(),
            wall.wall_unix_now().as_nanos()
        );
        Ok(Fleet {
            name: config.name.clone(),
            client,
            conn: Mutex::new(None),
            timeout: config.timeout,
            wall,
            clock,
            instance,
            next_id: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            metrics,
            members: AtomicU64::new(1),
            sent: std::sync::Mutex::new(HashMap::new()),
            share_members: AtomicU64::new(1),
            probation_until: AtomicU64::new(0),
            degraded_since: AtomicU64::new(0),
            degraded_ms: AtomicU64::new(0),
            carry: Script::new(CARRY),
            ping: Script::new("return 1"),
            members_script: Script::new(MEMBERS),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            release: Script::new(RELEASE),
            block: Script::new(BLOCK),
            learned: Learned::new(),
            shared_cache: config.shared_cache,
            shared_max_entry_size: config.shared_max_entry_size,
            followers: Arc::default(),
            lead_script: Script::new(LOOKUP_OR_LEAD),
            share_script: Script::new(SHARE),
            renew_script: Script::new(RENEW),
        })
    }

    /// The fleet's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Says every second that this member is alive, and learns how many are, for as long as
    /// the fleet exists.
    pub fn start_heartbeat(self: &Arc<Self>) {
        let fleet: Weak<Fleet> = Arc::downgrade(self);
        let clock = self.clock.clone();
        // A busy machine can delay a heartbeat by some wall-clock time whatever the clock's
        // pace: a member lapses no sooner than half a second after its last word.
        let lapse_ms = clock
            .to_wall(MEMBER_LAPSES)
            .max(Duration::from_millis(500))
            .as_millis()
            .to_string();
        tokio::spawn(async move {
            loop {
                let Some(member) = fleet.upgrade() else {
                    return;
                };
                member.rejoin().await;
                let keys = [format!("spillway:{{{}}}:members", member.name)];
                let args = [member.instance.clone(), lapse_ms.clone()];
                if let Some(n) = member.run(&member.members_script, &keys, &args).await {
                    let n = n.unsigned_abs().max(1);
                    // Every member seen before Redis was lost is back: each carried over what
                    // it sent before saying it is alive, so Redis knows the fleet's use again.
                    if n >= member.share_members.load(Ordering::Relaxed) {
                        member.probation_until.store(0, Ordering::Relaxed);
                    }
                    member.members.store(n, Ordering::Relaxed);
                }
                drop(member);
                clock.sleep(HEARTBEAT).await;
            }
        });
    }

    /// Members seen alive at the last heartbeat (this one included).
    pub fn members(&self) -> u64 {
        self.members.load(Ordering::Relaxed)
    }

    /// True while Redis is out of reach and the gateway goes on its own limits.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// How long this gateway has gone on its own limits since it started (the gateway's
    /// clock), the current span included.
    pub fn degraded_time(&self) -> Duration {
        let mut ms = self.degraded_ms.load(Ordering::Relaxed);
        if self.is_degraded() {
            ms += self
                .now_ms()
                .saturating_sub(self.degraded_since.load(Ordering::Relaxed));
        }
        self.clock.from_wall(Duration::from_millis(ms))
    }

    /// Whether, rejoined, this gateway still keeps to its share besides the fleet's window.
    fn on_probation(&self, now: u64) -> bool {
        now < self.probation_until.load(Ordering::Relaxed)
    }

    /// Ready to share limits: Redis has answered since start and is not out of reach now; or
    /// why not (in words that name neither the URL nor its credentials).
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.answered.load(Ordering::Relaxed) {
            Err("fleet: Redis has not answered yet")
        } else if self.is_degraded() {
            Err("fleet: Redis is out of reach; this gateway goes on its own limits")
        } else {
            Ok(())
        }
    }

    /// A connection, made on first use (and again after a failed first connection).
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let made = self
            .client
            .get_connection_manager_with_config(config)
            .await?;
        *conn = Some(made.clone());
        Ok(made)
    }

    /// Runs `script` within the fleet's timeout; `None` (and degraded) when Redis does not
    /// answer in time.
    async fn run(&self, script: &Script, keys: &[String], args: &[String]) -> Option<i64> {
        if self.is_degraded() {
            return None;
        }
        self.call(script, keys, args).await
    }

    /// One script call within the timeout, degraded or not; a failure (or no answer in
    /// time) makes the gateway degraded.
    async fn call(&self, script: &Script, keys: &[String], args: &[String]) -> Option<i64> {
        self.call_as(script, keys, args).await
    }

    /// As [`Fleet::call`], for a script whose answer is a `T`.
    async fn call_as<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Option<T> {
        let call = async {
            let mut conn = self.connection().await?;
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            for a in args {
                invocation.arg(a);
            }
            invocation.invoke_async::<T>(&mut conn).await
        };
        self.within_timeout(call).await
    }

    /// `call`'s answer within the fleet's timeout; a failure or no answer in time makes the
    /// gateway degraded.
    pub(super) async fn within_timeout<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match self.wall.timeout(self.timeout, call).await {
            Some(Ok(v)) => {
                self.answered.store(true, Ordering::Relaxed);
                Some(v)
            }
            Some(Err(e)) => {
                self.went_degraded(&e.to_string());
                None
            }
            None => {
                self.went_degraded(&format!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    /// While degraded, once a second: if Redis answers, re-adds this gateway's own sends still
    /// in their windows (what it spent meanwhile, or before a Redis that restarted empty)
    /// before any new reservation goes through it, and rejoins. True when in the fleet again.
    async fn rejoin(&self) -> bool {
        if !self.is_degraded() {
            return true;
        }
        if self.now_ms() < self.retry_at.load(Ordering::Relaxed) {
            return false;
        }
        let now = self.now_ms();
        let batches: Vec<(Arc<Slot>, Vec<String>)> = {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            sent.values_mut()
                .map(|own| {
                    forget_before(&mut own.sends, now, own.window);
                    let mut args = vec![own.window.as_millis().max(1).to_string()];
                    for (at, tokens, id) in &own.sends {
                        args.extend([id.clone(), (now - at).to_string(), tokens.to_string()]);
                    }
                    (own.slot.clone(), args)
                })
                .collect()
        };
        if self.call(&self.ping, &[], &[]).await.is_none() {
            return false;
        }
        for (slot, args) in batches {
            if self
                .call(&self.carry, &slot.keys()[..3], &args)
                .await
                .is_none()
            {
                return false;
            }
        }
        if self.degraded.swap(false, Ordering::Relaxed) {
            let now = self.now_ms();
            let span = now.saturating_sub(self.degraded_since.load(Ordering::Relaxed));
            self.degraded_ms.fetch_add(span, Ordering::Relaxed);
            // Until the members seen before are back, or at most until what a member that
            // will not come back sent has left the window, and any member still alive has had
            // two tries at Redis (the first may meet it still starting), with a second to
            // spare: a member asks Redis again once a wall-clock second, which at a scaled
            // clock may be a minute or more.
            let window = u64::try_from(self.clock.to_wall(WINDOW).as_millis()).unwrap_or(u64::MAX);
            let retries = 2 * RETRY_EVERY_MS
                + u64::try_from(self.clock.to_wall(HEARTBEAT).as_millis()).unwrap_or(0);
            self.probation_until.store(
                now.saturating_add(window.max(retries) + RETRY_EVERY_MS),
                Ordering::Relaxed,
            );
            self.metrics
                .fleet_degraded_for(self.clock.from_wall(Duration::from_millis(span)));
            self.metrics.fleet_degraded(false);
            tracing::info!(fleet = %self.name, "fleet: Redis answers again; what this gateway sent meanwhile is counted, and limits are shared again");
        }
        true
    }

    fn went_degraded(&self, why: &str) {
        let now_ms = u64::try_from(self.wall.now().as_millis()).unwrap_or(u64::MAX);
        self.retry_at
            .store(now_ms.saturating_add(RETRY_EVERY_MS), Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            self.degraded_since.store(now_ms, Ordering::Relaxed);
            // Lost again while on probation: the members count is still coming back; the
            // shares stay divided among those seen before.
            if !self.on_probation(now_ms) {
                self.share_members
                    .store(self.members().max(1), Ordering::Relaxed);
            }
            self.metrics.fleet_degraded(true);
            tracing::warn!(fleet = %self.name, reason = %why, "fleet: Redis out of reach; this gateway goes on its own limits until it answers");
        }
    }

    /// Reserves a send of `tokens` on `slot`'s fleet-wide windows (wall-clock lengths: a
    /// minute and a day of the gateway's clock); with the verdict, the limits learned from
    /// the provider that Redis holds for the slot and this gateway had not seen there.
    pub async fn reserve(
        &self,
        slot: &Arc<Slot>,
        tokens: u64,
        windows: Windows,
    ) -> (Verdict, Vec<(Kind, u64)>) {
        let id = format!(
            "{}:{}",
            self.instance,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let window = windows.minute;
        // Degraded, what the gateway's own share says is this request's to wait for.
        let alone = |verdict| match verdict {
            Verdict::Wait(wait) => (Verdict::RequestWaits(wait), Vec::new()),
            verdict => (verdict, Vec::new()),
        };
        if !self.rejoin().await {
            return alone(self.own_share(slot, tokens, window, id));
        }
        let asked = self.now_ms();
        // Rejoined, but other members may still be on their shares with sends Redis has not
        // been told of: this one keeps to its share too until they are back (or a window has
        // passed), and what Redis holds meanwhile is not the fleet's whole use.
        let probation = self.on_probation(asked);
        if probation && let Verdict::Wait(wait) = self.own_share(slot, tokens, window, id.clone()) {
            return (Verdict::RequestWaits(wait), Vec::new());
        }
        match self.reserve_shared(slot, &id, tokens, windows).await {
            Some((Verdict::Go(Some(held)), learned, Some((requests, used)))) => {
                // On probation the send is in the gateway's own record already (its share).
                if !probation {
                    let seen = Seen {
                        by: held.id.clone(),
                        asked,
                        answered: self.now_ms(),
                        requests,
                        tokens: used,
                    };
                    self.note_sent(slot, tokens, window, held.id.clone(), seen);
                }
                (Verdict::Go(Some(held)), learned)
            }
            Some((verdict, learned, _)) => {
                if probation {
                    self.forget_send(&Held {
                        slot: slot.clone(),
                        id,
                    });
                }
                (verdict, learned)
            }
            // Noted already, within the share.
            None if probation => (
                Verdict::Go(Some(Held {
                    slot: slot.clone(),
                    id,
                })),
                Vec::new(),
            ),
            None => alone(self.own_share(slot, tokens, window, id)),
        }
    }

    /// The wall-clock time in ms since the clock's origin.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.wall.now().as_millis()).unwrap_or(u64::MAX)
    }

    /// This gateway's own record of `slot`'s window, made on first use.
    fn own<'a>(
        sent: &'a mut HashMap<String, OwnSends>,
        slot: &Arc<Slot>,
        window: Duration,
    ) -> &'a mut OwnSends {
        sent.entry(slot.prefix.clone()).or_insert_with(|| OwnSends {
            slot: slot.clone(),
            window,
            sends: VecDeque::new(),
            seen: None,
        })
    }

    /// Keeps a send in this gateway's own record of `slot`'s window, with what the fleet's
    /// window held as its reservation saw it (the latest call's view is kept).
    fn note_sent(&self, slot: &Arc<Slot>, tokens: u64, window: Duration, id: String, seen: Seen) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now_ms();
        let own = Self::own(&mut sent, slot, window);
        forget_before(&mut own.sends, now, window);
        own.sends.push_back((now, tokens, id));
        if own.seen.as_ref().is_none_or(|s| s.asked <= seen.asked) {
            own.seen = Some(seen);
        }
    }

    /// Drops a send from this gateway's own record (it did not go, or the provider did not
    /// count it).
    fn forget_send(&self, held: &Held) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(own) = sent.get_mut(&held.slot.prefix) {
            // A send is taken back soon after it was made: look from the newest end, and stop
            // at the first match (the window can hold hundreds of thousands of sends).
            if let Some(i) = own.sends.iter().rposition(|(_, _, id)| *id == held.id) {
                own.sends.remove(i);
            }
        }
    }

    /// Degraded (or on probation): the send goes if it fits this gateway's share of each
    /// limit, else waits until it may (see [`share_wait`]).
    fn own_share(&self, slot: &Arc<Slot>, tokens: u64, window: Duration, id: String) -> Verdict {
        let members = self.share_members.load(Ordering::Relaxed).max(1);
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now_ms();
        let own = Self::own(&mut sent, slot, window);
        forget_before(&mut own.sends, now, window);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let share = Share {
            requests: slot.requests,
            tokens: slot.tokens,
            members,
            window_ms,
        };
        match share.wait(&own.sends, own.seen.as_ref(), tokens, now) {
            Some(wait) => Verdict::Wait(Duration::from_millis(wait)),
            None => {
                own.sends.push_back((now, tokens, id.clone()));
                Verdict::Go(Some(Held {
                    slot: slot.clone(),
                    id,
                }))
            }
        }
    }

    /// Moves a held reservation to the answer's time and sets its tokens to what the answer
    /// used (`None`: the estimate stays), in this gateway's own record too: the provider
    /// counted the request at some time before its answer, so the answer's time keeps its
    /// place in the window until the provider's own window has let it go.
    pub async fn settle(&self, held: Held, tokens: Option<u64>) {
        {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            let now = self.now_ms();
            if let Some(own) = sent.get_mut(&held.slot.prefix)
                // Answered sends are recent: found from the newest end.
                && let Some(i) = own.sends.iter().rposition(|(_, _, id)| *id == held.id)
                && let Some((_, estimate, id)) = own.sends.remove(i)
            {
                own.sends.push_back((now, tokens.unwrap_or(estimate), id));
            }
        }
        let keys = held.slot.window_keys();
        let tokens = tokens.map(|t| t.to_string()).unwrap_or_default();
        self.run(&self.settle, &keys, &[held.id, tokens]).await;
    }

    /// Takes a held reservation back: the provider did not count the attempt.
    pub async fn release(&self, held: Held) {
        self.forget_send(&held);
        let keys = held.slot.window_keys();
        self.run(&self.release, &keys, &[held.id]).await;
    }

    /// Blocks `slot` for every member for `wait` (wall-clock time), after a 429.
    pub async fn block(&self, slot: &Slot, wait: Duration) {
        let ms = wait.as_millis().max(1).to_string();
        self.run(&self.block, &slot.keys()[3..], &[ms]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::secret::ApiKey;

    const MINUTE: u64 = 60_000;

    fn share(requests: u64, members: u64) -> Share {
        Share {
            requests: Some(requests),
            tokens: None,
            members,
            window_ms: MINUTE,
        }
    }

    fn sends(list: &[(u64, &str)]) -> VecDeque<Sent> {
        list.iter()
            .map(|(at, id)| (*at, 0, id.to_string()))
            .collect()
    }

    fn seen(requests: u64) -> Seen {
        Seen {
            by: "me:1".into(),
            asked: 1_000,
            answered: 1_010,
            requests,
            tokens: 0,
        }
    }

    #[test]
    fn the_fleets_use_seen_counts_and_each_member_has_its_part_of_the_rest() {
        // Eight of ten seen (this gateway's send that saw them among them): one each of the
        // two left, for two members.
        let own = sends(&[(1_005, "me:1")]);
        assert_eq!(share(10, 2).wait(&own, Some(&seen(8)), 0, 2_000), None);
        let own = sends(&[(1_005, "me:1"), (1_500, "me:2")]);
        assert_eq!(
            share(10, 2).wait(&own, Some(&seen(8)), 0, 2_000),
            Some(1_500 + MINUTE + 1 - 2_000),
            "its part spent: until its own send leaves the window"
        );
    }

    #[test]
    fn a_full_window_seen_holds_every_member_back_until_it_has_surely_passed() {
        let expires = 1_010 + MINUTE + MINUTE / 60;
        assert_eq!(
            share(10, 3).wait(&VecDeque::new(), Some(&seen(10)), 0, 2_000),
            Some(expires - 2_000)
        );
        // Then the limit divided by the members, against this gateway's sends in the window
        // (the caller has dropped those that left it).
        let own = sends(&[(30_000, "me:2"), (40_000, "me:3")]);
        assert_eq!(share(10, 3).wait(&own, Some(&seen(10)), 0, expires), None);
        let own = sends(&[(30_000, "me:2"), (40_000, "me:3"), (50_000, "me:4")]);
        assert_eq!(
            share(10, 3).wait(&own, Some(&seen(10)), 0, expires),
            Some(30_000 + MINUTE + 1 - expires)
        );
    }

    #[test]
    fn with_nothing_seen_the_share_is_the_limit_divided_among_the_members() {
        let own = sends(&[(0, "me:1"), (10, "me:2"), (20, "me:3"), (30, "me:4")]);
        assert_eq!(share(10, 2).wait(&own, None, 0, 100), None);
        let own = sends(&[(0, "a"), (10, "b"), (20, "c"), (30, "d"), (40, "e")]);
        assert_eq!(
            share(10, 2).wait(&own, None, 0, 100),
            Some(MINUTE + 1 - 100)
        );
    }

    /// A member of a fleet whose Redis is nowhere (port 1 refuses), on a clock tests move.
    fn lost_fleet() -> Fleet {
        let config = FleetConfig {
            redis_env: "REDIS_URL".into(),
            redis_url: ApiKey::new("redis://127.0.0.1:1/0"),
            name: "unit".into(),
            timeout: Duration::from_millis(50),
            shared_cache: false,
            shared_max_entry_size: 0,
        };
        Fleet::new(&config, Arc::default(), Clock::real()).expect("a fleet")
    }

    fn one_a_minute() -> Arc<Slot> {
        Arc::new(Slot {
            prefix: "spillway:{unit|k1|m}".into(),
            requests: Some(1),
            tokens: None,
            requests_per_day: None,
            tokens_per_day: None,
        })
    }

    const WINDOW: Windows = Windows {
        minute: Duration::from_secs(60),
        day: Duration::from_secs(86_400),
    };

    #[tokio::test(start_paused = true)]
    async fn degraded_a_send_counts_from_its_answers_time_as_the_provider_may_have_counted_it() {
        let (fleet, slot) = (lost_fleet(), one_a_minute());
        let Verdict::Go(Some(held)) = fleet.reserve(&slot, 10, WINDOW).await.0 else {
            panic!("the first send goes on the gateway's own share");
        };
        assert!(fleet.is_degraded());
        tokio::time::advance(Duration::from_secs(5)).await;
        fleet.settle(held, Some(12)).await;
        tokio::time::advance(Duration::from_secs(57)).await;
        // A minute after the send went, but not after its answer came.
        match fleet.reserve(&slot, 10, WINDOW).await.0 {
            Verdict::RequestWaits(wait) => assert!(wait <= Duration::from_secs(3), "{wait:?}"),
            other => panic!("the answered send still holds the minute: {other:?}"),
        }
        assert!(fleet.degraded_time() >= Duration::from_secs(62));
    }

    #[tokio::test(start_paused = true)]
    async fn degraded_a_send_the_provider_did_not_count_is_given_back() {
        let (fleet, slot) = (lost_fleet(), one_a_minute());
        let Verdict::Go(Some(held)) = fleet.reserve(&slot, 10, WINDOW).await.0 else {
            panic!("the first send goes on the gateway's own share");
        };
        fleet.release(held).await;
        assert!(matches!(
            fleet.reserve(&slot, 10, WINDOW).await.0,
            Verdict::Go(Some(_))
        ));
    }
}
