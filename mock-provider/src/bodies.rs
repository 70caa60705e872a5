//! Response bodies: whole, or shaped by a fault after admission (cut, garbled, stalled), and
//! streams written event by event when paced or faulted. A stalled body holds its connection
//! until the client goes away or the mock shuts down (its cancellation token), never longer.

use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::faults::FaultPlan;
use crate::reply::{Ids, Reply, StreamWriter, stream_events, stream_pieces};
use crate::request::ChatRequest;
use crate::spec::{Dialect, Fault};
use crate::state::MockState;

/// The error a stalled body ends with when the mock shuts down.
fn stall_released() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the mock shut down during an injected stall",
    )
}

/// A JSON body, possibly garbled, cut or stalled by a fault (a stall lasts until `shutdown`).
pub fn json_body(body: String, fault: Option<Fault>, shutdown: &CancellationToken) -> Body {
    match fault {
        Some(Fault::InvalidJson) => {
            // Bytes, not a `str` slice: half the body may fall inside a character.
            let body = Bytes::from(body);
            Body::from(body.slice(..body.len() / 2))
        }
        Some(Fault::StallStream { .. }) => {
            let body = Bytes::from(body);
            let first = body.slice(..body.len() / 2);
            let shutdown = shutdown.clone();
            let first = futures_util::stream::once(async move { Ok::<_, io::Error>(first) });
            let stall = futures_util::stream::once(async move {
                shutdown.cancelled().await;
                Err(stall_released())
            });
            Body::from_stream(first.chain(stall))
        }
        Some(Fault::CutStream { .. }) => {
            let body = Bytes::from(body);
            let first = body.slice(..body.len() / 2);
            let parts = futures_util::stream::unfold(Some(first), |part| async move {
                match part {
                    Some(bytes) => Some((Ok(bytes), None)),
                    None => {
                        // Let the first half be flushed before the connection drops.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        None::<(Result<Bytes, io::Error>, Option<Bytes>)>
                    }
                }
            });
            let cut = futures_util::stream::iter([Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "injected fault: body cut",
            ))]);
            Body::from_stream(parts.chain(cut))
        }
        _ => Body::from(body),
    }
}

/// The SSE body of a streamed answer: all at once when nothing paces or breaks it, otherwise
/// written event by event from a task.
pub fn stream_body(
    st: &MockState,
    req: &ChatRequest,
    reply: &Reply,
    ids: &Ids,
    plan: &FaultPlan,
) -> Body {
    let events = stream_events(req, reply, ids);
    let paced =
        plan.latency.time_to_first_token.is_some() || plan.latency.tokens_per_second.is_some();
    let fault = plan.fault;
    if !paced && fault.is_none() {
        return Body::from(events.concat());
    }
    let content_chunks = stream_pieces(&reply.text).count();
    let error_event = match st.spec.dialect {
        Dialect::Anthropic => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".to_string(),
        _ => StreamWriter::new(req, ids).error(
            "Internal server error: the response stream was interrupted (injected fault: cut_stream)",
        ),
    };
    let garbled = format!(
        "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"delta\":{{\"content\":\n\n",
        ids.completion
    );
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
    let clock = st.clock.clone();
    let shutdown = st.shutdown.clone();
    let latency = plan.latency;
    tokio::spawn(async move {
        let per_chunk = latency
            .tokens_per_second
            .map(|tps| Duration::from_secs_f64(1.0 / tps))
            .unwrap_or_default();
        for (i, event) in events.into_iter().enumerate() {
            // Event 0 is the role chunk; events 1..=content_chunks carry text.
            let delay = match i {
                1 => latency.time_to_first_token.unwrap_or_default(),
                i if i > 1 && i <= content_chunks => per_chunk,
                _ => Duration::ZERO,
            };
            if !delay.is_zero() {
                tokio::select! {
                    _ = clock.sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            if let Some(Fault::CutStream { after_chunks }) = fault
                && i == (after_chunks as usize + 1).min(content_chunks + 1)
            {
                let _ = tx.send(Ok(Bytes::from(error_event))).await;
                // Let the server flush what was sent before the connection drops: hyper
                // writes buffered bytes only once the body has nothing more ready.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "injected fault: stream cut",
                    )))
                    .await;
                return;
            }
            if let Some(Fault::StallStream { after_chunks }) = fault
                && i == (after_chunks as usize + 1).min(content_chunks + 1)
            {
                // What was sent is flushed: the body has nothing more ready. Hold the connection
                // until the client goes away (the body, and with it the receiver, is dropped)
                // or the mock shuts down (then break the body, as a dying server would).
                tokio::select! {
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(stall_released())).await;
                    }
                    () = tx.closed() => {}
                }
                return;
            }
            let event = if fault == Some(Fault::InvalidJson) && i == 2 {
                garbled.clone()
            } else {
                event
            };
            if tx.send(Ok(Bytes::from(event))).await.is_err() {
                return; // the client went away
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
