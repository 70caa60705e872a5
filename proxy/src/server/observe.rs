//! What a served request leaves behind: its log line, its line in the recording and its
//! metrics, all written from the typed outcome (never read back from the response's headers).

use std::time::Duration;

use serde_json::Value;

use crate::cache::key::cache_key;
use crate::pipeline::Outcome;
use crate::record::{RecordedOutcome, RecordedRequest};
use crate::router::Job;
use crate::state::AppState;

/// What the recording keeps of a request before its outcome is known.
pub fn draft(state: &AppState, job: &Job, bodies: bool) -> RecordedRequest {
    let started = state
        .recorder
        .as_ref()
        .map(|r| r.started)
        .unwrap_or_default();
    let route = &state.config.routes[job.route].model;
    RecordedRequest {
        t: state.clock.now().saturating_sub(started).as_secs_f64(),
        route: route.clone(),
        client: None,
        endpoint: job.endpoint.name().to_string(),
        stream: job.stream,
        body: bodies.then(|| Value::Object(job.body.clone())),
        key: cache_key(job.endpoint.name(), route, "", &job.body).to_hex(),
        prompt_tokens: job.prompt_tokens(),
        max_tokens: job
            .max_output
            .unwrap_or(state.config.server.default_max_tokens),
        outcome: RecordedOutcome::default(),
    }
}

/// Milliseconds, rounded to the microsecond (a log line or a recording needs no more).
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Logs, records and counts a request of `client` (a named one) that ended as `outcome` after
/// `elapsed` (clock time).
pub fn served(
    state: &AppState,
    route: Option<usize>,
    client: Option<&str>,
    recorded: Option<RecordedRequest>,
    outcome: &Outcome,
    elapsed: Duration,
) {
    let route = route.map_or("-", |r| state.config.routes[r].model.as_str());
    let (status, origin, usage, error) = match &outcome.reply {
        Ok(reply) => (200, Some(&reply.origin), reply.usage, None),
        Err(e) => (e.status().as_u16(), None, None, Some(e.to_string())),
    };
    let provider = origin.and_then(|o| o.provider.as_deref());
    let key = origin
        .and_then(|o| o.key_alias.as_deref())
        .filter(|k| !k.is_empty());
    let wait_ms = origin
        .filter(|o| !o.waited.is_zero())
        .map(|o| u64::try_from(o.waited.as_millis()).unwrap_or(u64::MAX));
    let fallback = outcome.fallback();
    if let (Some(recorder), Some(mut line)) = (&state.recorder, recorded) {
        line.client = client.map(str::to_string);
        line.outcome = RecordedOutcome {
            status,
            provider: provider.map(str::to_string),
            model: origin.and_then(|o| o.model.clone()),
            key: key.map(str::to_string),
            attempts: origin.map_or(0, |o| o.attempts),
            cache: Some(outcome.cache.name().to_string()),
            latency_ms: millis(elapsed),
            usage: usage
                .map(|(p, c)| serde_json::json!({"prompt_tokens": p, "completion_tokens": c})),
            wait_ms,
            fallback: fallback.clone(),
        };
        recorder.record(&line);
    }
    tracing::info!(
        route = %route,
        client = client.unwrap_or("-"),
        status,
        cache = outcome.cache.name(),
        cache_tier = outcome.cache.tier().unwrap_or("-"),
        provider = provider.unwrap_or("-"),
        key = key.unwrap_or("-"),
        attempts = origin.map_or(0, |o| o.attempts),
        elapsed_ms = millis(elapsed),
        wait_ms = wait_ms.unwrap_or(0),
        fallback = fallback.as_deref().unwrap_or(""),
        error = error.as_deref().unwrap_or(""),
        "served"
    );
    state.metrics.request(route, status);
    state.metrics.recent_request(
        route,
        client,
        status,
        outcome.cache.name(),
        state.clock.now(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log's `elapsed_ms` and the recording's `latency_ms` print at most three decimals
    /// (microseconds), never a float's binary noise such as `2.9223169999999996`.
    #[test]
    fn milliseconds_print_with_at_most_three_decimals() {
        assert_eq!(
            format!("{:?}", millis(Duration::from_nanos(2_922_317))),
            "2.922"
        );
        assert_eq!(
            format!("{:?}", millis(Duration::from_nanos(2_922_500))),
            "2.923"
        );
        let mut n: u64 = 1;
        for _ in 0..100_000 {
            n = n
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let d = Duration::from_nanos(n % 100_000_000_000);
            let printed = format!("{:?}", millis(d));
            let decimals = printed.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 3, "{d:?} printed as {printed}");
        }
    }
}
