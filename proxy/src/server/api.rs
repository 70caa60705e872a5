//! The OpenAI-compatible endpoints: read and check the request, route it, answer with the
//! provider's bytes and spillway's `x-spillway-*` headers.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::cache::key::cache_key;
use crate::record::{RecordedOutcome, RecordedRequest};
use crate::router::{Job, Served};
use crate::server::auth::authorize;
use crate::server::error::ProxyError;
use crate::server::names::{
    X_REQUEST_ID, X_SPILLWAY_ATTEMPTS, X_SPILLWAY_CACHE, X_SPILLWAY_KEY, X_SPILLWAY_MODEL,
    X_SPILLWAY_PROVIDER,
};
use crate::server::relay::relay;
use crate::state::AppState;
use crate::upstream::{Answer, Endpoint};

async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ProxyError> {
    let limit = state.config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let after = state.config.server.client_timeout;
    match tokio::time::timeout(after, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ProxyError::BodyTooLarge { limit }),
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

fn max_output(body: &Map<String, Value>, default: u64) -> Result<u64, ProxyError> {
    for field in ["max_completion_tokens", "max_tokens"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => return Ok(n),
                _ => {
                    return Err(ProxyError::invalid(
                        field,
                        format!("'{field}' must be an integer of at least 1"),
                    ));
                }
            },
        }
    }
    Ok(default)
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
        max_output: max_output(&body, state.config.server.default_max_tokens)?,
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
        max_output: 0,
        prompt_estimate: Default::default(),
        body,
        raw,
    })
}

/// `(prompt, completion)` tokens an answer reported, carried on its response for the recording.
#[derive(Debug, Clone, Copy)]
pub struct UsageNote(pub u64, pub u64);

/// Adds the `x-spillway-*` headers: where the answer came from and how many attempts it took.
pub fn provenance(response: &mut Response, provider: &str, model: &str, key: &str, attempts: u32) {
    let h = response.headers_mut();
    for (name, value) in [
        (X_SPILLWAY_PROVIDER, provider),
        (X_SPILLWAY_MODEL, model),
        (X_SPILLWAY_KEY, key),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    }
    h.insert(X_SPILLWAY_ATTEMPTS, HeaderValue::from(attempts));
}

/// The client's response for a served answer.
pub fn respond(served: Served) -> Response {
    let Served {
        answer,
        provider,
        model,
        key_alias,
        attempts,
        ticket,
    } = served;
    let request_id = answer.headers().get(X_REQUEST_ID).cloned();
    let mut response = match answer {
        Answer::Full {
            headers,
            body,
            usage,
        } => {
            let mut r = Response::new(Body::from(body));
            if let Some((p, c)) = usage {
                r.extensions_mut().insert(UsageNote(p, c));
            }
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/json"));
            r.headers_mut().insert(header::CONTENT_TYPE, content_type);
            r
        }
        Answer::Stream { first, rest, .. } => {
            let mut r = Response::new(Body::from_stream(relay(first, rest, ticket)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    };
    if let Some(id) = request_id {
        response.headers_mut().insert(X_REQUEST_ID, id);
    }
    provenance(&mut response, &provider, &model, &key_alias, attempts);
    response
}

/// What the recording keeps of a request before its outcome is known.
fn draft(state: &AppState, job: &Job, route: &str, bodies: bool) -> RecordedRequest {
    let started = state
        .recorder
        .as_ref()
        .map(|r| r.started)
        .unwrap_or_default();
    RecordedRequest {
        t: state.clock.now().saturating_sub(started).as_secs_f64(),
        route: route.to_string(),
        endpoint: job.endpoint.name().to_string(),
        stream: job.stream,
        body: bodies.then(|| Value::Object(job.body.clone())),
        key: cache_key(job.endpoint.name(), route, "", &job.body).to_hex(),
        prompt_tokens: job.prompt_tokens(),
        max_tokens: job.max_output,
        outcome: RecordedOutcome::default(),
    }
}

async fn serve_job(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    parse: fn(&AppState, Bytes) -> Result<Job, ProxyError>,
) -> (
    String,
    Option<RecordedRequest>,
    Result<Response, ProxyError>,
) {
    let mut route_name = String::from("-");
    let mut recorded = None;
    let result = async {
        authorize(state, headers)?;
        let bytes = read_body(state, headers, body).await?;
        let job = parse(state, bytes)?;
        route_name = state.config.routes[job.route].model.clone();
        if let Some(recorder) = &state.recorder {
            recorded = Some(draft(state, &job, &route_name, recorder.bodies));
        }
        crate::cache::serve::handle(state, job, headers).await
    }
    .await;
    (route_name, recorded, result)
}

/// A response header's text, when it has one.
fn header_text(response: &Response, name: HeaderName) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn finish(
    state: &AppState,
    route: &str,
    started: std::time::Duration,
    recorded: Option<RecordedRequest>,
    result: Result<Response, ProxyError>,
) -> Response {
    let refusal = result.as_ref().err().map(|e| e.to_string());
    let response = result.unwrap_or_else(IntoResponse::into_response);
    let status = response.status().as_u16();
    let elapsed = state.clock.now().saturating_sub(started);
    if let (Some(recorder), Some(mut line)) = (&state.recorder, recorded) {
        let header = |name| {
            header_text(&response, name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        line.outcome = RecordedOutcome {
            status,
            provider: header(X_SPILLWAY_PROVIDER),
            model: header(X_SPILLWAY_MODEL),
            key: header(X_SPILLWAY_KEY),
            attempts: header(X_SPILLWAY_ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            cache: header(X_SPILLWAY_CACHE),
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            usage: response
                .extensions()
                .get::<UsageNote>()
                .map(|u| serde_json::json!({"prompt_tokens": u.0, "completion_tokens": u.1})),
        };
        recorder.record(&line);
    }
    tracing::info!(
        route = %route,
        status,
        cache = header_text(&response, X_SPILLWAY_CACHE).unwrap_or("-"),
        provider = header_text(&response, X_SPILLWAY_PROVIDER).unwrap_or("-"),
        key = header_text(&response, X_SPILLWAY_KEY).unwrap_or("-"),
        attempts = header_text(&response, X_SPILLWAY_ATTEMPTS).unwrap_or("-"),
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        error = refusal.as_deref().unwrap_or(""),
        "served"
    );
    state.metrics.request(route, status);
    response
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = state.clock.now();
    let (route, recorded, result) = serve_job(&state, &headers, body, chat_job).await;
    finish(&state, &route, started, recorded, result)
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = state.clock.now();
    let (route, recorded, result) = serve_job(&state, &headers, body, embeddings_job).await;
    finish(&state, &route, started, recorded, result)
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "spillway"})
}

/// `GET /v1/models`: the route names.
pub async fn list_models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    let data: Vec<Value> = state
        .config
        .routes
        .iter()
        .map(|r| model_object(&r.model))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`.
pub async fn get_model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    if state.routes.contains_key(&id) {
        axum::Json(model_object(&id)).into_response()
    } else {
        ProxyError::UnknownModel {
            model: id,
            known: state.route_names(),
        }
        .into_response()
    }
}

/// `GET /healthz`.
pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.metrics.render(&state.router.headroom());
    text.push_str(&format!(
        "# HELP spillway_cache_writes_dropped_total Answers not stored because the cache writer was behind.\n\
         # TYPE spillway_cache_writes_dropped_total counter\n\
         spillway_cache_writes_dropped_total {}\n",
        state.cache.dropped_writes()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
