//! Running a scenario: its mocks and a spillway proxy start in this process on port 0, on one
//! scaled clock; the traffic is driven through the proxy by `clients` concurrent clients; what
//! the clients saw and what every mock key received are collected for the report.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use spillway::config::{Env, ProcessEnv};
use spillway_clock::Clock;
use spillway_mock::MockProvider;
use tokio::sync::{Semaphore, oneshot};

use crate::record::{ClientRecord, MockOutcome, RunResult};
use crate::redis::{INSTALL, RedisServer};
use crate::scenario::{MockEntry, Scenario};
use crate::traffic::{self, Planned};

/// A proxy serving in this process.
pub struct ProxyHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<spillway::AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ProxyHandle {
    /// Stops it, letting in-flight requests finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A scenario's mocks and proxy (or proxies, in a fleet), running.
pub struct Started {
    /// The shared clock.
    pub clock: Clock,
    /// The mocks, by name.
    pub mocks: Vec<(String, MockProvider)>,
    /// The proxy (in a fleet, the first).
    pub proxy: ProxyHandle,
    /// In a fleet, the other proxies.
    pub others: Vec<ProxyHandle>,
    redis: Option<RedisServer>,
    _cache_dirs: Vec<tempfile::TempDir>,
}

impl Started {
    /// The proxy's `http://ADDR/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.proxy.addr)
    }

    /// Every proxy's `http://ADDR/v1`, the first first.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(&self.proxy)
            .chain(&self.others)
            .map(|p| format!("http://{}/v1", p.addr))
            .collect()
    }

    /// How long each proxy of a fleet went on its own share of the limits (simulated
    /// seconds), the first first; empty without a fleet.
    fn degraded(&self) -> Vec<f64> {
        std::iter::once(&self.proxy)
            .chain(&self.others)
            .filter_map(|p| p.state.fleet.as_ref())
            .map(|f| f.degraded_time().as_secs_f64())
            .collect()
    }

    /// Fallbacks over every proxy.
    fn fallbacks(&self) -> u64 {
        std::iter::once(&self.proxy)
            .chain(&self.others)
            .map(|p| p.state.metrics.fallbacks())
            .sum()
    }
}

/// The scenario's proxy config with `mock:` references resolved, and the environment that
/// holds the mock keys.
pub fn proxy_config(
    scenario: &Scenario,
    mocks: &[(String, MockProvider)],
    cache_dir: Option<&std::path::Path>,
) -> (String, HashMap<String, String>) {
    let mut table = scenario.proxy.clone();
    let mut env = HashMap::new();
    let by_name: HashMap<&str, &MockProvider> =
        mocks.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let entries: HashMap<&str, &MockEntry> = scenario
        .mocks
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    if let Some(toml::Value::Array(providers)) = table.get_mut("providers") {
        for provider in providers.iter_mut() {
            let Some(p) = provider.as_table_mut() else {
                continue;
            };
            if let Some(toml::Value::String(url)) = p.get("base_url")
                && let Some(name) = url.strip_prefix("mock:")
                && let Some(mock) = by_name.get(name)
            {
                p.insert("base_url".into(), toml::Value::String(mock.url()));
            }
            if let Some(toml::Value::Array(keys)) = p.get("keys") {
                let resolved = mock_keys(keys, &entries, &mut env);
                p.insert("keys".into(), toml::Value::Array(resolved));
            }
        }
    }
    let server = table
        .entry("server")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(server) = server.as_table_mut() {
        server.insert("time_scale".into(), toml::Value::Float(scenario.time_scale));
        server.insert("listen".into(), toml::Value::String("127.0.0.1:0".into()));
    }
    let cache = table
        .entry("cache")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let (Some(cache), Some(dir)) = (cache.as_table_mut(), cache_dir)
        && !cache.contains_key("path")
    {
        cache.insert(
            "path".into(),
            toml::Value::String(dir.join("cache").display().to_string()),
        );
    }
    (toml::to_string(&table).unwrap_or_default(), env)
}

/// A provider's keys with each `mock:NAME` replaced by all of that mock's keys, as references
/// to environment variables (set in `env`), as real keys are passed to the proxy.
fn mock_keys(
    keys: &[toml::Value],
    entries: &HashMap<&str, &MockEntry>,
    env: &mut HashMap<String, String>,
) -> Vec<toml::Value> {
    let mut resolved = Vec::new();
    for key in keys {
        let Some(name) = key.as_str().and_then(|k| k.strip_prefix("mock:")) else {
            resolved.push(key.clone());
            continue;
        };
        let names = entries.get(name).map(|e| e.key_names()).unwrap_or_default();
        for (i, k) in names.into_iter().enumerate() {
            let var = format!(
                "SPILLWAY_HARNESS_{}_{i}",
                name.to_uppercase().replace('-', "_")
            );
            env.insert(var.clone(), k);
            resolved.push(toml::Value::String(format!("env:{var}")));
        }
    }
    resolved
}

