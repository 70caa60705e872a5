//! A request's way through the cache: bypass, hit, replay miss, or a flight (led or joined),
//! answered in the shape the client asked for whatever shape the answer was produced in. Every
//! response says `x-spillway-cache: hit | miss | bypass | coalesced` and, when the request was
//! keyed, `x-spillway-cache-key`.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::cache::convert::{
    chunks_from_completion, completion_from_chunks, sse_body, wants_usage,
};
use crate::cache::entry::{AnswerBody, Fields, Stored, encode_answer, keep_header};
use crate::cache::flight::{End, ErrorReply, Flight, FlightState, Head};
use crate::cache::key::{CacheKey, canonical_request, key_of_canonical};
use crate::cache::policy::{CacheMode, Directive, request_controls};
use crate::cache::writer::Record;
use crate::router::{Job, Served};
use crate::server::api::{UsageNote, provenance, respond};
use crate::server::error::ProxyError;
use crate::server::names::{
    X_REQUEST_ID, X_SPILLWAY_CACHE, X_SPILLWAY_CACHE_KEY, X_SPILLWAY_CACHE_NAMESPACE,
};
use crate::server::relay::error_event;
use crate::state::AppState;
use crate::upstream::Answer;
use crate::upstream::sse::SseWatch;

/// What the cache did for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the store.
    Hit,
    /// Not stored: this request's upstream call made the answer.
    Miss,
    /// The cache was not used.
    Bypass,
    /// Joined an identical request's upstream call.
    Coalesced,
}

impl CacheStatus {
    /// The header value.
    pub const fn name(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Coalesced => "coalesced",
        }
    }
}

fn mark(response: &mut Response, status: CacheStatus, key: Option<&CacheKey>) {
    let h = response.headers_mut();
    h.insert(X_SPILLWAY_CACHE, HeaderValue::from_static(status.name()));
    if let Some(key) = key
        && let Ok(v) = HeaderValue::from_str(&key.to_hex())
    {
        h.insert(X_SPILLWAY_CACHE_KEY, v);
    }
}

/// The namespace a request's entries live in: its header, else its route's, else none.
fn namespace(state: &AppState, job: &Job, headers: &HeaderMap) -> Result<String, ProxyError> {
    if let Some(v) = headers.get(X_SPILLWAY_CACHE_NAMESPACE) {
        let ns = v
            .to_str()
            .map_err(|_| {
                ProxyError::invalid(
                    "x-spillway-cache-namespace",
                    "x-spillway-cache-namespace must be text",
                )
            })?
            .trim();
        if ns.len() > 256 {
            return Err(ProxyError::invalid(
                "x-spillway-cache-namespace",
                "x-spillway-cache-namespace is longer than 256 bytes",
            ));
        }
        return Ok(ns.to_string());
    }
    Ok(state.config.routes[job.route]
        .cache_namespace
        .clone()
        .unwrap_or_default())
}

/// Routes `job` through the cache.
pub async fn handle(
    state: &Arc<AppState>,
    job: Job,
    headers: &HeaderMap,
) -> Result<Response, ProxyError> {
    let cache = &state.cache;
    let controls =
        request_controls(headers).map_err(|m| ProxyError::invalid("x-spillway-cache", m))?;
    let mode = cache.config.mode;
    let keyed = mode != CacheMode::Off
        && controls.directive != Directive::Bypass
        && (mode == CacheMode::Replay || cache.config.when.allows(&job.body));
    if !keyed {
        state.metrics.cache(CacheStatus::Bypass.name());
        let served = state.router.execute(&job).await?;
        let mut response = respond(served);
        mark(&mut response, CacheStatus::Bypass, None);
        return Ok(response);
    }
    let route = state.config.routes[job.route].model.clone();
    let namespace = namespace(state, &job, headers)?;
    let endpoint = job.endpoint.name();
    let canonical = canonical_request(&job.body);
    let key = key_of_canonical(endpoint, &route, &namespace, &canonical);
    let want_stream = job.stream;
    let include_usage = wants_usage(&job.body);

    if controls.directive != Directive::Refresh
        && let Some(stored) = cache.lookup(&key)
    {
        state.metrics.cache(CacheStatus::Hit.name());
        let mut response = render_hit(&stored, want_stream, include_usage)?;
        mark(&mut response, CacheStatus::Hit, Some(&key));
        return Ok(response);
    }
    if mode == CacheMode::Replay || controls.directive == Directive::OnlyIfCached {
        state.metrics.cache("miss");
        let closest = if mode == CacheMode::Replay {
            let request: Value = serde_json::from_slice(&canonical).unwrap_or(Value::Null);
            cache.closest(&route, endpoint, &namespace, &request)
        } else {
            None
        };
        return Err(ProxyError::CacheMiss {
            key,
            route,
            closest,
            offline: mode == CacheMode::Replay,
        });
    }
    let save = (mode == CacheMode::ReadWrite && !controls.no_store).then(|| Save {
        namespace,
        route,
        endpoint: endpoint.to_string(),
        request: canonical,
    });
    let (flight, leader) = cache.flights.join(key);
    let mut beside = None;
    let status = if leader {
        let call = fly(state.clone(), job, flight.clone(), key, save);
        if want_stream {
            // A stream is relayed while it arrives: the call is driven beside the response,
            // in the same task (a task of its own would be handed to the other worker thread
            // and wake this one for every event), until another client joins.
            beside = Some(Driver::lead(&flight, call));
        } else {
            // A plain answer: the leader makes the call itself, sparing a hand-over between
            // tasks (and threads) per request; if its client goes away first, the call goes on
            // in a task of its own for the others.
            Driver::new(call).run().await;
        }
        CacheStatus::Miss
    } else {
        // This client must not depend on the leader's client reading its stream.
        flight.hand_over();
        if matches!(flight.state().end, Some(End::Complete)) {
            // The answer is whole and on its way into the store: nothing was waited for, so
            // for this client it is a hit, however soon the writer gets to it.
            CacheStatus::Hit
        } else {
            CacheStatus::Coalesced
        }
    };
    state.metrics.cache(status.name());
    let rendered = render_flight(flight, want_stream, include_usage);
    let mut response = match beside {
        Some(call) => call
            .beside(rendered)
            .await?
            .map(|body| Body::new(DrivenBody { call, body })),
        None => rendered.await?,
    };
    mark(&mut response, status, Some(&key));
    Ok(response)
}

