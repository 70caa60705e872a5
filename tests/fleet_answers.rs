//! Answers shared by a fleet, against a real `redis-server` started by each test: an answer one
//! gateway made is a hit on the others (`x-spillway-cache-tier: fleet`), identical requests in
//! flight on different gateways cost one upstream call, a shared answer that fails its checks
//! is a miss, one too large to share stays local, and a leader that goes away lets a follower
//! call. Without `redis-server` on `PATH` these tests show as ignored, with the reason.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use spillway_clock::Clock;
use spillway_mock::{Faults, MockProvider};
use spillway_tests::*;

const MODEL: &str = GROQ_MODEL;

/// A route `chat` over one key of the mock at `url`, in the fleet `name` (with `extra` lines
/// in its `[fleet]` table).
fn config(url: &str, name: &str, extra: &str) -> String {
    format!(
        r#"
[[providers]]
name = "groq"
base_url = "{url}"
keys = ["env:K1"]

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{MODEL}" }}]

[fleet]
redis = "env:REDIS_URL"
name = "{name}"
timeout = "200ms"
{extra}
"#
    )
}

/// `n` gateways of one fleet, each with its own cache directory.
async fn gateways(n: usize, config: &str, redis: &RedisServer) -> Vec<Proxy> {
    let url = redis.url();
    let env = [("K1", "k1"), ("REDIS_URL", url.as_str())];
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(Proxy::start(config, &env, Clock::real()).await);
    }
    all
}

/// A mock whose answers take `ms` milliseconds.
async fn mock(ms: u64) -> MockProvider {
    let faults = Faults {
        latency: Some(Duration::from_millis(ms)),
        ..Faults::none()
    };
    MockProvider::builder()
        .key("k1")
        .model(MODEL)
        .faults(faults)
        .start()
        .await
}

/// A request the cache keys (temperature 0).
fn cached(content: &str) -> Value {
    json!({"model": "chat", "messages": [{"role": "user", "content": content}], "max_tokens": 20, "temperature": 0})
}

/// Status, `x-spillway-cache`, `x-spillway-cache-tier`, body.
async fn ask(proxy: &Proxy, body: &Value) -> (u16, String, String, String) {
    let resp = chat(&proxy.url(), body).await;
    let status = resp.status().as_u16();
    let cache = header(&resp, "x-spillway-cache");
    let tier = header(&resp, "x-spillway-cache-tier");
    let text = resp.text().await.expect("a body");
    (status, cache, tier, text)
}

async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a connection to the test's Redis")
}

