//! Single-flight: identical requests in flight at the same time cost one upstream call
//! (DESIGN.md invariant 4). The call runs in its own task, not tied to any client's connection:
//! if the first client goes away, the others still get the answer, and it is still stored.
//! Subscribers read the answer as it arrives — a late joiner replays what came before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::Notify;

use crate::cache::key::CacheKey;

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
    /// Streamed (events) or plain (one body).
    pub stream: bool,
    /// The provider's response headers.
    pub headers: HeaderMap,
}

/// A complete error response, shareable with every subscriber.
#[derive(Debug, Clone)]
pub struct ErrorReply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// How a flight ended.
#[derive(Debug, Clone)]
pub enum End {
    /// The whole answer arrived.
    Complete,
    /// A stream broke off midway (why).
    Broken(String),
    /// No answer: every subscriber gets this response.
    Failed(ErrorReply),
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
}

/// One upstream call and its subscribers.
#[derive(Debug, Default)]
pub struct Flight {
    state: Mutex<FlightState>,
    changed: Notify,
}

impl Flight {
    /// The state, locked.
    pub fn state(&self) -> MutexGuard<'_, FlightState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        flights.land(&key, &a);
        assert!(flights.join(key).1, "a new flight after landing");
    }
}
