//! An [`Outcome`] rendered as the client's HTTP response: the body with its content type, and
//! spillway's headers: what the cache did (`x-spillway-cache`, its reason, the key), where the
//! answer came from (`x-spillway-provider`, `-model`, `-key`, `-attempts`, `x-request-id`), the
//! keys and targets it left on the way (`x-spillway-fallback`), how long it waited (`x-spillway-wait-ms`), and the route's pool of limits (`x-ratelimit-*`).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::limits::headers::format_go_duration;
use crate::limits::kind::Kind;
use crate::limits::ledger::Pool;
use crate::pipeline::{CacheStatus, Origin, Outcome, Reply, ReplyBody};
use crate::server::names::{
    X_REQUEST_ID, X_SPILLWAY_ATTEMPTS, X_SPILLWAY_CACHE, X_SPILLWAY_CACHE_KEY,
    X_SPILLWAY_CACHE_REASON, X_SPILLWAY_CACHE_TIER, X_SPILLWAY_FALLBACK, X_SPILLWAY_KEY,
    X_SPILLWAY_MODEL, X_SPILLWAY_PROVIDER, X_SPILLWAY_WAIT_MS,
};

/// The pool headers, in Groq's format and meaning: requests per day, tokens per minute.
const POOL_FAMILIES: [(Kind, [HeaderName; 3]); 2] = [
    (
        Kind::RequestsPerDay,
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
    ),
    (
        Kind::TokensPerMinute,
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ),
];

/// The client's response for `outcome`, with the route's `pool` when the request named a route.
pub fn response(outcome: Outcome, pool: Option<&Pool>) -> Response {
    let trail = match &outcome.reply {
        Err(_) => outcome.fallback(),
        Ok(_) => None,
    };
    let Outcome {
        cache, key, reply, ..
    } = outcome;
    let mut response = match reply {
        Ok(reply) => answer(reply),
        Err(e) => e.into_response(),
    };
    let h = response.headers_mut();
    if let Some(trail) = trail
        && let Ok(v) = HeaderValue::from_str(&trail)
    {
        h.insert(X_SPILLWAY_FALLBACK, v);
    }
    mark(h, cache);
    if let Some(key) = key
        && let Ok(v) = HeaderValue::from_str(&key.to_hex())
    {
        h.insert(X_SPILLWAY_CACHE_KEY, v);
    }
    if let Some(pool) = pool {
        pool_headers(h, pool);
    }
    response
}

/// `x-spillway-cache`, with its tier on a hit or a coalesced request, and its reason when the
/// request was skipped.
fn mark(h: &mut HeaderMap, cache: CacheStatus) {
    h.insert(X_SPILLWAY_CACHE, HeaderValue::from_static(cache.name()));
    if let Some(tier) = cache.tier() {
        h.insert(X_SPILLWAY_CACHE_TIER, HeaderValue::from_static(tier));
    }
    if let Some(reason) = cache.reason() {
        h.insert(X_SPILLWAY_CACHE_REASON, HeaderValue::from_static(reason));
    }
}

/// A successful answer: its body and where it came from.
fn answer(reply: Reply) -> Response {
    let Reply { origin, body, .. } = reply;
    let (body, content_type, stream) = match body {
        ReplyBody::Json {
            bytes,
            content_type,
        } => (Body::from(bytes), content_type, false),
        ReplyBody::Events(bytes) => (Body::from(bytes), None, true),
        ReplyBody::Live(events) => (Body::from_stream(events), None, true),
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    if stream {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        let json = HeaderValue::from_static("application/json");
        h.insert(header::CONTENT_TYPE, content_type.unwrap_or(json));
    }
    provenance(h, origin);
    response
}

/// Where the answer came from: each header absent, not empty, when unknown (a cache hit has
/// no key).
fn provenance(h: &mut HeaderMap, origin: Origin) {
    if let Some(trail) = origin.fallback()
        && let Ok(v) = HeaderValue::from_str(&trail)
    {
        h.insert(X_SPILLWAY_FALLBACK, v);
    }
    for (name, value) in [
        (X_SPILLWAY_PROVIDER, origin.provider),
        (X_SPILLWAY_MODEL, origin.model),
        (X_SPILLWAY_KEY, origin.key_alias),
    ] {
        if let Some(v) = value.filter(|v| !v.is_empty())
            && let Ok(v) = HeaderValue::from_str(&v)
        {
            h.insert(name, v);
        }
    }
    h.insert(X_SPILLWAY_ATTEMPTS, HeaderValue::from(origin.attempts));
    if let Some(id) = origin.request_id {
        h.insert(X_REQUEST_ID, id);
    }
    if !origin.waited.is_zero() {
        let ms = u64::try_from(origin.waited.as_millis()).unwrap_or(u64::MAX);
        h.insert(X_SPILLWAY_WAIT_MS, HeaderValue::from(ms));
    }
}

/// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`: each summed over every key of every
/// target in the route's chain that knows the limit (a window no key knows is left out); the
/// reset is when the last of those windows is whole again, in wall-clock time.
fn pool_headers(h: &mut HeaderMap, pool: &Pool) {
    for (kind, [limit, remaining, reset]) in POOL_FAMILIES {
        let Some(reading) = pool.get(kind) else {
            continue;
        };
        h.insert(limit, HeaderValue::from(reading.limit));
        h.insert(remaining, HeaderValue::from(reading.remaining));
        if let Ok(v) = HeaderValue::from_str(&format_go_duration(reading.resets_in)) {
            h.insert(reset, v);
        }
    }
}
