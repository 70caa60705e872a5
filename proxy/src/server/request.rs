//! A request read and checked: its body (bounded in size and time), its JSON, its route and
//! fields, and its cache controls and namespace, into the pipeline's [`Request`]. Every
//! refusal here is a 4xx in OpenAI's format, before anything reaches the cache or a provider.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use serde_json::{Map, Value};

use crate::cache::policy::RequestControls;
use crate::error::ProxyError;
use crate::pipeline::Request;
use crate::router::Job;
use crate::server::names::{X_SPILLWAY_CACHE, X_SPILLWAY_CACHE_NAMESPACE};
use crate::state::AppState;
use crate::upstream::Endpoint;

/// Longest cache namespace a client may name.
const MAX_NAMESPACE: usize = 256;

/// Reads a request's body: at most `[server] max_body_bytes`, within `[server] client_timeout`.
pub async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ProxyError> {
    let limit = state.config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let after = state.config.server.client_timeout;
    let read = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, limit));
    match tokio::time::timeout(after, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ProxyError::BodyTooLarge { limit })
        }
        // A malformed chunked encoding, or a client that hung up midway.
        Ok(Err(e)) => Err(ProxyError::BodyUnreadable {
            why: crate::upstream::describe(&*e),
        }),
        Err(_) => Err(ProxyError::ClientTimeout { after }),
    }
}

fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ProxyError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ProxyError::InvalidRequest {
            message: "The request body must be a JSON object".into(),
            param: None,
        }),
        Err(e) => Err(ProxyError::InvalidRequest {
            message: format!("The request body is not valid JSON: {e}"),
            param: None,
        }),
    }
}

/// The route a request names, checked.
fn route_of(state: &AppState, body: &Map<String, Value>) -> Result<(usize, String), ProxyError> {
    let model = match body.get("model") {
        None | Some(Value::Null) => {
            return Err(ProxyError::invalid("model", "property 'model' is missing"));
        }
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ProxyError::invalid("model", "'model' must be a string")),
    };
    match state.routes.get(&model) {
        Some(i) => Ok((*i, model)),
        None => Err(ProxyError::UnknownModel {
            model,
            known: state.route_names(),
        }),
    }
}

/// The largest completion allowance a request may ask for: more than any model writes, and
/// small enough that the limit accounting, which sums allowances, cannot overflow.
const MAX_OUTPUT_TOKENS: u64 = u32::MAX as u64;

/// The completion allowance: `max_completion_tokens`, else `max_tokens`, else none. Each field
/// present is checked, whichever is used.
fn max_output(body: &Map<String, Value>) -> Result<Option<u64>, ProxyError> {
    let mut allowance = None;
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_OUTPUT_TOKENS).contains(&n) => {
                    allowance = allowance.or(Some(n));
                }
                _ => {
                    return Err(ProxyError::invalid(
                        field,
                        format!("'{field}' must be an integer from 1 to {MAX_OUTPUT_TOKENS}"),
                    ));
                }
            },
        }
    }
    Ok(allowance)
}

fn stream_flag(body: &Map<String, Value>) -> Result<bool, ProxyError> {
    match body.get("stream") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ProxyError::invalid("stream", "'stream' must be a boolean")),
    }
}

/// Reads a chat request into a routable job.
pub fn chat_job(state: &AppState, raw: Bytes) -> Result<Job, ProxyError> {
    let body = parse_object(&raw)?;
    let (route, _) = route_of(state, &body)?;
    match body.get("messages") {
        None | Some(Value::Null) => {
            return Err(ProxyError::invalid(
                "messages",
                "property 'messages' is missing",
            ));
        }
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(ProxyError::invalid(
                "messages",
                "'messages' must not be empty",
            ));
        }
        Some(Value::Array(_)) => {}
        Some(_) => {
            return Err(ProxyError::invalid(
                "messages",
                "'messages' must be an array",
            ));
        }
    }
    Ok(Job {
        route,
        endpoint: Endpoint::Chat,
        stream: stream_flag(&body)?,
        max_output: max_output(&body)?,
        prompt_estimate: Default::default(),
        body,
        raw,
    })
}

/// Reads an embeddings request into a routable job.
pub fn embeddings_job(state: &AppState, raw: Bytes) -> Result<Job, ProxyError> {
    let body = parse_object(&raw)?;
    let (route, _) = route_of(state, &body)?;
    match body.get("input") {
        None | Some(Value::Null) => {
            return Err(ProxyError::invalid("input", "property 'input' is missing"));
        }
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => {
            return Err(ProxyError::invalid(
                "input",
                "'input' must be a string or an array",
            ));
        }
    }
    Ok(Job {
        route,
        endpoint: Endpoint::Embeddings,
        stream: false,
        max_output: Some(0),
        prompt_estimate: Default::default(),
        body,
        raw,
    })
}

/// The cache controls a request's headers ask for (`x-spillway-cache`, `Cache-Control`).
fn controls(headers: &HeaderMap) -> Result<RequestControls, ProxyError> {
    let directive = headers
        .get(X_SPILLWAY_CACHE)
        .map(|v| v.to_str().unwrap_or(""));
    let cache_control = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    RequestControls::parse(directive, cache_control)
        .map_err(|m| ProxyError::invalid("x-spillway-cache", m))
}

/// The namespace a request's entries live in: its header, else its route's, else none.
fn namespace(state: &AppState, route: usize, headers: &HeaderMap) -> Result<String, ProxyError> {
    let Some(v) = headers.get(X_SPILLWAY_CACHE_NAMESPACE) else {
        return Ok(state.config.routes[route]
            .cache_namespace
            .clone()
            .unwrap_or_default());
    };
    let ns = v
        .to_str()
        .map_err(|_| {
            ProxyError::invalid(
                "x-spillway-cache-namespace",
                "x-spillway-cache-namespace must be text",
            )
        })?
        .trim();
    if ns.len() > MAX_NAMESPACE {
        return Err(ProxyError::invalid(
            "x-spillway-cache-namespace",
            format!("x-spillway-cache-namespace is longer than {MAX_NAMESPACE} bytes"),
        ));
    }
    Ok(ns.to_string())
}

/// A parsed job with what its headers ask of the cache. The cache's headers are checked
/// whether or not the cache keys the request: bad input is refused the same way.
pub fn request(state: &AppState, job: Job, headers: &HeaderMap) -> Result<Request, ProxyError> {
    let controls = controls(headers)?;
    let namespace = namespace(state, job.route, headers)?;
    Ok(Request {
        job,
        controls,
        namespace,
    })
}
