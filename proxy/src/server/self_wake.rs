//! Keeps a connection's own wake-ups inside the connection's task.
//!
//! A request handler runs inside its connection's task and reads the request body, which that
//! same task feeds: when hyper hands it the body, the handler's waker fires while the task is
//! still running. Tokio treats such a wake as a yield: the task goes to the back of the queue
//! and an idle worker thread is woken to look for it, which costs a futex wake-up, a context
//! switch and often a move to the other core on every request. [`PollAgainOnSelfWake`] gives
//! the connection a waker of its own: a wake that arrives while the connection is being polled
//! just makes it poll again (a bounded number of times), and only a wake from outside (a
//! socket becoming ready, an upstream answering) reaches the scheduler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls in a row (within one poll by the scheduler) before a future that keeps waking itself
/// is handed back to the scheduler, so one busy connection cannot hold a worker.
pub const MAX_POLLS: u32 = 4;

/// What the future's own waker shares with its poller.
#[derive(Debug, Default)]
struct Shared {
    /// True while the inner future is being polled.
    polling: AtomicBool,
    /// Set by a wake; read after each poll.
    woken: AtomicBool,
    /// The task's own waker, for wakes that come while nobody polls.
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Both flags are sequentially consistent: either the poller sees `woken` after it
        // stops polling, or this sees `polling` false and wakes the task; no wake is lost.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// A future that answers its own wake-ups by polling again instead of through the scheduler.
#[derive(Debug)]
pub struct PollAgainOnSelfWake<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    waker: Waker,
}

impl<F: Future> PollAgainOnSelfWake<F> {
    /// Wraps `inner`.
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Shared::default());
        PollAgainOnSelfWake {
            inner: Box::pin(inner),
            waker: Waker::from(shared.clone()),
            shared,
        }
    }
}

impl<F: Future> Future for PollAgainOnSelfWake<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.shared.task.register(cx.waker());
        let mut own = Context::from_waker(&this.waker);
        for _ in 0..MAX_POLLS {
            this.shared.woken.store(false, Ordering::SeqCst);
            this.shared.polling.store(true, Ordering::SeqCst);
            let polled = this.inner.as_mut().poll(&mut own);
            this.shared.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() {
                return polled;
            }
            if !this.shared.woken.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        // Still waking itself: let the scheduler run others first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Counts the wakes that reach the task.
    struct CountingWaker(AtomicU32);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself `wakes` times (once per poll), then is ready with how often it was polled.
    struct SelfWaking {
        wakes: u32,
        polls: u32,
    }

    impl Future for SelfWaking {
        type Output = u32;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            self.polls += 1;
            if self.wakes == 0 {
                return Poll::Ready(self.polls);
            }
            self.wakes -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn task_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicU32::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn a_wake_during_the_poll_polls_again_without_the_scheduler() {
        let (counter, waker) = task_waker();
        let mut cx = Context::from_waker(&waker);
        let mut future = PollAgainOnSelfWake::new(SelfWaking { wakes: 2, polls: 0 });
        assert_eq!(Pin::new(&mut future).poll(&mut cx), Poll::Ready(3));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_goes_back_to_the_scheduler() {
        let (counter, waker) = task_waker();
        let mut cx = Context::from_waker(&waker);
        let mut future = PollAgainOnSelfWake::new(SelfWaking {
            wakes: 100,
            polls: 0,
        });
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(future.inner.polls, MAX_POLLS);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the task is woken once"
        );
    }

    #[test]
    fn a_wake_from_outside_reaches_the_task() {
        let (counter, waker) = task_waker();
        let mut cx = Context::from_waker(&waker);
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut future = PollAgainOnSelfWake::new(rx);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        std::thread::spawn(move || tx.send(7))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut future).poll(&mut cx), Poll::Ready(Ok(7)));
    }
}
