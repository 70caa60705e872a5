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
}

/// Drops the sends that left a window of `window` ending at `now` (ms).
fn forget_before(own: &mut VecDeque<Sent>, now: u64, window: Duration) {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    while own.front().is_some_and(|(at, _, _)| at + window_ms <= now) {
        own.pop_front();
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
                    member
                        .members
                        .store(n.unsigned_abs().max(1), Ordering::Relaxed);
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
        let call = async {
            let mut conn = self.connection().await?;
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            for a in args {
                invocation.arg(a);
            }
            invocation.invoke_async::<i64>(&mut conn).await
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
        match self.reserve_shared(slot, &id, tokens, windows).await {
            Some((Verdict::Go(Some(held)), learned)) => {
                self.note_sent(slot, tokens, window, id);
                (Verdict::Go(Some(held)), learned)
            }
            Some(reply) => reply,
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
        })
    }

    /// Keeps a send in this gateway's own record of `slot`'s window.
    fn note_sent(&self, slot: &Arc<Slot>, tokens: u64, window: Duration, id: String) {
        let now = self.now_ms();
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let own = &mut Self::own(&mut sent, slot, window).sends;
        forget_before(own, now, window);
        own.push_back((now, tokens, id));
    }

    /// Degraded: the send goes if what this gateway sent in the window leaves room in its share
    /// of each limit (the limit divided by the members it last saw), else waits until it does.
    fn own_share(&self, slot: &Arc<Slot>, tokens: u64, window: Duration, id: String) -> Verdict {
        let members = self.members().max(1);
        let share = |limit: Option<u64>| limit.map(|l| (l / members).max(1));
        let (requests, token_limit) = (share(slot.requests), share(slot.tokens));
        let now = self.now_ms();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let own = &mut Self::own(&mut sent, slot, window).sends;
        forget_before(own, now, window);
        // The send that must leave the window first, if any, for this one to fit.
        let mut must_leave: Option<usize> = None;
        if let Some(limit) = requests
            && own.len() as u64 >= limit
        {
            must_leave = Some(own.len() - limit as usize);
        }
        if let Some(limit) = token_limit {
            let mut used: u64 = own.iter().map(|(_, t, _)| t).sum();
            let mut i = 0;
            while used + tokens > limit && i < own.len() {
                used -= own[i].1;
                i += 1;
            }
            if i > 0 {
                must_leave = Some(must_leave.map_or(i - 1, |m| m.max(i - 1)));
            }
        }
        match must_leave.and_then(|i| own.get(i)) {
            Some((at, _, _)) => {
                let wait = (at + window_ms).saturating_sub(now).max(1);
                Verdict::Wait(Duration::from_millis(wait))
            }
            None => {
                own.push_back((now, tokens, id));
                Verdict::Go(None)
            }
        }
    }

    /// Moves a held reservation to the answer's time and sets its tokens to what the answer
    /// used (`None`: the estimate stays).
    pub async fn settle(&self, held: Held, tokens: Option<u64>) {
        let keys = held.slot.window_keys();
        let tokens = tokens.map(|t| t.to_string()).unwrap_or_default();
        self.run(&self.settle, &keys, &[held.id, tokens]).await;
    }

    /// Takes a held reservation back: the provider did not count the attempt.
    pub async fn release(&self, held: Held) {
        let keys = held.slot.window_keys();
        self.run(&self.release, &keys, &[held.id]).await;
    }

    /// Blocks `slot` for every member for `wait` (wall-clock time), after a 429.
    pub async fn block(&self, slot: &Slot, wait: Duration) {
        let ms = wait.as_millis().max(1).to_string();
        self.run(&self.block, &slot.keys()[3..], &[ms]).await;
    }
}
