//! A streamed answer as events: the provider's SSE bytes read into `data:` payloads, each
//! checked to be JSON and with provider keys masked, until the stream ends. How it ends is a
//! value: complete (`[DONE]` seen), broken (cut, an error, a chunk that is not JSON, the
//! gateway shutting down), or stalled (nothing arrived for the provider's
//! `stream_idle_timeout`). Every consumer — a client's relay, a flight its followers read,
//! the cache — sees the same events and the same end, so a stream is never relayed or stored
//! as whole when it was not.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::upstream::scrub::Scrubber;
use crate::upstream::sse::SseWatch;

/// The raw bytes of a streamed answer after its first event.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// `data: [DONE]` arrived after valid events.
    Complete,
    /// The stream broke off, reported an error, sent something that is not JSON, or was
    /// stopped by the gateway's shutdown (why).
    Broken(String),
    /// Nothing arrived for this long (real time).
    Stalled(Duration),
}

impl StreamEnd {
    /// Why it did not complete, for the client's error event and the log (`None`: it did).
    pub fn why(&self) -> Option<String> {
        match self {
            StreamEnd::Complete => None,
            StreamEnd::Broken(why) => Some(why.clone()),
            StreamEnd::Stalled(after) => Some(format!(
                "the provider sent nothing for {:.1}s (stream_idle_timeout)",
                after.as_secs_f64()
            )),
        }
    }
}

/// What reading a stream gives next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// One event's payload (JSON text).
    Event(String),
    /// The stream is over (repeated on every later call).
    End(StreamEnd),
}

