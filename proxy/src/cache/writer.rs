//! The cache's one writer: a thread that encodes and stores answers in order, behind a bounded
//! queue, taking what has queued up in batches of up to [`MAX_BATCH`] (one value-log write per
//! batch). Store writes are synchronous file I/O, so they stay off the async workers; and
//! when answers arrive faster than they can be stored, writes are dropped (and counted) instead
//! of queueing without bound — a cache may forget, it must not run out of memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cache::key::CacheKey;
use crate::cache::store::{CacheStore, NewRecord};

/// Writes that may wait for the writer.
pub const QUEUE: usize = 4096;

/// What to do once an answer is stored (or could not be).
pub type AfterStore = Box<dyn FnOnce() + Send>;

/// A record ready to be stored: when its answer was stored (Unix seconds), and its bytes.
#[derive(Debug)]
pub struct Record {
    /// Unix seconds when stored.
    pub created: u64,
    /// The encoded entry ([`crate::cache::entry`]).
    pub bytes: Vec<u8>,
}

/// Builds the record to store, on the writer thread (`None`: nothing to store). Building it
/// there keeps the copying, checking and compressing out of the request's way.
pub type MakeRecord = Box<dyn FnOnce() -> Option<Record> + Send>;

enum Job {
    Put {
        key: CacheKey,
        record: MakeRecord,
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

/// Answers stored with one write at most. Under load the writer finds many answers waiting
/// after each rest; storing them together costs one system call for the value log instead of
/// one per answer.
pub const MAX_BATCH: usize = 64;

/// How long the writer rests after emptying its queue before it looks again. While it rests,
/// senders queue without waking it (no system call per answer), so under load the writer takes
/// answers in batches. Each rest ends in a timer wake-up that takes a core from whatever runs
/// on it; at 1 ms, at concurrency 1 that was about one wake-up per two requests. An answer
/// waiting here is still served to identical requests from its flight.
const REST: Duration = Duration::from_millis(4);

/// Empty rests in a row after which the writer blocks until the next answer (about 50 ms
/// without traffic): an idle proxy does not poll, a busy one is never woken per answer.
const RESTS_BEFORE_BLOCKING: u32 = 12;

// Never inlined, so profiles name the writer's thread by it (`bench/instructions.sh` does).
#[inline(never)]
fn run(rx: Receiver<Job>, store: Arc<dyn CacheStore>, max_size: Option<u64>) {
    let mut batch = Batch {
        store,
        max_size,
        puts: 0,
        records: Vec::with_capacity(MAX_BATCH),
        afters: Vec::with_capacity(MAX_BATCH),
    };
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
        batch.take(job);
        loop {
            match rx.try_recv() {
                Ok(job) => batch.take(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    batch.commit();
                    return;
                }
            }
        }
        batch.commit();
    }
}

/// Answers encoded and waiting to be stored together, and what to do once they are.
struct Batch {
    store: Arc<dyn CacheStore>,
    max_size: Option<u64>,
    /// Puts taken so far, for the upkeep passes.
    puts: u64,
    records: Vec<(CacheKey, u64, Vec<u8>)>,
    afters: Vec<AfterStore>,
}

impl Batch {
    fn take(&mut self, job: Job) {
        match job {
            Job::Put { key, record, after } => {
                self.puts += 1;
                if self.puts.is_multiple_of(MAINTAIN_EVERY) {
                    // Upkeep runs between writes: store what is waiting first.
                    self.commit();
                    if let Err(e) = self.store.maintain() {
                        tracing::warn!(error = %e, "cache upkeep failed");
                    }
                }
                if let Some(Record { created, bytes }) = record() {
                    self.records.push((key, created, bytes));
                }
                self.afters.push(after);
                if self.afters.len() >= MAX_BATCH {
                    self.commit();
                }
            }
            Job::Flush(done) => {
                self.commit();
                if let Err(e) = self.store.flush() {
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

    /// Stores the waiting answers with one write, evicts if the cache outgrew its size, and
    /// runs their `after`s (stored or not).
    fn commit(&mut self) {
        if !self.records.is_empty() {
            let records: Vec<NewRecord<'_>> = self
                .records
                .iter()
                .map(|(key, created, record)| NewRecord {
                    key,
                    created: *created,
                    record,
                })
                .collect();
            if let Err(e) = self.store.put_all(&records) {
                tracing::warn!(
                    entries = records.len(),
                    error = %e,
                    "could not store cache entries"
                );
            } else if let Some(max) = self.max_size
                && self.store.bytes() > max
            {
                match self.store.shrink_to(max - max / 10) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(evicted = n, "cache over max_size: oldest entries evicted")
                    }
                    Err(e) => tracing::warn!(error = %e, "cache eviction failed"),
                }
            }
            self.records.clear();
        }
        for after in self.afters.drain(..) {
            after();
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

    /// Queues an answer, whose record `record` builds on the writer thread; the writer calls
    /// `after` once it is stored (or failed to be, or there was nothing to store). When the
    /// queue is full the write is dropped and `after` is handed back.
    pub fn put(
        &self,
        key: CacheKey,
        record: MakeRecord,
        after: AfterStore,
    ) -> Result<(), AfterStore> {
        let job = Job::Put { key, record, after };
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::cache::disk_store::DiskStore;
    use crate::cache::entry::{decode, encode};
    use crate::cache::index::IndexKind;
    use crate::cache::store::StoreError;
    use crate::cache::testing::stored;

    /// A disk store that records how many records each write carried.
    #[derive(Debug)]
    struct Recording {
        inner: DiskStore,
        writes: Mutex<Vec<usize>>,
        flushes: AtomicUsize,
    }

    impl CacheStore for Recording {
        fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn put_all(&self, records: &[NewRecord<'_>]) -> Result<(), StoreError> {
            self.writes.lock().unwrap().push(records.len());
            self.inner.put_all(records)
        }
        fn remove(&self, key: &CacheKey) -> Result<(), StoreError> {
            self.inner.remove(key)
        }
        fn keys(&self) -> Result<Vec<CacheKey>, StoreError> {
            self.inner.keys()
        }
        fn created_before(&self, before: u64) -> Result<Vec<CacheKey>, StoreError> {
            self.inner.created_before(before)
        }
        fn shrink_to(&self, bytes: u64) -> Result<usize, StoreError> {
            self.inner.shrink_to(bytes)
        }
        fn len(&self) -> usize {
            self.inner.len()
        }
        fn bytes(&self) -> u64 {
            self.inner.bytes()
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            self.inner.flush()
        }
    }

    fn batch(dir: &tempfile::TempDir) -> (Batch, Arc<Recording>) {
        let inner = DiskStore::open(dir.path(), IndexKind::File, 1 << 20).expect("opens");
        let recording = Arc::new(Recording {
            inner,
            writes: Mutex::new(Vec::new()),
            flushes: AtomicUsize::new(0),
        });
        let batch = Batch {
            store: recording.clone(),
            max_size: None,
            puts: 0,
            records: Vec::new(),
            afters: Vec::new(),
        };
        (batch, recording)
    }

    /// What a put of key `n` takes (nothing to store when `empty`), counting its `after` in
    /// `done`.
    fn parts(n: u8, empty: bool, done: &Arc<AtomicUsize>) -> (CacheKey, MakeRecord, AfterStore) {
        let done = done.clone();
        (
            CacheKey([n; 32]),
            Box::new(move || {
                (!empty).then(|| Record {
                    created: 1,
                    bytes: encode(&stored(&format!("{{\"n\":{n}}}")), b"{}"),
                })
            }),
            Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    fn put(n: u8, empty: bool, done: &Arc<AtomicUsize>) -> Job {
        let (key, record, after) = parts(n, empty, done);
        Job::Put { key, record, after }
    }

    #[test]
    fn answers_taken_together_are_stored_with_one_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut batch, store) = batch(&dir);
        let done = Arc::new(AtomicUsize::new(0));
        for n in 0..5 {
            batch.take(put(n, n == 3, &done));
        }
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "nothing is done before it is stored"
        );
        assert!(store.get(&CacheKey([0; 32])).unwrap().is_none());
        batch.commit();
        assert_eq!(*store.writes.lock().unwrap(), vec![4]);
        assert_eq!(
            done.load(Ordering::SeqCst),
            5,
            "every after runs, stored or not"
        );
        for n in [0u8, 1, 2, 4] {
            let record = store.get(&CacheKey([n; 32])).unwrap().expect("stored");
            let body = decode(&record).expect("valid").body.expect("a body");
            assert_eq!(body.get(), format!("{{\"n\":{n}}}"));
        }
        assert!(store.get(&CacheKey([3; 32])).unwrap().is_none());
        batch.commit();
        assert_eq!(
            store.writes.lock().unwrap().len(),
            1,
            "an empty batch writes nothing"
        );
    }

    #[test]
    fn a_full_batch_is_stored_at_once_and_a_flush_stores_what_waits_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut batch, store) = batch(&dir);
        let done = Arc::new(AtomicUsize::new(0));
        for n in 0..(MAX_BATCH + 3) {
            batch.take(put(n as u8, false, &done));
        }
        assert_eq!(*store.writes.lock().unwrap(), vec![MAX_BATCH]);
        assert_eq!(done.load(Ordering::SeqCst), MAX_BATCH);
        let (tx, rx) = sync_channel(1);
        batch.take(Job::Flush(Ack::Blocking(tx)));
        rx.recv().expect("flush acknowledged");
        assert_eq!(*store.writes.lock().unwrap(), vec![MAX_BATCH, 3]);
        assert_eq!(store.flushes.load(Ordering::SeqCst), 1);
        assert_eq!(done.load(Ordering::SeqCst), MAX_BATCH + 3);
    }

    #[test]
    fn the_thread_stores_everything_queued_before_it_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, store) = batch(&dir);
        let done = Arc::new(AtomicUsize::new(0));
        let writer = Writer::spawn(store.clone(), None).expect("spawns");
        for n in 0..200u8 {
            let (key, record, after) = parts(n, false, &done);
            assert!(writer.put(key, record, after).is_ok());
        }
        drop(writer);
        assert_eq!(done.load(Ordering::SeqCst), 200);
        assert_eq!(store.len(), 200);
        let writes = store.writes.lock().unwrap();
        assert_eq!(writes.iter().sum::<usize>(), 200);
        assert!(writes.iter().all(|n| *n <= MAX_BATCH));
    }
}
