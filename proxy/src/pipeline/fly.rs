//! A flight's upstream call: the router's answer published into the flight as it arrives, and,
//! once complete, stored in the cache before the flight lands (so identical requests meanwhile
//! join the complete flight instead of missing).

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use crate::cache::entry::{AnswerBody, Fields, encode_answer, keep_header};
use crate::cache::flight::{End, Flight, FlightState, Head};
use crate::cache::key::CacheKey;
use crate::pipeline::Pipeline;
use crate::router::{Job, Served};
use crate::upstream::{Answer, Next};
use spillway_store::writer::Record;

/// What a flight's answer is stored as.
pub struct Save {
    /// The cache namespace.
    pub namespace: String,
    /// The route's name.
    pub route: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The canonical request.
    pub request: Vec<u8>,
}

/// Routes `job` and publishes the answer into `flight` as it arrives.
pub async fn fly(pipeline: Arc<Pipeline>, job: Job, flight: Arc<Flight>) {
    match pipeline.router.execute(&job).await {
        Ok(served) => publish(&flight, served).await,
        Err(e) => flight.update(|s| s.end = Some(End::Failed(e))),
    }
}

/// Routes `job` into `flight`, stores the answer when it is complete and `save` allows, and
/// lands the flight.
pub async fn fly_and_store(
    pipeline: Arc<Pipeline>,
    job: Job,
    flight: Arc<Flight>,
    key: CacheKey,
    save: Option<Save>,
) {
    fly(pipeline.clone(), job, flight.clone()).await;
    let complete = matches!(flight.state().end, Some(End::Complete));
    match save {
        Some(save) if complete => store(&pipeline, flight, key, save),
        _ => pipeline.cache.flights.land(&key, &flight),
    }
}

/// Hands a complete answer to the cache's writer, which builds its record off the request's
/// path, stores it, then lands the flight; this task is done, and its client's answer does not
/// wait for the copying.
fn store(pipeline: &Pipeline, flight: Arc<Flight>, key: CacheKey, save: Save) {
    let size = {
        let s = flight.state();
        let answer =
            s.body.as_ref().map_or(0, Bytes::len) + s.events.iter().map(String::len).sum::<usize>();
        (answer + save.request.len()) as u64
    };
    let source = flight.clone();
    let now = pipeline.cache.now_unix();
    let record = Box::new(move || {
        let s = source.state();
        let head = s.head.as_ref()?;
        let fields = Fields {
            created: now,
            namespace: &save.namespace,
            route: &save.route,
            endpoint: &save.endpoint,
            provider: Some(&head.provider),
            model: Some(&head.model),
            status: 200,
            headers: kept_headers(&head.headers),
        };
        let body = answer_body(&s, head.stream)?;
        Some(Record {
            created: now,
            bytes: encode_answer(&fields, Some(&body), &save.request),
        })
    });
    let flights = pipeline.cache.flights.clone();
    pipeline.cache.save_later(
        key,
        size,
        record,
        Box::new(move || flights.land(&key, &flight)),
    );
}

/// Publishes an answer into its flight: a plain one at once, a stream event by event; a
/// stream's reservation is settled when it ends.
async fn publish(flight: &Flight, served: Served) {
    let Served {
        answer,
        provider,
        model,
        key_alias,
        attempts,
        waited,
        ticket,
    } = served;
    let head = move |stream: bool, headers: HeaderMap| Head {
        provider,
        model,
        key_alias,
        attempts,
        waited,
        stream,
        headers,
    };
    match answer {
        Answer::Full {
            headers,
            body,
            usage,
        } => flight.update(|s| {
            s.head = Some(Arc::new(head(false, headers)));
            s.body = Some(body);
            s.usage = usage;
            s.end = Some(End::Complete);
        }),
        Answer::Stream {
            headers,
            mut events,
        } => {
            flight.update(|s| s.head = Some(Arc::new(head(true, headers))));
            let end = loop {
                match events.next().await {
                    Next::Event(event) => flight.update(|s| s.events.push(event)),
                    Next::End(end) => break end,
                }
            };
            if let Some(ticket) = ticket {
                ticket.finish_stream(events.usage(), &end);
            }
            if let Some(why) = end.why() {
                tracing::warn!(error = %why, "upstream stream did not complete; not stored");
            }
            flight.update(|s| {
                s.usage = events.usage();
                s.end = Some(match end.why() {
                    None => End::Complete,
                    Some(why) => End::Broken(why),
                });
            });
        }
    }
}

/// The response headers an entry keeps, as text.
fn kept_headers(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter(|(name, _)| keep_header(name.as_str()))
        .filter_map(|(name, v)| Some((name.as_str(), v.to_str().ok()?)))
        .collect()
}

/// A complete answer's body as an entry holds it, if it can be stored: a plain body was
/// checked as JSON when it arrived (only its text encoding is left to check); each stream
/// event is checked here.
fn answer_body(s: &FlightState, stream: bool) -> Option<AnswerBody<'_>> {
    if stream {
        let chunks = s
            .events
            .iter()
            .map(|e| {
                serde_json::from_str::<serde::de::IgnoredAny>(e)
                    .ok()
                    .map(|_| e.as_str())
            })
            .collect::<Option<Vec<_>>>()?;
        Some(AnswerBody::Chunks(chunks))
    } else {
        Some(AnswerBody::Plain(
            std::str::from_utf8(s.body.as_deref()?).ok()?,
        ))
    }
}
