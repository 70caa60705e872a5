//! Groq's (and OpenAI's) endpoints: chat completions, plain and streamed, embeddings and models.
//! Served under both `/openai/v1` and `/v1`.
//!
//! A chat request goes: key → body → fields → model → flex tier → fault rules that strike
//! before admission (status, reset, hang) → rate limiter (413 / 429) → latency → the answer,
//! possibly cut or garbled by a fault. Every request is journaled with the status it got.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::bodies::{json_body, stream_body};
use crate::error::MockError;
use crate::faults::{self, FaultPlan};
use crate::headers::{retry_after_secs, write_rate_limit_headers};
use crate::journal::JournalEntry;
use crate::limiter::{Decision, Usage};
use crate::reply::{Ids, completion_body, embeddings_body, reply_for};
use crate::request::{ChatRequest, EmbeddingsRequest, read_body};
use crate::spec::Fault;
use crate::state::MockState;

/// Marks a response whose connection the server must reset instead of answering.
#[derive(Clone, Copy, Debug)]
pub struct ResetConnection;

/// The API routes, to be nested under `/openai/v1` and `/v1`.
pub fn api_routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/chat/completions", post(chat).fallback(method_not_allowed))
        .route("/embeddings", post(embeddings).fallback(method_not_allowed))
        .route("/models", get(list_models).fallback(method_not_allowed))
        .route("/models/{*id}", get(get_model).fallback(method_not_allowed))
}

/// The answer to a path the API does not have.
pub async fn unknown_url(
    State(st): State<Arc<MockState>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let entry = new_entry(&st, st.next_request(), "unknown", &headers);
    reject(
        &st,
        None,
        None,
        entry,
        MockError::UnknownUrl {
            method: method.to_string(),
            path: uri.path().to_string(),
        },
        HeaderMap::new(),
    )
}

async fn method_not_allowed(
    State(st): State<Arc<MockState>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    let entry = new_entry(&st, st.next_request(), "unknown", &headers);
    reject(
        &st,
        None,
        None,
        entry,
        MockError::MethodNotAllowed {
            method: method.to_string(),
            path: uri.path().to_string(),
        },
        HeaderMap::new(),
    )
}

fn new_entry(st: &MockState, seq: u64, endpoint: &str, headers: &HeaderMap) -> JournalEntry {
    JournalEntry {
        seq,
        at: st.clock.now().as_secs_f64(),
        endpoint: endpoint.to_string(),
        retry_count: headers
            .get("x-stainless-retry-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        ..JournalEntry::default()
    }
}

/// Renders an error in the mock's dialect, adds `extra` headers, and records it.
fn reject(
    st: &MockState,
    key: Option<usize>,
    model: Option<usize>,
    mut entry: JournalEntry,
    err: MockError,
    extra: HeaderMap,
) -> Response {
    let retry_in = match &err {
        MockError::RateLimited { denial, .. } => Some(denial.wait),
        _ => None,
    };
    let mut response = err.into_response_in(st.spec.dialect);
    response.headers_mut().extend(extra);
    entry.status = response.status().as_u16();
    entry.retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    entry.retry_in_ms = retry_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    st.record(key, model, entry);
    response
}

/// What the limiter said, as the response headers and (on refusal) the error.
fn admit(
    st: &MockState,
    key: usize,
    model: usize,
    cost: Usage,
    entry: &mut JournalEntry,
) -> (HeaderMap, Option<MockError>) {
    let now = st.clock.now();
    entry.at = now.as_secs_f64();
    entry.tokens = cost.tokens;
    let mut headers = HeaderMap::new();
    let model_name = st.limiter.model_name(model).to_string();
    let refusal = match st.limiter.decide(key, model, now, cost) {
        Decision::Admit(snapshot) => {
            write_rate_limit_headers(&mut headers, st.spec.dialect, &snapshot, &st.clock);
            None
        }
        Decision::Deny(mut denial, snapshot) => {
            write_rate_limit_headers(&mut headers, st.spec.dialect, &snapshot, &st.clock);
            // `retry-after` and the message's "Please try again in" are wall-clock time.
            denial.wait = st.clock.to_wall(denial.wait);
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(denial.wait)),
            );
            Some(MockError::RateLimited {
                model: model_name,
                organization: st.spec.organization.clone(),
                denial,
            })
        }
        Decision::TooLarge {
            kind,
            limit,
            requested,
            snapshot,
        } => {
            write_rate_limit_headers(&mut headers, st.spec.dialect, &snapshot, &st.clock);
            Some(MockError::RequestTooLarge {
                model: model_name,
                organization: st.spec.organization.clone(),
                kind,
                limit,
                requested,
            })
        }
    };
    (headers, refusal)
}

