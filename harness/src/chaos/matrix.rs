//! The fault matrix: two mock providers behind one gateway, their faults switched at run time
//! in phases (none; 5xx; resets; cut streams; stalled streams; invalid JSON; slow headers;
//! all mixed), with rate limits the gateway must learn, while clients send plain and streamed
//! requests (a quarter of them repeats, so the cache and single-flight are in the way too).
//! Every client outcome is classified against the provider's deterministic answer.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use spillway_mock::{Fault, FaultRule, Faults, Limits, MockProvider, Trigger};

use crate::chaos::outcome::{Outcome, classify_plain, classify_stream};

/// The upstream model both mocks serve.
pub const MODEL: &str = "llama-3.1-8b-instant";
/// The route clients ask for.
pub const ROUTE: &str = "chaos";

/// One phase of the matrix: its name and the faults of the two providers.
#[derive(Clone, Debug)]
pub struct Phase {
    /// What goes wrong in it.
    pub name: &'static str,
    /// Provider `a`'s faults.
    pub a: Faults,
    /// Provider `b`'s faults.
    pub b: Faults,
}

fn rule(fault: Fault, p: f64) -> FaultRule {
    FaultRule {
        fault,
        trigger: Trigger::Probability(p),
        model: None,
    }
}

fn faults(rules: Vec<FaultRule>, seed: u64) -> Faults {
    let mut f = Faults::none();
    f.seed = seed;
    for r in rules {
        f = f.with_rule(r);
    }
    f
}

/// The phases, in order.
pub fn phases(seed: u64) -> Vec<Phase> {
    let none = || Faults::none();
    vec![
        Phase {
            name: "none",
            a: none(),
            b: none(),
        },
        Phase {
            name: "5xx",
            a: faults(vec![rule(Fault::Status(503), 0.5)], seed),
            b: faults(vec![rule(Fault::Status(502), 0.1)], seed + 1),
        },
        Phase {
            name: "resets",
            a: faults(vec![rule(Fault::Reset, 0.3)], seed),
            b: faults(vec![rule(Fault::Reset, 0.1)], seed + 1),
        },
        Phase {
            name: "cut streams",
            a: faults(vec![rule(Fault::CutStream { after_chunks: 3 }, 0.3)], seed),
            b: faults(
                vec![rule(Fault::CutStream { after_chunks: 1 }, 0.1)],
                seed + 1,
            ),
        },
        Phase {
            name: "stalled streams",
            a: faults(
                vec![rule(Fault::StallStream { after_chunks: 2 }, 0.2)],
                seed,
            ),
            b: Faults {
                latency: Some(Duration::from_millis(30)),
                ..faults(
                    vec![rule(Fault::StallStream { after_chunks: 0 }, 0.05)],
                    seed + 1,
                )
            },
        },
        Phase {
            name: "invalid json",
            a: faults(vec![rule(Fault::InvalidJson, 0.3)], seed),
            b: faults(vec![rule(Fault::InvalidJson, 0.1)], seed + 1),
        },
        Phase {
            name: "slow headers",
            a: faults(vec![rule(Fault::Hang, 0.1)], seed),
            b: faults(vec![rule(Fault::Reset, 0.05)], seed + 1),
        },
        Phase {
            name: "mixed",
            a: faults(
                vec![
                    rule(Fault::Status(503), 0.15),
                    rule(Fault::CutStream { after_chunks: 2 }, 0.1),
                    rule(Fault::StallStream { after_chunks: 1 }, 0.05),
                    rule(Fault::Reset, 0.05),
                ],
                seed,
            ),
            b: faults(
                vec![rule(Fault::Reset, 0.05), rule(Fault::InvalidJson, 0.05)],
                seed + 1,
            ),
        },
    ]
}

/// How a matrix run goes.
#[derive(Clone, Debug)]
pub struct MatrixSpec {
    /// Requests in all.
    pub requests: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Longest a client waits for a whole answer (real time); past it, the request hung.
    pub client_timeout: Duration,
    /// Seed of the faults and of the prompts.
    pub seed: u64,
}

/// What the clients got in one phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    /// The phase.
    pub name: String,
    /// Requests sent in it.
    pub requests: u64,
    /// Of them, streamed.
    pub streamed: u64,
    /// Outcomes by name.
    pub outcomes: BTreeMap<&'static str, u64>,
}

