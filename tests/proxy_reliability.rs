//! What an upstream can do wrong mid-answer, and what the client sees instead: a chunk that is
//! not JSON ends the stream with an error event (never a `[DONE]` over lost text), and a
//! provider that echoes a key back never gets it to a client or into the cache.

use serde_json::{Value, json};
use spillway_clock::Clock;
use spillway_mock::{Fault, FaultRule, Faults, MockProvider, Trigger};
use spillway_tests::*;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn always(fault: Fault) -> Faults {
    Faults::none().with_rule(FaultRule {
        fault,
        trigger: Trigger::Probability(1.0),
        model: None,
    })
}

fn streamed(content: &str) -> Value {
    let mut body = chat_body("chat", content, 300);
    body["stream"] = json!(true);
    body["temperature"] = json!(0);
    body
}

#[tokio::test]
async fn a_chunk_that_is_not_json_ends_the_stream_with_an_error_event_and_is_not_stored() {
    let mock = MockProvider::builder()
        .key("k1")
        .faults(always(Fault::InvalidJson))
        .start()
        .await;
    let config = groq_chat_config(&mock.url(), "");
    let proxy = Proxy::start(&config, &[("K1", "k1")], Clock::real()).await;
    for attempt in 0..2 {
        let resp = chat(&proxy.url(), &streamed("tell me a story")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(&resp, "x-spillway-cache"),
            "miss",
            "attempt {attempt}: a broken stream is never stored"
        );
        let text = tokio::time::timeout(std::time::Duration::from_secs(10), resp.text())
            .await
            .expect("the stream closes")
            .expect("a well-formed body");
        let events = data_events(&text);
        assert!(!events.iter().any(|e| e == "[DONE]"), "{text}");
        for e in &events {
            let v: Value = serde_json::from_str(e).expect("every event passed on is JSON");
            let _ = v;
        }
        let last: Value = serde_json::from_str(events.last().expect("events")).unwrap();
        assert_eq!(last["error"]["code"], "stream_interrupted", "{text}");
        assert!(
            last["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid JSON"),
            "{text}"
        );
    }
    // Bypassing the cache takes the same road.
    let resp = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .header("x-spillway-cache", "bypass")
        .json(&streamed("tell me a story"))
        .send()
        .await
        .unwrap();
    let events = data_events(&resp.text().await.unwrap());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
}