/// What a scenario needs that this machine does not have, said with how to get it: a fleet
/// sharing limits needs `redis-server` on `PATH`.
pub fn unmet_need(scenario: &Scenario) -> Option<String> {
    let redis = || {
        std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    (scenario.fleet.redis && !redis()).then(|| {
        format!(
            "its [fleet] shares limits through Redis, and redis-server is not on PATH ({INSTALL})"
        )
    })
}

/// Where the proxy's `env:NAME` references are read: the variables the harness made for its
/// mocks' keys first, then the process environment, since a config written for real keys (or
/// for a mock started by hand) names variables the user has set.
struct HarnessEnv<'a>(&'a HashMap<String, String>);

impl Env for HarnessEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned().or_else(|| ProcessEnv.var(name))
    }
}

/// Starts a scenario's mocks and proxy on one clock.
pub async fn start(scenario: &Scenario) -> Result<Started, String> {
    let clock = Clock::scaled(scenario.time_scale).map_err(|e| e.to_string())?;
    let mut mocks = Vec::new();
    for entry in &scenario.mocks {
        let mut spec = entry.spec();
        spec.faults.seed ^= scenario.seed;
        let mock = MockProvider::builder()
            .spec(spec)
            .clock(clock.clone())
            .try_start()
            .await
            .map_err(|e| format!("mock {}: {e}", entry.name))?;
        mocks.push((entry.name.clone(), mock));
    }
    let redis = match scenario.fleet.redis {
        true => Some(RedisServer::start().await.map_err(|e| {
            format!("this scenario's [fleet] shares limits through Redis, and {e}")
        })?),
        false => None,
    };
    let mut proxies = Vec::new();
    let mut cache_dirs = Vec::new();
    for _ in 0..scenario.fleet.proxies {
        let cache_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let (mut text, mut env) = proxy_config(scenario, &mocks, Some(cache_dir.path()));
        if let Some(redis) = &redis {
            // The gateways, the mocks, Redis and the clients share one machine's cores here:
            // Redis gets more time than production's 50 ms before a gateway goes on alone.
            text.push_str(
                "\n[fleet]\nredis = \"env:SPILLWAY_HARNESS_REDIS\"\nname = \"scenario\"\ntimeout = \"2s\"\n",
            );
            env.insert("SPILLWAY_HARNESS_REDIS".into(), redis.url());
        }
        let origin = format!("{} [proxy]", scenario.path.display());
        let config = spillway::config::parse(&text, &origin, &HarnessEnv(&env))
            .map_err(|e| e.to_string())?;
        proxies.push(serve(config, &clock).await?);
        cache_dirs.push(cache_dir);
    }
    let proxy = proxies.remove(0);
    Ok(Started {
        clock,
        mocks,
        proxy,
        others: proxies,
        redis,
        _cache_dirs: cache_dirs,
    })
}

