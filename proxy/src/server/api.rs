//! The endpoints: a completion is read and checked ([`super::request`]), answered by the
//! pipeline, rendered ([`super::render`]) and logged and recorded ([`super::observe`]); the
//! model list, health, readiness, metrics and the status document ([`super::status`]) are
//! answered here.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ProxyError;
use crate::limits::kind::Cost;
use crate::limits::quota::QuotaRefusal;
use crate::limits::window::Reservation;
use crate::pipeline::{CacheStatus, Outcome};
use crate::router::Job;
use crate::server::auth::{Caller, authorize, authorize_admin};
use crate::server::request::{read_body, request};
use crate::server::{observe, render};
use crate::state::{AppState, ClientState, Live, ReloadError};

/// How a completion endpoint reads its job from the body.
pub type ParseJob = fn(&AppState, bytes::Bytes) -> Result<Job, ProxyError>;

/// A completion endpoint: what it is called (`chat`, `embeddings`) and how it reads its job.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The operation's name, as traces give it.
    pub operation: &'static str,
    /// How the body becomes a job.
    pub parse: ParseJob,
}

/// `POST /v1/chat/completions` and `POST /v1/embeddings`: authorised, read, parsed with
/// `parse`, checked against the client's routes and own limits, answered, logged and recorded.
pub async fn completion(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    endpoint: Completion,
) -> Response {
    let started = state.clock.now();
    #[cfg(feature = "otel")]
    let trace = super::trace::begin(state, headers);
    let mut caller = None;
    let mut named = None;
    let mut recorded = None;
    let prepared = async {
        caller = authorize(state, headers)?;
        let bytes = read_body(state, headers, body).await?;
        let job = crate::heavy::for_body(bytes.len(), || (endpoint.parse)(state, bytes))?;
        named = Some(job.route);
        let request = request(state, job, headers)?;
        // Drafted before the client's own checks, so a request they refuse is recorded too.
        recorded = state.recorder.as_ref().map(|recorder| {
            crate::heavy::for_body(request.job.raw.len(), || {
                observe::draft(state, &request.job, recorder.bodies)
            })
        });
        let held = admit_client(state, caller, &request.job)?;
        Ok((request, held))
    }
    .await;
    // A refusal before the pipeline (a client's own limit, its routes) is counted under the
    // route it named, but carries no provider pool headers: no provider limit was asked.
    let (route, outcome) = match prepared {
        Err(e) => (None, Outcome::refused(e)),
        Ok((request, held)) => {
            let route = request.job.route;
            let outcome = state.pipeline.handle(request).await;
            if let Some((client, reservation)) = held {
                settle_client(state, client, reservation, &outcome);
            }
            (Some(route), outcome)
        }
    };
    let elapsed = state.clock.now().saturating_sub(started);
    let client = state.client_name(caller);
    observe::served(state, route.or(named), client, recorded, &outcome, elapsed);
    #[cfg(feature = "otel")]
    if let Some(trace) = trace {
        let served = super::trace::Served {
            operation: endpoint.operation,
            route: route
                .or(named)
                .map(|r| state.config.routes[r].model.as_str()),
            client,
        };
        super::trace::end(state, trace, served, &outcome);
    }
    let pool = route.map(|r| state.pipeline.router.pool(r));
    render::response(outcome, pool.as_ref())
}

/// A named client's request checked against its routes and its own limits, before it reaches
/// the cache or a provider: what it reserved of them, to settle once it is answered.
fn admit_client(
    state: &AppState,
    caller: Caller,
    job: &Job,
) -> Result<Option<(usize, Reservation)>, ProxyError> {
    let Some(i) = caller else {
        return Ok(None);
    };
    let client = &state.clients[i];
    if !client.allows(job.route) {
        return Err(ProxyError::Forbidden {
            message: format!(
                "Client `{}` may not use the model `{}` (its routes: {})",
                client.name,
                state.config.routes[job.route].model,
                allowed_routes(state, client)
            ),
        });
    }
    if client.quota.limits().is_empty() {
        return Ok(None);
    }
    let prompt = if client.quota.counts_tokens() {
        crate::heavy::for_body(job.raw.len(), || job.prompt_tokens())
    } else {
        0
    };
    let completion = job
        .completion()
        .unwrap_or(state.config.server.default_max_tokens);
    let cost = Cost::request(prompt, completion);
    match client.quota.admit(state.clock.instant(), cost) {
        Ok(reservation) => Ok(Some((i, reservation))),
        Err(QuotaRefusal::Later {
            retry_after,
            kind,
            limit,
        }) => Err(ProxyError::ClientLimited {
            client: client.name.clone(),
            kind,
            limit,
            retry_after: state.clock.to_wall(retry_after),
        }),
        Err(QuotaRefusal::TooLarge { kind, limit }) => Err(ProxyError::ClientTooLarge {
            client: client.name.clone(),
            kind,
            limit,
        }),
    }
}

