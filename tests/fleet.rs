//! Several gateways in one fleet, sharing their keys' per-minute windows through a real
//! `redis-server` started by each test on a free port: together they send a key no more than
//! its limit, one gateway's 429 blocks the key for the others, and with Redis gone no request
//! fails. Without `redis-server` on `PATH` these tests show as ignored, with the reason.

use futures_util::future::join_all;
use spillway_clock::Clock;
use spillway_mock::{Limits, MockProvider};
use spillway_tests::*;

const MODEL: &str = GROQ_MODEL;

/// A route `chat` over one key of the mock at `url`, with `limits` in the config, `max_wait`
/// 1 s, and `fleet` appended (a `[fleet]` table, or nothing).
fn config(url: &str, limits: &str, fleet: &str) -> String {
    format!(
        r#"
[[providers]]
name = "groq"
base_url = "{url}"
keys = ["env:K1"]
unknown_limits_in_flight = 0
[providers.limits."{MODEL}"]
{limits}

[[routes]]
model = "chat"
targets = [{{ provider = "groq", model = "{MODEL}" }}]
max_wait = "1s"

{fleet}
"#
    )
}

fn fleet_table(name: &str) -> String {
    format!("[fleet]\nredis = \"env:REDIS_URL\"\nname = \"{name}\"\ntimeout = \"200ms\"\n")
}

/// Two gateways with the same config, each with the mock's key and the Redis URL.
async fn two(config: &str, redis: &str) -> (Proxy, Proxy) {
    let env = [("K1", "k1"), ("REDIS_URL", redis)];
    let a = Proxy::start(config, &env, Clock::real()).await;
    let b = Proxy::start(config, &env, Clock::real()).await;
    (a, b)
}

/// Sends `n` distinct requests to each gateway at once; the statuses, in order.
async fn burst(gateways: &[&Proxy], n: usize, tag: &str) -> Vec<u16> {
    let sends = gateways.iter().enumerate().flat_map(|(g, proxy)| {
        (0..n).map(move |i| {
            let url = proxy.url();
            let body = chat_body("chat", &format!("{tag} {g} {i}"), 5);
            async move { chat(&url, &body).await.status().as_u16() }
        })
    });
    join_all(sends).await
}

/// A mock key of 10 requests a minute and two gateways of the fleet `name` that know it.
async fn ten_rpm_fleet(redis: &RedisServer, name: &str) -> (MockProvider, Proxy, Proxy) {
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(10))
        .start()
        .await;
    let text = config(&mock.url(), "requests_per_minute = 10", &fleet_table(name));
    let (a, b) = two(&text, &redis.url()).await;
    (mock, a, b)
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn two_gateways_in_a_fleet_send_a_key_no_more_than_its_limit_together() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let (mock, a, b) = ten_rpm_fleet(&redis, "limit").await;
    let statuses = burst(&[&a, &b], 15, "limit").await;
    assert_eq!(
        count(&statuses, 200),
        10,
        "the key's whole minute, no more: {statuses:?}"
    );
    assert_eq!(
        count(&statuses, 429),
        20,
        "the rest told to come back: {statuses:?}"
    );
    let stats = mock.stats();
    assert_eq!(
        stats.requests, 10,
        "the provider saw the limit, not twice it"
    );
    assert_eq!(stats.responses(429), 0, "and sent no 429");
}

