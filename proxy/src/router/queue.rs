//! The requests waiting for headroom, per route: how many, and since when. The router enters a
//! request on its first wait and a [`Queued`] guard takes it out whichever way it leaves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use spillway_clock::Instant;

/// Per route: the waiting requests by id, with the moment each arrived.
#[derive(Debug)]
pub struct Queue {
    waiting: Mutex<Vec<HashMap<u64, Instant>>>,
    next: AtomicU64,
}

/// A request's place in the queue; leaves it when dropped.
#[derive(Debug)]
pub struct Queued<'a> {
    queue: &'a Queue,
    route: usize,
    id: u64,
}

impl Queue {
    /// An empty queue for `routes` routes.
    pub fn new(routes: usize) -> Self {
        Queue {
            waiting: Mutex::new(vec![HashMap::new(); routes]),
            next: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HashMap<u64, Instant>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters a request of `route` that arrived at `since`.
    pub fn enter(&self, route: usize, since: Instant) -> Queued<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()[route].insert(id, since);
        Queued {
            queue: self,
            route,
            id,
        }
    }

    /// How many requests of `route` wait, and when the longest waiting one arrived.
    pub fn of(&self, route: usize) -> (u64, Option<Instant>) {
        let waiting = self.lock();
        let w = &waiting[route];
        (w.len() as u64, w.values().min().copied())
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.queue.lock()[self.route].remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_leaves_the_queue_whichever_way_it_goes() {
        let q = Queue::new(2);
        let a = q.enter(1, Instant::from_micros(5));
        let b = q.enter(1, Instant::from_micros(3));
        assert_eq!(q.of(1), (2, Some(Instant::from_micros(3))));
        assert_eq!(q.of(0), (0, None));
        drop(b);
        assert_eq!(q.of(1), (1, Some(Instant::from_micros(5))));
        drop(a);
        assert_eq!(q.of(1), (0, None));
    }
}
