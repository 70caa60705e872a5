//! `spillway serve` reloads its config file on SIGHUP and on `POST /spillway/reload` (admin
//! key): a valid file is put in force, an invalid one is refused with its error (in the log,
//! and in the answer to the POST) and the config in force stays.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use spillway_mock::MockProvider;
use support::Running;

const KEY: &str = "gsk_reloadtest_5ecret_value_0123456789";

const ADMIN_KEY: &str = "spillway-admin-reload-test-key";

fn config(base_url: &str, key_var: &str, extra_route: &str) -> String {
    let server = "admin_keys = [\"env:SPILLWAY_TEST_ADMIN_KEY\"]";
    support::one_route_config(base_url, key_var, server, extra_route)
}

async fn models(url: &str) -> Vec<String> {
    let list: Value = reqwest::get(format!("{url}/v1/models"))
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    list["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["id"].as_str().expect("an id").to_string())
        .collect()
}

const ENV: [(&str, &str); 3] = [
    ("SPILLWAY_TEST_GROQ_KEY", KEY),
    ("SPILLWAY_TEST_ADMIN_KEY", ADMIN_KEY),
    ("RUST_LOG", "info"),
];

/// `POST /spillway/reload` with `bearer` (if any): its status and JSON body.
async fn post_reload(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("{url}/spillway/reload"));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let answer = request.send().await.expect("answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("JSON"))
}

async fn chat_status(url: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_puts_a_valid_config_in_force_and_refuses_an_invalid_one() {
    let mock = MockProvider::builder().key(KEY).start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spillway.toml");
    std::fs::write(&path, config(&mock.url(), "SPILLWAY_TEST_GROQ_KEY", "")).expect("written");
    let running = Running::start(&path, &[], &ENV).await;
    assert_eq!(chat_status(&running.url, "llama-3.1-8b").await, 200);

    // Invalid: a key variable that is not set. Refused; the config in force keeps serving.
    std::fs::write(&path, config(&mock.url(), "SPILLWAY_TEST_UNSET_VAR", "")).expect("written");
    running.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(chat_status(&running.url, "llama-3.1-8b").await, 200);
    assert_eq!(models(&running.url).await, ["llama-3.1-8b"]);

    // Valid, with a second route: in force once the signal is handled.
    let second = "[[routes]]\nmodel = \"second\"\ntargets = [{ provider = \"groq\", model = \"llama-3.1-8b-instant\" }]\n";
    std::fs::write(&path, config(&mock.url(), "SPILLWAY_TEST_GROQ_KEY", second)).expect("written");
    running.signal("HUP");
    let mut listed = Vec::new();
    for _ in 0..200 {
        listed = models(&running.url).await;
        if listed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed, ["llama-3.1-8b", "second"]);
    assert_eq!(chat_status(&running.url, "second").await, 200);

    let logs = running.stop().await;
    let refused = logs
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap_or_else(|| panic!("no refusal in {logs}"));
    assert!(
        refused.contains("SPILLWAY_TEST_UNSET_VAR is not set"),
        "{refused}"
    );
    assert!(logs.contains("config reloaded"), "{logs}");
    assert!(!logs.contains(KEY), "the key leaked into the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_with_the_admin_key_puts_a_valid_config_in_force_and_answers_why_an_invalid_one_is_refused()
 {
    let mock = MockProvider::builder().key(KEY).start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spillway.toml");
    std::fs::write(&path, config(&mock.url(), "SPILLWAY_TEST_GROQ_KEY", "")).expect("written");
    let running = Running::start(&path, &[], &ENV).await;
    let second = "[[routes]]\nmodel = \"second\"\ntargets = [{ provider = \"groq\", model = \"llama-3.1-8b-instant\" }]\n";
    std::fs::write(&path, config(&mock.url(), "SPILLWAY_TEST_GROQ_KEY", second)).expect("written");

    // Without the admin key, or with another key: refused, and nothing reloaded.
    let (status, body) = post_reload(&running.url, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, body) = post_reload(&running.url, Some("not-the-admin-key")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(models(&running.url).await, ["llama-3.1-8b"]);

    // With it: in force when the answer comes, which names what is in force now.
    let (status, body) = post_reload(&running.url, Some(ADMIN_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "reloaded");
    assert_eq!(body["routes"], json!(["llama-3.1-8b", "second"]));
    assert_eq!(body["providers"], json!(["groq"]));
    assert_eq!(models(&running.url).await, ["llama-3.1-8b", "second"]);
    assert_eq!(chat_status(&running.url, "second").await, 200);

    // Invalid: a 422 that says why; the config in force stays.
    std::fs::write(&path, config(&mock.url(), "SPILLWAY_TEST_UNSET_VAR", "")).expect("written");
    let (status, body) = post_reload(&running.url, Some(ADMIN_KEY)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    let message = body["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains("SPILLWAY_TEST_UNSET_VAR is not set"),
        "{message}"
    );
    assert_eq!(models(&running.url).await, ["llama-3.1-8b", "second"]);
    assert_eq!(chat_status(&running.url, "second").await, 200);

    // The endpoint takes POST only.
    let get = reqwest::Client::new()
        .get(format!("{}/spillway/reload", running.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("answers");
    assert_eq!(get.status().as_u16(), 405);

    let logs = running.stop().await;
    for said in ["config reloaded", "config reload refused"] {
        let line = logs
            .lines()
            .find(|l| l.contains(said))
            .unwrap_or_else(|| panic!("no `{said}` in {logs}"));
        assert!(line.contains("POST /spillway/reload"), "{line}");
    }
    assert!(!logs.contains(KEY), "the key leaked into the logs");
    assert!(
        !logs.contains(ADMIN_KEY),
        "the admin key leaked into the logs"
    );
}
