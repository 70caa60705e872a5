//! What one gateway of a fleet finds steers the others at once, through a real `redis-server`
//! started by each test on a free port: a limit it learned from the provider's headers, a 429,
//! a key the provider refused, a target whose circuit opened (by a 503 or a stream that
//! stalled); a daily limit holds across the fleet as a per-minute one does; and with Redis
//! gone, each finds on its own and no request fails. Without `redis-server` on `PATH` these
//! tests show as ignored, with the reason.

use std::time::Duration;

use futures_util::future::join_all;
use spillway_clock::Clock;
use spillway_mock::{Dialect, Fault, FaultRule, Faults, Limits, MockProvider, Trigger};
use spillway_tests::*;

const MODEL: &str = GROQ_MODEL;
const OTHER_MODEL: &str = "llama-3.3-70b-versatile";

fn fleet_table(name: &str) -> String {
    format!("[fleet]\nredis = \"env:REDIS_URL\"\nname = \"{name}\"\ntimeout = \"200ms\"\n")
}

/// Provider `p` with two keys, `$REVOKED` then `$GOOD` (no requests in flight held back while
/// their limits are unknown), the route `chat` to `MODEL`, `routes` after it, and the fleet
/// `name`.
fn revoked_then_good(url: &str, routes: &str, name: &str) -> String {
    format!(
        r#"
[[providers]]
name = "p"
base_url = "{url}"
keys = ["env:REVOKED", "env:GOOD"]
unknown_limits_in_flight = 0

[[routes]]
model = "chat"
targets = [{{ provider = "p", model = "{MODEL}" }}]

{routes}
{}
"#,
        fleet_table(name)
    )
}

/// `n` gateways with the same config and environment (the Redis URL added).
async fn gateways(n: usize, config: &str, env: &[(&str, &str)], redis: &str) -> Vec<Proxy> {
    let mut env = env.to_vec();
    env.push(("REDIS_URL", redis));
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Proxy::start(config, &env, Clock::real()).await);
    }
    out
}