/// A flight's upstream call, driven in place by its leader until it finishes or is detached;
/// then it goes on in a task of its own. A plain answer's leader awaits it in its handler and
/// detaches it only if its client goes away; a stream's leader drives it from its response
/// (while the head is awaited and each time the body is read), and detaches it also when
/// another client joins.
struct Driver(Arc<std::sync::Mutex<Option<Call>>>);

/// An upstream call for a flight.
type Call = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Driver {
    fn new(call: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Driver(Arc::new(std::sync::Mutex::new(Some(Box::pin(call)))))
    }

    /// Holds `flight`'s call, to be driven by the leader; a client that joins `flight` moves it
    /// to a task of its own ([`Flight::hand_over`]).
    fn lead(flight: &Flight, call: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let driver = Driver::new(call);
        let slot = driver.0.clone();
        flight.set_hand_over(Box::new(move || Driver(slot).detach()));
        driver
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Call>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls the call, unless it has finished or moved to a task of its own; true when it is no
    /// longer here (finished or moved).
    fn poll_call(&self, cx: &mut std::task::Context<'_>) -> bool {
        let mut slot = self.slot();
        if let Some(call) = slot.as_mut()
            && call.as_mut().poll(cx).is_ready()
        {
            *slot = None;
        }
        slot.is_none()
    }

    /// Drives the call until it finishes.
    async fn run(self) {
        std::future::poll_fn(|cx| {
            if self.poll_call(cx) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Drives the call while `main` runs; returns what `main` returns (the call may go on).
    async fn beside<T>(&self, main: impl std::future::Future<Output = T>) -> T {
        let mut main = std::pin::pin!(main);
        std::future::poll_fn(|cx| {
            let _ = self.poll_call(cx);
            main.as_mut().poll(cx)
        })
        .await
    }

    /// Moves the call, if it is still here, to a task of its own.
    fn detach(&self) {
        let call = self.slot().take();
        if let Some(call) = call
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(call);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.detach();
    }
}

/// A response body that drives its flight's call each time it is read.
struct DrivenBody {
    call: Driver,
    body: Body,
}

impl hyper::body::Body for DrivenBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let _ = this.call.poll_call(cx);
        std::pin::Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What a flight's answer is stored as.
struct Save {
    namespace: String,
    route: String,
    endpoint: String,
    request: Vec<u8>,
}

/// Makes the upstream call for a flight, publishes the answer as it arrives, stores it when
/// complete, and lands the flight.
async fn fly(
    state: Arc<AppState>,
    job: Job,
    flight: Arc<Flight>,
    key: CacheKey,
    save: Option<Save>,
) {
    match state.router.execute(&job).await {
        Ok(served) => publish(&flight, served).await,
        Err(e) => {
            let reply = error_reply(e).await;
            flight.update(|s| s.end = Some(End::Failed(reply)));
        }
    }
    let complete = matches!(flight.state().end, Some(End::Complete));
    if let Some(save) = save
        && complete
    {
        // The writer thread builds the entry and stores it, then lands the flight, so
        // identical requests meanwhile join the (complete) flight instead of missing; this
        // task is done, and its client's answer does not wait for the copying.
        let Save {
            namespace,
            route,
            endpoint,
            request,
        } = save;
        let source = flight.clone();
        let now = state.cache.now_unix();
        let record = Box::new(move || {
            let s = source.state();
            let head = s.head.as_ref()?;
            let fields = Fields {
                created: now,
                namespace: &namespace,
                route: &route,
                endpoint: &endpoint,
                provider: Some(&head.provider),
                model: Some(&head.model),
                status: 200,
                headers: kept_headers(&head.headers),
            };
            let body = answer_body(&s, head.stream)?;
            Some(Record {
                created: now,
                bytes: encode_answer(&fields, Some(&body), &request),
            })
        });
        let flights = state.cache.flights.clone();
        let landing = flight;
        state
            .cache
            .save_later(key, record, Box::new(move || flights.land(&key, &landing)));
        return;
    }
    state.cache.flights.land(&key, &flight);
}

async fn publish(flight: &Flight, served: Served) {
    let Served {
        answer,
        provider,
        model,
        key_alias,
        attempts,
        ticket,
    } = served;
    let head = move |stream: bool, headers: HeaderMap| Head {
        provider,
        model,
        key_alias,
        attempts,
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
            first,
            mut rest,
        } => {
            let mut watch = SseWatch::default();
            let mut events = Vec::new();
            watch.feed_events(&first, &mut events);
            flight.update(|s| {
                s.head = Some(Arc::new(head(true, headers)));
                s.events.append(&mut events);
            });
            let end = loop {
                match rest.next().await {
                    Some(Ok(bytes)) => {
                        watch.feed_events(&bytes, &mut events);
                        if !events.is_empty() {
                            flight.update(|s| s.events.append(&mut events));
                        }
                    }
                    Some(Err(e)) => break End::Broken(watch.error.clone().unwrap_or(e)),
                    None if watch.done && watch.error.is_none() => break End::Complete,
                    None => {
                        break End::Broken(
                            watch
                                .error
                                .clone()
                                .unwrap_or_else(|| "the stream ended without [DONE]".into()),
                        );
                    }
                }
            };
            if let Some(ticket) = ticket {
                ticket.finish(watch.usage);
            }
            flight.update(|s| {
                s.usage = watch.usage;
                s.end = Some(end);
            });
        }
    }
}

async fn error_reply(e: ProxyError) -> ErrorReply {
    let (parts, body) = e.into_response().into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    ErrorReply {
        status: parts.status,
        headers: parts.headers,
        body,
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

fn json_response(body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn broken(why: &str) -> ProxyError {
    ProxyError::AllFailed {
        route: "(stream)".into(),
        attempts: vec![format!("the upstream stream broke off: {why}")],
    }
}

/// A stored entry in the shape the client asked for.
fn render_hit(
    stored: &Stored,
    want_stream: bool,
    include_usage: bool,
) -> Result<Response, ProxyError> {
    let unusable = || ProxyError::Internal("a cache entry could not be rendered".into());
    let mut response = match (want_stream, &stored.body, &stored.chunks) {
        (false, Some(body), _) => json_response(Bytes::copy_from_slice(body.get().as_bytes())),
        (false, None, Some(chunks)) => {
            json_response(completion_from_chunks(chunks).ok_or_else(unusable)?)
        }
        (true, _, Some(chunks)) => {
            let texts: Vec<&str> = chunks.iter().map(|c| c.get()).collect();
            sse_response(Body::from(sse_body(&texts, include_usage)))
        }
        (true, Some(body), None) => {
            let chunks = chunks_from_completion(body).ok_or_else(unusable)?;
            sse_response(Body::from(sse_body(&chunks, include_usage)))
        }
        (_, None, None) => return Err(unusable()),
    };
    provenance(
        &mut response,
        stored.provider.as_deref().unwrap_or(""),
        stored.model.as_deref().unwrap_or(""),
        "",
        0,
    );
    Ok(response)
}

/// Events `from..` rendered as SSE, usage-only chunks kept only when asked for.
fn render_events(events: &[String], include_usage: bool) -> String {
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

/// A flight's answer, as it arrives, in the shape the client asked for.
async fn render_flight(
    flight: Arc<Flight>,
    want_stream: bool,
    include_usage: bool,
) -> Result<Response, ProxyError> {
    enum Start {
        Head(Arc<Head>),
        Failed(ErrorReply),
    }
    let start = flight
        .wait_for(|s| match (&s.head, &s.end) {
            (Some(h), _) => Some(Start::Head(h.clone())),
            (None, Some(End::Failed(reply))) => Some(Start::Failed(reply.clone())),
            _ => None,
        })
        .await;
    let head = match start {
        Start::Head(h) => h,
        Start::Failed(reply) => {
            let mut r = Response::new(Body::from(reply.body));
            *r.status_mut() = reply.status;
            *r.headers_mut() = reply.headers;
            return Ok(r);
        }
    };
    let mut response = if head.stream && want_stream {
        let body = futures_util::stream::unfold(
            (flight, 0usize, false),
            move |(f, from, done)| async move {
                if done {
                    return None;
                }
                let (text, next, finished) = f
                    .wait_for(|s| {
                        if s.events.len() > from {
                            Some((
                                render_events(&s.events[from..], include_usage),
                                s.events.len(),
                                false,
                            ))
                        } else {
                            match &s.end {
                                Some(End::Complete) => {
                                    Some(("data: [DONE]\n\n".to_string(), from, true))
                                }
                                Some(End::Broken(why)) => Some((
                                    String::from_utf8_lossy(&error_event(why)).into_owned(),
                                    from,
                                    true,
                                )),
                                Some(End::Failed(_)) => Some((
                                    String::from_utf8_lossy(&error_event(
                                        "the upstream call failed",
                                    ))
                                    .into_owned(),
                                    from,
                                    true,
                                )),
                                None => None,
                            }
                        }
                    })
                    .await;
                Some((
                    Ok::<_, std::io::Error>(Bytes::from(text)),
                    (f, next, finished),
                ))
            },
        );
        sse_response(Body::from_stream(body))
    } else {
        let (events, body, usage, end) = flight
            .wait_for(|s| {
                s.end
                    .clone()
                    .map(|end| (s.events.clone(), s.body.clone(), s.usage, end))
            })
            .await;
        match end {
            End::Failed(reply) => {
                let mut r = Response::new(Body::from(reply.body));
                *r.status_mut() = reply.status;
                *r.headers_mut() = reply.headers;
                return Ok(r);
            }
            End::Broken(why) => return Err(broken(&why)),
            End::Complete => {}
        }
        match (head.stream, want_stream) {
            (true, _) => {
                let raws = events
                    .into_iter()
                    .map(|e| RawValue::from_string(e).ok())
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| broken("a chunk was not JSON"))?;
                json_response(
                    completion_from_chunks(&raws)
                        .ok_or_else(|| broken("the chunks did not assemble"))?,
                )
            }
            (false, false) => {
                let mut r = json_response(body.unwrap_or_default());
                if let Some((p, c)) = usage {
                    r.extensions_mut().insert(UsageNote(p, c));
                }
                if let Some(ct) = head.headers.get(header::CONTENT_TYPE) {
                    r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                }
                r
            }
            (false, true) => {
                let body = body.unwrap_or_default();
                let raw: Box<RawValue> =
                    serde_json::from_slice(&body).map_err(|_| broken("the answer was not JSON"))?;
                let chunks = chunks_from_completion(&raw)
                    .ok_or_else(|| broken("the answer could not be streamed"))?;
                sse_response(Body::from(sse_body(&chunks, include_usage)))
            }
        }
    };
    if let Some(id) = head.headers.get(X_REQUEST_ID) {
        response.headers_mut().insert(X_REQUEST_ID, id.clone());
    }
    provenance(
        &mut response,
        &head.provider,
        &head.model,
        &head.key_alias,
        head.attempts,
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A call that ends its flight once `go` fires.
    async fn call(flight: Arc<Flight>, go: tokio::sync::oneshot::Receiver<()>) {
        let _ = go.await;
        flight.update(|s| s.end = Some(End::Complete));
    }

    async fn ended(flight: &Flight) -> bool {
        tokio::time::timeout(Duration::from_secs(2), flight.wait_for(|s| s.end.clone()))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_joining_client_moves_the_call_off_a_leader_that_stopped_reading() {
        let flight = Arc::new(Flight::default());
        let (go, wait) = tokio::sync::oneshot::channel();
        let leader = Driver::lead(&flight, call(flight.clone(), wait));
        // The leader drives the call once, then its client stops reading: no more polls.
        std::future::poll_fn(|cx| {
            let _ = leader.poll_call(cx);
            std::task::Poll::Ready(())
        })
        .await;
        flight.hand_over();
        go.send(()).unwrap();
        assert!(ended(&flight).await, "the call went on without the leader");
        drop(leader);
    }

    #[tokio::test]
    async fn without_a_joiner_the_call_moves_on_when_the_leader_is_dropped() {
        let flight = Arc::new(Flight::default());
        let (go, wait) = tokio::sync::oneshot::channel();
        let leader = Driver::lead(&flight, call(flight.clone(), wait));
        go.send(()).unwrap();
        assert!(!ended(&flight).await, "nobody drives the call yet");
        drop(leader);
        assert!(ended(&flight).await);
    }
}
