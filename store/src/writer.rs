//! The cache's one writer: a thread that encodes and stores answers in order, behind a queue
//! bounded in entries and in bytes, taking what has queued up in batches of up to
//! [`MAX_BATCH`] (one value-log write per batch). Store writes are synchronous file I/O, so
//! they stay off the async workers; and when answers arrive faster than they can be stored,
//! writes are dropped (and counted) instead of queueing without bound — a cache may forget, it
//! must not run out of memory. The writer also makes the store durable as `[cache] fsync`
//! says, and keeps it under `max_size`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::FsyncPolicy;
use crate::Key;
use crate::{NewRecord, Store};

/// Writes that may wait for the writer.
pub const QUEUE: usize = 4096;

/// Bytes of answers (and their requests) that may wait for the writer: a flood of large
/// answers is dropped past it rather than held in memory.
pub const QUEUE_BYTES: u64 = 64 * 1024 * 1024;

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
        key: Key,
        /// What the answer holds in memory while it waits (counted against [`QUEUE_BYTES`]).
        size: u64,
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

/// How the writer keeps the store: its size bound and when it syncs.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// `[cache] max_size`.
    pub max_size: Option<u64>,
    /// `[cache] fsync`.
    pub fsync: FsyncPolicy,
}

/// The handle to the writer thread.
#[derive(Debug)]
pub struct Writer {
    tx: Option<SyncSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
    queued_bytes: Arc<AtomicU64>,
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

/// Real time now, for the sync interval (the writer paces disk syncs, nothing simulated).
#[allow(clippy::disallowed_methods)]
fn wall_now() -> std::time::Instant {
    std::time::Instant::now()
}

// Never inlined, so profiles name the writer's thread by it (`bench/instructions.sh` does).
#[inline(never)]
fn run(rx: Receiver<Job>, store: Arc<dyn Store>, upkeep: Upkeep, queued: Arc<AtomicU64>) {
    let mut batch = Batch {
        store,
        upkeep,
        queued,
        puts: 0,
        records: Vec::with_capacity(MAX_BATCH),
        afters: Vec::with_capacity(MAX_BATCH),
        unsynced_since: None,
    };
    let mut empty_rests = 0;
    loop {
        let job = if empty_rests >= RESTS_BEFORE_BLOCKING {
            // Idle: block until the next answer, or until unsynced writes are due a sync.
            match batch.sync_due_in() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(due) => rx.recv_timeout(due),
            }
        } else {
            match rx.try_recv() {
                Ok(job) => Ok(job),
                Err(TryRecvError::Empty) => {
                    // A pause in real time between batches, not a wait in the proxy's
                    // (possibly simulated) time.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(REST);
                    Err(RecvTimeoutError::Timeout)
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            }
        };
        let job = match job {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                empty_rests += 1;
                batch.sync_if_due();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                batch.commit();
                batch.sync();
                return;
            }
        };
        empty_rests = 0;
        batch.take(job);
        loop {
            match rx.try_recv() {
                Ok(job) => batch.take(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    batch.commit();
                    batch.sync();
                    return;
                }
            }
        }
        batch.commit();
        batch.sync_if_due();
    }
}

/// Answers encoded and waiting to be stored together, and what to do once they are.
struct Batch {
    store: Arc<dyn Store>,
    upkeep: Upkeep,
    /// Bytes queued for the writer (shared with the senders).
    queued: Arc<AtomicU64>,
    /// Puts taken so far, for the upkeep passes.
    puts: u64,
    records: Vec<(Key, u64, Vec<u8>)>,
    afters: Vec<AfterStore>,
    /// When the oldest write not yet synced was made.
    unsynced_since: Option<std::time::Instant>,
}

impl Batch {
    fn take(&mut self, job: Job) {
        match job {
            Job::Put {
                key,
                size,
                record,
                after,
            } => {
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
                self.queued.fetch_sub(size, Ordering::Relaxed);
                self.afters.push(after);
                if self.afters.len() >= MAX_BATCH {
                    self.commit();
                }
            }
            Job::Flush(done) => {
                self.commit();
                self.sync();
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

    /// Stores the waiting answers with one write, syncs them when the policy says every batch,
    /// evicts if the cache outgrew its size, and runs their `after`s (stored or not).
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
            } else {
                self.unsynced_since.get_or_insert_with(wall_now);
                if self.upkeep.fsync == FsyncPolicy::Always {
                    self.sync();
                }
                self.store.keep_under(self.upkeep.max_size);
            }
            self.records.clear();
        }
        for after in self.afters.drain(..) {
            after();
        }
    }