/// A provider that puts the key it was sent into every part of its answers.
struct Echo;

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let key = auth.trim_start_matches("Bearer ").to_string();
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let content = body["messages"][0]["content"].as_str().unwrap_or("");
        if content.starts_with("refuse") {
            return ResponseTemplate::new(400)
                .insert_header("x-echo", auth.as_str())
                .set_body_string(
                    json!({"error": {"message": format!("bad request for key {key}"), "type": "invalid_request_error"}})
                        .to_string(),
                );
        }
        if body["stream"] == json!(true) {
            let chunk = json!({"choices": [{"index": 0, "delta": {"content": format!("your key is {key}")}}]});
            return ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .insert_header("x-request-id", format!("req-{key}").as_str())
                .set_body_string(format!("data: {chunk}\n\ndata: [DONE]\n\n"));
        }
        ResponseTemplate::new(200)
            .insert_header("x-request-id", format!("req-{key}").as_str())
            .set_body_json(json!({
                "id": "x",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("your key is {key}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            }))
    }
}

#[tokio::test]
async fn a_provider_that_echoes_a_key_never_gets_it_to_a_client_or_the_cache() {
    const SECRET: &str = "gsk_echoed_secret_0123456789";
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Echo)
        .mount(&server)
        .await;
    let config = groq_chat_config(&server.uri(), "[cache]\nwhen = \"always\"\n");
    // `groq_chat_config` adds no [cache] path when one is given: put it in a temp dir.
    let dir = tempfile::tempdir().unwrap();
    let config = config.replace(
        "[cache]\n",
        &format!(
            "[cache]\npath = {:?}\n",
            dir.path().join("cache").display().to_string()
        ),
    );
    let proxy = Proxy::start(&config, &[("K1", SECRET)], Clock::real()).await;
    let mut seen = String::new();
    for body in [
        chat_body("chat", "hello", 10),
        streamed("hello stream"),
        chat_body("chat", "refuse me", 10),
    ] {
        let resp = chat(&proxy.url(), &body).await;
        seen.push_str(&format!("{:?}\n", resp.headers()));
        seen.push_str(&resp.text().await.unwrap());
    }
    assert!(seen.contains("your key is ***"), "{seen}");
    assert!(seen.contains("bad request for key ***"), "{seen}");
    assert!(!seen.contains(SECRET), "a key reached the client: {seen}");
    proxy.shutdown().await;
    // What the cache holds, decoded (records are compressed, so their bytes alone prove
    // little), and the files as they are.
    let cache = spillway::cache::Cache::open(
        spillway::config::cache::CacheConfig {
            path: dir.path().join("cache"),
            ..Default::default()
        },
        Clock::real(),
    )
    .expect("the cache opens");
    let store = cache.store().expect("a store").clone();
    let keys = store.keys().expect("keys");
    assert_eq!(keys.len(), 2, "the two answers are stored");
    for key in keys {
        let (stored, request) = cache.lookup_full(&key).expect("a valid entry");
        let text = format!("{} {request}", serde_json::to_string(&stored).unwrap());
        assert!(text.contains("***"), "{text}");
        assert!(!text.contains(SECRET), "the cache holds the key: {text}");
    }
    drop(cache);
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the key",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_refused_key_is_tried_again_after_its_back_off_and_taken_back_when_accepted() {
    let server = MockServer::start().await;
    // The provider refuses the key twice (a revoked key, later restored), then accepts it.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}}),
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("/chat/completions$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
        })))
        .with_priority(2)
        .mount(&server)
        .await;
    let config = groq_chat_config(&server.uri(), "").replace(
        "keys = [\"env:K1\"]",
        "keys = [\"env:K1\"]\nkey_retry = \"300ms\"\nunknown_limits_in_flight = 0",
    );
    let proxy = Proxy::start(&config, &[("K1", "gsk_restored_key_123")], Clock::real()).await;
    let status = |body| {
        let url = proxy.url();
        async move { chat(&url, &body).await.status().as_u16() }
    };
    assert_eq!(
        status(chat_body("chat", "a", 5)).await,
        503,
        "refused, and nothing else to try: unavailable, with the attempt listed"
    );
    assert_eq!(
        status(chat_body("chat", "b", 5)).await,
        503,
        "set aside: not sent"
    );
    let metrics = client()
        .get(format!("{}/metrics", proxy.base()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"spillway_key_refused{provider="groq",key="groq#1",reason="401 invalid_api_key"} 1"#
        ),
        "{metrics}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(
        status(chat_body("chat", "c", 5)).await,
        503,
        "tried once, still refused"
    );
    assert_eq!(
        status(chat_body("chat", "d", 5)).await,
        503,
        "set aside for twice as long"
    );
    tokio::time::sleep(std::time::Duration::from_millis(650)).await;
    assert_eq!(
        status(chat_body("chat", "e", 5)).await,
        200,
        "accepted again"
    );
    assert_eq!(status(chat_body("chat", "f", 5)).await, 200);
    assert!(proxy.state.pipeline.router.refused_keys().is_empty());
}