/// The events of a streamed answer.
pub struct EventStream {
    bytes: ByteStream,
    watch: SseWatch,
    scrub: Arc<Scrubber>,
    ready: VecDeque<String>,
    ended: Option<StreamEnd>,
    idle: Duration,
    stop: CancellationToken,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("ready", &self.ready.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    /// Events read from `bytes`, masked by `scrub`; a wait of `idle` (real time) for the next
    /// bytes ends it as stalled, and `stop` ends it as broken.
    pub fn new(
        bytes: ByteStream,
        scrub: Arc<Scrubber>,
        idle: Duration,
        stop: CancellationToken,
    ) -> Self {
        EventStream {
            bytes,
            watch: SseWatch::default(),
            scrub,
            ready: VecDeque::new(),
            ended: None,
            idle,
            stop,
        }
    }

    /// Waits until the first event is ready; returns how the stream ended instead when it
    /// ended without one.
    pub async fn first(&mut self) -> Result<(), StreamEnd> {
        match self.next().await {
            Next::Event(event) => {
                self.ready.push_front(event);
                Ok(())
            }
            Next::End(end) => Err(end),
        }
    }

    /// An error the provider reported in the stream so far, if any.
    pub fn error(&self) -> Option<&str> {
        self.watch.error.as_deref()
    }

    /// `(prompt, completion)` tokens the stream reported so far.
    pub fn usage(&self) -> Option<(u64, u64)> {
        self.watch.usage
    }

    /// The next event, or how the stream ended.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Next::Event(event);
            }
            if let Some(end) = &self.ended {
                return Next::End(end.clone());
            }
            let chunk = tokio::select! {
                biased;
                () = self.stop.cancelled() => {
                    self.ended = Some(StreamEnd::Broken("the gateway is shutting down".into()));
                    continue;
                }
                chunk = tokio::time::timeout(self.idle, self.bytes.next()) => chunk,
            };
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(_) => {
                    self.ended = Some(StreamEnd::Stalled(self.idle));
                    continue;
                }
            };
            self.take(chunk);
        }
    }

    /// Reads one chunk of bytes (or the end of them) into events and, when it ends the
    /// stream, how.
    fn take(&mut self, chunk: Option<Result<Bytes, String>>) {
        let mut events = Vec::new();
        match chunk {
            Some(Ok(bytes)) => {
                self.watch.feed(&bytes, &self.scrub, &mut events);
                if let Some(why) = &self.watch.invalid {
                    self.ended = Some(StreamEnd::Broken(why.clone()));
                } else if self.watch.done {
                    self.ended = Some(match &self.watch.error {
                        Some(why) => StreamEnd::Broken(why.clone()),
                        None => StreamEnd::Complete,
                    });
                }
            }
            Some(Err(e)) => {
                let why = self.watch.error.clone().unwrap_or(e);
                self.ended = Some(StreamEnd::Broken(why));
            }
            None => {
                let why = self
                    .watch
                    .error
                    .clone()
                    .unwrap_or_else(|| "the stream ended without [DONE]".into());
                self.ended = Some(StreamEnd::Broken(why));
            }
        }
        self.ready.extend(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(chunks: Vec<Result<&'static str, &'static str>>, then_hang: bool) -> ByteStream {
        let items = futures_util::stream::iter(chunks.into_iter().map(|c| {
            c.map(|b: &str| Bytes::from(b.to_string()))
                .map_err(str::to_string)
        }));
        if then_hang {
            Box::pin(items.chain(futures_util::stream::pending()))
        } else {
            Box::pin(items)
        }
    }

    async fn drain(mut s: EventStream) -> (Vec<String>, StreamEnd) {
        let mut events = Vec::new();
        loop {
            match s.next().await {
                Next::Event(e) => events.push(e),
                Next::End(end) => return (events, end),
            }
        }
    }

    fn events(chunks: Vec<Result<&'static str, &'static str>>, hang: bool) -> EventStream {
        EventStream::new(
            stream_of(chunks, hang),
            Arc::new(Scrubber::new(["gsk_secret_key"])),
            Duration::from_secs(30),
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn a_whole_stream_completes_at_done_without_waiting_for_the_connection_to_close() {
        let s = events(
            vec![
                Ok("data: {\"a\":1}\n\ndata: {\"b\":\"gsk_secret_key\"}\n\n"),
                Ok("data: [DONE]\n\n"),
            ],
            true,
        );
        let (got, end) = drain(s).await;
        assert_eq!(got, vec![r#"{"a":1}"#, r#"{"b":"***"}"#]);
        assert_eq!(end, StreamEnd::Complete);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_stops_sending_ends_as_stalled_after_its_idle_timeout() {
        let s = events(vec![Ok("data: {\"a\":1}\n\n")], true);
        let (got, end) = drain(s).await;
        assert_eq!(got.len(), 1);
        assert_eq!(end, StreamEnd::Stalled(Duration::from_secs(30)));
        assert!(end.why().unwrap().contains("stream_idle_timeout"));
    }

    #[tokio::test]
    async fn a_chunk_that_is_not_json_or_a_cut_breaks_the_stream() {
        let (got, end) = drain(events(
            vec![Ok(
                "data: {\"a\":1}\n\ndata: {not json}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n",
            )],
            false,
        ))
        .await;
        assert_eq!(got.len(), 1);
        assert!(matches!(end, StreamEnd::Broken(why) if why.contains("not valid JSON")));
        let (_, end) = drain(events(vec![Ok("data: {\"a\":1}\n\n"), Err("reset")], false)).await;
        assert_eq!(end, StreamEnd::Broken("reset".into()));
        let (_, end) = drain(events(vec![Ok("data: {\"a\":1}\n\n")], false)).await;
        assert!(matches!(end, StreamEnd::Broken(why) if why.contains("without [DONE]")));
    }

    #[tokio::test]
    async fn the_gateways_shutdown_ends_a_stream_at_once() {
        let stop = CancellationToken::new();
        let mut s = EventStream::new(
            stream_of(vec![Ok("data: {\"a\":1}\n\n")], true),
            Arc::new(Scrubber::new([])),
            Duration::from_secs(3600),
            stop.clone(),
        );
        assert!(matches!(s.next().await, Next::Event(_)));
        stop.cancel();
        assert!(
            matches!(s.next().await, Next::End(StreamEnd::Broken(why)) if why.contains("shutting down"))
        );
    }
}
