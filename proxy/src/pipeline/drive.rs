//! Who drives a flight's upstream call. The leader drives it in place, in its own task, until
//! the call finishes or is detached; then it goes on in a task of its own. A plain answer's
//! leader awaits it in its handler and detaches it only if its client goes away; a stream's
//! leader drives it from its response (while the head is awaited and each time the body is
//! read), and detaches it also when another client joins (ARCHITECTURE.md, invariant 4).
//!
//! Driving in place spares a hand-over between tasks, and between threads, per request: a task
//! of its own would be run by the other worker thread and wake this one for every event. A
//! private call (a request the cache leaves out) is never detached: nobody else waits for it,
//! so it ends with its client.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::Stream;

use crate::cache::flight::Flight;

/// An upstream call for a flight.
type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A flight's call, driven by its leader.
pub struct Driver {
    slot: Arc<Mutex<Option<Call>>>,
    /// Whether dropping the driver moves the call to a task of its own (a shared flight) or
    /// ends it (a private one).
    shared: bool,
}

impl Driver {
    fn with(call: impl Future<Output = ()> + Send + 'static, shared: bool) -> Self {
        Driver {
            slot: Arc::new(Mutex::new(Some(Box::pin(call)))),
            shared,
        }
    }

    /// A shared flight's call, driven by its leader until it finishes; dropping the driver
    /// (the leader's client went away) moves it to a task of its own.
    pub fn shared(call: impl Future<Output = ()> + Send + 'static) -> Self {
        Driver::with(call, true)
    }

    /// A shared flight's call, driven by its leader while it reads; a client that joins
    /// `flight` moves it to a task of its own ([`Flight::hand_over`]), and so does dropping
    /// the driver.
    pub fn lead(flight: &Flight, call: impl Future<Output = ()> + Send + 'static) -> Self {
        let driver = Driver::shared(call);
        let slot = driver.slot.clone();
        flight.set_hand_over(Box::new(move || detach(&slot)));
        driver
    }

    /// A private flight's call: dropping the driver ends it.
    pub fn private(call: impl Future<Output = ()> + Send + 'static) -> Self {
        Driver::with(call, false)
    }

    fn slot(&self) -> MutexGuard<'_, Option<Call>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls the call, unless it has finished or moved to a task of its own; true when it is no
    /// longer here (finished or moved).
    pub fn poll_call(&self, cx: &mut Context<'_>) -> bool {
        let mut slot = self.slot();
        if let Some(call) = slot.as_mut()
            && call.as_mut().poll(cx).is_ready()
        {
            *slot = None;
        }
        slot.is_none()
    }

    /// Drives the call until it finishes.
    pub async fn run(self) {
        std::future::poll_fn(|cx| {
            if self.poll_call(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Drives the call while `main` runs; returns what `main` returns (the call may go on).
    pub async fn beside<T>(&self, main: impl Future<Output = T>) -> T {
        let mut main = std::pin::pin!(main);
        std::future::poll_fn(|cx| {
            let _ = self.poll_call(cx);
            main.as_mut().poll(cx)
        })
        .await
    }
}

/// Moves the call, if it is still in `slot`, to a task of its own.
fn detach(slot: &Mutex<Option<Call>>) {
    let call = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(call) = call
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        runtime.spawn(call);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.shared {
            detach(&self.slot);
        }
    }
}

/// A stream that drives its flight's call each time it is read.
pub struct Driven<S> {
    /// The call.
    pub call: Driver,
    /// The stream.
    pub stream: S,
}

impl<S: Stream + Unpin> Stream for Driven<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        let _ = this.call.poll_call(cx);
        Pin::new(&mut this.stream).poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::flight::End;

    /// A call that ends its flight once `go` fires.
    async fn call(flight: Arc<Flight>, go: tokio::sync::oneshot::Receiver<()>) {
        let _ = go.await;
        flight.update(|s| s.end = Some(End::Complete));
    }

    async fn ended(flight: &Flight) -> bool {
        tokio::time::timeout(Duration::from_secs(2), flight.wait_for(|s| s.end.clone()))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_joining_client_moves_the_call_off_a_leader_that_stopped_reading() {
        let flight = Arc::new(Flight::default());
        let (go, wait) = tokio::sync::oneshot::channel();
        let leader = Driver::lead(&flight, call(flight.clone(), wait));
        // The leader drives the call once, then its client stops reading: no more polls.
        std::future::poll_fn(|cx| {
            let _ = leader.poll_call(cx);
            Poll::Ready(())
        })
        .await;
        flight.hand_over();
        go.send(()).unwrap();
        assert!(ended(&flight).await, "the call went on without the leader");
        drop(leader);
    }

    #[tokio::test]
    async fn without_a_joiner_the_call_moves_on_when_the_leader_is_dropped() {
        let flight = Arc::new(Flight::default());
        let (go, wait) = tokio::sync::oneshot::channel();
        let leader = Driver::lead(&flight, call(flight.clone(), wait));
        go.send(()).unwrap();
        assert!(!ended(&flight).await, "nobody drives the call yet");
        drop(leader);
        assert!(ended(&flight).await);
    }

    #[tokio::test]
    async fn a_private_call_ends_with_its_driver() {
        let flight = Arc::new(Flight::default());
        let (go, wait) = tokio::sync::oneshot::channel();
        let driver = Driver::private(call(flight.clone(), wait));
        drop(driver);
        let _ = go.send(());
        assert!(!ended(&flight).await, "nobody waits for a private call");
    }
}