/// Sends `n` distinct requests for `route` to each gateway at once; the statuses, in order.
async fn burst(gateways: &[&Proxy], route: &str, n: usize, tag: &str) -> Vec<u16> {
    let sends = gateways.iter().enumerate().flat_map(|(g, proxy)| {
        (0..n).map(move |i| {
            let url = proxy.url();
            let body = chat_body(route, &format!("{tag} {g} {i}"), 5);
            async move { chat(&url, &body).await.status().as_u16() }
        })
    });
    join_all(sends).await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Waits (at most 5 s) until Redis holds `field` in the learned-limits hash of `slot`
/// (`NAME|ALIAS|MODEL`); its value.
async fn learned_in_redis(redis: &RedisServer, slot: &str, field: &str) -> Option<String> {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let key = format!("spillway:{{{slot}}}:l");
    for _ in 0..50 {
        let value: Option<String> = redis::cmd("HGET")
            .arg(&key)
            .arg(field)
            .query_async(&mut conn)
            .await
            .expect("HGET");
        if value.is_some() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Every key in Redis with its content, as text.
async fn redis_dump(redis: &RedisServer) -> String {
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("TYPE");
        let command = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).clone(),
            "hash" => redis::cmd("HGETALL").arg(&key).clone(),
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
            _ => continue,
        };
        let content: redis::Value = command.query_async(&mut conn).await.expect("read");
        out.push_str(&format!("{key} = {content:?}\n"));
    }
    out
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_limit_learned_on_gateway_a_holds_gateway_b_to_it() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    // The provider tells its requests per minute in its headers (OpenAI's dialect); neither
    // gateway is told it in its config.
    let mock = MockProvider::builder()
        .key("k1")
        .dialect(Dialect::OpenAi)
        .limits(MODEL, Limits::rpm(5))
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "p"
base_url = "{}"
dialect = "openai"
keys = ["env:K1"]
unknown_limits_in_flight = 0

[[routes]]
model = "chat"
targets = [{{ provider = "p", model = "{MODEL}" }}]
max_wait = "1s"

{}
"#,
        mock.url(),
        fleet_table("learned")
    );
    let g = gateways(2, &config, &[("K1", "k1")], &redis.url()).await;
    let first = chat(&g[0].url(), &chat_body("chat", "first", 5)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        learned_in_redis(&redis, &format!("learned|p#1|{MODEL}"), "rpm")
            .await
            .as_deref(),
        Some("5"),
        "gateway a shared the limit its answer's headers named"
    );
    // Gateway b has sent nothing, so knows nothing of the limit but what a shared.
    let statuses = burst(&[&g[1]], "chat", 10, "b").await;
    assert_eq!(
        count(&statuses, 200),
        4,
        "the minute's five, a's one counted: {statuses:?}"
    );
    assert_eq!(count(&statuses, 429), 6, "{statuses:?}");
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.responses(429)),
        (5, 0),
        "the provider saw its limit and sent no 429"
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_key_refused_401_on_a_is_not_tried_by_b_for_any_model() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = MockProvider::builder()
        .keys(["sk-good-5678"])
        .model(MODEL)
        .model(OTHER_MODEL)
        .start()
        .await;
    let other = format!(
        "[[routes]]\nmodel = \"other\"\ntargets = [{{ provider = \"p\", model = \"{OTHER_MODEL}\" }}]\n"
    );
    let config = revoked_then_good(&mock.url(), &other, "refused");
    let env = [("REVOKED", "sk-revoked-1234"), ("GOOD", "sk-good-5678")];
    let g = gateways(2, &config, &env, &redis.url()).await;
    let first = chat(&g[0].url(), &chat_body("chat", "first", 5)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-spillway-key"), "p#2", "a moved on");
    // Gateway b asks for the key's other model first: the refusal is the key's, for all its
    // models.
    for (i, route) in ["other", "chat", "other", "chat"].iter().enumerate() {
        let resp = chat(&g[1].url(), &chat_body(route, &format!("b {i}"), 5)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-spillway-key"), "p#2");
    }
    let refused = mock.journal().iter().filter(|e| e.status == 401).count();
    assert_eq!(refused, 1, "only a tried the refused key");
    let on_b = g[1].state.pipeline.router.refused_keys();
    assert_eq!(on_b.len(), 1, "b lists it as refused: {on_b:?}");
    assert_eq!(on_b[0].1, "p#1");
    assert!(on_b[0].2.starts_with("401"), "{on_b:?}");
    let dump = redis_dump(&redis).await;
    assert!(
        dump.contains(&format!("spillway:{{refused|p#1|{OTHER_MODEL}}}:x")),
        "the refusal is marked for each of the key's models: {dump}"
    );
    for secret in ["sk-revoked-1234", "sk-good-5678"] {
        assert!(!dump.contains(secret), "no key value in Redis: {dump}");
    }
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_circuit_opened_on_a_steers_b_to_the_fallback() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let failing = MockProvider::builder()
        .key("a1")
        .model(MODEL)
        .faults(Faults::always_status(503))
        .start()
        .await;
    let healthy = MockProvider::builder()
        .key("b1")
        .model(OTHER_MODEL)
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:A1"]
failures_to_open = 1
cooldown = "60s"

[[providers]]
name = "b"
base_url = "{}"
keys = ["env:B1"]

[[routes]]
model = "chat"
targets = [
  {{ provider = "a", model = "{MODEL}" }},
  {{ provider = "b", model = "{OTHER_MODEL}" }},
]

{}
"#,
        failing.url(),
        healthy.url(),
        fleet_table("circuit")
    );
    let env = [("A1", "a1"), ("B1", "b1")];
    let g = gateways(2, &config, &env, &redis.url()).await;
    let first = chat(&g[0].url(), &chat_body("chat", "first", 5)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-spillway-provider"), "b", "a fell back");
    for i in 0..4 {
        let resp = chat(&g[1].url(), &chat_body("chat", &format!("b {i}"), 5)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-spillway-provider"), "b");
    }
    assert_eq!(
        failing.stats().requests,
        1,
        "b sent nothing to the target whose circuit a opened"
    );
    let state = &g[1].state.pipeline.router.status(Clock::real().instant())[0].targets[0].state;
    assert!(
        state.circuit.open_until.is_some(),
        "b shows the circuit open: {state:?}"
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_daily_limit_spread_over_three_gateways_is_held() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::none().with_rpd(6))
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "p"
base_url = "{}"
keys = ["env:K1"]
unknown_limits_in_flight = 0
[providers.limits."{MODEL}"]
requests_per_day = 6

[[routes]]
model = "chat"
targets = [{{ provider = "p", model = "{MODEL}" }}]
max_wait = "1s"

{}
"#,
        mock.url(),
        fleet_table("daily")
    );
    let g = gateways(3, &config, &[("K1", "k1")], &redis.url()).await;
    let statuses = burst(&[&g[0], &g[1], &g[2]], "chat", 4, "day").await;
    assert_eq!(
        count(&statuses, 200),
        6,
        "the key's day, no more: {statuses:?}"
    );
    assert_eq!(count(&statuses, 429), 6, "{statuses:?}");
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.responses(429)),
        (6, 0),
        "the provider saw its daily limit and sent no 429"
    );
    // A later request on any gateway is told to come back when the day's first send leaves
    // the window, not in a minute.
    let late = chat(&g[2].url(), &chat_body("chat", "late", 5)).await;
    assert_eq!(late.status(), 429);
    let retry: u64 = header(&late, "retry-after").parse().expect("retry-after");
    assert!(retry > 3600, "a day's wait, not a minute's: {retry}");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_429_met_on_a_steers_b_to_the_fallback_at_once() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    // One request a minute at the first target, which neither gateway knows.
    let limited = MockProvider::builder()
        .key("a1")
        .limits(MODEL, Limits::rpm(1))
        .start()
        .await;
    let fallback = MockProvider::builder()
        .key("b1")
        .model(OTHER_MODEL)
        .start()
        .await;
    let config = format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:A1"]
