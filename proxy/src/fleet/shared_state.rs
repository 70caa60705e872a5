//! What one gateway of a fleet finds about a key or a target, shared at once with the others
//! (ARCHITECTURE.md, invariant 12): the limits it learned from the provider, a key the
//! provider refused, a target whose circuit opened; and the daily windows, reserved with the
//! per-minute ones.
//!
//! Everything a send needs to know is read in the same round trip that reserves it: the
//! reserve script looks at the key's marks before its windows, so a gateway's finding, written
//! before its own request goes on, steers the next reservation on any gateway. A publish would
//! save no round trip (every send makes this one anyway), but a gateway that is reconnecting
//! or starting misses it; a mark with its own expiry is there for whoever asks next.
//!
//! Keys, beside a slot's per-minute ones (`spillway:{NAME|ALIAS|MODEL}`, hash-tagged as the
//! windows are): `:l` (a hash of limits learned from the provider, by `Kind::short` name, kept
//! a day), `:x` (set while the provider refuses the key: what it said, no more), `:c` (set
//! while the target's circuit is open), `:dr`, `:dt`, `:ds` (the daily window, as the minute's
//! `:r`, `:t`, `:s`). A refused key is marked in each of its models' slots, an open circuit in
//! each of its keys' slots, one pipelined round trip either way. No key value is written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::{Fleet, Held, Slot, Verdict};
use crate::limits::kind::Kind;

/// Reserves one request on a key's minute and day windows, or says why it may not go now.
/// Answers `{verdict, ms or windows, why, learned}`: verdict 0 goes (held in that many
/// windows), 1 waits `ms` (a window's requests are all taken, or a 429 blocks the key: any
/// request waits), 4 waits `ms` (a window has no room for this request's tokens), 2 the key
/// is refused for `ms` (`why`: what the provider said), 3 the target's circuit is open for
/// `ms`; `learned` is the key's learned-limits hash, flat; last, on 0, what the minute window
/// holds with this request (requests, tokens: the fleet's use a degraded gateway counts on). A window's limit is the smaller of
/// the configured one (ARGV, 0: none) and the learned one. The minute window keeps every send,
/// limited or not, so that a limit learned later counts what the fleet sent before; the day
/// window is kept only while a daily limit is known. How long until a request's tokens fit is
/// looked for among the 2,000 oldest reservations at most, so that one call keeps Redis busy
/// for a bounded time however full a day's window is: past them, the answer is when the
/// 2,000th leaves, and the request asks again then.
/// KEYS: block, refused, open, learned, then per window (minute, day): reservations, tokens,
/// token sum. ARGV: id, tokens, then per window: length ms, requests, tokens.
pub(super) const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local learned = redis.call('HGETALL', KEYS[4])
local refused = redis.call('PTTL', KEYS[2])
if refused > 0 then return {2, refused, redis.call('GET', KEYS[2]) or '', learned, 0, 0} end
local open = redis.call('PTTL', KEYS[3])
if open > 0 then return {3, open, '', learned, 0, 0} end
local blocked = redis.call('PTTL', KEYS[1])
if blocked > 0 then return {1, blocked, '', learned, 0, 0} end
local known = {}
for i = 1, #learned, 2 do known[learned[i]] = tonumber(learned[i + 1]) end
local function limit(given, name)
  local l = known[name]
  if l and l > 0 and (given == 0 or l < given) then return l end
  return given
