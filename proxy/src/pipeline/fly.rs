//! A flight's upstream call: the router's answer published into the flight as it arrives, and,
//! once complete, stored in the cache before the flight lands (so identical requests meanwhile
//! join the complete flight instead of missing). In a fleet that shares answers, the call is
//! first asked of the fleet: another gateway's answer is published instead, and one this
//! gateway makes for the fleet is shared once stored (ARCHITECTURE.md, invariant 13).

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use crate::cache::Cache;
use crate::cache::entry::{AnswerBody, Fields, Stored, encode_answer, keep_header};
use crate::cache::flight::{End, Flight, FlightState, FromFleet, Head};
use crate::cache::key::CacheKey;
use crate::fleet::answers::{Lease, Shared};
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
    match pipeline.router.execute_traced(&job).await {
        (Ok(served), _) => publish(&flight, served).await,
        (Err(e), trail) => flight.update(|s| {
            s.trail = trail;
            s.end = Some(End::Failed(e));
        }),
    }
}

/// Routes `job` into `flight`, stores the answer when it is complete and `save` allows, and
/// lands the flight. In a fleet that shares answers, another gateway's answer (there already,
/// or awaited while it calls upstream) is published instead; when this gateway calls for the
/// fleet, the answer is shared as it is stored.
pub async fn fly_and_store(
    pipeline: Arc<Pipeline>,
    job: Job,
    flight: Arc<Flight>,
    key: CacheKey,
    save: Option<Save>,
    refresh: bool,
) {
    let mut lease = None;
    if let (Some(fleet), Some(_)) = (&pipeline.fleet, &save) {
        match fleet.lookup_or_lead(&key.to_hex(), refresh).await {
            Shared::Found { frame, waited } => {
                if let Some(stored) = pipeline.cache.from_shared(&key, &frame) {
                    let from = if waited {
                        FromFleet::Followed
                    } else {
                        FromFleet::Stored
                    };
                    publish_stored(&flight, &stored, from);
                    pipeline.cache.flights.land(&key, &flight);
                    return;
                }
            }
            Shared::Lead(held) => lease = Some(held),
            Shared::Alone => {}
        }
    }
    fly(pipeline.clone(), job, flight.clone()).await;
    let complete = matches!(flight.state().end, Some(End::Complete));
    match save {
        Some(save) if complete => store(&pipeline, flight, key, save, lease),
        // A lease dropped unshared tells the fleet's followers to call on their own.
        _ => pipeline.cache.flights.land(&key, &flight),
    }
}

/// Publishes another gateway's answer into `flight`, whole.
fn publish_stored(flight: &Flight, stored: &Stored, from: FromFleet) {
    let mut headers = HeaderMap::new();
    for (name, value) in &stored.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(n, v);
        }
    }
    let head = Head {
        provider: stored.provider.clone().unwrap_or_default(),
        model: stored.model.clone().unwrap_or_default(),
        key_alias: String::new(),
        attempts: 0,
        waited: std::time::Duration::ZERO,
        stream: stored.chunks.is_some(),
        headers,
        trail: Vec::new(),
        from_fleet: Some(from),
    };
    flight.update(|s| {
        s.head = Some(Arc::new(head));
        s.body = stored
            .body
            .as_ref()
            .map(|b| Bytes::copy_from_slice(b.get().as_bytes()));
        s.events = stored
            .chunks
            .iter()
            .flatten()
            .map(|c| c.get().to_string())
            .collect();
        s.end = Some(End::Complete);
    });
}

/// Hands a complete answer to the cache's writer, which builds its record off the request's
/// path, stores it, then lands the flight; this task is done, and its client's answer does not
/// wait for the copying. With a `lease`, the record is shared with the fleet as it is built.
fn store(
    pipeline: &Pipeline,
    flight: Arc<Flight>,
    key: CacheKey,
    save: Save,
    lease: Option<Lease>,
) {
    let size = {
        let s = flight.state();
        let answer =
            s.body.as_ref().map_or(0, Bytes::len) + s.events.iter().map(String::len).sum::<usize>();
        (answer + save.request.len()) as u64
    };
    let source = flight.clone();
    let now = pipeline.cache.now_unix();
    let ttl = pipeline.cache.config.ttl;
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
        let bytes = encode_answer(&fields, Some(&body), &save.request);
        if let Some(lease) = lease {
            lease.share_later(Cache::shared_frame(&key, &bytes), ttl);
        }
        Some(Record {
            created: now,
            bytes,
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
        trail,
        ticket,
    } = served;
    let head = move |stream: bool, headers: HeaderMap| Head {
        provider,
        model,
        key_alias,
        attempts,
        waited,
        trail,
        stream,
        headers,
        from_fleet: None,
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
