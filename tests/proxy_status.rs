//! What an operator sees and what an answer says of itself: the admin key guards the status
//! document (and, when configured, /metrics); the document shows a key cooling after a
//! provider's 429, an open circuit and a queued request against real mocks, in wall-clock
//! time whatever the proxy's time scale; `x-spillway-fallback` names each key left and why;
//! a named client is held to its own limits and routes before any provider is asked.

use std::time::Duration;

use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::{Faults, Limits, MockProvider};
use spillway_tests::*;

const A_MODEL: &str = "llama-3.1-8b-instant";
const B_MODEL: &str = "llama3.1-8b";
const ADMIN: &str = "sk-admin-5ecret";
const EVAL: &str = "sk-eval-5ecret";
const OLD: &str = "sk-old-5ecret";

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the proxy answers")
}

async fn post(proxy: &Proxy, token: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the proxy answers")
}

async fn status(proxy: &Proxy) -> Value {
    let resp = get(&format!("{}/spillway/status", proxy.base()), Some(ADMIN)).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("a body");
    for secret in [ADMIN, EVAL, OLD, "a1", "b1", "c1", "d1"] {
        assert!(
            !text.contains(&format!("\"{secret}\"")),
            "{secret} in the status"
        );
    }
    serde_json::from_str(&text).expect("JSON")
}