end
local tokens = tonumber(ARGV[2])
local names = {{'rpm', 'tpm'}, {'rpd', 'tpd'}}
local kept, wait, wait_tokens = {}, 0, 0
for w = 1, 2 do
  local r, tk, s = KEYS[3 * w + 2], KEYS[3 * w + 3], KEYS[3 * w + 4]
  local window = tonumber(ARGV[3 * w])
  local rl = limit(tonumber(ARGV[3 * w + 1]), names[w][1])
  local tl = limit(tonumber(ARGV[3 * w + 2]), names[w][2])
  if w == 1 or rl > 0 or tl > 0 then
    local gone = redis.call('ZRANGEBYSCORE', r, '-inf', '(' .. (now - window))
    for _, id in ipairs(gone) do
      local used = tonumber(redis.call('HGET', tk, id) or '0')
      redis.call('HDEL', tk, id)
      redis.call('ZREM', r, id)
      redis.call('DECRBY', s, used)
    end
    if rl > 0 and redis.call('ZCARD', r) + 1 > rl then
      local first = redis.call('ZRANGE', r, 0, 0, 'WITHSCORES')
      wait = math.max(wait, 1, tonumber(first[2]) + window - now)
    end
    local sum = tonumber(redis.call('GET', s) or '0')
    if tl > 0 and sum + tokens > tl then
      local freed, at, seen, last = 0, nil, 0, nil
      while not at and seen < 2000 do
        local batch = redis.call('ZRANGE', r, seen, seen + 99, 'WITHSCORES')
        if #batch == 0 then break end
        for i = 1, #batch, 2 do
          freed = freed + tonumber(redis.call('HGET', tk, batch[i]) or '0')
          if sum - freed + tokens <= tl then
            at = math.max(1, tonumber(batch[i + 1]) + window - now)
            break
          end
        end
        seen, last = seen + #batch / 2, tonumber(batch[#batch])
      end
      if not at and seen >= 2000 then at = math.max(1, last + window - now) end
      wait_tokens = math.max(wait_tokens, at or window)
    end
    kept[#kept + 1] = w
  end
end
if wait > 0 then return {1, wait, '', learned, 0, 0} end
if wait_tokens > 0 then return {4, wait_tokens, '', learned, 0, 0} end
for _, w in ipairs(kept) do
  local r, tk, s = KEYS[3 * w + 2], KEYS[3 * w + 3], KEYS[3 * w + 4]
  redis.call('ZADD', r, now, ARGV[1])
  redis.call('HSET', tk, ARGV[1], tokens)
  redis.call('INCRBY', s, tokens)
  for _, k in ipairs({r, tk, s}) do redis.call('PEXPIRE', k, 2 * tonumber(ARGV[3 * w])) end
end
return {0, #kept, '', learned, redis.call('ZCARD', KEYS[5]), tonumber(redis.call('GET', KEYS[7]) or '0')}
";

/// Writes limits learned from the provider into a key's hash, which lasts `ttl` from then.
/// KEYS: learned. ARGV: ttl ms, then (name, limit) pairs.
const LEARN: &str = r"
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
";

/// How long a learned limit is kept in Redis after it was last written (wall-clock time).
const LEARNED_LASTS: Duration = Duration::from_secs(86_400);

/// The longest provider message kept with a refused key's mark.
const MAX_WHY: usize = 100;

/// The window lengths a reservation is made over (wall-clock time).
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// A minute of the gateway's clock.
    pub minute: Duration,
    /// A day of the gateway's clock.
    pub day: Duration,
}

/// The limits learned from the provider as Redis last gave them, per slot prefix: what a
/// gateway tells its own ledger when they change, and writes when its own differ.
#[derive(Debug)]
pub(super) struct Learned {
    seen: std::sync::Mutex<HashMap<String, Vec<(Kind, u64)>>>,
    learn: Script,
}

impl Learned {
    /// Nothing seen yet.
    pub(super) fn new() -> Self {
        Learned {
            seen: std::sync::Mutex::default(),
            learn: Script::new(LEARN),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Kind, u64)>>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps what Redis holds for `prefix` now; returns the limits in it this gateway had not
    /// seen there before.
    fn replace(&self, prefix: &str, now: Vec<(Kind, u64)>) -> Vec<(Kind, u64)> {
        let mut seen = self.seen();
        let Some(before) = seen.get_mut(prefix) else {
            seen.insert(prefix.to_string(), now.clone());
            return now;
        };
        let news = now
            .iter()
            .filter(|pair| !before.contains(pair))
            .copied()
            .collect();
        *before = now;
        news
    }
}

/// The kind a learned-limits field names.
fn kind_named(name: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.short() == name)
}

/// A flat `[name, limit, ...]` list as (kind, limit) pairs; unknown names and values that
/// are not positive numbers are left out.
fn pairs(flat: &[String]) -> Vec<(Kind, u64)> {
    flat.chunks_exact(2)
        .filter_map(|p| Some((kind_named(&p[0])?, p[1].parse().ok().filter(|&n| n > 0)?)))
        .collect()
}

/// `d` in whole milliseconds, at least one (as Redis's `PX` takes it).
fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

impl Slot {
    fn mark(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix)
    }

    /// The reserve script's keys: block, refused, open, learned, then the minute and the day
    /// windows' reservations, tokens and token sums.
    fn reserve_keys(&self) -> [String; 10] {
        ["b", "x", "c", "l", "r", "t", "s", "dr", "dt", "ds"].map(|k| self.mark(k))
    }

    /// Both windows' keys, as settling and releasing take them: reservations, tokens, token
    /// sum, then the same for the day.
    pub(super) fn window_keys(&self) -> [String; 6] {
        ["r", "t", "s", "dr", "dt", "ds"].map(|k| self.mark(k))
    }
}

