//! Running spillway in production: `/readyz` says whether the gateway can take traffic (with a
//! fleet, whether Redis answers: tested against a real `redis-server` stopped and started, and
//! ignored with the reason when there is none), and a reload puts a new config in force
//! without failing a request and keeps the limit state of every key still configured.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::MockProvider;
use spillway_tests::*;

/// A provider `groq` with the keys `keys` (env names) and `limits` for the model, the route
/// `chat` over it, and `more` after.
fn config(url: &str, keys: &[&str], limits: &str, more: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"env:{k}\"")).collect();
    format!(
        r#"
[[providers]]
name = "groq"
base_url = "{url}"
keys = [{}]
[providers.limits."{GROQ_MODEL}"]
{limits}

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]
max_wait = "2s"
{more}
"#,
        keys.join(", ")
    )
}

/// `GET /readyz`: its status and body.
async fn readyz(proxy: &Proxy) -> (u16, Value) {
    let resp = client()
        .get(format!("{}/readyz", proxy.base()))
        .send()
        .await
        .expect("the proxy answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

/// Asks `/readyz` every 50 ms until it answers `status` (at most 10 s); its last body.
async fn until_readyz(proxy: &Proxy, status: u16) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (now, body) = readyz(proxy).await;
        if now == status {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz never answered {status}; last {last}");
}

#[tokio::test]
async fn without_a_fleet_a_started_gateway_is_ready_and_alive() {
    let mock = MockProvider::builder().key("k1").start().await;
    let proxy = Proxy::start(
        &config(&mock.url(), &["K1"], "", ""),
        &[("K1", "k1")],
        Clock::real(),
    )
    .await;
    assert_eq!(
        readyz(&proxy).await,
        (200, serde_json::json!({"status": "ready"}))
    );
    let health = client()
        .get(format!("{}/healthz", proxy.base()))
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), 200);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn readiness_follows_redis_not_there_then_started_then_stopped_then_back() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let fleet = "[fleet]\nredis = \"env:REDIS_URL\"\nname = \"ready\"\ntimeout = \"200ms\"\n";
    let mock = MockProvider::builder().key("k1").start().await;
    let proxy = Proxy::start(
        &config(&mock.url(), &["K1"], "requests_per_minute = 100", fleet),
        &[("K1", "k1"), ("REDIS_URL", &url)],
        Clock::real(),
    )
    .await;
    let body = until_readyz(&proxy, 503).await;
    assert_eq!(body["status"], "not_ready");
    assert_eq!(
        body["reason"], "fleet: Redis has not answered yet",
        "{body}"
    );
    let body_text = body.to_string();
    assert!(!body_text.contains(&port.to_string()), "{body_text}");

    let redis = RedisServer::on(port)
        .await
        .expect("redis-server starts again");
    assert_eq!(until_readyz(&proxy, 200).await["status"], "ready");
    // Not ready is not dead: requests are still served meanwhile (on the gateway's own share).
    redis.kill();
    let body = until_readyz(&proxy, 503).await;
    assert!(
        body["reason"]
            .as_str()
            .expect("a reason")
            .contains("out of reach"),
        "{body}"
    );
    let served = chat(&proxy.url(), &chat_body("chat", "while redis is gone", 5)).await;
    assert_eq!(served.status(), 200);
    let health = client()
        .get(format!("{}/healthz", proxy.base()))
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), 200, "alive while not ready");
    let health: Value = health.json().await.expect("JSON");
    assert_eq!(health["fleet"]["redis"], "out of reach", "{health}");
    assert_eq!(health["fleet"]["name"], "ready", "{health}");

    let _redis = RedisServer::on(port)
        .await
        .expect("redis-server starts again");
    assert_eq!(until_readyz(&proxy, 200).await["status"], "ready");
    let health = get_json(format!("{}/healthz", proxy.base())).await;
    assert_eq!(health["fleet"]["redis"], "connected", "{health}");
    assert!(health["fleet"]["members"].as_u64() >= Some(1), "{health}");
    proxy.shutdown().await;
}

/// What `/metrics` says is left of `key`'s requests per minute.
fn rpm_remaining(proxy: &Proxy, key: &str) -> Option<u64> {
    proxy
        .live
        .current()
        .pipeline
        .router
        .headroom()
        .into_iter()
        .find(|h| h.key == key && h.window == "rpm")
        .map(|h| h.remaining)
}

/// The JSON body of `GET url`.
async fn get_json(url: String) -> Value {
    client()
        .get(url)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON")
}