/// Serves spillway with `config` on a free loopback port.
async fn serve(config: spillway::config::Config, clock: &Clock) -> Result<ProxyHandle, String> {
    let state = spillway::AppState::new(config, clock.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(spillway::run(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(ProxyHandle {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Sends one planned request and records what came back (times from `epoch`).
async fn send(
    client: &reqwest::Client,
    base: &str,
    clock: &Clock,
    epoch: Duration,
    planned: &Planned,
    timeout: Duration,
) -> ClientRecord {
    let started = clock.now();
    let path = if planned.endpoint == "embeddings" {
        "embeddings"
    } else {
        "chat/completions"
    };
    let mut record = ClientRecord {
        sent: started.saturating_sub(epoch).as_secs_f64(),
        stream: planned.stream,
        ..ClientRecord::default()
    };
    let outcome = client
        .post(format!("{base}/{path}"))
        .json(&planned.body)
        .timeout(clock.to_wall(timeout))
        .send()
        .await;
    match outcome {
        Ok(resp) => {
            record.status = resp.status().as_u16();
            record.provider = header(&resp, "x-spillway-provider").filter(|p| !p.is_empty());
            record.key = header(&resp, "x-spillway-key").filter(|k| !k.is_empty());
            record.cache = header(&resp, "x-spillway-cache");
            record.attempts = header(&resp, "x-spillway-attempts")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            record.retry_after = header(&resp, "retry-after-ms")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|ms| ms / 1000.0)
                .or_else(|| header(&resp, "retry-after").and_then(|v| v.parse().ok()));
            record.should_retry = header(&resp, "x-should-retry").map(|v| v == "true");
            match resp.text().await {
                Ok(body) => {
                    if planned.stream && record.status == 200 && !body.ends_with("data: [DONE]\n\n")
                    {
                        record.error = Some("the stream did not end with [DONE]".into());
                    }
                }
                Err(e) => record.error = Some(format!("reading the answer: {e}")),
            }
        }
        Err(e) => {
            record.error = Some(if e.is_timeout() {
                "no answer within the client timeout".into()
            } else {
                format!("request failed: {e}")
            });
        }
    }
    record.latency = (clock.now() - started).as_secs_f64();
    record
}

/// The passes of a scenario's traffic.
pub fn plan(scenario: &Scenario, seed: u64) -> Result<Vec<Vec<Planned>>, String> {
    let pass = match &scenario.traffic.replay {
        Some(path) => traffic::from_recording(path, scenario.traffic.speed.unwrap_or(1.0))?,
        None => traffic::synthetic(&scenario.traffic, seed),
    };
    Ok(vec![pass; scenario.traffic.repeat])
}

/// Drives `passes` through the proxies at `bases` (request `i` of pass `p` to
/// `bases[(i + p) % n]`: in a fleet, each pass sends a request to another gateway than the
/// pass before) with at most `clients` requests in flight;
/// `progress` is called after each answer with (done, total). Times in the records count from
/// the first pass's start; the records come back in send order.
pub async fn drive(
    bases: &[String],
    clock: &Clock,
    passes: &[Vec<Planned>],
    clients: usize,
    timeout: Duration,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<ClientRecord> {
    let shape = Driving {
        bases,
        clock,
        clients,
        timeout,
    };
    drive_watched(&shape, passes, progress, &mut |_| true)
        .await
        .records
}

/// Where and how a drive sends: the proxies, the clock, the clients, their timeout.
pub struct Driving<'a> {
    /// The proxies' `http://ADDR/v1` (request `i` of pass `p` goes to `bases[(i + p) % n]`).
    pub bases: &'a [String],
    /// The scenario clock.
    pub clock: &'a Clock,
    /// At most this many requests in flight.
    pub clients: usize,
    /// Longest a client waits for one answer (simulated).
    pub timeout: Duration,
}

/// What a watched drive produced.
#[derive(Debug, Default)]
pub struct Driven {
    /// The answers received, in send order (all of them unless stopped).
    pub records: Vec<ClientRecord>,
    /// True when the watcher stopped the drive before every answer came.
    pub stopped: bool,
    /// The most a request was sent after its time (simulated seconds): how far the harness
    /// fell behind the clock (a stall of the process, multiplied by the time scale).
    pub lag: f64,
}

/// As [`drive`], with `watch` shown each answer as it arrives (in arrival order); when it
/// returns false, the drive stops at once: nothing more is sent and the requests in flight
/// are abandoned (their clients hang up).
pub async fn drive_watched(
    shape: &Driving<'_>,
    passes: &[Vec<Planned>],
    progress: &(dyn Fn(usize, usize) + Sync),
    watch: &mut (dyn FnMut(&ClientRecord) -> bool + Send),
) -> Driven {
    let total: usize = passes.iter().map(Vec::len).sum();
    let (answers, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let lag_us = std::sync::atomic::AtomicU64::new(0);
    let sender = send_passes(shape, passes, answers, &lag_us);
    let sender = async move {
        let mut stopping = stopping;
        // Dropping the sender drops its tasks: the requests in flight are abandoned.
        tokio::select! {
            _ = sender => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    };
    let collector = async {
        let mut driven = Driven::default();
        while let Some(record) = arrived.recv().await {
            let go_on = watch(&record);
            driven.records.push(record);
            progress(driven.records.len(), total);
            if !go_on {
                driven.stopped = driven.records.len() < total;
                let _ = stop.send(true);
                break;
            }
        }
        driven
    };
    let ((), mut driven) = tokio::join!(sender, collector);
    driven.records.sort_by_key(|r| (r.pass, r.index));
    driven.lag = lag_us.into_inner() as f64 / 1e6;
    driven
}

/// Sends every pass, one after the other, each request at its time once a client is free;
/// every answer goes to `answers`; the most a request went out after its time is kept in
/// `lag_us` (simulated microseconds). Returns when the last answer of the last pass has come.
async fn send_passes(
    shape: &Driving<'_>,
    passes: &[Vec<Planned>],
    answers: tokio::sync::mpsc::UnboundedSender<ClientRecord>,
    lag_us: &std::sync::atomic::AtomicU64,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(shape.clients)
        .build()
        .expect("an HTTP client builds");
    let slots = Arc::new(Semaphore::new(shape.clients.max(1)));
    let clock = shape.clock;
    let epoch = clock.now();
    for (p, pass) in passes.iter().enumerate() {
        let origin = clock.now();
        let mut tasks = tokio::task::JoinSet::new();
        for (i, planned) in pass.iter().enumerate() {
            let due = origin + Duration::from_secs_f64(planned.at.max(0.0));
            clock.sleep_until(due).await;
            // Late here is the process's own stall; waiting for a client below is not.
            let late = clock.now().saturating_sub(due).as_micros() as u64;
            lag_us.fetch_max(late, std::sync::atomic::Ordering::Relaxed);
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore stays open");
            let (client, base, clock, planned, answers) = (
                client.clone(),
                shape.bases[(i + p) % shape.bases.len().max(1)].clone(),
                clock.clone(),
                planned.clone(),
                answers.clone(),
            );
            let timeout = shape.timeout;
            tasks.spawn(async move {
                let mut r = send(&client, &base, &clock, epoch, &planned, timeout).await;
                drop(permit);
                r.pass = p + 1;
                r.index = i;
                let _ = answers.send(r);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Stops the fleet's Redis `window.0` after `t0` and brings it back on the same port at
/// `window.1` (scenario clock).
async fn redis_outage(
    redis: RedisServer,
    clock: Clock,
    t0: Duration,
    window: (Duration, Duration),
) -> Option<RedisServer> {
    clock.sleep_until(t0 + window.0).await;
    let port = redis.port;
    redis.kill();
    clock.sleep_until(t0 + window.1).await;
    RedisServer::on(port).await.ok()
}

/// Runs a scenario (with `seed` instead of its own when given).
pub async fn run(
    scenario: &Scenario,
    seed: Option<u64>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<RunResult, String> {
    let passes = plan(scenario, seed.unwrap_or(scenario.seed))?;
    let (result, _) = run_watched(scenario, &passes, progress, &mut |_| true).await?;
    Ok(result)
}

/// What every mock counted and received, its journal's times moved back by `shift` seconds.
fn mock_outcomes(mocks: &[(String, MockProvider)], shift: f64) -> Vec<MockOutcome> {
    mocks
        .iter()
        .map(|(name, m)| MockOutcome {
            name: name.clone(),
            stats: m.stats(),
            journal: m
                .journal()
                .into_iter()
                .map(|mut e| {
                    e.at -= shift;
                    e
                })
                .collect(),
        })
        .collect()
}

/// How a watched run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunEnd {
    /// The watcher stopped it before every answer came.
    pub stopped: bool,
    /// How far the harness fell behind the clock (simulated seconds; see [`Driven::lag`]).
    pub lag: f64,
}

/// Runs a scenario's mocks and proxy with `passes` for traffic, `watch` shown every answer as
/// it arrives: when it returns false the run stops there and the result holds what was
/// answered so far.
pub async fn run_watched(
    scenario: &Scenario,
    passes: &[Vec<Planned>],
    progress: &(dyn Fn(usize, usize) + Sync),
    watch: &mut (dyn FnMut(&ClientRecord) -> bool + Send),
) -> Result<(RunResult, RunEnd), String> {
    let wall = Clock::real();
    let started = start(scenario).await?;
    let urls = started.urls();
    let t0 = started.clock.now();
    let mut started = started;
    let outage = match (started.redis.take(), scenario.fleet.redis_down) {
        (Some(redis), Some(window)) => Some(tokio::spawn(redis_outage(
            redis,
            started.clock.clone(),
            t0,
            window,
        ))),
        (redis, _) => {
            started.redis = redis;
            None
        }
    };
    let shape = Driving {
        bases: &urls,
        clock: &started.clock,
        clients: scenario.traffic.clients,
        timeout: scenario.traffic.client_timeout(),
    };
    let Driven {
        records,
        stopped,
        lag,
    } = drive_watched(&shape, passes, progress, watch).await;
    let sim_seconds = (started.clock.now() - t0).as_secs_f64();
    // Read before the outage's task ends: the Redis it holds goes with it.
    let fleet_degraded = started.degraded();
    if let Some(outage) = outage {
        outage.abort();
    }
    let fallbacks = started.fallbacks();
    // Journal times count from the traffic's start too (mocks and proxy start a little before).
    let mocks = mock_outcomes(&started.mocks, t0.as_secs_f64());
    let Started {
        proxy,
        others,
        mocks: running,
        ..
    } = started;
    proxy.stop().await;
    for other in others {
        other.stop().await;
    }
    for (_, m) in running {
        m.shutdown().await;
    }
    let result = RunResult {
        clients: records,
        mocks,
        fallbacks,
        passes: passes.len(),
        sim_seconds,
        wall_seconds: wall.now().as_secs_f64(),
        time_scale: scenario.time_scale,
        fleet_degraded,
    };
    Ok((result, RunEnd { stopped, lag }))
}
