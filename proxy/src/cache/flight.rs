//! Single-flight: identical requests in flight at the same time cost one upstream call
//! (ARCHITECTURE.md, invariant 4). A flight is the answer as it arrives: where it came from,
//! its body or its stream events so far, and how it ended; subscribers read it as it arrives,
//! and a late joiner replays what came before. Who drives the call is the pipeline's business
//! (`pipeline::drive`); a flight only knows how to hand it over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::Notify;

use crate::cache::key::CacheKey;
use crate::error::ProxyError;

/// Where an answer came from.
#[derive(Debug, Clone)]
pub struct Head {
    /// Provider name.
    pub provider: String,
    /// Upstream model id.
    pub model: String,
    /// Key alias.
    pub key_alias: String,
    /// Attempts the router made.
    pub attempts: u32,
    /// Wall-clock time the call waited for headroom before its first attempt.
    pub waited: Duration,
    /// Each key or target the router tried or passed over, and why it was left
    /// (`groq#1:429`), the one that answered last (`cerebras#1:200`).
    pub trail: Vec<crate::trail::Step>,
    /// Streamed (events) or plain (one body).
    pub stream: bool,
    /// The provider's response headers.
    pub headers: HeaderMap,
    /// Set when the answer is another gateway's, read from the fleet's shared tier.
    pub from_fleet: Option<FromFleet>,
}

/// How an answer came from another gateway of the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromFleet {
    /// It was in the shared tier when this gateway asked.
    Stored,
    /// This gateway waited for another's upstream call to write it.
    Followed,
}

/// How a flight ended.
#[derive(Debug, Clone)]
pub enum End {
    /// The whole answer arrived.
    Complete,
    /// A stream broke off midway (why).
    Broken(String),
    /// No answer: every subscriber gets this error.
    Failed(ProxyError),
}

/// What a flight has so far.
#[derive(Debug, Default)]
pub struct FlightState {
    /// Set when the answer starts (shared: every subscriber renders from it).
    pub head: Option<Arc<Head>>,
    /// Stream event payloads, in order.
    pub events: Vec<String>,
    /// A plain answer's body.
    pub body: Option<Bytes>,
    /// `(prompt, completion)` tokens, when reported.
    pub usage: Option<(u64, u64)>,
    /// Set when the flight is over.
    pub end: Option<End>,
    /// When it failed: each key or target the router tried or passed over, and why it was
    /// left (an answer carries its own in its [`Head`]).
    pub trail: Vec<crate::trail::Step>,
}

/// Moves a flight's call to a task of its own (see [`Flight::set_hand_over`]).
pub type HandOver = Box<dyn FnOnce() + Send>;

/// One upstream call and its subscribers.
#[derive(Default)]
pub struct Flight {
    state: Mutex<FlightState>,
    changed: Notify,
    hand_over: Mutex<Option<HandOver>>,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("state", &*self.state())
            .finish_non_exhaustive()
    }
}

impl Flight {
    /// The state, locked.
    pub fn state(&self) -> MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets what [`Flight::hand_over`] runs: the leader sets it while its own response drives
    /// the call, so that a subscriber does not depend on that response being read.
    pub fn set_hand_over(&self, hand_over: HandOver) {
        *self.hand_over.lock().unwrap_or_else(|p| p.into_inner()) = Some(hand_over);
    }

    /// Moves the call to a task of its own, if the leader drives it (once; later calls do
    /// nothing). Every subscriber but the leader calls this when it joins.
    pub fn hand_over(&self) {
        let hand_over = self
            .hand_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(hand_over) = hand_over {
            hand_over();
        }
    }

    /// Changes the state and wakes every subscriber.
    pub fn update(&self, f: impl FnOnce(&mut FlightState)) {
        f(&mut self.state());
        self.changed.notify_waiters();
    }

    /// Waits until `ready` holds for the state, and returns what `ready` returned.
    pub async fn wait_for<T>(&self, mut ready: impl FnMut(&FlightState) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(out) = ready(&self.state()) {
                return out;
            }
            notified.await;
        }
    }
}

/// Flights in progress, by cache key.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<CacheKey, Arc<Flight>>>,
    landed: Notify,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flight for `key`, and whether the caller started it (and must make the call).
    pub fn join(&self, key: CacheKey) -> (Arc<Flight>, bool) {
        let mut map = self.lock();
        if let Some(f) = map.get(&key) {
            return (f.clone(), false);
        }
        let f = Arc::new(Flight::default());
        map.insert(key, f.clone());
        (f, true)
    }

    /// Ends `key`'s flight: later requests no longer join it.
    pub fn land(&self, key: &CacheKey, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
        }
        drop(map);
        self.landed.notify_waiters();
    }

    /// Waits until no flight is in progress (on shutdown: upstream calls finish and are stored).
    pub async fn wait_idle(&self) {
        loop {
            let landed = self.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if self.is_empty() {
                return;
            }
            landed.await;
        }
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_joiner_leads_and_the_rest_follow_until_it_lands() {
        let flights = Flights::default();
        let key = CacheKey([7; 32]);
        let (a, lead_a) = flights.join(key);
        let (b, lead_b) = flights.join(key);
        assert!(lead_a && !lead_b && Arc::ptr_eq(&a, &b));
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_for(|s| s.body.clone()).await })
        };
        a.update(|s| s.body = Some(Bytes::from_static(b"answer")));
        assert_eq!(waiter.await.expect("joined"), Bytes::from_static(b"answer"));
        let handed = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = handed.clone();
        a.set_hand_over(Box::new(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        b.hand_over();
        b.hand_over();
        assert_eq!(handed.load(std::sync::atomic::Ordering::SeqCst), 1, "once");
        flights.land(&key, &a);
        assert!(flights.join(key).1, "a new flight after landing");
    }
}