/// The route names `GET /v1/models` lists.
async fn models(proxy: &Proxy) -> Vec<String> {
    let list = get_json(format!("{}/models", proxy.url())).await;
    list["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|m| m["id"].as_str().expect("an id").to_string())
        .collect()
}

fn parse(text: &str, env: &[(&str, &str)]) -> spillway::config::Config {
    let env: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    spillway::config::parse(text, "reloaded.toml", &env).expect("a valid config")
}

#[tokio::test]
async fn a_reload_keeps_the_used_count_of_every_key_still_configured() {
    let mock = MockProvider::builder().keys(["k1", "k2"]).start().await;
    let env = [("K1", "k1"), ("K2", "k2")];
    let proxy = Proxy::start(
        &config(&mock.url(), &["K1"], "requests_per_minute = 30", ""),
        &env,
        Clock::real(),
    )
    .await;
    for i in 0..5 {
        let resp = chat(&proxy.url(), &chat_body("chat", &format!("before {i}"), 5)).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(rpm_remaining(&proxy, "groq#1"), Some(25));

    // A second key and a second route; the first key, its provider and model unchanged.
    let more = format!(
        "[[routes]]\nmodel = \"other\"\ntargets = [{{ provider = \"groq\", model = \"{GROQ_MODEL}\" }}]\n"
    );
    let next = config(
        &mock.url(),
        &["K1", "K2"],
        "requests_per_minute = 30",
        &more,
    );
    proxy.live.reload(parse(&next, &env)).expect("reloaded");
    assert_eq!(rpm_remaining(&proxy, "groq#1"), Some(25), "kept");
    assert_eq!(
        rpm_remaining(&proxy, "groq#2"),
        Some(30),
        "a new key starts fresh"
    );
    assert_eq!(models(&proxy).await, ["chat", "other"], "in force");
    let resp = chat(&proxy.url(), &chat_body("other", "after", 5)).await;
    assert_eq!(resp.status(), 200);

    // A lower limit applies to what the key already used.
    let lower = config(&mock.url(), &["K1"], "requests_per_minute = 20", "");
    proxy.live.reload(parse(&lower, &env)).expect("reloaded");
    let left = rpm_remaining(&proxy, "groq#1").expect("a reading");
    assert!(left <= 15, "20 minus at least the 5 sent before: {left}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let mock = MockProvider::builder().keys(["k1", "k2"]).start().await;
    let env = [("K1", "k1"), ("K2", "k2")];
    let one = config(&mock.url(), &["K1"], "requests_per_minute = 100000", "");
    let two = config(
        &mock.url(),
        &["K1", "K2"],
        "requests_per_minute = 50000",
        "[server]\ndefault_max_tokens = 64\n",
    );
    let proxy = Proxy::start(&one, &env, Clock::real()).await;
    let url = proxy.url();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    // 4 clients × 50 requests, bounded; streams among them, so some are in flight at each swap.
    let load = join_all((0..4).map(|c| {
        let url = url.clone();
        async move {
            let mut statuses = Vec::new();
            for i in 0..50 {
                let mut body = chat_body("chat", &format!("load {c} {i}"), 5);
                body["stream"] = Value::Bool(i % 3 == 0);
                let resp = chat(&url, &body).await;
                let status = resp.status().as_u16();
                let text = resp.text().await.expect("a whole body");
                assert!(status != 200 || !text.contains("\"error\""), "{text}");
                statuses.push(status);
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            statuses
        }
    }));
    // A reload after every 15 answers: each lands with requests in flight.
    let reloads = async {
        for n in 0..10 {
            while done.load(std::sync::atomic::Ordering::Relaxed) < 15 * (n + 1) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let text = if n % 2 == 0 { &two } else { &one };
            proxy.live.reload(parse(text, &env)).expect("reloaded");
        }
    };
    let (statuses, ()) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(load, reloads)
    })
    .await
    .expect("done within 60 s");
    let statuses: Vec<u16> = statuses.into_iter().flatten().collect();
    assert_eq!(statuses.len(), 200);
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(failed, 0, "{statuses:?}");
    assert!(
        !Arc::ptr_eq(&proxy.live.current(), &proxy.state),
        "the reloads took effect"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_room_at_a_reload_waits_on_in_the_new_state() {
    // One request a minute, on a clock at 60x (a minute is a second of real time).
    let clock = Clock::scaled(60.0).expect("a scale");
    let mock = MockProvider::builder()
        .key("k1")
        .limits(GROQ_MODEL, spillway_mock::Limits::rpm(1))
        .clock(clock.clone())
        .start()
        .await;
    let text = format!(
        r#"
[[providers]]
name = "groq"
base_url = "{}"
keys = ["env:K1"]
[providers.limits."{GROQ_MODEL}"]
requests_per_minute = 1

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{GROQ_MODEL}" }}]
max_wait = "600s"
"#,
        mock.url()
    );
    let env = [("K1", "k1")];
    let proxy = Proxy::start(&text, &env, clock.clone()).await;
    let url = proxy.url();
    assert_eq!(
        chat(&url, &chat_body("chat", "first", 5)).await.status(),
        200
    );
    // The second waits for the next minute in the state in force; then a reload lands, and a
    // third arrives in the new state. Each must wait its own minute: the key's one request a
    // minute holds across the reload, so the provider refuses none.
    let second = tokio::spawn({
        let url = url.clone();
        async move {
            chat(&url, &chat_body("chat", "second", 5))
                .await
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.live.reload(parse(&text, &env)).expect("reloaded");
    let third = tokio::spawn({
        let url = url.clone();
        async move {
            chat(&url, &chat_body("chat", "third", 5))
                .await
                .status()
                .as_u16()
        }
    });
    let (second, third) = tokio::time::timeout(Duration::from_secs(30), async {
        (second.await.expect("joined"), third.await.expect("joined"))
    })
    .await
    .expect("both answered within 30 s");
    assert_eq!((second, third), (200, 200));
    let stats = mock.stats();
    assert_eq!(
        stats.responses(429),
        0,
        "the provider refused a send: {stats:?}"
    );
    assert_eq!(stats.responses(200), 3);
    proxy.shutdown().await;
}