/// The error's message, checking it is in OpenAI's format.
async fn error_message(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.expect("a JSON error");
    body["error"]["message"]
        .as_str()
        .expect("an OpenAI error")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_key_guards_the_status_and_is_no_client_key() {
    let mock = MockProvider::builder()
        .key("a1")
        .model(A_MODEL)
        .start()
        .await;
    let tables = "[server]\nclient_keys = [\"env:OLD\"]\nadmin_keys = [\"env:ADMIN\"]\nmetrics_admin_only = true";
    let config = groq_chat_config(&mock.url(), tables).replace("env:K1", "env:A1");
    let proxy = Proxy::start(
        &config,
        &[("A1", "a1"), ("OLD", OLD), ("ADMIN", ADMIN)],
        Clock::real(),
    )
    .await;
    let status_url = format!("{}/spillway/status", proxy.base());
    let none = get(&status_url, None).await;
    assert_eq!(none.status(), 401);
    assert!(error_message(none).await.contains("admin key"));
    for wrong in [OLD, "nope"] {
        let resp = get(&status_url, Some(wrong)).await;
        assert_eq!(resp.status(), 403, "{wrong}");
        assert!(error_message(resp).await.contains("not an admin key"));
    }
    assert_eq!(get(&status_url, Some(ADMIN)).await.status(), 200);
    // A gateway built in code has no file to reload: the reload endpoint says so, to admins.
    let reload_url = format!("{}/spillway/reload", proxy.base());
    let reload = |token| {
        let mut request = reqwest::Client::new().post(&reload_url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(reload(Some(OLD)).await.expect("answers").status(), 403);
    let resp = reload(Some(ADMIN)).await.expect("answers");
    assert_eq!(resp.status(), 409);
    assert!(error_message(resp).await.contains("nothing to reload"));
    let metrics_url = format!("{}/metrics", proxy.base());
    assert_eq!(get(&metrics_url, None).await.status(), 401);
    assert_eq!(get(&metrics_url, Some(OLD)).await.status(), 403);
    assert_eq!(get(&metrics_url, Some(ADMIN)).await.status(), 200);
    // An admin key opens no API endpoint; a client key does.
    let body = chat_body("chat", "hi", 5);
    assert_eq!(post(&proxy, ADMIN, &body).await.status(), 401);
    assert_eq!(post(&proxy, OLD, &body).await.status(), 200);

    // Without admin keys the status is refused to everyone, and /metrics stays open.
    let open = Proxy::start(
        &groq_chat_config(&mock.url(), ""),
        &[("K1", "a1")],
        Clock::real(),
    )
    .await;
    let resp = get(&format!("{}/spillway/status", open.base()), Some(ADMIN)).await;
    assert_eq!(resp.status(), 403);
    assert!(error_message(resp).await.contains("admin_keys"));
    assert_eq!(
        get(&format!("{}/metrics", open.base()), None)
            .await
            .status(),
        200
    );
}

/// Two providers behind `chat`, a failing one behind `down`, a paced one behind `slow`.
fn operator_config(
    a: &MockProvider,
    b: &MockProvider,
    c: &MockProvider,
    d: &MockProvider,
) -> String {
    format!(
        r#"
[server]
admin_keys = ["env:ADMIN"]

[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:A1"]

[[providers]]
name = "cerebras"
base_url = "{}"
keys = ["env:B1"]

[[providers]]
name = "flaky"
base_url = "{}"
keys = ["env:C1"]
failures_to_open = 1
cooldown = "60s"

[[providers]]
name = "paced"
base_url = "{}"
keys = ["env:D1"]
[providers.limits."{A_MODEL}"]
requests_per_minute = 1

[[routes]]
model = "chat"
targets = [
  {{ provider = "groq", model = "{A_MODEL}" }},
  {{ provider = "cerebras", model = "{B_MODEL}" }},
]

[[routes]]
model = "down"
targets = [{{ provider = "flaky", model = "{A_MODEL}" }}]

[[routes]]
model = "slow"
targets = [{{ provider = "paced", model = "{A_MODEL}" }}]
max_wait = "120s"
"#,
        a.url(),
        b.url(),
        c.url(),
        d.url()
    )
}

/// Checks a moment: `in_s` within `range`, and `at` that many seconds from now.
fn moment_in(m: &Value, range: std::ops::RangeInclusive<f64>) {
    let in_s = m["in_s"].as_f64().expect("in_s");
    assert!(range.contains(&in_s), "{m}");
    let at = humantime::parse_rfc3339(m["at"].as_str().expect("at")).expect("RFC 3339");
    let from_now = at
        .duration_since(std::time::UNIX_EPOCH + Clock::real().wall_unix_now())
        .map_or(0.0, |d| d.as_secs_f64());
    assert!((from_now - in_s).abs() < 2.0, "{m} is {from_now}s away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_a_cooling_key_an_open_circuit_and_a_queued_request() {
    let a = MockProvider::builder()
        .key("a1")
        .model(A_MODEL)
        .limits(A_MODEL, Limits::rpm(1))
        .start()
        .await;
    let b = MockProvider::builder()
        .key("b1")
        .model(B_MODEL)
        .dialect(spillway_mock::Dialect::Cerebras)
        .start()
        .await;
    let c = MockProvider::builder()
        .key("c1")
        .model(A_MODEL)
        .faults(Faults::always_status(503))
        .start()
        .await;
    let d = MockProvider::builder()
        .key("d1")
        .model(A_MODEL)
        .start()
        .await;
    let env = [
        ("A1", "a1"),
        ("B1", "b1"),
        ("C1", "c1"),
        ("D1", "d1"),
        ("ADMIN", ADMIN),
    ];
    let proxy = Proxy::start(&operator_config(&a, &b, &c, &d), &env, Clock::real()).await;

    // groq#1 answers once, then the mock's own 429: the request moves on to cerebras.
    let first = chat(&proxy.url(), &chat_body("chat", "one", 5)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "x-spillway-fallback"),
        "",
        "one key tried: nothing to explain"
    );
    let second = chat(&proxy.url(), &chat_body("chat", "two", 5)).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-spillway-provider"), "cerebras");
    assert_eq!(
        header(&second, "x-spillway-fallback"),
        "groq#1:429, cerebras#1:200"
    );
    // Next time groq#1 is known to be cooling: passed over, and said so.
    let third = chat(&proxy.url(), &chat_body("chat", "three", 5)).await;
    assert_eq!(
        header(&third, "x-spillway-fallback"),
        "groq#1:cooling, cerebras#1:200"
    );

    // The failing target opens its circuit at its first outage.
    let down = chat(&proxy.url(), &chat_body("down", "x", 5)).await;
    assert!(down.status().is_server_error(), "{}", down.status());

    // The paced key's one request a minute is spent; the next waits in the queue.
    assert_eq!(
        chat(&proxy.url(), &chat_body("slow", "s1", 5))
            .await
            .status(),
        200
    );
    let url = proxy.url();
    let queued = tokio::spawn(async move { chat(&url, &chat_body("slow", "s2", 5)).await });
    let mut doc = status(&proxy).await;
    for _ in 0..100 {
        if doc["routes"][2]["queue"]["length"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        doc = status(&proxy).await;
    }

    let chat_route = &doc["routes"][0];
    assert_eq!(chat_route["route"], "chat");
    let groq = &chat_route["targets"][0];
    assert_eq!(
        (groq["provider"].as_str(), groq["model"].as_str()),
        (Some("groq"), Some(A_MODEL))
    );
    let key = &groq["keys"][0];
    assert_eq!(key["key"], "groq#1");
    moment_in(&key["cooling"]["until"], 0.5..=61.0);
    let rpm = key["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .find(|w| w["window"] == "rpm")
        .unwrap_or_else(|| panic!("the 429 taught the rpm limit: {key}"));
    assert_eq!(
        (rpm["limit"].as_u64(), rpm["source"].as_str()),
        (Some(1), Some("learned"))
    );
    assert_eq!(rpm["remaining"], 0);
    moment_in(&rpm["reset"], 0.0..=61.0);
    let minute = &chat_route["last_minute"];
    assert_eq!(minute["requests"], 3);
    assert_eq!(minute["fallbacks"], 1);
    assert_eq!(minute["upstream_429s"], 1);
    assert_eq!(chat_route["targets"][1]["circuit"]["state"], "closed");

    let circuit = &doc["routes"][1]["targets"][0]["circuit"];
    assert_eq!(circuit["state"], "open", "{circuit}");
    assert_eq!(circuit["failures"], 1);
    moment_in(&circuit["cooldown_until"], 50.0..=60.5);

    let slow = &doc["routes"][2];
    assert_eq!(slow["queue"]["length"], 1, "{slow}");
    assert!(slow["queue"]["oldest_wait_s"].as_f64().expect("a wait") >= 0.0);
    let paced = &slow["targets"][0]["keys"][0]["windows"][0];
    assert_eq!(
        (paced["window"].as_str(), paced["source"].as_str()),
        (Some("rpm"), Some("configured"))
    );
    assert_eq!(
        (paced["used"].as_u64(), paced["remaining"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(doc["cache"]["mode"], "read-write");
    queued.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_clock_proxy_tells_wall_clock_seconds() {
    // Sixty clock seconds pass per wall second: a minute's window resets within a second, and
    // a request that waits for it waits about a second.
    let clock = Clock::scaled(60.0).expect("scale");
    let mock = MockProvider::builder()
        .key("a1")
        .model(A_MODEL)
        .clock(clock.clone())
        .start()
        .await;
    let limits = format!("[providers.limits.\"{A_MODEL}\"]\nrequests_per_minute = 1\n\n[[routes]]");
    let config = groq_chat_config(
        &mock.url(),
        "max_wait = \"120s\"\n[server]\nadmin_keys = [\"env:ADMIN\"]",
    )
    .replacen("[[routes]]", &limits, 1);
    let proxy = Proxy::start(&config, &[("K1", "a1"), ("ADMIN", ADMIN)], clock).await;
    assert_eq!(
        chat(&proxy.url(), &chat_body("chat", "x", 5))
            .await
            .status(),
        200
    );
    let doc = status(&proxy).await;
    assert_eq!(doc["time_scale"], 60.0);
    let w = &doc["routes"][0]["targets"][0]["keys"][0]["windows"][0];
    assert_eq!(w["window"], "rpm");
    moment_in(&w["reset"], 0.0..=1.05);
    // The next request waits for that reset, and says how long, in wall-clock milliseconds.
    let waited = chat(&proxy.url(), &chat_body("chat", "y", 5)).await;
    assert_eq!(
        waited.status(),
        200,
        "{}",
        waited.text().await.unwrap_or_default()
    );
    let ms: u64 = header(&waited, "x-spillway-wait-ms")
        .parse()
        .expect("a wait");
    assert!((300..=3000).contains(&ms), "{ms} ms");
}

fn clients_config(mock: &MockProvider, record: &std::path::Path) -> String {
    format!(
        r#"
[server]
client_keys = ["env:OLD"]
admin_keys = ["env:ADMIN"]
record = {:?}

[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:A1"]

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{A_MODEL}" }}]

[[routes]]
model = "other"
targets = [{{ provider = "groq", model = "{A_MODEL}" }}]

[[clients]]
name = "eval-team"
key = "env:EVAL"
routes = ["chat"]
requests_per_minute = 2
"#,
        record.display().to_string(),
        mock.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_own_limit_is_refused_before_any_provider_is_asked() {
    let mock = MockProvider::builder()
        .key("a1")
        .model(A_MODEL)
        .start()
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("traffic.jsonl");
    let env = [("A1", "a1"), ("OLD", OLD), ("EVAL", EVAL), ("ADMIN", ADMIN)];
    let proxy = Proxy::start(&clients_config(&mock, &record), &env, Clock::real()).await;
    // Temperature 0: the cache keys these, and a hit costs the client nothing.
    let body = |n: u32| {
        let mut b = chat_body("chat", &format!("q{n}"), 5);
        b["temperature"] = 0.into();
        b
    };
    assert_eq!(post(&proxy, EVAL, &body(1)).await.status(), 200);
    assert_eq!(post(&proxy, EVAL, &body(1)).await.status(), 200, "a hit");
    assert_eq!(post(&proxy, EVAL, &body(2)).await.status(), 200);
    let before = mock.stats().requests;
    let over = post(&proxy, EVAL, &body(3)).await;
    assert_eq!(over.status(), 429);
    let retry: u64 = header(&over, "retry-after")
        .parse()
        .expect("retry-after in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let message = error_message(over).await;
    assert!(
        message.contains("eval-team") && message.contains("2 requests per minute"),
        "{message}"
    );
    assert!(message.contains("not a provider's limit"), "{message}");
    assert_eq!(mock.stats().requests, before, "no provider capacity spent");

    // Outside its routes: 403, and the route is not in its model list.
    let elsewhere = post(&proxy, EVAL, &chat_body("other", "x", 5)).await;
    assert_eq!(elsewhere.status(), 403);
    assert!(
        error_message(elsewhere)
            .await
            .contains("may not use the model `other`")
    );
    let models: Value = client()
        .get(format!("{}/models", proxy.url()))
        .bearer_auth(EVAL)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(models["data"].as_array().map(Vec::len), Some(1), "{models}");
    // The old client_keys list still works, without a name and without limits.
    for n in 0..3 {
        assert_eq!(
            post(&proxy, OLD, &chat_body("other", &format!("o{n}"), 5))
                .await
                .status(),
            200
        );
    }

    let doc = status(&proxy).await;
    let eval = &doc["clients"][0];
    assert_eq!(eval["name"], "eval-team");
    assert_eq!(eval["routes"], serde_json::json!(["chat"]));
    let rpm = &eval["windows"][0];
    assert_eq!(
        (
            rpm["limit"].as_u64(),
            rpm["used"].as_u64(),
            rpm["remaining"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert_eq!(eval["last_minute"]["requests"], 5);
    assert_eq!(eval["last_minute"]["answered_429s"], 1);
    let metrics = get(&format!("{}/metrics", proxy.base()), None)
        .await
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            "spillway_client_requests_total{client=\"eval-team\",route=\"chat\",status=\"429\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("spillway_recording_lines_lost_total{reason=\"write_failed\"} 0"),
        "{metrics}"
    );
    proxy.shutdown().await;
    let recorded = std::fs::read_to_string(&record).expect("the recording");
    let lines: Vec<Value> = recorded
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    // Requests refused at the door are recorded too, with the client's name and the status it
    // got: three answered, one over its own limit, one outside its routes.
    let statuses: Vec<u64> = lines
        .iter()
        .filter(|l| l["client"] == "eval-team")
        .map(|l| l["outcome"]["status"].as_u64().expect("a status"))
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 403], "{recorded}");
    assert!(!recorded.contains("wait_ms"), "nothing queued: {recorded}");
    assert!(
        lines.iter().any(|l| l["client"].is_null()),
        "the old key has no name"
    );
    for secret in [EVAL, OLD, ADMIN] {
        assert!(!recorded.contains(secret) && !metrics.contains(secret));
    }
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_and_the_log_line_name_what_was_left_and_the_client() {
    let capture = Capture::default();
    let writer = capture.clone();
    // The other tests of this file log here too; this one looks for its own client's lines.
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber of this test binary");
    let mock = MockProvider::builder()
        .key("a1")
        .model(A_MODEL)
        .limits(A_MODEL, Limits::rpm(1))
        .start()
        .await;
    let clients = "[[clients]]\nname = \"log-team\"\nkey = \"env:LOGKEY\"\n";
    let config = groq_chat_config(&mock.url(), clients);
    let proxy = Proxy::start(&config, &[("K1", "a1"), ("LOGKEY", EVAL)], Clock::real()).await;
    assert_eq!(
        post(&proxy, EVAL, &chat_body("chat", "one", 5))
            .await
            .status(),
        200
    );
    // The mock's 429 blocks the only key for its minute, longer than max_wait: the gateway's
    // own 429 says which key was left and why.
    let refused = post(&proxy, EVAL, &chat_body("chat", "two", 5)).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-spillway-fallback"), "groq#1:429");
    // The next one is refused without an attempt: the header still says why the key was left.
    let cooling = post(&proxy, EVAL, &chat_body("chat", "three", 5)).await;
    assert_eq!(cooling.status(), 429);
    assert_eq!(header(&cooling, "x-spillway-fallback"), "groq#1:cooling");
    proxy.shutdown().await;
    let logs = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("UTF-8");
    let served: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains(" served ") && l.contains("client=\"log-team\""))
        .collect();
    assert_eq!(served.len(), 3, "{logs}");
    assert!(served[1].contains("status=429"), "{}", served[1]);
    assert!(
        served[1].contains("fallback=\"groq#1:429\""),
        "{}",
        served[1]
    );
    assert!(
        served[2].contains("fallback=\"groq#1:cooling\""),
        "{}",
        served[2]
    );
    assert!(!logs.contains(EVAL), "a client key in the logs");
}
