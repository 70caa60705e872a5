//! The response cache end to end: single-flight, persistence, both shapes from one entry,
//! replay mode, cassettes, policy and per-request controls.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};
use spillway_clock::Clock;
use spillway_mock::{Fault, FaultRule, Faults, Limits, MockProvider, Trigger};
use spillway_tests::*;

const MODEL: &str = GROQ_MODEL;

fn config(mock_url: &str, cache: &str) -> String {
    groq_chat_config(mock_url, &format!("[cache]\n{cache}"))
}

fn cache_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = format!(
        "path = {:?}",
        dir.path().join("cache").display().to_string()
    );
    (dir, path)
}

fn deterministic(content: &str) -> Value {
    json!({"model": "chat", "messages": [{"role": "user", "content": content}], "max_tokens": 40, "temperature": 0})
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

async fn send(proxy: &Proxy, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("the proxy answers")
}

fn slow(latency_ms: u64) -> Faults {
    Faults {
        latency: Some(Duration::from_millis(latency_ms)),
        ..Faults::none()
    }
}

/// A client that gives up on an answer after 150 ms.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap()
}

fn sse_text(body: &str) -> String {
    text_of(&data_events(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_concurrent_requests_cost_one_upstream_call() {
    // A slow upstream, so the 50 requests overlap with its one call.
    let mock = MockProvider::builder()
        .key("k1")
        .faults(slow(1_500))
        .start()
        .await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let body = deterministic("the same question");
    let answers = join_all((0..50).map(|_| async {
        let resp = send(&proxy, &body, &[]).await;
        let cache = header(&resp, "x-spillway-cache");
        (resp.status().as_u16(), cache, resp.text().await.unwrap())
    }))
    .await;
    assert_eq!(
        mock.stats().requests,
        1,
        "the mock counted exactly one request"
    );
    assert!(answers.iter().all(|(s, _, _)| *s == 200));
    assert!(
        answers.iter().all(|(_, _, b)| *b == answers[0].2),
        "every client got the same body"
    );
    let count = |what: &str| answers.iter().filter(|(_, c, _)| c == what).count();
    assert_eq!(count("miss"), 1);
    assert!(
        count("coalesced") >= 1,
        "identical requests joined the flight"
    );
    assert_eq!(count("coalesced") + count("hit"), 49);
    // Afterwards it is a hit.
    assert_eq!(
        header(&send(&proxy, &body, &[]).await, "x-spillway-cache"),
        "hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_call_outlives_the_client_that_started_it() {
    let mock = MockProvider::builder()
        .key("k1")
        .faults(slow(600))
        .start()
        .await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let body = deterministic("leave early");
    let leader = impatient()
        .post(format!("{}/chat/completions", proxy.url()))
        .json(&body)
        .send();
    let follower = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(&proxy, &body, &[]).await
    };
    let (gone, follower) = tokio::join!(leader, follower);
    assert!(gone.is_err(), "the first client gave up");
    assert_eq!(follower.status(), 200);
    assert_eq!(header(&follower, "x-spillway-cache"), "coalesced");
    let hit = send(&proxy, &body, &[]).await;
    assert_eq!(
        header(&hit, "x-spillway-cache"),
        "hit",
        "the answer was still stored"
    );
    assert_eq!(mock.stats().requests, 1);
}

/// A streamed call goes on when the client that started it leaves, before the first byte
/// (`midway: false`) or after it: the answer still reaches a client that joined it and the cache.
async fn a_streamed_call_outlives_its_client(midway: bool) {
    let faults = if midway {
        Faults {
            tokens_per_second: Some(100.0),
            ..Faults::none()
        }
    } else {
        slow(600)
    };
    let mock = MockProvider::builder()
        .key("k1")
        .faults(faults)
        .start()
        .await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let body = streamed(deterministic(&format!("leave early, midway: {midway}")));
    if midway {
        let mut leader = send(&proxy, &body, &[]).await;
        assert_eq!(leader.status(), 200);
        let first = leader.chunk().await.expect("a first chunk");
        assert!(first.is_some_and(|c| c.starts_with(b"data: ")));
        drop(leader);
    } else {
        let gone = impatient()
            .post(format!("{}/chat/completions", proxy.url()))
            .json(&body)
            .send()
            .await;
        assert!(gone.is_err(), "the first client gave up");
    }
    let follower = tokio::time::timeout(Duration::from_secs(10), async {
        let response = send(&proxy, &body, &[]).await;
        let status = header(&response, "x-spillway-cache");
        (status, response.text().await.unwrap())
    })
    .await
    .expect("the call went on without its client");
    assert_eq!(follower.0, "coalesced");
    assert!(follower.1.ends_with("data: [DONE]\n\n"), "{}", follower.1);
    let hit = send(&proxy, &body, &[]).await;
    assert_eq!(
        header(&hit, "x-spillway-cache"),
        "hit",
        "the answer was stored"
    );
    assert_eq!(sse_text(&hit.text().await.unwrap()), sse_text(&follower.1));
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_call_outlives_a_client_that_leaves_before_the_first_byte() {
    a_streamed_call_outlives_its_client(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_call_outlives_a_client_that_leaves_midway() {
    a_streamed_call_outlives_its_client(true).await;
}

#[tokio::test]
async fn a_hit_survives_a_restart_with_the_provider_gone() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let cfg = config(&mock.url(), &path);
    let first = Proxy::start(&cfg, &[("K1", "k1")], Clock::real()).await;
    let body = deterministic("persist me");
    let miss = send(&first, &body, &[]).await;
    assert_eq!(header(&miss, "x-spillway-cache"), "miss");
    let original = miss.text().await.unwrap();
    let metrics = reqwest::get(format!("{}/metrics", first.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("spillway_cache_writes_dropped_total 0\n"),
        "{metrics}"
    );
    first.shutdown().await;
    mock.shutdown().await;

    let second = Proxy::start(&cfg, &[("K1", "k1")], Clock::real()).await;
    let hit = send(&second, &body, &[]).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(header(&hit, "x-spillway-cache"), "hit");
    assert_eq!(hit.text().await.unwrap(), original);
}

#[tokio::test]
async fn one_entry_serves_streams_and_plain_answers_whichever_came_first() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;

    // Plain first, then a streamed hit.
    let plain: Value = send(&proxy, &deterministic("plain first"), &[])
        .await
        .json()
        .await
        .unwrap();
    let hit = send(&proxy, &streamed(deterministic("plain first")), &[]).await;
    assert_eq!(header(&hit, "x-spillway-cache"), "hit");
    assert_eq!(header(&hit, "content-type"), "text/event-stream");
    let text = hit.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        sse_text(&text),
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );

    // Streamed first, then a plain hit.
    let live = send(&proxy, &streamed(deterministic("stream first")), &[]).await;
    assert_eq!(header(&live, "x-spillway-cache"), "miss");
    let live = live.text().await.unwrap();
    let hit = send(&proxy, &deterministic("stream first"), &[]).await;
    assert_eq!(header(&hit, "x-spillway-cache"), "hit");
    let assembled: Value = hit.json().await.unwrap();
    assert_eq!(assembled["object"], "chat.completion");
    assert_eq!(
        assembled["choices"][0]["message"]["content"]
            .as_str()
            .unwrap(),
        sse_text(&live)
    );
    assert!(assembled["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // And the streamed hit replays the recorded stream byte for byte.
    let replayed = send(&proxy, &streamed(deterministic("stream first")), &[])
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(replayed, live);
    assert_eq!(mock.stats().requests, 2);
}

#[tokio::test]
async fn replay_mode_serves_hits_and_explains_misses_without_any_provider() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let recorder = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let recorded = send(&recorder, &deterministic("what is a weir?"), &[])
        .await
        .text()
        .await
        .unwrap();
    recorder.shutdown().await;

    // A "provider" that counts connections: replay mode must never open one.
    let watch = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unreachable = format!("http://{}/openai/v1", watch.local_addr().unwrap());
    let replay = Proxy::start(
        &config(&unreachable, &format!("{path}\nmode = \"replay\"")),
        &[("K1", "k1")],
        Clock::real(),
    )
    .await;
    let hit = send(&replay, &deterministic("what is a weir?"), &[]).await;
    assert_eq!(header(&hit, "x-spillway-cache"), "hit");
    assert_eq!(hit.text().await.unwrap(), recorded);

    let miss = send(&replay, &deterministic("what is a wier?"), &[]).await;
    assert_eq!(miss.status(), 404);
    let err: Value = miss.json().await.unwrap();
    assert_eq!(err["error"]["code"], "cache_miss");
    assert_eq!(err["error"]["key"].as_str().unwrap().len(), 64);
    assert_eq!(
        err["error"]["closest"]["differences"],
        json!(["messages[0].content"])
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("messages[0].content"), "{message}");
    // Even a request the policy would not cache is looked up, never sent.
    let mut hot = deterministic("hot");
    hot["temperature"] = json!(0.9);
    assert_eq!(send(&replay, &hot, &[]).await.status(), 404);
    let accepted = tokio::time::timeout(Duration::from_millis(200), watch.accept()).await;
    assert!(
        accepted.is_err(),
        "replay mode opened an upstream connection"
    );
}

#[tokio::test]
async fn a_replay_miss_with_a_typo_names_the_entry_it_misspells() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let recorder = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let things = [
        "weir",
        "spillway",
        "sluice gate",
        "fish ladder",
        "levee",
        "culvert",
        "flume",
        "lock",
        "dam",
        "penstock",
        "headrace",
        "tailrace",
        "stilling basin",
        "groyne",
        "embankment",
        "reservoir",
        "intake tower",
        "siphon",
        "canal",
        "aqueduct",
        "floodgate",
        "breakwater",
        "jetty",
        "revetment",
    ];
    let prompts: Vec<String> = things
        .iter()
        .enumerate()
        .map(|(i, t)| format!("Question {i}: in two sentences, what does a {t} do on a river?"))
        .collect();
    let mut keys = Vec::new();
    for p in &prompts {
        let resp = send(&recorder, &deterministic(p), &[]).await;
        assert_eq!(resp.status(), 200);
        keys.push(header(&resp, "x-spillway-cache-key"));
    }
    recorder.shutdown().await;

    let replay = Proxy::start(
        &config(&mock.url(), &format!("{path}\nmode = \"replay\"")),
        &[("K1", "k1")],
        Clock::real(),
    )
    .await;
    // One character changed in prompt #3 (and in two others): each miss names its own entry,
    // not whichever entry also differs in `messages[0].content` and came first.
    for i in [3, 11, 20] {
        let typo = prompts[i].replacen("river", "rivr", 1);
        let miss = send(&replay, &deterministic(&typo), &[]).await;
        assert_eq!(miss.status(), 404);
        let err: Value = miss.json().await.unwrap();
        assert_eq!(
            err["error"]["closest"]["key"], keys[i],
            "a typo of prompt #{i} named another entry: {err}"
        );
        assert_eq!(
            err["error"]["closest"]["differences"],
            json!(["messages[0].content"])
        );
    }
}

/// Each question asked plain, then streamed (as another question); the answers' bodies.
async fn ask_plain_and_streamed(proxy: &Proxy, questions: &[&str]) -> Vec<String> {
    let mut answers = Vec::new();
    for q in questions {
        for body in [
            deterministic(q),
            streamed(deterministic(&format!("{q} streamed"))),
        ] {
            answers.push(send(proxy, &body, &[]).await.text().await.unwrap());
        }
    }
    answers
}

#[tokio::test]
async fn export_then_import_into_an_empty_store_replays_byte_for_byte() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let first = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let questions = ["alpha", "beta", "gamma"];
    let originals = ask_plain_and_streamed(&first, &questions).await;
    let mut cassette = Vec::new();
    let exported = spillway::cache::cassette::export(&first.state.pipeline.cache, &mut cassette)
        .expect("exports");
    assert_eq!(exported, 6);
    first.shutdown().await;
    let text = String::from_utf8(cassette.clone()).unwrap();
    let keys: Vec<&str> = text.lines().map(|l| &l[8..72]).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "a cassette is sorted by key");
    assert!(!text.contains("k1"), "no credentials in the cassette");

    let (_fresh, fresh_path) = cache_dir();
    let replay = Proxy::start(
        &config(
            "http://127.0.0.1:9/openai/v1",
            &format!("{fresh_path}\nmode = \"replay\""),
        ),
        &[("K1", "k1")],
        Clock::real(),
    )
    .await;
    let imported = spillway::cache::cassette::import(&replay.state.pipeline.cache, &cassette[..])
        .expect("imports");
    assert_eq!(imported, 6);
    let replayed = ask_plain_and_streamed(&replay, &questions).await;
    assert_eq!(replayed, originals);
}

#[tokio::test]
async fn only_deterministic_requests_are_cached_unless_the_policy_says_always() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let mut warm = deterministic("creative");
    warm["temperature"] = json!(0.7);
    // Left out by the policy: `skip`, and why (not `bypass`, which is the client's own ask).
    for _ in 0..2 {
        let resp = send(&proxy, &warm, &[]).await;
        assert_eq!(header(&resp, "x-spillway-cache"), "skip");
        assert_eq!(header(&resp, "x-spillway-cache-reason"), "nondeterministic");
    }
    let mut unset = deterministic("no temperature");
    unset.as_object_mut().unwrap().remove("temperature");
    assert_eq!(
        header(&send(&proxy, &unset, &[]).await, "x-spillway-cache"),
        "skip"
    );
    assert_eq!(mock.stats().requests, 3);

    let (_dir2, path2) = cache_dir();
    let always = Proxy::start(
        &config(&mock.url(), &format!("{path2}\nwhen = \"always\"")),
        &[("K1", "k1")],
        Clock::real(),
    )
    .await;
    assert_eq!(
        header(&send(&always, &warm, &[]).await, "x-spillway-cache"),
        "miss"
    );
    assert_eq!(
        header(&send(&always, &warm, &[]).await, "x-spillway-cache"),
        "hit"
    );
}

/// proxy/README.md's "Deduplicating an eval run", with `proxy/examples/eval.toml` as it ships
/// (only the mock's address and the cache's directory are this test's): a second pass of an
/// eval's prompts, whatever their temperature, is all hits and reaches no provider.
#[tokio::test]
async fn the_eval_example_serves_a_second_pass_from_the_cache() {
    let mock = MockProvider::builder().key("mock-key").start().await;
    let (_dir, path) = cache_dir();
    let example = include_str!("../proxy/examples/eval.toml");
    let config = example
        .replace("http://127.0.0.1:8090/openai/v1", &mock.url())
        .replace("path = \".spillway/eval-cache\"", &path);
    assert_ne!(config, example);
    let proxy = Proxy::start(&config, &[("MOCK_KEY", "mock-key")], Clock::real()).await;
    let prompts: Vec<Value> = (0..6)
        .map(|i| {
            let mut body = chat_body("llama-3.1-8b", &format!("eval question {i}"), 20);
            // What eval runners send: a sampling temperature, or none at all.
            if i % 2 == 0 {
                body["temperature"] = json!(0.7);
            }
            body
        })
        .collect();
    for (pass, expected) in [(1, "miss"), (2, "hit")] {
        for body in &prompts {
            let resp = chat(&proxy.url(), body).await;
            assert_eq!(resp.status(), 200, "pass {pass}");
            assert_eq!(header(&resp, "x-spillway-cache"), expected, "pass {pass}");
        }
    }
    assert_eq!(
        mock.stats().requests,
        6,
        "only the first pass reached the mock"
    );
    let metrics = reqwest::get(format!("{}/metrics", proxy.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("spillway_cache_requests_total{outcome=\"hit\"} 6\n"),
        "{metrics}"
    );
}

/// Embeddings are deterministic, so the default policy caches them though they carry neither a
/// temperature nor a seed: the second identical request is a hit that reaches no provider.
#[tokio::test]
async fn embeddings_are_cached_under_the_default_policy() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    assert_eq!(
        proxy.state.pipeline.cache.config.when,
        spillway::config::cache::CacheWhen::Deterministic,
        "the default policy"
    );
    let body = json!({"model": "chat", "input": ["an embedded sentence", "another"]});
    let mut answers = Vec::new();
    for expected in ["miss", "hit"] {
        let resp = client()
            .post(format!("{}/embeddings", proxy.url()))
            .json(&body)
            .send()
            .await
            .expect("the proxy answers");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-spillway-cache"), expected);
        assert_eq!(header(&resp, "x-spillway-cache-reason"), "");
        answers.push(resp.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0], answers[1], "the hit is the stored answer");
    assert_eq!(answers[1]["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(mock.stats().requests, 1, "only the first reached the mock");
}

#[tokio::test]
async fn request_headers_bypass_refresh_or_insist_on_the_cache() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let body = deterministic("controls");
    let only = send(&proxy, &body, &[("x-spillway-cache", "only-if-cached")]).await;
    assert_eq!(only.status(), 504);
    assert_eq!(
        only.json::<Value>().await.unwrap()["error"]["code"],
        "cache_miss"
    );
    let no_store = send(&proxy, &body, &[("cache-control", "no-store")]).await;
    assert_eq!(header(&no_store, "x-spillway-cache"), "miss");
    assert_eq!(
        header(&send(&proxy, &body, &[]).await, "x-spillway-cache"),
        "miss",
        "no-store kept it out"
    );
    assert_eq!(
        header(&send(&proxy, &body, &[]).await, "x-spillway-cache"),
        "hit"
    );
    let bypassed = send(&proxy, &body, &[("x-spillway-cache", "bypass")]).await;
    assert_eq!(header(&bypassed, "x-spillway-cache"), "bypass");
    assert_eq!(
        header(&bypassed, "x-spillway-cache-reason"),
        "",
        "the client's own ask has no policy reason"
    );
    assert_eq!(
        header(
            &send(&proxy, &body, &[("x-spillway-cache", "refresh")]).await,
            "x-spillway-cache"
        ),
        "miss"
    );
    assert_eq!(
        header(
            &send(&proxy, &body, &[("x-spillway-cache", "only-if-cached")]).await,
            "x-spillway-cache"
        ),
        "hit"
    );
    assert_eq!(mock.stats().requests, 4);
    let bad = send(&proxy, &body, &[("x-spillway-cache", "maybe")]).await;
    assert_eq!(bad.status(), 400);
    // Namespaces keep runs apart.
    let other = send(&proxy, &body, &[("x-spillway-cache-namespace", "run-2")]).await;
    assert_eq!(header(&other, "x-spillway-cache"), "miss");
    assert_ne!(
        header(&other, "x-spillway-cache-key"),
        header(&send(&proxy, &body, &[]).await, "x-spillway-cache-key")
    );
}

#[tokio::test]
async fn errors_and_cut_streams_are_never_stored() {
    let mock = MockProvider::builder().key("k1").start().await;
    let (_dir, path) = cache_dir();
    let proxy = Proxy::start(&config(&mock.url(), &path), &[("K1", "k1")], Clock::real()).await;
    let mut invalid = deterministic("bad");
    invalid["n"] = json!(3); // the mock refuses n > 1 with a 400
    for _ in 0..2 {
        let resp = send(&proxy, &invalid, &[]).await;
        assert_eq!(resp.status(), 400);
        assert_eq!(header(&resp, "x-spillway-cache"), "miss");
    }
    assert_eq!(mock.stats().requests, 2, "the refusal was not stored");

    mock.set_faults(Faults::none().with_rule(FaultRule {
        fault: Fault::CutStream { after_chunks: 2 },
        trigger: Trigger::Requests { from: 1, to: 1 },
        model: None,
    }));
    mock.reset();
    let cut = send(&proxy, &streamed(deterministic("cut")), &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(cut.contains("stream_interrupted"), "{cut}");
    let again = send(&proxy, &streamed(deterministic("cut")), &[]).await;
    assert_eq!(
        header(&again, "x-spillway-cache"),
        "miss",
        "the cut stream was not stored"
    );
    assert!(again.text().await.unwrap().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn a_hit_never_touches_a_provider_or_its_limits() {
    let clock = Clock::manual();
    let mock = MockProvider::builder()
        .key("k1")
        .limits(MODEL, Limits::rpm(1))
        .clock(clock.clone())
        .start()
        .await;
    let (_dir, path) = cache_dir();
    let cfg = config(&mock.url(), &path).replace(
        "keys = [\"env:K1\"]",
        &format!("keys = [\"env:K1\"]\n[providers.limits.\"{MODEL}\"]\nrequests_per_minute = 1"),
    );
    let cfg = cfg.replace(
        "targets = [{ provider = \"groq\", model = \"llama-3.1-8b-instant\" }]",
        "targets = [{ provider = \"groq\", model = \"llama-3.1-8b-instant\" }]\nmax_wait = \"0s\"",
    );
    let proxy = Proxy::start(&cfg, &[("K1", "k1")], clock).await;
    assert_eq!(
        send(&proxy, &deterministic("once"), &[]).await.status(),
        200
    );
    assert_eq!(
        send(&proxy, &deterministic("twice"), &[]).await.status(),
        429,
        "the key is spent"
    );
    for _ in 0..5 {
        let hit = send(&proxy, &deterministic("once"), &[]).await;
        assert_eq!(
            (hit.status().as_u16(), header(&hit, "x-spillway-cache")),
            (200, "hit".to_string())
        );
    }
    assert_eq!(mock.stats().requests, 1);
}