/// Sends raw bytes to the proxy and reads what comes back until it closes or 2 s pass.
async fn raw_exchange(proxy: &Proxy, request: &[u8], then_hang_up: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    if then_hang_up {
        drop(socket);
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        socket.read_to_end(&mut out),
    )
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_malformed_or_abandoned_body_is_a_400_in_openais_format_not_a_413() {
    let mock = MockProvider::builder().key("k1").start().await;
    let proxy = Proxy::start(
        &groq_chat_config(&mock.url(), ""),
        &[("K1", "k1")],
        Clock::real(),
    )
    .await;
    let answer = raw_exchange(
        &proxy,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = body.find('{').map(|i| &body[i..]).unwrap_or("");
    let json = &json[..json.rfind('}').map_or(0, |i| i + 1)];
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(v["error"]["code"], "body_unreadable", "{answer}");
    // A client that leaves after half its body: counted as a 400, nothing sent upstream.
    raw_exchange(
        &proxy,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"model\":\"chat\",",
        true,
    )
    .await;
    let metrics = || async {
        client()
            .get(format!("{}/metrics", proxy.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut counted = String::new();
    for _ in 0..100 {
        counted = metrics().await;
        if counted.contains(r#"spillway_requests_total{route="-",status="400"} 2"#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        counted.contains(r#"spillway_requests_total{route="-",status="400"} 2"#),
        "{counted}"
    );
    assert!(!counted.contains("status=\"413\""), "{counted}");
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test]
async fn a_model_path_that_is_not_text_gets_a_json_error() {
    let mock = MockProvider::builder().key("k1").start().await;
    let proxy = Proxy::start(
        &groq_chat_config(&mock.url(), ""),
        &[("K1", "k1")],
        Clock::real(),
    )
    .await;
    for path in [
        "/v1/models/%ff%fe",
        "/v1/models/%zz",
        "/openai/v1/models/a%",
    ] {
        let resp = client()
            .get(format!("{}{path}", proxy.base()))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["param"], "model", "{path}: {v}");
    }
    let resp = client()
        .get(format!("{}/v1/models/cha%74", proxy.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "a percent-encoded id that decodes is found"
    );
}

/// A route `chat` over provider `a` (its mock stalls every stream after two chunks, with a
/// short idle timeout) then provider `b` (healthy).
fn stalling_pair(a: &MockProvider, b: &MockProvider, server: &str) -> String {
    format!(
        r#"
[server]
{server}

[[providers]]
name = "a"
base_url = "{}"
keys = ["env:K1"]
stream_idle_timeout = "300ms"
cooldown = "30s"
failures_to_open = 1

[[providers]]
name = "b"
base_url = "{}"
keys = ["env:K2"]

[[routes]]
model = "chat"
targets = [{{ provider = "a", model = "{GROQ_MODEL}" }}, {{ provider = "b", model = "{GROQ_MODEL}" }}]
"#,
        a.url(),
        b.url()
    )
}

async fn stalling_mock() -> MockProvider {
    MockProvider::builder()
        .key("k1")
        .faults(always(Fault::StallStream { after_chunks: 2 }))
        .start()
        .await
}

#[tokio::test]
async fn a_stream_that_stalls_ends_for_every_client_of_its_flight_and_cools_its_target() {
    let a = stalling_mock().await;
    let b = MockProvider::builder().key("k2").start().await;
    let proxy = Proxy::start(
        &stalling_pair(&a, &b, ""),
        &[("K1", "k1"), ("K2", "k2")],
        Clock::real(),
    )
    .await;
    let body = streamed("tell me a long story");
    let wall = Clock::real();
    let started = wall.now();
    // Two identical requests: one leads the flight, the other joins it.
    let url = proxy.url();
    let (first, second) = tokio::join!(chat(&url, &body), async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        chat(&url, &body).await
    });
    assert_eq!(header(&second, "x-spillway-cache"), "coalesced");
    for resp in [first, second] {
        assert_eq!(header(&resp, "x-spillway-provider"), "a");
        let text = tokio::time::timeout(std::time::Duration::from_secs(10), resp.text())
            .await
            .expect("the stalled stream ends instead of hanging")
            .unwrap();
        let events = data_events(&text);
        assert!(!events.iter().any(|e| e == "[DONE]"), "{text}");
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "stream_interrupted", "{text}");
        assert!(
            last["error"]["message"]
                .as_str()
                .unwrap()
                .contains("stream_idle_timeout"),
            "{text}"
        );
    }
    assert!(
        wall.now() - started < std::time::Duration::from_secs(5),
        "ended by the 300 ms idle timeout"
    );
    // The stalling target cools down: the next request goes to b at once.
    let next = chat(&proxy.url(), &streamed("another story")).await;
    assert_eq!(next.status(), 200);
    assert_eq!(header(&next, "x-spillway-provider"), "b");
    let text = next.text().await.unwrap();
    assert_eq!(
        data_events(&text).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(a.stats().requests, 1, "one upstream call for the flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_stalled_stream_with_the_error_event_after_its_grace() {
    let a = stalling_mock().await;
    let b = MockProvider::builder().key("k2").start().await;
    // An idle timeout far beyond the grace: only the grace can end the stream.
    let config = stalling_pair(&a, &b, "shutdown_grace = \"500ms\"").replace(
        "stream_idle_timeout = \"300ms\"",
        "stream_idle_timeout = \"1h\"",
    );
    let mut proxy = Proxy::start(&config, &[("K1", "k1"), ("K2", "k2")], Clock::real()).await;
    let resp = chat(&proxy.url(), &streamed("a story that never ends")).await;
    assert_eq!(resp.status(), 200);
    let reading = tokio::spawn(async move { resp.text().await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let wall = Clock::real();
    let started = wall.now();
    let serving = proxy.begin_shutdown().expect("serving");
    tokio::time::timeout(std::time::Duration::from_secs(10), serving)
        .await
        .expect("shutdown finishes after its grace")
        .expect("task")
        .expect("served");
    assert!(wall.now() - started >= std::time::Duration::from_millis(450));
    let text = tokio::time::timeout(std::time::Duration::from_secs(5), reading)
        .await
        .expect("the client's stream ended")
        .expect("task")
        .expect("a body");
    let events = data_events(&text);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{text}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{text}"
    );
}