/// What the clients got, over every phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MatrixReport {
    /// Requests sent.
    pub requests: u64,
    /// Outcomes by name, over all phases.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Per phase.
    pub phases: Vec<PhaseReport>,
    /// 429s the mocks sent (the gateway learning their limits).
    pub upstream_429: u64,
    /// Upstream requests the mocks received.
    pub upstream_requests: u64,
    /// Wall-clock seconds the run took.
    pub seconds: f64,
    /// The statuses of the refusals, with their counts: each is the gateway's honest answer
    /// (429 at a limit, 503 with every target left cooling, 502 when the attempts ran out).
    pub refused_statuses: BTreeMap<u16, u64>,
    /// A few failures and refusals, for the reader: phase, outcome, status and the body's
    /// start.
    pub examples: Vec<String>,
}

impl MatrixReport {
    /// Requests whose outcome is a failure (hung, truncated, wrong, malformed, no answer).
    pub fn failures(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| o.is_failure())
            .map(|o| self.outcomes.get(o.name()).copied().unwrap_or(0))
            .sum()
    }
}

/// The gateway's config for the matrix: provider `a` (two keys, rate-limited, limits
/// unknown to the gateway) then `b`, short timeouts, the cache on for every request.
pub fn proxy_config(a: &MockProvider, b: &MockProvider, cache_dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
shutdown_grace = "5s"

[cache]
path = {cache:?}
when = "always"

[[providers]]
name = "a"
base_url = "{a}"
keys = ["env:CHAOS_A1", "env:CHAOS_A2"]
unknown_limits_in_flight = 0
timeout = "2s"
stream_idle_timeout = "500ms"
cooldown = "100ms"
max_cooldown = "1s"

[[providers]]
name = "b"
base_url = "{b}"
keys = ["env:CHAOS_B1"]
unknown_limits_in_flight = 0
timeout = "2s"
stream_idle_timeout = "500ms"
cooldown = "100ms"
max_cooldown = "1s"

[[routes]]
model = "{ROUTE}"
targets = [{{ provider = "a", model = "{MODEL}" }}, {{ provider = "b", model = "{MODEL}" }}]
max_wait = "10s"
"#,
        cache = cache_dir.display().to_string(),
        a = a.url(),
        b = b.url(),
    )
}

/// The keys the matrix's mocks accept, as the gateway's environment names them.
pub const KEYS: [(&str, &str); 3] = [
    ("CHAOS_A1", "chaos-a1"),
    ("CHAOS_A2", "chaos-a2"),
    ("CHAOS_B1", "chaos-b1"),
];

/// The two mocks: `a` limited to 100 requests per minute per key (its 429s are part of the
/// matrix), `b` unlimited.
pub async fn mocks() -> (MockProvider, MockProvider) {
    let a = MockProvider::builder()
        .keys([KEYS[0].1, KEYS[1].1])
        .limits(MODEL, Limits::rpm(100))
        .start()
        .await;
    let b = MockProvider::builder()
        .key(KEYS[2].1)
        .model(MODEL)
        .start()
        .await;
    (a, b)
}

/// Request `n`'s body and the text its answer must have. A quarter of the requests repeat an
/// earlier prompt; half are streamed.
pub fn request(n: u64, seed: u64) -> (Value, String) {
    let mix = splitmix(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let prompt = if mix.is_multiple_of(4) { n / 8 } else { n };
    let stream = (mix >> 8).is_multiple_of(2);
    let content = format!("chaos prompt {prompt} of run {seed}");
    let (mut body, expected) = routed(json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 60,
    }));
    body["temperature"] = json!(0);
    if stream {
        body["stream"] = json!(true);
    }
    (body, expected)
}

/// The body a client sends for `upstream` (the route in place of the model), and the text the
/// mock answers `upstream` with: what the client must get back.
pub fn routed(upstream: Value) -> (Value, String) {
    let expected = spillway_mock::request::ChatRequest::parse(upstream.to_string().as_bytes())
        .map(|req| spillway_mock::reply::reply_for(&req).text)
        .unwrap_or_default();
    let mut body = upstream;
    body["model"] = json!(ROUTE);
    (body, expected)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sends one request and classifies what came back.
async fn one(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    expected: &str,
) -> (Outcome, u16, String) {
    let stream = body["stream"] == json!(true);
    let sent = client.post(url).json(body).send().await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) if e.is_timeout() => return (Outcome::Hung, 0, e.to_string()),
        Err(e) => return (Outcome::NoAnswer, 0, e.to_string()),
    };
    let status = resp.status().as_u16();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => return (Outcome::Hung, status, e.to_string()),
        // A body cut without a proper end: the client saw a truncated answer.
        Err(e) => return (Outcome::Truncated, status, e.to_string()),
    };
    let outcome = if stream {
        classify_stream(status, &bytes, expected)
    } else {
        classify_plain(status, &bytes, expected)
    };
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    (outcome, status, head)
}