/// Settles a client's reservation: an answer a provider made counts (its usage, else the
/// estimate); a cache hit, a joined flight or a refusal costs the client nothing.
fn settle_client(state: &AppState, client: usize, reservation: Reservation, outcome: &Outcome) {
    let actual = match (&outcome.reply, outcome.cache) {
        (Ok(_), CacheStatus::Hit | CacheStatus::Coalesced) | (Err(_), _) => None,
        (Ok(reply), _) => Some(
            reply
                .usage
                .map_or(reservation.cost, |(p, c)| Cost::request(p, c)),
        ),
    };
    state.clients[client]
        .quota
        .settle(reservation, actual, state.clock.instant());
}

/// A client's routes, comma-separated (for messages).
fn allowed_routes(state: &AppState, client: &ClientState) -> String {
    state
        .config
        .routes
        .iter()
        .enumerate()
        .filter(|(i, _)| client.allows(*i))
        .map(|(_, r)| r.model.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "spillway"})
}

/// `GET /v1/models`: the route names (a named client's own routes only).
pub fn list_models(state: &AppState, headers: &HeaderMap) -> Response {
    let caller = match authorize(state, headers) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let data: Vec<Value> = state
        .config
        .routes
        .iter()
        .enumerate()
        .filter(|(i, _)| caller.is_none_or(|c| state.clients[c].allows(*i)))
        .map(|(_, r)| model_object(&r.model))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: the id is everything after `models/`, percent-decoded (ids may hold
/// `/`); one that does not decode to text is a 400 in OpenAI's format.
pub fn get_model(state: &AppState, headers: &HeaderMap, raw: &str) -> Response {
    let caller = match authorize(state, headers) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let id = match percent_decode(raw) {
        Some(id) => id,
        None => {
            return ProxyError::invalid("model", "the model id in the path is not valid UTF-8")
                .into_response();
        }
    };
    let open = |route: &usize| caller.is_none_or(|c| state.clients[c].allows(*route));
    if state.routes.get(&id).is_some_and(open) {
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

/// `GET /healthz`: alive (always 200); with a fleet, its detail: whether this gateway shares
/// through Redis or goes on its own share (degraded), and the members it last saw.
pub fn healthz(state: &AppState) -> Response {
    let mut body = json!({"status": "ok"});
    if let Some(fleet) = &state.fleet {
        body["fleet"] = json!({
            "name": fleet.name(),
            "redis": if fleet.is_degraded() { "out of reach" } else { "connected" },
            "members": fleet.members(),
        });
    }
    (StatusCode::OK, axum::Json(body)).into_response()
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

/// `GET /spillway/status`: the status document (admin key required).
pub fn status(state: &AppState, headers: &HeaderMap) -> Response {
    if let Err(e) = authorize_admin(state, headers) {
        return e.into_response();
    }
    axum::Json(super::status::document(state)).into_response()
}

/// `POST /spillway/reload` (admin key required): reads the config file again and puts it in
/// force, as SIGHUP does. 200 with what is now in force; 422 with the error when the file is
/// refused (the config in force stays); 409 when the gateway has no file to reload from.
pub async fn reload(live: &Arc<Live>, state: &AppState, headers: &HeaderMap) -> Response {
    if let Err(e) = authorize_admin(state, headers) {
        return e.into_response();
    }
    let live = live.clone();
    let reloaded =
        tokio::task::spawn_blocking(move || live.reload_from_source("POST /spillway/reload"))
            .await
            .unwrap_or_else(|e| Err(ReloadError::Refused(format!("the reload stopped: {e}"))));
    match reloaded {
        Ok(now) => axum::Json(json!({
            "status": "reloaded",
            "routes": now.config.routes.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
            "providers": now.config.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(ReloadError::Refused(why)) => ProxyError::ReloadRefused { why }.into_response(),
        Err(ReloadError::NoSource) => ProxyError::ReloadUnavailable.into_response(),
    }
}

/// `GET /metrics`: Prometheus text (with `[server] metrics_admin_only`, admin key required).
pub fn metrics(state: &AppState, headers: &HeaderMap) -> Response {
    if state.config.server.metrics_admin_only
        && let Err(e) = authorize_admin(state, headers)
    {
        return e.into_response();
    }
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
    if let Some(recorder) = &state.recorder {
        text.push_str(&format!(
            "# HELP spillway_recording_lines_lost_total Recorded lines not written, by reason.\n\
             # TYPE spillway_recording_lines_lost_total counter\n\
             spillway_recording_lines_lost_total{{reason=\"writer_behind\"}} {}\n\
             spillway_recording_lines_lost_total{{reason=\"write_failed\"}} {}\n",
            recorder.dropped(),
            recorder.lost()
        ));
    }
    #[cfg(feature = "otel")]
    if let Some(tracer) = &state.tracer {
        text.push_str(&format!(
            "# HELP spillway_trace_spans_total Spans sent to the OTLP collector, and dropped (a full queue, a failed export).\n\
             # TYPE spillway_trace_spans_total counter\n\
             spillway_trace_spans_total{{outcome=\"exported\"}} {}\n\
             spillway_trace_spans_total{{outcome=\"dropped\"}} {}\n",
            tracer.exported(),
            tracer.dropped()
        ));
    }
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
