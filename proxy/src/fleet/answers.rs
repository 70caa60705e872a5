//! Answers shared by a fleet: a second cache tier behind each gateway's own, and one upstream
//! call for identical requests in flight on different gateways (ARCHITECTURE.md, invariant 13).
//!
//! The first gateway to miss an answer takes a lease on its cache key and calls upstream; the
//! others that miss it meanwhile follow: they wait, told by Redis's publish/subscribe (not by
//! polling), and read the answer when the leader has written it. A leader that dies lets its
//! lease lapse, and a follower then takes the lease itself; one whose answer is not shared
//! (too large, not complete, failed) says so, and each follower calls upstream on its own.
//!
//! Keys (hash-tagged by the cache key, so an answer and its lease share a slot on Redis
//! Cluster): `spillway:NAME:a:{HEX}` (the answer's frame: the cache key's 32 bytes, then the
//! entry's record, checked on read like a local one), `spillway:NAME:l:{HEX}` (the lease: the
//! leader's id). Channel `spillway:NAME:d:HEX`: `1` when the answer is in Redis, `0` when not.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::oneshot;

use super::Fleet;

/// Returns the answer (`{1, frame}`; not asked when refreshing), or takes the lease
/// (`{0, ''}`), or says another gateway holds it (`{2, ms left}`).
/// KEYS: answer, lease. ARGV: leader id, lease ms, `1` to refresh.
pub(super) const LOOKUP_OR_LEAD: &str = r"
if ARGV[3] ~= '1' then
  local a = redis.call('GET', KEYS[1])
  if a then return {1, a} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, ''} end
return {2, tostring(redis.call('PTTL', KEYS[2]))}
";

/// Writes the answer (unless empty), gives the lease back if it is still this leader's, and
/// tells the followers. KEYS: answer, lease. ARGV: leader id, frame, ttl ms (0: none), channel.
pub(super) const SHARE: &str = r"
if ARGV[2] ~= '' then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[1], ARGV[2])
  end
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[2] ~= '' and '1' or '0')
return 0
";

/// Extends the lease while it is still this leader's. KEYS: lease. ARGV: leader id, lease ms.
pub(super) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// How long a lease lasts unless renewed (wall-clock time): a leader that dies holds its
/// followers back no longer than this.
const LEASE: Duration = Duration::from_secs(3);

/// Longest a follower waits for another gateway's answer, however often the lease is renewed
/// (wall-clock time); then it calls upstream itself.
const MAX_FOLLOW: Duration = Duration::from_secs(300);

/// What the fleet knows of an answer a gateway missed in its own cache.
#[derive(Debug)]
pub enum Shared {
    /// Another gateway's answer: the frame, to be checked by the cache; `waited` when this
    /// gateway waited for another's call to write it.
    Found {
        /// The cache key's bytes, then the entry's record.
        frame: Vec<u8>,
        /// Whether it was awaited.
        waited: bool,
    },
    /// This gateway calls upstream for the fleet; share the answer through the lease.
    Lead(Lease),
    /// Another gateway's call ended without an answer the fleet can share, or Redis is out of
    /// reach: this gateway calls upstream on its own.
    Alone,
}

/// A gateway's lease on a cache key while it calls upstream for the fleet. It is renewed while
/// held; dropped without [`Lease::share`], it tells the followers to call on their own.
#[derive(Debug)]
pub struct Lease {
    fleet: Arc<Fleet>,
    /// Where the lease ends from (it may be dropped on the cache writer's thread).
    runtime: tokio::runtime::Handle,
    hex: String,
    id: String,
    renew: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl Lease {
    /// Soon (from any thread): writes `frame` to the shared tier with `ttl` (unless it is
    /// larger than `shared_max_entry_size`: then the followers call on their own), gives the
    /// lease back and tells the followers. The TTL is the cache's, in wall-clock time; an
    /// entry is checked for its age on read as well, on the reader's clock.
    pub fn share_later(mut self, frame: Vec<u8>, ttl: Option<Duration>) {
        self.end(Some(frame), ttl);
    }

    fn end(&mut self, frame: Option<Vec<u8>>, ttl: Option<Duration>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.renew.abort();
        let frame = frame.filter(|f| f.len() as u64 <= self.fleet.shared_max_entry_size);
        let (fleet, hex, id) = (self.fleet.clone(), self.hex.clone(), self.id.clone());
        self.runtime
            .spawn(async move { fleet.end_lease(&hex, &id, frame, ttl).await });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.end(None, None);
    }
}

/// The gateway's one publish/subscribe connection and who waits on which channel.
#[derive(Default)]
pub(super) struct Followers {
    sink: Option<PubSubSink>,
    waiting: HashMap<String, Vec<oneshot::Sender<bool>>>,
}

impl Fleet {
    /// Whether this fleet shares answers (`[fleet] shared_cache`).
    pub fn shares_answers(&self) -> bool {
        self.shared_cache
    }