/// Applies a fault that strikes before admission: an error status, a reset or a hang.
async fn strike_early(
    st: &MockState,
    key: usize,
    model: usize,
    mut entry: JournalEntry,
    fault: Fault,
    plan: &FaultPlan,
) -> Response {
    entry.fault = Some(fault.label());
    match fault {
        Fault::Status(status) => {
            st.clock.sleep(plan.delay).await;
            let err = MockError::ServerFault {
                status,
                model: st.limiter.model_name(model).to_string(),
            };
            reject(st, Some(key), Some(model), entry, err, HeaderMap::new())
        }
        Fault::Reset => {
            entry.status = 0;
            st.record(Some(key), Some(model), entry);
            let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
            response.extensions_mut().insert(ResetConnection);
            response
        }
        _ => {
            entry.status = 0;
            st.record(Some(key), Some(model), entry);
            // Headers never come: wait for the client to give up or the mock to stop.
            st.shutdown.cancelled().await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn chat(State(st): State<Arc<MockState>>, headers: HeaderMap, body: Body) -> Response {
    let seq = st.next_request();
    let mut entry = new_entry(&st, seq, "chat", &headers);
    let key = match st.authenticate(&headers) {
        Ok(k) => k,
        Err(e) => return reject(&st, None, None, entry, e, HeaderMap::new()),
    };
    entry.key = Some(st.limiter.key_name(key).to_string());
    let req = match read_body(body, &headers, st.spec.max_body_bytes, st.spec.read_timeout)
        .await
        .and_then(|bytes| ChatRequest::parse(&bytes))
    {
        Ok(r) => r,
        Err(e) => return reject(&st, Some(key), None, entry, e, HeaderMap::new()),
    };
    entry.model = Some(req.model.clone());
    entry.stream = req.stream;
    let Some(model) = st.limiter.model_index(&req.model) else {
        let err = MockError::UnknownModel(req.model.clone());
        return reject(&st, Some(key), None, entry, err, HeaderMap::new());
    };
    if st.spec.flex_capacity_exceeded && req.service_tier.as_deref() == Some("flex") {
        let err = MockError::CapacityExceeded {
            model: req.model.clone(),
        };
        return reject(&st, Some(key), Some(model), entry, err, HeaderMap::new());
    }
    let reply = reply_for(&req);
    let (n, model_n) = st.next_generation(model);
    let plan = faults::plan(&st.faults.load(), &req.model, n, model_n);
    if let Some(fault) = plan.fault.filter(Fault::precedes_admission) {
        return strike_early(&st, key, model, entry, fault, &plan).await;
    }
    let cost = Usage::request(req.prompt_tokens, reply.completion_tokens);
    let (limit_headers, refusal) = admit(&st, key, model, cost, &mut entry);
    if let Some(err) = refusal {
        return reject(&st, Some(key), Some(model), entry, err, limit_headers);
    }
    entry.status = 200;
    entry.fault = plan.fault.map(|f| f.label());
    st.record(Some(key), Some(model), entry);

    st.clock.sleep(plan.delay).await;
    let ids = Ids::new(st.instance, seq, st.clock.unix_now().as_secs());
    let mut response = if req.stream {
        let mut r = Response::new(stream_body(&st, &req, &reply, &ids, &plan));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    } else {
        let body = completion_body(&req, &reply, &ids);
        let mut r = Response::new(json_body(body, plan.fault, &st.shutdown));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    finish_headers(&mut response, limit_headers, &ids);
    response
}

fn finish_headers(response: &mut Response, limit_headers: HeaderMap, ids: &Ids) {
    let headers = response.headers_mut();
    headers.extend(limit_headers);
    if let Ok(v) = HeaderValue::from_str(&ids.request) {
        headers.insert("x-request-id", v);
    }
}

async fn embeddings(State(st): State<Arc<MockState>>, headers: HeaderMap, body: Body) -> Response {
    let seq = st.next_request();
    let mut entry = new_entry(&st, seq, "embeddings", &headers);
    let key = match st.authenticate(&headers) {
        Ok(k) => k,
        Err(e) => return reject(&st, None, None, entry, e, HeaderMap::new()),
    };
    entry.key = Some(st.limiter.key_name(key).to_string());
    let req = match read_body(body, &headers, st.spec.max_body_bytes, st.spec.read_timeout)
        .await
        .and_then(|bytes| EmbeddingsRequest::parse(&bytes))
    {
        Ok(r) => r,
        Err(e) => return reject(&st, Some(key), None, entry, e, HeaderMap::new()),
    };
    entry.model = Some(req.model.clone());
    let Some(model) = st.limiter.model_index(&req.model) else {
        let err = MockError::UnknownModel(req.model.clone());
        return reject(&st, Some(key), None, entry, err, HeaderMap::new());
    };
    let (n, model_n) = st.next_generation(model);
    let plan = faults::plan(&st.faults.load(), &req.model, n, model_n);
    if let Some(fault) = plan.fault.filter(Fault::precedes_admission) {
        return strike_early(&st, key, model, entry, fault, &plan).await;
    }
    let (limit_headers, refusal) = admit(
        &st,
        key,
        model,
        Usage::request(req.prompt_tokens, 0),
        &mut entry,
    );
    if let Some(err) = refusal {
        return reject(&st, Some(key), Some(model), entry, err, limit_headers);
    }
    entry.status = 200;
    entry.fault = plan.fault.map(|f| f.label());
    st.record(Some(key), Some(model), entry);
    st.clock.sleep(plan.delay).await;
    let ids = Ids::new(st.instance, seq, st.clock.unix_now().as_secs());
    let mut response = Response::new(json_body(embeddings_body(&req), plan.fault, &st.shutdown));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    finish_headers(&mut response, limit_headers, &ids);
    response
}

fn model_object(id: &str) -> serde_json::Value {
    let owned_by = if id.starts_with("openai/") {
        "OpenAI"
    } else if id.starts_with("llama") || id.starts_with("meta-llama/") {
        "Meta"
    } else if let Some((org, _)) = id.split_once('/') {
        org
    } else {
        "spillway-mock"
    };
    json!({
        "id": id,
        "object": "model",
        "created": 1_693_721_698u64,
        "owned_by": owned_by,
        "active": true,
        "context_window": 131_072,
        "public_apps": null,
        "max_completion_tokens": 32_768,
    })
}

fn json_response(value: serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn list_models(State(st): State<Arc<MockState>>, headers: HeaderMap) -> Response {
    let mut entry = new_entry(&st, st.next_request(), "models", &headers);
    let key = match st.authenticate(&headers) {
        Ok(k) => k,
        Err(e) => return reject(&st, None, None, entry, e, HeaderMap::new()),
    };
    entry.key = Some(st.limiter.key_name(key).to_string());
    entry.status = 200;
    st.record(Some(key), None, entry);
    let data: Vec<_> = st
        .limiter
        .models()
        .iter()
        .map(|m| model_object(m))
        .collect();
    json_response(json!({ "object": "list", "data": data }))
}

async fn get_model(
    State(st): State<Arc<MockState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut entry = new_entry(&st, st.next_request(), "models", &headers);
    let key = match st.authenticate(&headers) {
        Ok(k) => k,
        Err(e) => return reject(&st, None, None, entry, e, HeaderMap::new()),
    };
    entry.key = Some(st.limiter.key_name(key).to_string());
    entry.model = Some(id.clone());
    if st.limiter.model_index(&id).is_none() {
        return reject(
            &st,
            Some(key),
            None,
            entry,
            MockError::UnknownModel(id),
            HeaderMap::new(),
        );
    }
    entry.status = 200;
    st.record(Some(key), None, entry);
    json_response(model_object(&id))
}