/// What the matrix keeps of one request: its outcome, whether it was streamed, the status and
/// the start of the body.
type Seen = (Outcome, bool, u16, String);

/// Sends requests `range` with `spec.concurrency` clients, each taking the next number until
/// none is left; `done` counts them for `progress`, told as each client finishes. What each
/// client saw, in the order they finished.
async fn send_phase(
    spec: &MatrixSpec,
    client: &reqwest::Client,
    url: &str,
    range: Range<u64>,
    done: &Arc<AtomicU64>,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Vec<Vec<Seen>> {
    let next = Arc::new(AtomicU64::new(range.start));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..spec.concurrency {
        let (client, url, next, done) =
            (client.clone(), url.to_string(), next.clone(), done.clone());
        let (seed, last) = (spec.seed, range.end);
        workers.spawn(async move {
            let mut seen = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= last {
                    return seen;
                }
                let (body, expected) = request(n, seed);
                let streamed = body["stream"] == json!(true);
                let (outcome, status, head) = one(&client, &url, &body, &expected).await;
                done.fetch_add(1, Ordering::Relaxed);
                seen.push((outcome, streamed, status, head));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = workers.join_next().await {
        all.push(joined.unwrap_or_default());
        progress(done.load(Ordering::Relaxed), spec.requests);
    }
    all
}

impl MatrixReport {
    /// Counts what the clients saw in phase `name`, in it and over all phases, and keeps the
    /// first few failures and refusals as examples.
    fn add_phase(&mut self, name: &'static str, seen: Vec<Vec<Seen>>) {
        let mut phase = PhaseReport {
            name: name.to_string(),
            ..PhaseReport::default()
        };
        for (outcome, streamed, status, head) in seen.into_iter().flatten() {
            phase.requests += 1;
            phase.streamed += u64::from(streamed);
            *phase.outcomes.entry(outcome.name()).or_default() += 1;
            *self.outcomes.entry(outcome.name()).or_default() += 1;
            if outcome == Outcome::Refused {
                *self.refused_statuses.entry(status).or_default() += 1;
            }
            let telling = outcome.is_failure() || outcome == Outcome::Refused;
            if telling && self.examples.len() < 10 {
                self.examples.push(format!(
                    "{name} {} (status {status}): {head}",
                    outcome.name()
                ));
            }
        }
        self.phases.push(phase);
    }
}

/// Runs the matrix against a gateway at `url` (`http://ADDR/v1`) in front of mocks `a` and
/// `b`, switching their faults phase by phase; `progress` is told `(done, total)`.
pub async fn run_matrix(
    spec: &MatrixSpec,
    url: &str,
    a: &MockProvider,
    b: &MockProvider,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> MatrixReport {
    // Real time on purpose: how long the whole run takes, for the report.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let phases = phases(spec.seed);
    let per_phase = spec.requests.div_ceil(phases.len() as u64).max(1);
    let client = reqwest::Client::builder()
        .timeout(spec.client_timeout)
        .pool_max_idle_per_host(spec.concurrency)
        .build()
        .expect("a client");
    let chat_url = format!("{url}/chat/completions");
    let mut report = MatrixReport {
        requests: spec.requests,
        ..MatrixReport::default()
    };
    let done = Arc::new(AtomicU64::new(0));
    for (i, phase) in phases.iter().enumerate() {
        let first = i as u64 * per_phase;
        let last = ((i as u64 + 1) * per_phase).min(spec.requests);
        if first >= last {
            break;
        }
        a.set_faults(phase.a.clone());
        b.set_faults(phase.b.clone());
        let seen = send_phase(spec, &client, &chat_url, first..last, &done, progress).await;
        report.add_phase(phase.name, seen);
    }
    a.set_faults(Faults::none());
    b.set_faults(Faults::none());
    let (sa, sb) = (a.stats(), b.stats());
    report.upstream_429 = sa.responses(429) + sb.responses(429);
    report.upstream_requests = sa.requests + sb.requests;
    report.seconds = started.elapsed().as_secs_f64();
    report
}
