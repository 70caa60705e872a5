//! Streams: upstream SSE bytes forwarded as they arrive; when the upstream breaks off midway,
//! the client's stream ends with an error event instead of hanging, and the key's limit state is
//! settled with whatever usage the stream reported.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::router::Ticket;
use crate::upstream::ByteStream;
use crate::upstream::sse::SseWatch;

struct Relay {
    first: Option<Bytes>,
    rest: ByteStream,
    watch: SseWatch,
    ticket: Option<Ticket>,
    finished: bool,
}

impl Relay {
    fn settle(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.finish(self.watch.usage);
        }
    }
}

/// The SSE error event that ends a stream the upstream broke off.
pub fn error_event(message: &str) -> Bytes {
    let body = serde_json::json!({
        "error": {
            "message": format!("The upstream stream failed before it finished: {message}"),
            "type": "upstream_error",
            "param": null,
            "code": "stream_interrupted",
        }
    });
    Bytes::from(format!("data: {body}\n\n"))
}

/// The client's stream: `first`, then `rest`, then (if the upstream did not finish cleanly) an
/// error event.
pub fn relay(
    first: Bytes,
    rest: ByteStream,
    ticket: Option<Ticket>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let relay = Relay {
        first: Some(first),
        rest,
        watch: SseWatch::default(),
        ticket,
        finished: false,
    };
    futures_util::stream::unfold(relay, |mut r| async move {
        if let Some(first) = r.first.take() {
            r.watch.feed(&first);
            return Some((Ok(first), r));
        }
        if r.finished {
            return None;
        }
        match r.rest.next().await {
            Some(Ok(bytes)) => {
                r.watch.feed(&bytes);
                Some((Ok(bytes), r))
            }
            Some(Err(e)) => {
                r.finished = true;
                r.settle();
                tracing::warn!(error = %e, "upstream stream broke off");
                let why = r.watch.error.clone().unwrap_or(e);
                Some((Ok(error_event(&why)), r))
            }
            None => {
                r.finished = true;
                r.settle();
                if r.watch.done {
                    None
                } else {
                    let why = r
                        .watch
                        .error
                        .clone()
                        .unwrap_or_else(|| "the stream ended without [DONE]".into());
                    Some((Ok(error_event(&why)), r))
                }
            }
        }
    })
}
