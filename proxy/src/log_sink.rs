//! Where `spillway serve` writes its log lines: a buffer that a background thread empties to
//! stderr.
//!
//! Writing each line to stderr the moment it is made costs a system call per request, under a
//! lock, on the worker that serves the request (at concurrency 64, about 6% of throughput with
//! stderr in a file). Here a line is appended to a buffer; the first line into an empty buffer
//! wakes the thread, which waits [`GATHER`] for more and writes them all at once. A line is
//! therefore out within about [`GATHER`]; [`LogSink::flush`] (at exit, and before a panic is
//! reported) writes what is left. Memory is bounded: a line that finds [`MAX_BUFFERED`] bytes
//! waiting writes them itself, so nothing is dropped and a writer that cannot keep up slows the
//! logging down instead of growing the buffer.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the thread waits, after a line arrives in an empty buffer, for more to join it.
pub const GATHER: Duration = Duration::from_millis(20);

/// Bytes buffered at most before a line's writer writes them itself.
pub const MAX_BUFFERED: usize = 256 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    arrived: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what is buffered and writes it. The output lock is taken before the buffer is
    /// emptied, so lines leave in the order they arrived.
    fn drain(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::mem::take(&mut *self.pending());
        if !bytes.is_empty() {
            let _ = out.write_all(&bytes);
            let _ = out.flush();
        }
    }
}

/// A buffered log output and the thread that empties it (which lives as long as the process).
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink").finish_non_exhaustive()
    }
}

impl LogSink {
    /// A sink writing to `out`, with its thread started.
    pub fn new(out: Box<dyn Write + Send>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            out: Mutex::new(out),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("spillway-log".into())
            .spawn(move || {
                loop {
                    {
                        let mut pending = worker.pending();
                        while pending.is_empty() {
                            // Woken by the first line into the empty buffer.
                            pending = worker
                                .arrived
                                .wait(pending)
                                .unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    // A pause in real time to gather lines, not a wait in the proxy's clock.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(GATHER);
                    worker.drain();
                }
            })?;
        Ok(LogSink { shared })
    }

    /// Writes everything buffered now.
    pub fn flush(&self) {
        self.shared.drain();
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.shared.pending();
        let was_empty = pending.is_empty();
        let full = pending.len() + line.len() > MAX_BUFFERED;
        pending.extend_from_slice(line);
        drop(pending);
        if full {
            // Nothing is dropped: what waits, this line with it, is written here, in order.
            self.shared.drain();
        } else if was_empty {
            self.shared.arrived.notify_one();
        }
    }
}

/// One event's writer, handed out by the sink for each log event.
#[derive(Debug)]
pub struct LineWriter(LogSink);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut c = self.0.lock().unwrap();
            c.0.extend_from_slice(buf);
            c.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    fn line(sink: &LogSink, text: &str) {
        use tracing_subscriber::fmt::MakeWriter;
        sink.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    // The sink's thread gathers in real time, so the test waits in real time (at most 5 s).
    #[allow(clippy::disallowed_methods)]
    fn lines_leave_in_order_together_and_soon() {
        let capture = Capture::default();
        let sink = LogSink::new(Box::new(capture.clone())).unwrap();
        for i in 0..100 {
            line(&sink, &format!("line {i}\n"));
        }
        assert_eq!(capture.text(), "", "written at once, not gathered");
        let deadline = Instant::now() + Duration::from_secs(5);
        while capture.text().lines().count() < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(capture.text(), expected);
        assert!(
            capture.writes() <= 3,
            "{} writes for 100 lines",
            capture.writes()
        );
    }

    #[test]
    fn flush_writes_what_waits() {
        let capture = Capture::default();
        let sink = LogSink::new(Box::new(capture.clone())).unwrap();
        line(&sink, "one\n");
        line(&sink, "two\n");
        sink.flush();
        assert_eq!(capture.text(), "one\ntwo\n");
        sink.flush();
        assert_eq!(capture.text(), "one\ntwo\n", "nothing twice");
    }

    #[test]
    fn a_full_buffer_is_written_by_the_next_line_and_nothing_is_lost() {
        let capture = Capture::default();
        let sink = LogSink::new(Box::new(capture.clone())).unwrap();
        let long = "x".repeat(1000) + "\n";
        let n = 2 * MAX_BUFFERED / long.len();
        for _ in 0..n {
            line(&sink, &long);
        }
        assert!(
            capture.text().len() >= MAX_BUFFERED / 2,
            "the buffer was allowed to grow past its bound"
        );
        sink.flush();
        assert_eq!(capture.text(), long.repeat(n));
    }
}
