//! A request's spans (the `otel` feature, with `[telemetry]`): one server span from the moment
//! the request arrives to the moment its answer's headers are ready, joining the caller's trace
//! when it sends a sampled `traceparent`, and one client span per upstream attempt this request
//! sent, each with its provider, model, key alias and outcome. A cache hit or a request that
//! joined another's call has no attempt of its own; its `spillway.cache` attribute says so.

use std::time::SystemTime;

use axum::http::HeaderMap;

use crate::pipeline::{CacheStatus, Outcome};
use crate::state::AppState;
use crate::telemetry::{AttrValue, SpanData, SpanKind, new_span_id, new_trace_id, traceparent};
use crate::trail::Step;

/// A request's span while it is served.
#[derive(Debug)]
pub struct Trace {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    began: SystemTime,
}

/// A span for a request arriving with `headers`, if this gateway traces (and the caller did
/// not decide against sampling it).
pub fn begin(state: &AppState, headers: &HeaderMap) -> Option<Trace> {
    state.tracer.as_ref()?;
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(traceparent::parse);
    if parent.is_some_and(|p| !p.sampled) {
        return None;
    }
    Some(Trace {
        trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
        span_id: new_span_id(),
        parent: parent.map(|p| p.span_id),
        began: SystemTime::UNIX_EPOCH + state.clock.wall_unix_now(),
    })
}

/// What the request's span says of it besides its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    /// `chat` or `embeddings`.
    pub operation: &'static str,
    /// The route it named, when it named one.
    pub route: Option<&'a str>,
    /// The named client that sent it.
    pub client: Option<&'a str>,
}

/// Ends `trace` with `outcome`: hands the request's span and its attempts' spans to the
/// exporter.
pub fn end(state: &AppState, trace: Trace, served: Served<'_>, outcome: &Outcome) {
    let Some(tracer) = &state.tracer else {
        return;
    };
    let ended = SystemTime::UNIX_EPOCH + state.clock.wall_unix_now();
    let (status, error) = match &outcome.reply {
        Ok(_) => (200u16, None),
        Err(e) => (e.status().as_u16(), Some(e)),
    };
    let path = match served.operation {
        "embeddings" => "/v1/embeddings",
        _ => "/v1/chat/completions",
    };
    let mut attributes: Vec<(&'static str, AttrValue)> = vec![
        ("http.request.method", "POST".into()),
        ("http.route", path.into()),
        ("http.response.status_code", u64::from(status).into()),
        ("gen_ai.operation.name", served.operation.into()),
        ("spillway.cache", outcome.cache.name().into()),
    ];
    if let Some(route) = served.route {
        attributes.push(("gen_ai.request.model", route.into()));
    }
    if let Some(tier) = outcome.cache.tier() {
        attributes.push(("spillway.cache_tier", tier.into()));
    }
    if let Some(client) = served.client {
        attributes.push(("spillway.client", client.into()));
    }
    if let Some(fallback) = outcome.fallback() {
        attributes.push(("spillway.fallback", fallback.into()));
    }
    let trail: &[Step] = match &outcome.reply {
        Ok(reply) => {
            let origin = &reply.origin;
            if let Some(provider) = &origin.provider {
                attributes.push(("gen_ai.provider.name", provider.clone().into()));
            }
            if let Some(model) = &origin.model {
                attributes.push(("gen_ai.response.model", model.clone().into()));
            }
            if !origin.waited.is_zero() {
                let ms = u64::try_from(origin.waited.as_millis()).unwrap_or(u64::MAX);
                attributes.push(("spillway.wait_ms", ms.into()));
            }
            if let Some((prompt, completion)) = reply.usage {
                attributes.push(("gen_ai.usage.input_tokens", prompt.into()));
                attributes.push(("gen_ai.usage.output_tokens", completion.into()));
            }
            &origin.trail
        }
        Err(e) => {
            attributes.push(("error.type", e.type_and_code().1.unwrap_or("error").into()));
            &outcome.trail
        }
    };
    let own_calls = matches!(
        outcome.cache,
        CacheStatus::Miss | CacheStatus::Bypass | CacheStatus::Skip(_) | CacheStatus::None
    );
    let mut spans = Vec::with_capacity(1 + trail.len());
    if own_calls {
        let ids = (trace.trace_id, trace.span_id);
        spans.extend(
            trail
                .iter()
                .filter_map(|step| attempt(ids, served.operation, step)),
        );
    }
    spans.push(SpanData {
        trace_id: trace.trace_id,
        span_id: trace.span_id,
        parent: trace.parent,
        name: format!("POST {path}"),
        kind: SpanKind::Server,
        began: trace.began,
        ended,
        attributes,
        // A server span is an error when the gateway failed (5xx), not when it refused.
        error: error.filter(|_| status >= 500).map(|e| e.to_string()),
    });
    tracer.submit(spans);
}

/// The client span, in trace `trace_id` under `parent`, of an attempt sent (`None` for a key
/// or target passed over).
fn attempt(
    (trace_id, parent): ([u8; 16], [u8; 8]),
    operation: &str,
    step: &Step,
) -> Option<SpanData> {
    let call = step.call.as_ref()?;
    let mut attributes: Vec<(&'static str, AttrValue)> = vec![
        ("gen_ai.provider.name", call.provider.clone().into()),
        ("gen_ai.request.model", call.model.clone().into()),
        ("spillway.key", step.label.clone().into()),
        ("spillway.outcome", step.why.clone().into()),
    ];
    if let Ok(status) = step.why.parse::<u64>() {
        attributes.push(("http.response.status_code", status.into()));
    }
    Some(SpanData {
        trace_id,
        span_id: new_span_id(),
        parent: Some(parent),
        name: format!("{operation} {}", call.model),
        kind: SpanKind::Client,
        began: call.began,
        ended: call.ended,
        attributes,
        error: (step.why != "200").then(|| step.why.clone()),
    })
}