    fn answer_keys(&self, hex: &str) -> [String; 2] {
        [
            format!("spillway:{}:a:{{{hex}}}", self.name),
            format!("spillway:{}:l:{{{hex}}}", self.name),
        ]
    }

    fn channel(&self, hex: &str) -> String {
        format!("spillway:{}:d:{hex}", self.name)
    }

    /// Another gateway's answer under the cache key `hex`, if the shared tier has it.
    pub async fn lookup(&self, hex: &str) -> Option<Vec<u8>> {
        if !self.shared_cache || self.is_degraded() {
            return None;
        }
        let key = self.answer_keys(hex)[0].clone();
        let get = async {
            let mut conn = self.connection().await?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
        };
        self.within_timeout(get).await.flatten()
    }

    /// For a request this gateway missed in its own cache: another gateway's answer, or the
    /// lease to call upstream for the fleet, or (while another gateway holds the lease) the
    /// answer once it has been written, waiting no longer than the leader lives.
    pub async fn lookup_or_lead(self: &Arc<Self>, hex: &str, refresh: bool) -> Shared {
        if !self.shared_cache || !self.rejoin().await {
            return Shared::Alone;
        }
        let id = format!(
            "{}:{}",
            self.instance,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let deadline = self.wall.now() + MAX_FOLLOW;
        let mut waiting: Option<oneshot::Receiver<bool>> = None;
        // Once another gateway's call was awaited, its answer is as fresh as a refresh's.
        let mut followed = false;
        while self.wall.now() < deadline {
            let left = match self.try_lead(hex, &id, refresh && !followed).await {
                Some(Asked::Found(frame)) => {
                    return Shared::Found {
                        frame,
                        waited: followed,
                    };
                }
                Some(Asked::Lead) => return Shared::Lead(self.lease(hex, id)),
                Some(Asked::Held(left)) => left,
                None => return Shared::Alone,
            };
            match waiting.take() {
                // Subscribed before asking again, so the leader's word cannot be missed.
                None => match self.follow(hex).await {
                    Some(rx) => {
                        waiting = Some(rx);
                        followed = true;
                    }
                    None => return Shared::Alone,
                },
                Some(mut rx) => {
                    // The lease's time left, and a little more for the leader's last word.
                    let wait = left + Duration::from_millis(50);
                    match self.wall.timeout(wait, &mut rx).await {
                        Some(Ok(false)) => return Shared::Alone,
                        // Written: the next ask finds it.
                        Some(Ok(true)) => {}
                        // The lease lapsed, was renewed, or the subscription was lost.
                        Some(Err(_)) => {}
                        None => waiting = Some(rx),
                    }
                }
            }
        }
        Shared::Alone
    }

    /// One ask: the answer, the lease, or how long the other gateway's lease has left.
    async fn try_lead(&self, hex: &str, id: &str, refresh: bool) -> Option<Asked> {
        let keys = self.answer_keys(hex);
        let lease_ms = LEASE.as_millis().to_string();
        let ask = async {
            let mut conn = self.connection().await?;
            self.lead_script
                .key(&keys[0])
                .key(&keys[1])
                .arg(id)
                .arg(&lease_ms)
                .arg(if refresh { "1" } else { "0" })
                .invoke_async::<(i64, Vec<u8>)>(&mut conn)
                .await
        };
        Some(match self.within_timeout(ask).await? {
            (1, frame) => Asked::Found(frame),
            (0, _) => Asked::Lead,
            (_, left) => {
                let ms = std::str::from_utf8(&left)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0);
                Asked::Held(Duration::from_millis(ms.clamp(1, 60_000).unsigned_abs()))
            }
        })
    }

