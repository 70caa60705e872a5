//! Bad input gets a clear error in OpenAI's format and the right status; nothing reaches a
//! provider.

use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::MockProvider;
use spillway_tests::*;

async fn setup() -> (MockProvider, Proxy) {
    let mock = MockProvider::builder().key("k1").start().await;
    let config = groq_chat_config(
        &mock.url(),
        "[server]\nclient_keys = [\"env:CLIENT\"]\nmax_body_bytes = 4096",
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
