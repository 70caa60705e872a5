//! The attempt loop against scripted provider answers: which key and target each attempt goes
//! to, what the client gets, and what the ledger keeps for the next request.

// A scripted answer is the transport's own result type, large error variant and all.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::*;
use crate::upstream::Sent;

/// Answers attempts from a script, per provider, in order, and keeps every call.
#[derive(Debug, Default)]
struct Scripted {
    answers: Mutex<HashMap<usize, VecDeque<Result<Answer, UpstreamError>>>>,
    calls: Mutex<Vec<(usize, usize)>>,
    hanging: Mutex<Vec<usize>>,
}

impl Scripted {
    fn then(&self, provider: usize, answer: Result<Answer, UpstreamError>) -> &Self {
        let mut answers = self.answers.lock().unwrap();
        answers.entry(provider).or_default().push_back(answer);
        self
    }

    /// The next attempt at `provider` never answers.
    fn hang(&self, provider: usize) {
        self.hanging.lock().unwrap().push(provider);
    }

    /// `(provider, key)` of every attempt so far.
    fn calls(&self) -> Vec<(usize, usize)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Transport for Scripted {
    fn send(&self, call: Call) -> Sent<'_> {
        self.calls.lock().unwrap().push((call.provider, call.key));
        let mut hanging = self.hanging.lock().unwrap();
        if let Some(at) = hanging.iter().position(|p| *p == call.provider) {
            hanging.remove(at);
            return Box::pin(std::future::pending());
        }
        drop(hanging);
        let answer = self
            .answers
            .lock()
            .unwrap()
            .get_mut(&call.provider)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| Err(UpstreamError::Connection("nothing scripted".into())));
        Box::pin(async move { answer })
    }
}

fn ok() -> Result<Answer, UpstreamError> {
    Ok(Answer::Full {
        headers: HeaderMap::new(),
        body: Bytes::from_static(br#"{"choices":[]}"#),
        usage: Some((5, 5)),
    })
}

fn status(code: u16, headers: &[(&str, &str)], body: Value) -> Result<Answer, UpstreamError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    Err(UpstreamError::Status {
        status: StatusCode::from_u16(code).unwrap(),
        headers: map,
        body: Bytes::from(body.to_string()),
    })
}

fn rate_limited(retry_after: &str) -> Result<Answer, UpstreamError> {
    status(
        429,
        &[("retry-after", retry_after)],
        json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
    )
}

/// Two providers, `a` (two keys) then `b` (one key), behind the route `chat`; `extra` is added
/// to both providers' tables.
fn router(extra: &str) -> (Arc<Router>, Arc<Scripted>, Clock) {
    let text = format!(
        r#"
[[providers]]
name = "a"
base_url = "http://127.0.0.1:9"
keys = ["env:A1", "env:A2"]
{extra}

[[providers]]
name = "b"
base_url = "http://127.0.0.1:9"
keys = ["env:B1"]
{extra}

[[routes]]
model = "chat"
max_wait = "0s"
targets = [{{ provider = "a", model = "m" }}, {{ provider = "b", model = "m" }}]
"#
    );
    let env: HashMap<String, String> = ["A1", "A2", "B1"]
        .iter()
        .map(|k| (k.to_string(), format!("secret-{k}")))
        .collect();
    let config = crate::config::parse(&text, "test.toml", &env).expect("a valid config");
    let clock = Clock::manual();
    let transport = Arc::new(Scripted::default());
    let router = Router::new(
        Arc::new(config),
        clock.clone(),
        Arc::new(Metrics::default()),
        transport.clone(),
        None,
    );
    (Arc::new(router), transport, clock)
}

fn job() -> Job {
    let body: Map<String, Value> = json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
    })
    .as_object()
    .cloned()
    .unwrap();
    Job {
        route: 0,
        endpoint: crate::upstream::Endpoint::Chat,
        raw: Bytes::from(serde_json::to_vec(&body).unwrap()),
        body,
        stream: false,
        prompt_estimate: Default::default(),
        max_output: Some(5),
    }
}

#[tokio::test]
async fn a_429_moves_to_the_next_key_and_the_key_rests_until_its_reset() {
    let (router, script, clock) = router("");
    script
        .then(0, rate_limited("30"))
        .then(0, ok())
        .then(0, ok());
    let served = router
        .execute(&job())
        .await
        .expect("served by the second key");
    assert_eq!((served.key_alias.as_str(), served.attempts), ("a#2", 2));
    assert_eq!(script.calls(), [(0, 0), (0, 1)]);
    // The limited key rests for the 30 s its provider said: the next request goes straight
    // to the other key, and after the reset the first key is used again.
    router.execute(&job()).await.expect("served");
    assert_eq!(script.calls()[2], (0, 1));
    clock.advance(Duration::from_secs(31));
    script.then(0, ok());
    let served = router.execute(&job()).await.expect("served");
    assert_eq!(served.key_alias, "a#1", "most headroom again");
}

