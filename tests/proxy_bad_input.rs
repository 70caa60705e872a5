//! Bad input gets a clear error in OpenAI's format and the right status; nothing reaches a
//! provider.

use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::MockProvider;
use spillway_tests::*;

async fn setup() -> (MockProvider, Proxy) {
    let mock = MockProvider::builder().key("k1").start().await;
    setup_with(mock, "max_body_bytes = 4096").await
}

/// A proxy in front of `mock` that wants the client key `client-secret`, with `server` added
/// to its `[server]` table.
async fn setup_with(mock: MockProvider, server: &str) -> (MockProvider, Proxy) {
    let config = groq_chat_config(
        &mock.url(),
        &format!("[server]\nclient_keys = [\"env:CLIENT\"]\n{server}"),
    );
    let proxy = Proxy::start(
        &config,
        &[("K1", "k1"), ("CLIENT", "client-secret")],
        Clock::real(),
    )
    .await;
    (mock, proxy)
}

async fn send(proxy: &Proxy, path: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", proxy.base()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = auth {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("OpenAI-format JSON"))
}

fn assert_openai_error(body: &Value) {
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_body() {
    let (mock, proxy) = setup().await;
    let ok = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
    let auth = Some("client-secret");
    // (path, client token, body, status, error code, param named)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        String,
        u16,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "/v1/chat/completions",
            None,
            ok.into(),
            401,
            Some("invalid_api_key"),
            None,
        ),
        (
            "/v1/chat/completions",
            Some("wrong"),
            ok.into(),
            401,
            Some("invalid_api_key"),
            None,
        ),
        (
            "/v1/chat/completions",
            auth,
            format!(
                r#"{{"model":"chat","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(5000)
            ),
            413,
            Some("request_too_large"),
            None,
        ),
        (
            "/v1/chat/completions",
            auth,
            "{not json".into(),
            400,
            None,
            None,
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"messages":[]}"#.into(),
            400,
            None,
            Some("model"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"chat"}"#.into(),
            400,
            None,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"chat","messages":"hi"}"#.into(),
            400,
            None,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"chat","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#.into(),
            400,
            None,
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#.into(),
            404,
            Some("model_not_found"),
            None,
        ),
        (
            "/v1/embeddings",
            auth,
            r#"{"model":"chat"}"#.into(),
            400,
            None,
            Some("input"),
        ),
        (
            "/v1/nothing-here",
            auth,
            ok.into(),
            404,
            Some("unknown_url"),
            None,
        ),
    ];
    for (path, token, body, status, code, param) in cases {
        let (got, json) = send(&proxy, path, token, &body).await;
        assert_eq!(got, status, "{path} {body:.60}: {json}");
        assert_openai_error(&json);
        if let Some(code) = code {
            assert_eq!(json["error"]["code"], code, "{json}");
        }
        if let Some(param) = param {
            assert_eq!(json["error"]["param"], param, "{json}");
            assert!(json["error"]["message"].as_str().unwrap().contains(param));
        }
    }
    let wrong_method = client()
        .get(format!("{}/v1/chat/completions", proxy.base()))
        .bearer_auth("client-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        mock.stats().requests,
        0,
        "no bad request reached the provider"
    );
    let (status, _) = send(&proxy, "/v1/chat/completions", auth, ok).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn models_lists_the_route_names_and_health_answers() {
    let (_mock, proxy) = setup().await;
    let models: Value = client()
        .get(format!("{}/v1/models", proxy.base()))
        .bearer_auth("client-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "chat");
    let health = client()
        .get(format!("{}/healthz", proxy.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Writes `sent` on a fresh connection to `proxy`, then reads until the proxy closes it or the
/// answer declared by its `content-length` is whole (at most 10 s).
async fn raw_exchange(proxy: &Proxy, sent: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    stream.write_all(sent).await.expect("write");
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&got).to_lowercase();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let declared = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if declared.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
        .await
        .expect("the proxy neither answered nor closed the connection within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_timed_out_and_a_slow_upstream_is_not() {
    let mock = MockProvider::builder()
        .key("k1")
        .faults(spillway_mock::Faults {
            latency: Some(std::time::Duration::from_millis(1_200)),
            tokens_per_second: Some(20.0),
            ..spillway_mock::Faults::none()
        })
        .start()
        .await;
    let (mock, proxy) = setup_with(mock, "client_timeout = \"500ms\"").await;

    // Headers that never end: the connection is closed, with nothing sent back.
    let answer = raw_exchange(
        &proxy,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: spillway\r\ncontent-type: applic",
    )
    .await;
    assert_eq!(answer, "", "a half-sent header got an answer");

    // A body that stops short of its declared length: 408 in OpenAI's format.
    let partial = "POST /v1/chat/completions HTTP/1.1\r\nhost: spillway\r\n\
                   authorization: Bearer client-secret\r\ncontent-type: application/json\r\n\
                   content-length: 200\r\n\r\n{\"model\":\"chat\",";
    let answer = raw_exchange(&proxy, partial.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n").expect("a body").1)
        .expect("OpenAI-format JSON");
    assert_openai_error(&body);
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert_eq!(
        mock.stats().requests,
        0,
        "a partial request reached the provider"
    );

    // The timeout is the client's to keep, not the upstream's: a plain answer and a stream that
    // each take longer than it arrive whole.
    let resp = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth("client-secret")
        .json(&chat_body("chat", "slow upstream", 8))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let mut streamed = chat_body("chat", "slow stream", 16);
    streamed["stream"] = serde_json::json!(true);
    let resp = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth("client-secret")
        .json(&streamed)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let events = data_events(&resp.text().await.expect("the whole stream"));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!text_of(&events).is_empty());
}
