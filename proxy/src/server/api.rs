//! The endpoints: a completion is read and checked ([`super::request`]), answered by the
//! pipeline, rendered ([`super::render`]) and logged and recorded ([`super::observe`]); the
//! model list, health, readiness and metrics are answered here.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ProxyError;
use crate::pipeline::Outcome;
use crate::router::Job;
use crate::server::auth::authorize;
use crate::server::request::{read_body, request};
use crate::server::{observe, render};
use crate::state::AppState;

/// How a completion endpoint reads its job from the body.
pub type ParseJob = fn(&AppState, bytes::Bytes) -> Result<Job, ProxyError>;

/// `POST /v1/chat/completions` and `POST /v1/embeddings`: authorised, read, parsed with
/// `parse`, answered, logged and recorded.
pub async fn completion(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    parse: ParseJob,
) -> Response {
    let started = state.clock.now();
    let prepared = async {
        authorize(state, headers)?;
        let bytes = read_body(state, headers, body).await?;
        let job = crate::heavy::for_body(bytes.len(), || parse(state, bytes))?;
        request(state, job, headers)
    }
    .await;
    let (route, recorded, outcome) = match prepared {
        Err(e) => (None, None, Outcome::refused(e)),
        Ok(request) => {
            let route = request.job.route;
            let recorded = state.recorder.as_ref().map(|recorder| {
                crate::heavy::for_body(request.job.raw.len(), || {
                    observe::draft(state, &request.job, recorder.bodies)
                })
            });
            let outcome = state.pipeline.handle(request).await;
            (Some(route), recorded, outcome)
        }
    };
    let elapsed = state.clock.now().saturating_sub(started);
    observe::served(state, route, recorded, &outcome, elapsed);
    let pool = route.map(|r| state.pipeline.router.pool(r));
    render::response(outcome, pool.as_ref())
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "spillway"})
}

/// `GET /v1/models`: the route names.
pub fn list_models(state: &AppState, headers: &HeaderMap) -> Response {
    if let Err(e) = authorize(state, headers) {
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

/// `GET /v1/models/{id}`: the id is everything after `models/`, percent-decoded (ids may hold
/// `/`); one that does not decode to text is a 400 in OpenAI's format.
pub fn get_model(state: &AppState, headers: &HeaderMap, raw: &str) -> Response {
    if let Err(e) = authorize(state, headers) {
        return e.into_response();
    }
    let id = match percent_decode(raw) {
        Some(id) => id,
        None => {
            return ProxyError::invalid("model", "the model id in the path is not valid UTF-8")
                .into_response();
        }
    };
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

/// `%XX` sequences decoded; `None` when the result is not UTF-8 or an escape is malformed.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `GET /healthz`.
pub fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// `GET /readyz`: 200 once the gateway can serve (config loaded, cache open, and with a fleet,
/// Redis answering); otherwise 503 with the reason.
pub fn readyz(state: &AppState) -> Response {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text.
pub fn metrics(state: &AppState) -> Response {
    let router = &state.pipeline.router;
    let mut text = state.metrics.render(&router.headroom());
    text.push_str(&format!(
        "# HELP spillway_cache_writes_dropped_total Answers not stored because the cache writer was behind.\n\
         # TYPE spillway_cache_writes_dropped_total counter\n\
         spillway_cache_writes_dropped_total {}\n",
        state.pipeline.cache.dropped_writes()
    ));
    text.push_str(&format!(
        "# HELP spillway_cache_not_stored_total Answers served but not stored, by reason.\n\
         # TYPE spillway_cache_not_stored_total counter\n\
         spillway_cache_not_stored_total{{reason=\"writer_behind\"}} {}\n\
         spillway_cache_not_stored_total{{reason=\"too_large\"}} {}\n",
        state.pipeline.cache.dropped_writes(),
        state.pipeline.cache.not_stored_too_large()
    ));
    text.push_str(
        "# HELP spillway_key_refused Keys their provider refused (401, 403, out of credit), set aside until a retry succeeds.\n\
         # TYPE spillway_key_refused gauge\n",
    );
    for (provider, key, why) in router.refused_keys() {
        text.push_str(&format!(
            "spillway_key_refused{{provider=\"{}\",key=\"{}\",reason=\"{}\"}} 1\n",
            provider.replace('"', "'"),
            key.replace('"', "'"),
            why.replace('"', "'")
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