    /// Makes what was written durable.
    fn sync(&mut self) {
        if self.unsynced_since.take().is_some()
            && let Err(e) = self.store.flush()
        {
            tracing::warn!(error = %e, "cache sync failed");
        }
    }

    /// How long until unsynced writes are due a sync (`None`: nothing is waiting for one).
    fn sync_due_in(&self) -> Option<Duration> {
        let FsyncPolicy::Interval(every) = self.upkeep.fsync else {
            return None;
        };
        let since = self.unsynced_since?;
        Some(every.saturating_sub(wall_now().saturating_duration_since(since)))
    }

    /// Syncs when the interval since the oldest unsynced write has passed.
    fn sync_if_due(&mut self) {
        if self.sync_due_in().is_some_and(|d| d.is_zero()) {
            self.sync();
        }
    }
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn spawn(store: Arc<dyn Store>, upkeep: Upkeep) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let queued = Arc::new(AtomicU64::new(0));
        let for_thread = queued.clone();
        let thread = std::thread::Builder::new()
            .name("spillway-cache-writer".into())
            .spawn(move || run(rx, store, upkeep, for_thread))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            dropped: Arc::new(AtomicU64::new(0)),
            queued_bytes: queued,
        })
    }

    /// Queues an answer holding `size` bytes, whose record `record` builds on the writer
    /// thread; the writer calls `after` once it is stored (or failed to be, or there was nothing
    /// to store). When the queue is full, in entries or in bytes, the write is dropped and
    /// `after` is handed back.
    pub fn put(
        &self,
        key: Key,
        size: u64,
        record: MakeRecord,
        after: AfterStore,
    ) -> Result<(), AfterStore> {
        let Some(tx) = self.tx.as_ref() else {
            return Err(after);
        };
        let queued = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if queued + size > QUEUE_BYTES && queued > 0 {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.count_drop();
            return Err(after);
        }
        let job = Job::Put {
            key,
            size,
            record,
            after,
        };
        let give_back = |job: Job| match job {
            Job::Put { after, .. } => after,
            Job::Flush(_) => Box::new(|| {}),
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                self.count_drop();
                Err(give_back(job))
            }
            Err(TrySendError::Disconnected(job)) => {
                self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
                Err(give_back(job))
            }
        }
    }

    fn count_drop(&self) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                dropped = n,
                "cache writes cannot keep up; answers not stored"
            );
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

    /// Bytes of answers waiting for the writer.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
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
    use crate::StoreError;
    use crate::disk::DiskStore;
    use crate::index::IndexKind;

    /// A disk store that records how many records each write carried.
    #[derive(Debug)]
    struct Recording {
        inner: DiskStore,
        writes: Mutex<Vec<usize>>,
        flushes: AtomicUsize,
    }

    impl Store for Recording {
        fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn put_all(&self, records: &[NewRecord<'_>]) -> Result<(), StoreError> {
            self.writes.lock().unwrap().push(records.len());
            self.inner.put_all(records)
        }
        fn remove(&self, key: &Key) -> Result<(), StoreError> {
            self.inner.remove(key)
        }
        fn keys(&self) -> Result<Vec<Key>, StoreError> {
            self.inner.keys()
        }
        fn created_before(&self, before: u64) -> Result<Vec<Key>, StoreError> {
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
            upkeep: Upkeep {
                max_size: None,
                fsync: FsyncPolicy::Shutdown,
            },
            queued: Arc::new(AtomicU64::new(0)),
            puts: 0,
            records: Vec::new(),
            afters: Vec::new(),
            unsynced_since: None,
        };
        (batch, recording)
    }

    /// What a put of key `n` takes (nothing to store when `empty`), counting its `after` in
    /// `done`.
    fn parts(n: u8, empty: bool, done: &Arc<AtomicUsize>) -> (Key, MakeRecord, AfterStore) {
        let done = done.clone();
        (
            Key([n; 32]),
            Box::new(move || {
                (!empty).then(|| Record {
                    created: 1,
                    bytes: format!("record {n}").into_bytes(),
                })
            }),
            Box::new(move || {
                done.fetch_add(1, Ordering::SeqCst);
            }),
        )
    }

    fn put(n: u8, empty: bool, done: &Arc<AtomicUsize>) -> Job {
        let (key, record, after) = parts(n, empty, done);
        Job::Put {
            key,
            size: 0,
            record,
            after,
        }
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
        assert!(store.get(&Key([0; 32])).unwrap().is_none());
        batch.commit();
        assert_eq!(*store.writes.lock().unwrap(), vec![4]);
        assert_eq!(
            done.load(Ordering::SeqCst),
            5,
            "every after runs, stored or not"
        );
        for n in [0u8, 1, 2, 4] {
            let record = store.get(&Key([n; 32])).unwrap().expect("stored");
            assert_eq!(record, format!("record {n}").into_bytes());
        }
        assert!(store.get(&Key([3; 32])).unwrap().is_none());
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
        let writer = Writer::spawn(
            store.clone(),
            Upkeep {
                max_size: None,
                fsync: FsyncPolicy::Shutdown,
            },
        )
        .expect("spawns");
        for n in 0..200u8 {
            let (key, record, after) = parts(n, false, &done);
            assert!(writer.put(key, 100, record, after).is_ok());
        }
        drop(writer);
        assert_eq!(done.load(Ordering::SeqCst), 200);
        assert_eq!(store.len(), 200);
        let writes = store.writes.lock().unwrap();
        assert_eq!(writes.iter().sum::<usize>(), 200);
        assert!(writes.iter().all(|n| *n <= MAX_BATCH));
    }

    #[test]
    fn answers_past_the_queues_byte_bound_are_dropped_not_held() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_, store) = batch(&dir);
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = sync_channel::<()>(0);
        let writer = Writer::spawn(
            store.clone(),
            Upkeep {
                max_size: None,
                fsync: FsyncPolicy::Shutdown,
            },
        )
        .expect("spawns");
        // The first answer holds the writer until the test lets it go.
        let (key, _, after) = parts(0, false, &done);
        let hold: MakeRecord = Box::new(move || {
            let _ = rx.recv();
            None
        });
        assert!(writer.put(key, QUEUE_BYTES / 2, hold, after).is_ok());
        let (key, record, after) = parts(1, false, &done);
        assert!(writer.put(key, QUEUE_BYTES / 4, record, after).is_ok());
        let (key, record, after) = parts(2, false, &done);
        let refused = writer.put(key, QUEUE_BYTES / 2, record, after);
        assert!(refused.is_err(), "over the byte bound");
        refused.expect_err("handed back")();
        assert_eq!(writer.dropped(), 1);
        assert_eq!(writer.queued_bytes(), QUEUE_BYTES / 2 + QUEUE_BYTES / 4);
        drop(tx);
        drop(writer);
        assert_eq!(done.load(Ordering::SeqCst), 3, "every after ran");
        assert!(store.get(&Key([1; 32])).unwrap().is_some());
        assert!(store.get(&Key([2; 32])).unwrap().is_none());
    }

    #[test]
    fn fsync_always_makes_every_batch_durable_and_interval_waits_for_its_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut batch, store) = batch(&dir);
        let done = Arc::new(AtomicUsize::new(0));
        batch.upkeep.fsync = FsyncPolicy::Always;
        batch.take(put(1, false, &done));
        batch.commit();
        assert_eq!(store.flushes.load(Ordering::SeqCst), 1);
        batch.upkeep.fsync = FsyncPolicy::Interval(Duration::from_secs(3600));
        batch.take(put(2, false, &done));
        batch.commit();
        batch.sync_if_due();
        assert_eq!(store.flushes.load(Ordering::SeqCst), 1, "not due yet");
        assert!(
            batch
                .sync_due_in()
                .is_some_and(|d| d > Duration::from_secs(3000))
        );
        batch.upkeep.fsync = FsyncPolicy::Interval(Duration::from_nanos(1));
        batch.sync_if_due();
        assert_eq!(store.flushes.load(Ordering::SeqCst), 2);
        assert_eq!(batch.sync_due_in(), None, "nothing left unsynced");
    }
}