/// The cache key (hex) a gateway gives `body`.
async fn key_of(proxy: &Proxy, body: &Value) -> String {
    let resp = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .header("x-spillway-cache", "only-if-cached")
        .json(body)
        .send()
        .await
        .expect("the proxy answers");
    header(&resp, "x-spillway-cache-key")
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn an_answer_one_gateway_made_is_a_hit_on_another() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = mock(0).await;
    let g = gateways(3, &config(&mock.url(), "hit", ""), &redis).await;
    let body = cached("shared once");
    let (status, cache, _, first) = ask(&g[0], &body).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
    // Gateway a shares the answer as its writer stores it, a moment after its client has it:
    // b, asking at once, finds it or waits for it, from the fleet either way.
    let (status, cache, tier, second) = ask(&g[1], &body).await;
    assert_eq!(status, 200);
    assert!(
        ["hit", "coalesced"].contains(&cache.as_str()),
        "b did not call: {cache}"
    );
    assert_eq!(tier, "fleet", "from the other gateway");
    assert_eq!(second, first, "the same answer");
    let (status, cache, tier, third) = ask(&g[2], &body).await;
    assert_eq!(
        (status, cache.as_str(), tier.as_str()),
        (200, "hit", "fleet")
    );
    assert_eq!(third, first);
    let (_, cache, tier, _) = ask(&g[2], &body).await;
    assert_eq!(
        (cache.as_str(), tier.as_str()),
        ("hit", "local"),
        "then kept in c's own cache"
    );
    assert_eq!(mock.stats().requests, 1, "one upstream call");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn thirty_identical_requests_over_three_gateways_cost_one_upstream_call() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = mock(400).await;
    let g = gateways(3, &config(&mock.url(), "flight", ""), &redis).await;
    let body = cached("thirty at once");
    let asks = (0..30).map(|i| ask(&g[i % 3], &body));
    let answers = join_all(asks).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert!(
        answers.iter().all(|a| a.3 == answers[0].3),
        "one answer for all"
    );
    let misses = answers.iter().filter(|a| a.1 == "miss").count();
    let from_fleet = answers.iter().filter(|a| a.2 == "fleet").count();
    assert_eq!(misses, 1, "one leader in the fleet: {answers:?}");
    assert!(
        from_fleet >= 2,
        "the other gateways' leaders waited for it: {from_fleet}"
    );
    assert_eq!(mock.stats().requests, 1, "one upstream call for thirty");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_shared_answer_that_fails_its_checks_is_a_miss() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = mock(0).await;
    let g = gateways(3, &config(&mock.url(), "checked", ""), &redis).await;
    let (one, two) = (cached("first"), cached("second"));
    for body in [&one, &two] {
        assert_eq!(ask(&g[0], body).await.1, "miss");
    }
    let (k1, k2) = (key_of(&g[0], &one).await, key_of(&g[0], &two).await);
    assert_eq!(k1.len(), 64, "a cache key: {k1:?}");
    let mut conn = redis_connection(&redis).await;
    let answer = |k: &str| format!("spillway:checked:a:{{{k}}}");
    let mut frame: Vec<u8> = Vec::new();
    for _ in 0..50 {
        let got: Option<Vec<u8>> = redis::cmd("GET")
            .arg(answer(&k2))
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(f) = got {
            frame = f;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(frame.len() > 32, "the second answer was shared");
    // The second answer's frame stored under the first's key: for another key.
    let _: () = redis::cmd("SET")
        .arg(answer(&k1))
        .arg(&frame)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, cache, _, text) = ask(&g[1], &one).await;
    assert_eq!(
        (status, cache.as_str()),
        (200, "miss"),
        "not served: {text}"
    );
    assert!(!text.contains("second"), "never another request's answer");
    // One byte of the second answer's record changed: its checksum fails.
    let mut flipped = frame.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x20;
    let _: () = redis::cmd("SET")
        .arg(answer(&k2))
        .arg(&flipped)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (status, cache, _, _) = ask(&g[2], &two).await;
    assert_eq!((status, cache.as_str()), (200, "miss"));
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn an_answer_too_large_to_share_stays_local_and_its_followers_call_on_their_own() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = mock(300).await;
    let text = config(&mock.url(), "large", "shared_max_entry_size = 64");
    let g = gateways(3, &text, &redis).await;
    let body = cached("too large for the fleet");
    let answers = join_all((0..3).map(|i| ask(&g[i], &body))).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert!(
        answers.iter().all(|a| a.2 != "fleet"),
        "nothing came from the fleet: {answers:?}"
    );
    assert_eq!(
        mock.stats().requests,
        3,
        "told the answer is not shared, each gateway called"
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_lease_whose_leader_went_away_lapses_and_a_follower_calls() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let mock = mock(0).await;
    let g = gateways(1, &config(&mock.url(), "lapse", ""), &redis).await;
    let body = cached("the leader died");
    let key = key_of(&g[0], &body).await;
    // A gateway that took the lease and died: nobody renews it or says it is done.
    let mut conn = redis_connection(&redis).await;
    let _: () = redis::cmd("SET")
        .arg(format!("spillway:lapse:l:{{{key}}}"))
        .arg("a gateway that died")
        .arg("PX")
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();
    let wall = Clock::real();
    let started = wall.now();
    let (status, cache, _, _) = ask(&g[0], &body).await;
    let took = wall.now() - started;
    assert_eq!((status, cache.as_str()), (200, "miss"), "it called itself");
    assert!(
        took >= Duration::from_millis(400),
        "after waiting for the lease to lapse: {took:?}"
    );
    assert_eq!(mock.stats().requests, 1);
}