impl Fleet {
    /// One reserve script call for `id` on `slot` (`None`: Redis did not answer; the gateway
    /// is degraded): the verdict, and the learned limits in Redis this gateway had not seen.
    pub(super) async fn reserve_shared(
        &self,
        slot: &Arc<Slot>,
        id: &str,
        tokens: u64,
        windows: Windows,
    ) -> Option<(Verdict, Vec<(Kind, u64)>, Option<(u64, u64)>)> {
        if self.is_degraded() {
            return None;
        }
        let keys = slot.reserve_keys();
        let none = |v: Option<u64>| v.unwrap_or(0).to_string();
        let args = [
            id.to_string(),
            tokens.to_string(),
            ms(windows.minute),
            none(slot.requests),
            none(slot.tokens),
            ms(windows.day),
            none(slot.requests_per_day),
            none(slot.tokens_per_day),
        ];
        let call = async {
            let mut conn = self.connection().await?;
            let mut invocation = self.reserve.prepare_invoke();
            for k in &keys {
                invocation.key(k);
            }
            for a in &args {
                invocation.arg(a);
            }
            invocation
                .invoke_async::<(i64, i64, String, Vec<String>, i64, i64)>(&mut conn)
                .await
        };
        let (verdict, n, why, learned, requests, used) = self.within_timeout(call).await?;
        let news = self.learned.replace(&slot.prefix, pairs(&learned));
        let wait = Duration::from_millis(n.unsigned_abs().max(1));
        let seen = (verdict == 0).then(|| (requests.unsigned_abs(), used.unsigned_abs()));
        let verdict = match verdict {
            0 if n > 0 => Verdict::Go(Some(Held {
                slot: slot.clone(),
                id: id.to_string(),
            })),
            0 => Verdict::Go(None),
            2 => Verdict::KeyRefused { wait, why },
            3 => Verdict::CircuitOpen(wait),
            4 => Verdict::RequestWaits(wait),
            _ => Verdict::Wait(wait),
        };
        Some((verdict, news, seen))
    }

    /// Of the limits this gateway learned from the provider for `slot`'s key and model, those
    /// Redis did not hold when it last said (and this gateway has not written since): what
    /// [`Self::share_learned`] is to write. Answers without asking Redis.
    pub fn fresh_learned(&self, slot: &Slot, learned: &[(Kind, u64)]) -> Vec<(Kind, u64)> {
        let mut seen = self.learned.seen();
        let known = seen.entry(slot.prefix.clone()).or_default();
        let fresh: Vec<_> = learned
            .iter()
            .filter(|&&(kind, limit)| limit > 0 && !known.contains(&(kind, limit)))
            .copied()
            .collect();
        for &(kind, limit) in &fresh {
            known.retain(|(k, _)| *k != kind);
            known.push((kind, limit));
        }
        fresh
    }

    /// Writes limits learned from the provider for `slot`'s key and model (from
    /// [`Self::fresh_learned`]) where every member's next reservation reads them.
    pub async fn share_learned(&self, slot: &Slot, fresh: &[(Kind, u64)]) {
        if fresh.is_empty() {
            return;
        }
        let mut args = vec![ms(LEARNED_LASTS)];
        for (kind, limit) in fresh {
            args.extend([kind.short().to_string(), limit.to_string()]);
        }
        self.run(&self.learned.learn, &[slot.mark("l")], &args)
            .await;
    }

    /// Marks a key the provider refused in each of `slots` (its models) for `wait`, with what
    /// the provider said (status and code, never the key).
    pub async fn refuse_key(&self, slots: &[Arc<Slot>], why: &str, wait: Duration) {
        let why: String = why.chars().take(MAX_WHY).collect();
        self.mark_all(slots, "x", &why, wait).await;
    }

    /// Marks a target's circuit open in each of `slots` (its keys) for `wait`.
    pub async fn open_circuit(&self, slots: &[Arc<Slot>], wait: Duration) {
        self.mark_all(slots, "c", "1", wait).await;
    }

    /// Sets the mark `what` in each of `slots` for `wait`, in one pipelined round trip.
    async fn mark_all(&self, slots: &[Arc<Slot>], what: &str, value: &str, wait: Duration) {
        if self.is_degraded() || slots.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for slot in slots {
            pipe.cmd("SET")
                .arg(slot.mark(what))
                .arg(value)
                .arg("PX")
                .arg(ms(wait))
                .ignore();
        }
        let call = async {
            let mut conn = self.connection().await?;
            pipe.query_async::<()>(&mut conn).await
        };
        self.within_timeout(call).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_fields_are_read_by_name_and_bad_ones_left_out() {
        let flat: Vec<String> = ["tpm", "6000", "rpd", "14400", "zzz", "1", "rpm", "0", "tpd"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            pairs(&flat),
            vec![(Kind::TokensPerMinute, 6000), (Kind::RequestsPerDay, 14400)]
        );
    }

    #[test]
    fn only_limits_not_seen_before_are_news() {
        let learned = Learned::new();
        let tpm = (Kind::TokensPerMinute, 6000);
        assert_eq!(learned.replace("p", vec![tpm]), vec![tpm]);
        assert!(learned.replace("p", vec![tpm]).is_empty());
        let rpd = (Kind::RequestsPerDay, 1000);
        assert_eq!(learned.replace("p", vec![tpm, rpd]), vec![rpd]);
        assert_eq!(learned.replace("q", vec![tpm]), vec![tpm], "per slot");
    }
}