#[tokio::test]
async fn an_outage_moves_to_the_next_target_and_opens_the_circuit() {
    let (router, script, _clock) = router("failures_to_open = 1");
    script
        .then(0, status(503, &[], json!({"error": {"message": "down"}})))
        .then(1, ok())
        .then(1, ok());
    let served = router.execute(&job()).await.expect("served by b");
    assert_eq!((served.provider.as_str(), served.attempts), ("b", 2));
    router.execute(&job()).await.expect("served by b again");
    assert_eq!(
        script.calls(),
        [(0, 0), (1, 0), (1, 0)],
        "a's circuit is open: skipped, not tried and not waited for"
    );
}

#[tokio::test]
async fn the_providers_refusal_of_the_request_itself_reaches_the_client() {
    let (router, script, _clock) = router("");
    let body = json!({"error": {"message": "bad field", "type": "invalid_request_error"}});
    script.then(0, status(400, &[], body.clone()));
    match router.execute(&job()).await {
        Err(ProxyError::Passthrough {
            status, body: got, ..
        }) => {
            assert_eq!(status, 400);
            assert_eq!(serde_json::from_slice::<Value>(&got).unwrap(), body);
        }
        other => panic!("expected the provider's 400, got {other:?}"),
    }
    assert_eq!(
        script.calls().len(),
        1,
        "no fallback for the client's own error"
    );
}

#[tokio::test]
async fn a_refused_key_is_set_aside_and_the_others_carry_on() {
    let (router, script, _clock) = router("");
    let refusal = json!({"error": {"message": "Invalid API Key", "code": "invalid_api_key"}});
    script
        .then(0, status(401, &[], refusal))
        .then(0, ok())
        .then(0, ok());
    let served = router
        .execute(&job())
        .await
        .expect("served by the other key");
    assert_eq!(served.key_alias, "a#2");
    router.execute(&job()).await.expect("served");
    assert_eq!(script.calls(), [(0, 0), (0, 1), (0, 1)]);
    assert_eq!(
        router.refused_keys(),
        [(
            "a".to_string(),
            "a#1".to_string(),
            "401 invalid_api_key".to_string()
        )]
    );
}

#[tokio::test]
async fn every_key_limited_is_a_429_with_the_earliest_reset_and_all_failing_a_503() {
    let (router, script, _clock) = router("");
    script
        .then(0, rate_limited("20"))
        .then(0, rate_limited("40"))
        .then(1, rate_limited("10"));
    match router.execute(&job()).await {
        Err(ProxyError::Exhausted { retry_after, .. }) => {
            assert_eq!(
                retry_after,
                Duration::from_secs(10),
                "the earliest key frees first"
            )
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    let (failing, script, _clock) = self::router("failures_to_open = 1");
    script
        .then(0, status(502, &[], json!({})))
        .then(1, status(502, &[], json!({})));
    match failing.execute(&job()).await {
        Err(ProxyError::Unavailable { attempts, .. }) => {
            assert_eq!(
                attempts.len(),
                2,
                "one outage each opens both circuits: {attempts:?}"
            )
        }
        other => panic!("expected a 503, got {other:?}"),
    }
}

#[tokio::test]
async fn a_target_that_declines_the_request_is_skipped_without_waiting() {
    let (router, script, _clock) = router("");
    let too_large = json!({"error": {"message": "Request too large for model `m`", "code": "rate_limit_exceeded"}});
    script.then(0, status(413, &[], too_large)).then(1, ok());
    let served = router.execute(&job()).await.expect("served by b");
    assert_eq!(served.provider, "b");
    assert_eq!(
        script.calls(),
        [(0, 0), (1, 0)],
        "a's other key is not tried"
    );
}

#[tokio::test]
async fn a_request_given_up_in_flight_keeps_its_reservation_counted() {
    let (router, script, _clock) = router("[providers.limits.\"m\"]\nrequests_per_minute = 1");
    script.hang(0);
    let pending = {
        let router = router.clone();
        tokio::spawn(async move {
            let job = job();
            let _ = router.execute(&job).await;
        })
    };
    while script.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    // Its client goes away while the attempt is in flight: the provider may have counted it,
    // so the key's window keeps it (one of the three keys' single requests is spent).
    pending.abort();
    let _ = pending.await;
    let reading = router.pool(0).get(Kind::RequestsPerMinute).expect("known");
    assert_eq!((reading.limit, reading.remaining), (3, 2));
}

#[tokio::test]
async fn one_outage_moves_the_request_on_and_the_failed_target_has_another_turn_last() {
    let (router, script, _clock) = router("");
    script
        .then(0, status(502, &[], json!({})))
        .then(1, status(503, &[], json!({})))
        .then(0, ok());
    let served = router
        .execute(&job())
        .await
        .expect("served on a's second turn");
    assert_eq!((served.provider.as_str(), served.attempts), ("a", 3));
    let providers: Vec<usize> = script.calls().iter().map(|c| c.0).collect();
    assert_eq!(
        providers,
        [0, 1, 0],
        "a failed once: b next, not a again; then a, whose circuit is still closed"
    );
}