#[tokio::test]
async fn without_a_fleet_two_gateways_send_a_key_twice_its_limit() {
    // Why the fleet matters: each gateway keeps the limit on its own.
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(10))
        .start()
        .await;
    let text = config(&mock.url(), "requests_per_minute = 10", "");
    let (a, b) = two(&text, "unused").await;
    burst(&[&a, &b], 15, "alone").await;
    let stats = mock.stats();
    assert_eq!(stats.requests, 20, "each gateway sent its own ten");
    assert_eq!(
        stats.responses(429),
        10,
        "the provider refused the second ten"
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_429_met_by_one_gateway_holds_the_key_back_on_the_others() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    // The limit is the provider's alone: neither gateway knows it.
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(3))
        .start()
        .await;
    let text = config(&mock.url(), "", &fleet_table("block"));
    let (a, b) = two(&text, &redis.url()).await;
    let first = burst(&[&a], 4, "block").await;
    assert_eq!(count(&first, 200), 3, "{first:?}");
    assert_eq!(
        mock.stats().responses(429),
        1,
        "gateway a met the limit once"
    );
    let resp = chat(&b.url(), &chat_body("chat", "after the 429", 5)).await;
    assert_eq!(resp.status(), 429, "b holds back too");
    let retry: u64 = header(&resp, "retry-after").parse().expect("retry-after");
    assert!(
        (30..=60).contains(&retry),
        "until the provider's reset: {retry}"
    );
    assert_eq!(
        mock.stats().requests,
        4,
        "b sent nothing to the blocked key"
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn with_redis_gone_no_request_fails_and_the_gateway_rejoins_when_it_is_back() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let port = redis.port;
    let mock = MockProvider::builder().key("k1").model(MODEL).start().await;
    let text = config(
        &mock.url(),
        "requests_per_minute = 1000",
        &fleet_table("degraded"),
    );
    let (a, _b) = two(&text, &redis.url()).await;
    let metric = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("spillway_fleet_degraded "))
            .map(|l| l.trim_start_matches("spillway_fleet_degraded ").to_string())
    };
    let scrape = || async {
        client()
            .get(format!("{}/metrics", a.base()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(count(&burst(&[&a], 5, "before").await, 200), 5);
    assert_eq!(metric(&scrape().await).as_deref(), Some("0"));
    redis.kill();
    let during = burst(&[&a], 10, "during").await;
    assert_eq!(
        count(&during, 200),
        10,
        "no request fails for Redis: {during:?}"
    );
    let text = scrape().await;
    assert_eq!(metric(&text).as_deref(), Some("1"), "{text}");
    assert!(text.contains("spillway_fleet_redis_lost_total 1"), "{text}");
    let _back = RedisServer::on(port)
        .await
        .expect("redis-server starts again");
    // Redis is asked again a second after it was lost; give the connection time to come back.
    let mut rejoined = false;
    for i in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        chat(&a.url(), &chat_body("chat", &format!("after {i}"), 5)).await;
        if metric(&scrape().await).as_deref() == Some("0") {
            rejoined = true;
            break;
        }
    }
    assert!(
        rejoined,
        "the gateway rejoined within 4 s of Redis coming back"
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn what_a_gateway_sent_before_it_went_away_still_counts_for_the_others() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let (mock, a, b) = ten_rpm_fleet(&redis, "gone").await;
    assert_eq!(count(&burst(&[&a], 6, "before").await, 200), 6);
    drop(a);
    let after = burst(&[&b], 10, "after").await;
    assert_eq!(
        count(&after, 200),
        4,
        "the gone gateway's six stay in the window: {after:?}"
    );
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.responses(429)), (10, 0));
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn with_redis_gone_each_gateway_keeps_to_its_share_of_the_limit() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let (mock, a, b) = ten_rpm_fleet(&redis, "share").await;
    // Both have said they are alive (a heartbeat a second) and seen each other.
    let seen = |p: &Proxy| p.state.pipeline.router.fleet_members();
    for _ in 0..40 {
        if seen(&a) == Some(2) && seen(&b) == Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!((seen(&a), seen(&b)), (Some(2), Some(2)));
    redis.kill();
    let statuses = burst(&[&a, &b], 10, "share").await;
    assert_eq!(
        count(&statuses, 200),
        10,
        "five each, half the limit each: {statuses:?}"
    );
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.responses(429)), (10, 0));
}

/// Waits (at most 4 s) until both gateways have seen each other through their heartbeats.
async fn until_both_seen(a: &Proxy, b: &Proxy) {
    let seen = |p: &Proxy| p.state.pipeline.router.fleet_members();
    for _ in 0..40 {
        if seen(a) == Some(2) && seen(b) == Some(2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!((seen(a), seen(b)), (Some(2), Some(2)));
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_gateway_that_loses_redis_counts_what_the_fleet_had_spent_in_the_window() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let (mock, a, b) = ten_rpm_fleet(&redis, "seen").await;
    until_both_seen(&a, &b).await;
    // Unevenly spent: seven through a, then one through b, which sees the fleet's eight.
    assert_eq!(count(&burst(&[&a], 7, "seen a").await, 200), 7);
    assert_eq!(count(&burst(&[&b], 1, "seen b").await, 200), 1);
    redis.kill();
    // Half the limit each, counted against its own sends alone, would let b send four more.
    let statuses = burst(&[&a, &b], 10, "seen after").await;
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 429)),
        "{statuses:?}"
    );
    let stats = mock.stats();
    assert!(
        stats.requests <= 10,
        "the fleet's eight, plus each gateway's part of the two left: {}",
        stats.requests
    );
    assert_eq!(stats.responses(429), 0, "{statuses:?}");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "needs redis-server on PATH: apt-get install -y redis-server (scripts/test.sh installs it)"
)]
async fn a_gateway_back_before_the_others_keeps_to_its_share_until_they_are_back() {
    let redis = RedisServer::start().await.expect("redis-server starts");
    let port = redis.port;
    let (mock, a, b) = ten_rpm_fleet(&redis, "probation").await;
    until_both_seen(&a, &b).await;
    redis.kill();
    let during = burst(&[&a, &b], 5, "during").await;
    assert_eq!(count(&during, 200), 10, "five each: {during:?}");
    // b has not come back (here: it never will); what it sent, Redis never learns.
    drop(b);
    let _back = RedisServer::on(port)
        .await
        .expect("redis-server starts again");
    let fleet = a.state.fleet.clone().expect("a fleet");
    for _ in 0..40 {
        if !fleet.is_degraded() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!fleet.is_degraded(), "a rejoined within 4 s");
    assert!(fleet.degraded_time() > std::time::Duration::ZERO);
    // Redis holds only a's five: through it alone, a would send five more.
    let after = burst(&[&a], 5, "after").await;
    assert!(after.iter().all(|s| matches!(s, 200 | 429)), "{after:?}");
    let stats = mock.stats();
    assert_eq!((stats.requests, stats.responses(429)), (10, 0), "{after:?}");
}