unknown_limits_in_flight = 0

[[providers]]
name = "b"
base_url = "{}"
keys = ["env:B1"]

[[routes]]
model = "chat"
targets = [
  {{ provider = "a", model = "{MODEL}" }},
  {{ provider = "b", model = "{OTHER_MODEL}" }},
]
max_wait = "2s"

{}
"#,
        limited.url(),
        fallback.url(),
        fleet_table("steer")
    );
    let env = [("A1", "a1"), ("B1", "b1")];
    let g = gateways(2, &config, &env, &redis.url()).await;
    for (i, provider) in ["a", "b"].iter().enumerate() {
        let resp = chat(&g[0].url(), &chat_body("chat", &format!("a {i}"), 5)).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-spillway-provider"), *provider);
    }
    assert_eq!(limited.stats().responses(429), 1, "a met the limit once");
    let resp = chat(&g[1].url(), &chat_body("chat", "b", 5)).await;
    assert_eq!(resp.status(), 200, "b does not wait out the key's block");
    assert_eq!(header(&resp, "x-spillway-provider"), "b");
    assert_eq!(
        header(&resp, "x-spillway-attempts"),
        "1",
        "b went to the fallback without trying the blocked key"
    );
    assert_eq!(limited.stats().requests, 2);
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_stream_that_stalled_on_a_steers_b_to_the_fallback() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let stalling = MockProvider::builder()
        .key("a1")
        .faults(Faults::none().with_rule(FaultRule {
            fault: Fault::StallStream { after_chunks: 2 },
            trigger: Trigger::Probability(1.0),
            model: None,
        }))
        .start()
        .await;
    let healthy = MockProvider::builder().key("b1").start().await;
    let config = format!(
        r#"
[[providers]]
name = "a"
base_url = "{}"
keys = ["env:A1"]
stream_idle_timeout = "300ms"
failures_to_open = 1
cooldown = "60s"

[[providers]]
name = "b"
base_url = "{}"
keys = ["env:B1"]

[[routes]]
model = "chat"
targets = [{{ provider = "a", model = "{MODEL}" }}, {{ provider = "b", model = "{MODEL}" }}]

{}
"#,
        stalling.url(),
        healthy.url(),
        fleet_table("stall")
    );
    let env = [("A1", "a1"), ("B1", "b1")];
    let g = gateways(2, &config, &env, &redis.url()).await;
    let streamed = |text: &str| {
        let mut body = chat_body("chat", text, 20);
        body["stream"] = serde_json::Value::Bool(true);
        body
    };
    let first = chat(&g[0].url(), &streamed("a long story")).await;
    assert_eq!(header(&first, "x-spillway-provider"), "a");
    let _ = tokio::time::timeout(Duration::from_secs(10), first.text()).await;
    let mut marked = false;
    for _ in 0..50 {
        if redis_dump(&redis).await.contains(":c = ") {
            marked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(marked, "the stall's circuit is shared");
    let next = chat(&g[1].url(), &streamed("another story")).await;
    assert_eq!(next.status(), 200);
    assert_eq!(header(&next, "x-spillway-provider"), "b");
    assert_eq!(
        stalling.stats().requests,
        1,
        "b did not try the stalling target"
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn with_redis_gone_what_a_gateway_finds_stays_its_own_and_no_request_fails() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = MockProvider::builder()
        .keys(["good"])
        .model(MODEL)
        .start()
        .await;
    let config = revoked_then_good(&mock.url(), "", "alone");
    let env = [("REVOKED", "revoked-key"), ("GOOD", "good")];
    let g = gateways(2, &config, &env, &redis.url()).await;
    redis.kill();
    let wall = Clock::real();
    for (i, gateway) in g.iter().enumerate() {
        let started = wall.now();
        let resp = chat(&gateway.url(), &chat_body("chat", &format!("alone {i}"), 5)).await;
        assert_eq!(resp.status(), 200, "no request fails for Redis");
        assert_eq!(header(&resp, "x-spillway-key"), "p#2");
        assert!(
            wall.now() - started < Duration::from_secs(2),
            "Redis is waited for no longer than the fleet's timeout per call"
        );
    }
    let refused = mock.journal().iter().filter(|e| e.status == 401).count();
    assert_eq!(refused, 2, "each gateway found the refused key on its own");
}