    /// A lease just taken, renewed every third of its length until it ends.
    fn lease(self: &Arc<Self>, hex: &str, id: String) -> Lease {
        let fleet = Arc::downgrade(self);
        let keys = [self.answer_keys(hex)[1].clone()];
        let args = [id.clone(), LEASE.as_millis().to_string()];
        let wall = self.wall.clone();
        let renew = tokio::spawn(async move {
            loop {
                wall.sleep(LEASE / 3).await;
                let Some(fleet) = fleet.upgrade() else { return };
                if fleet.run(&fleet.renew_script, &keys, &args).await != Some(1) {
                    return;
                }
            }
        });
        Lease {
            fleet: self.clone(),
            runtime: tokio::runtime::Handle::current(),
            hex: hex.to_string(),
            id,
            renew,
            ended: false,
        }
    }

    /// Writes the answer (if any), gives the lease back and publishes the leader's word.
    async fn end_lease(&self, hex: &str, id: &str, frame: Option<Vec<u8>>, ttl: Option<Duration>) {
        let keys = self.answer_keys(hex);
        let ttl_ms = ttl.map_or(0, |t| t.as_millis().max(1));
        let end = async {
            let mut conn = self.connection().await?;
            self.share_script
                .key(&keys[0])
                .key(&keys[1])
                .arg(id)
                .arg(frame.as_deref().unwrap_or_default())
                .arg(ttl_ms.to_string())
                .arg(self.channel(hex))
                .invoke_async::<i64>(&mut conn)
                .await
        };
        self.within_timeout(end).await;
    }

    /// Subscribes to the leader's word on `hex`; `None` when Redis cannot be subscribed to.
    async fn follow(&self, hex: &str) -> Option<oneshot::Receiver<bool>> {
        let channel = self.channel(hex);
        let (tx, rx) = oneshot::channel();
        let mut sink = {
            let mut followers = self.followers.lock().await;
            let first = !followers.waiting.contains_key(&channel);
            followers
                .waiting
                .entry(channel.clone())
                .or_default()
                .push(tx);
            if !first {
                return Some(rx);
            }
            match &followers.sink {
                Some(sink) => sink.clone(),
                None => {
                    let sink = self.subscriber().await?;
                    followers.sink = Some(sink.clone());
                    sink
                }
            }
        };
        match self
            .wall
            .timeout(self.timeout, sink.subscribe(&channel))
            .await
        {
            Some(Ok(())) => Some(rx),
            _ => {
                let mut followers = self.followers.lock().await;
                followers.waiting.remove(&channel);
                followers.sink = None;
                None
            }
        }
    }

    /// A new publish/subscribe connection whose messages wake the gateway's followers.
    async fn subscriber(&self) -> Option<PubSubSink> {
        let connect = self.client.get_async_pubsub();
        let (sink, mut messages) = match self.wall.timeout(self.timeout, connect).await {
            Some(Ok(pubsub)) => pubsub.split(),
            _ => return None,
        };
        let followers = Arc::downgrade(&self.followers);
        let mut unsubscribe = sink.clone();
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let Some(followers) = followers.upgrade() else {
                    return;
                };
                let channel = message.get_channel_name().to_string();
                let written = message.get_payload_bytes() == b"1";
                let woken = followers.lock().await.waiting.remove(&channel);
                for tx in woken.into_iter().flatten() {
                    let _ = tx.send(written);
                }
                let _ = unsubscribe.unsubscribe(&channel).await;
            }
            // The connection is gone: its followers ask again, on a new one.
            if let Some(followers) = followers.upgrade() {
                let mut followers = followers.lock().await;
                followers.sink = None;
                followers.waiting.clear();
            }
        });
        Some(sink)
    }
}

/// What one ask of the shared tier answered.
enum Asked {
    Found(Vec<u8>),
    Lead,
    Held(Duration),
}
