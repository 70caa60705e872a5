//! An answer in the shape the client asked for, whatever shape it was produced in: a stored
//! entry ([`hit`]) or a flight as it arrives ([`flight`]), plain or streamed either way. A
//! stream that does not complete (cut, stalled, not JSON, the gateway shutting down) ends with
//! an error event instead of `[DONE]` or a hang.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::cache::convert::{chunks_from_completion, completion_from_chunks, sse_body};
use crate::cache::entry::Stored;
use crate::cache::flight::{End, Flight, Head};
use crate::error::ProxyError;
use crate::pipeline::outcome::{LiveEvents, Origin, Reply, ReplyBody};

/// The request id header a provider's answer carries.
const X_REQUEST_ID: &str = "x-request-id";

/// The SSE error event that ends a stream the upstream broke off.
pub fn error_event(message: &str) -> String {
    let body = serde_json::json!({
        "error": {
            "message": format!("The upstream stream failed before it finished: {message}"),
            "type": "upstream_error",
            "param": null,
            "code": "stream_interrupted",
        }
    });
    format!("data: {body}\n\n")
}

/// A plain answer the client asked for whose stream broke off, or that cannot be converted.
fn broken(why: &str) -> ProxyError {
    ProxyError::AllFailed {
        route: "(stream)".into(),
        attempts: vec![format!("the upstream stream broke off: {why}")],
    }
}

fn json(bytes: impl Into<Bytes>) -> ReplyBody {
    ReplyBody::Json {
        bytes: bytes.into(),
        content_type: None,
    }
}

/// A stored entry in the shape the client asked for.
pub fn hit(stored: &Stored, want_stream: bool, include_usage: bool) -> Result<Reply, ProxyError> {
    let unusable = || ProxyError::Internal("a cache entry could not be rendered".into());
    let body = match (want_stream, &stored.body, &stored.chunks) {
        (false, Some(body), _) => json(Bytes::copy_from_slice(body.get().as_bytes())),
        (false, None, Some(chunks)) => json(completion_from_chunks(chunks).ok_or_else(unusable)?),
        (true, _, Some(chunks)) => {
            let texts: Vec<&str> = chunks.iter().map(|c| c.get()).collect();
            ReplyBody::Events(sse_body(&texts, include_usage))
        }
        (true, Some(body), None) => {
            let chunks = chunks_from_completion(body).ok_or_else(unusable)?;
            ReplyBody::Events(sse_body(&chunks, include_usage))
        }
        (_, None, None) => return Err(unusable()),
    };
    Ok(Reply {
        origin: Origin {
            provider: stored.provider.clone(),
            model: stored.model.clone(),
            ..Origin::default()
        },
        usage: None,
        body,
    })
}

/// Where a flight's answer came from.
fn origin(head: &Head) -> Origin {
    Origin {
        provider: Some(head.provider.clone()),
        model: Some(head.model.clone()),
        key_alias: Some(head.key_alias.clone()),
        attempts: head.attempts,
        waited: head.waited,
        request_id: head.headers.get(X_REQUEST_ID).cloned(),
        trail: head.trail.clone(),
    }
}

/// A flight's answer, as it arrives, in the shape the client asked for.
pub async fn flight(
    flight: Arc<Flight>,
    want_stream: bool,
    include_usage: bool,
) -> Result<Reply, ProxyError> {
    let head = flight
        .wait_for(|s| match (&s.head, &s.end) {
            (Some(h), _) => Some(Ok(h.clone())),
            (None, Some(End::Failed(e))) => Some(Err(e.clone())),
            _ => None,
        })
        .await?;
    if head.stream && want_stream {
        return Ok(Reply {
            origin: origin(&head),
            usage: None,
            body: ReplyBody::Live(live(flight, include_usage)),
        });
    }
    whole(&flight, &head, want_stream, include_usage).await
}

/// A flight's events as they arrive, framed as SSE, then `[DONE]` or the error event.
fn live(flight: Arc<Flight>, include_usage: bool) -> LiveEvents {
    Box::pin(futures_util::stream::unfold(
        (flight, 0usize, false),
        move |(f, from, done)| async move {
            if done {
                return None;
            }
            let (text, next, finished) = f
                .wait_for(|s| {
                    if s.events.len() > from {
                        let text = frame_events(&s.events[from..], include_usage);
                        return Some((text, s.events.len(), false));
                    }
                    let last = match s.end.as_ref()? {
                        End::Complete => "data: [DONE]\n\n".to_string(),
                        End::Broken(why) => error_event(why),
                        End::Failed(_) => error_event("the upstream call failed"),
                    };
                    Some((last, from, true))
                })
                .await;
            Some((
                Ok::<_, std::io::Error>(Bytes::from(text)),
                (f, next, finished),
            ))
        },
    ))
}

/// Events framed as SSE, usage-only chunks kept only when asked for.
fn frame_events(events: &[String], include_usage: bool) -> String {
    let mut out = String::new();
    for e in events {
        if !include_usage
            && e.contains("\"choices\":[]")
            && serde_json::from_str::<Value>(e)
                .is_ok_and(|v| v.get("usage").is_some_and(|u| u.is_object()))
        {
            continue;
        }
        out.push_str("data: ");
        out.push_str(e);
        out.push_str("\n\n");
    }
    out
}

/// A flight's whole answer once it has ended, converted to the shape the client asked for.
async fn whole(
    flight: &Flight,
    head: &Head,
    want_stream: bool,
    include_usage: bool,
) -> Result<Reply, ProxyError> {
    let (events, body, usage, end) = flight
        .wait_for(|s| {
            s.end
                .clone()
                .map(|end| (s.events.clone(), s.body.clone(), s.usage, end))
        })
        .await;
    match end {
        End::Failed(e) => return Err(e),
        End::Broken(why) => return Err(broken(&why)),
        End::Complete => {}
    }
    let body = match (head.stream, want_stream) {
        (true, _) => {
            let raws = events
                .into_iter()
                .map(|e| RawValue::from_string(e).ok())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| broken("a chunk was not JSON"))?;
            json(
                completion_from_chunks(&raws)
                    .ok_or_else(|| broken("the chunks did not assemble"))?,
            )
        }
        (false, false) => ReplyBody::Json {
            bytes: body.unwrap_or_default(),
            content_type: head.headers.get(http::header::CONTENT_TYPE).cloned(),
        },
        (false, true) => {
            let body = body.unwrap_or_default();
            let raw: Box<RawValue> =
                serde_json::from_slice(&body).map_err(|_| broken("the answer was not JSON"))?;
            let chunks = chunks_from_completion(&raw)
                .ok_or_else(|| broken("the answer could not be streamed"))?;
            ReplyBody::Events(sse_body(&chunks, include_usage))
        }
    };
    Ok(Reply {
        origin: origin(head),
        usage: usage.filter(|_| !head.stream),
        body,
    })
}
