//! The cache's one writer: a thread that encodes and stores answers in order, behind a bounded
//! queue. Store writes are synchronous file I/O, so they stay off the async workers; and
//! when answers arrive faster than they can be stored, writes are dropped (and counted) instead
//! of queueing without bound — a cache may forget, it must not run out of memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cache::entry::{self, Stored};
use crate::cache::key::CacheKey;
use crate::cache::store::CacheStore;

/// Writes that may wait for the writer.
pub const QUEUE: usize = 4096;

/// What to do once an answer is stored (or could not be).
pub type AfterStore = Box<dyn FnOnce() + Send>;

/// Builds the entry to store, on the writer thread (`None`: nothing to store). Building it
/// there keeps the copying and checking out of the request's way.
pub type MakeEntry = Box<dyn FnOnce() -> Option<Stored> + Send>;

enum Job {
    Put {
        key: CacheKey,
        entry: MakeEntry,
        request: Vec<u8>,
        after: AfterStore,
    },
    Flush(Ack),
}

/// How a flush says it is done: to async or to blocking code.
enum Ack {
    Async(oneshot::Sender<()>),
    Blocking(SyncSender<()>),
}

/// The handle to the writer thread.
#[derive(Debug)]
pub struct Writer {
    tx: Option<SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Put { key, .. } => write!(f, "Put({key})"),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Puts between two upkeep passes.
const MAINTAIN_EVERY: u64 = 2048;

/// How long the writer rests after emptying its queue before it looks again. While it rests,
/// senders queue without waking it (no system call per answer), so under load the writer takes
/// answers in batches. Each rest ends in a timer wake-up that takes a core from whatever runs
/// on it; at 1 ms, at concurrency 1 that was about one wake-up per two requests. An answer
/// waiting here is still served to identical requests from its flight.
const REST: Duration = Duration::from_millis(4);

/// Empty rests in a row after which the writer blocks until the next answer (about 50 ms
/// without traffic): an idle proxy does not poll, a busy one is never woken per answer.
const RESTS_BEFORE_BLOCKING: u32 = 12;

fn run(rx: Receiver<Job>, store: Arc<dyn CacheStore>, max_size: Option<u64>) {
    let mut puts: u64 = 0;
    let mut empty_rests = 0;
    loop {
        let job = if empty_rests >= RESTS_BEFORE_BLOCKING {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            match rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        let Some(job) = job else {
            empty_rests += 1;
            // A pause in real time between batches, not a wait in the proxy's (possibly
            // simulated) time.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(REST);
            continue;
        };
        empty_rests = 0;
        handle(job, &*store, max_size, &mut puts);
        loop {
            match rx.try_recv() {
                Ok(job) => handle(job, &*store, max_size, &mut puts),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

fn handle(job: Job, store: &dyn CacheStore, max_size: Option<u64>, puts: &mut u64) {
    match job {
        Job::Put {
            key,
            entry,
            request,
            after,
        } => {
            *puts += 1;
            if puts.is_multiple_of(MAINTAIN_EVERY)
                && let Err(e) = store.maintain()
            {
                tracing::warn!(error = %e, "cache upkeep failed");
            }
            if let Some(stored) = entry() {
                let record = entry::encode(&stored, &request);
                if let Err(e) = store.put(&key, stored.created, &record) {
                    tracing::warn!(key = %key, error = %e, "could not store a cache entry");
                } else if let Some(max) = max_size
                    && store.bytes() > max
                {
                    match store.shrink_to(max - max / 10) {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::debug!(
                                evicted = n,
                                "cache over max_size: oldest entries evicted"
                            )
                        }
                        Err(e) => tracing::warn!(error = %e, "cache eviction failed"),
                    }
                }
            }
            after();
        }
        Job::Flush(done) => {
            if let Err(e) = store.flush() {
                tracing::warn!(error = %e, "cache flush failed");
            }
            match done {
                Ack::Async(tx) => {
                    let _ = tx.send(());
                }
                Ack::Blocking(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn spawn(store: Arc<dyn CacheStore>, max_size: Option<u64>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("spillway-cache-writer".into())
            .spawn(move || run(rx, store, max_size))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues an answer, built by `entry` on the writer thread; the writer calls `after` once
    /// it is stored (or failed to be, or there was nothing to store). When the queue is full
    /// the write is dropped and `after` is handed back.
    pub fn put(
        &self,
        key: CacheKey,
        entry: MakeEntry,
        request: Vec<u8>,
        after: AfterStore,
    ) -> Result<(), AfterStore> {
        let job = Job::Put {
            key,
            entry,
            request,
            after,
        };
        let give_back = |job: Job| match job {
            Job::Put { after, .. } => after,
            Job::Flush(_) => Box::new(|| {}),
        };
        let Some(tx) = self.tx.as_ref() else {
            return Err(give_back(job));
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "cache writes cannot keep up; answers not stored"
                    );
                }
                Err(give_back(job))
            }
            Err(TrySendError::Disconnected(job)) => Err(give_back(job)),
        }
    }

    /// Waits (blocking) until everything queued so far is stored and durable.
    pub fn flush_blocking(&self) {
        let (done, rx) = sync_channel(1);
        if let Some(tx) = &self.tx
            && tx.send(Job::Flush(Ack::Blocking(done))).is_ok()
        {
            let _ = rx.recv();
        }
    }

    /// Waits until everything queued so far is stored and durable.
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        let Some(tx) = self.tx.clone() else {
            return;
        };
        // The queue may be full: wait for room off the async workers.
        let sent =
            tokio::task::spawn_blocking(move || tx.send(Job::Flush(Ack::Async(done))).is_ok())
                .await;
        if matches!(sent, Ok(true)) {
            let _ = rx.await;
        }
    }

    /// Writes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    /// Stores what is queued, then stops the thread, so the store is closed when the cache is.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
