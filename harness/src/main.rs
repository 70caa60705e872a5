//! `spillway-harness`: parse arguments and hand over to the library.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spillway_harness::bench::{self, BenchSpec, run_bench};
use spillway_harness::chaos::{ChaosSpec, run_chaos};
use spillway_harness::expect::{self, Expect};
use spillway_harness::load::{
    Bodies, BodyCheck, LoadReport, LoadSpec, bodies, json_headers, numbered_bodies, run_load,
};
use spillway_harness::scenario::{MockEntry, Scenario, mock_references};
use spillway_harness::{
    ScenarioOutcome, plan, record, report, run_scenario, runner, subjects, traffic, verdict,
};

/// Scenarios and benchmarks for spillway.
#[derive(Parser, Debug)]
#[command(name = "spillway-harness", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run scenario files (or every `.toml` in the given folders): exit 0 when every
    /// expectation holds, 1 when any fails, 2 when a file is invalid.
    Run(RunArgs),
    /// Start a scenario's mocks and proxy and keep them serving until Ctrl-C: the way to point
    /// a real app at a simulated Groq.
    Up {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// Replay a recording (`spillway serve --record`) with its original inter-arrival times
    /// divided by --speed, against mocks described by the config (`base_url = "mock:NAME"`) or
    /// against a running proxy, and print the report; with `--expect` or `--expect-file`,
    /// check it: exit 0 when every expectation holds (verdict `no expectations` when none is
    /// given), 1 when one fails, 2 when an expectation is invalid.
    Replay(ReplayArgs),
    /// Measure spillway against going direct to the mock, a bare forwarder and installed peers,
    /// in one run: the same request mix, closed loop, subjects taking turns, medians of
    /// `--repeat` runs; then a memory soak. Exit 1 when any subject answered wrongly.
    Bench(BenchArgs),
    /// Drive an OpenAI-compatible chat endpoint with a closed-loop load and print throughput and
    /// latency percentiles.
    Load(LoadArgs),
    /// Capacity planning: replay a recording (or a `[traffic]` table) on simulated time against
    /// mocks with each candidate's limits (1 to --max-keys keys on each tier, with and without
    /// each fallback provider), find the cheapest candidate that meets --goal, print a table
    /// and the recommendation, and write NAME.plan.json, NAME.plan.svg and NAME.plan.toml (the
    /// recommendation as a scenario). Exit 0 with a recommendation, 1 when no candidate met the
    /// goal (or a run could not start), 2 for invalid input.
    Plan(PlanArgs),
    /// The reliability suite: a fault matrix (plain and streamed requests through 429s, 5xx,
    /// resets, cut and stalled streams, invalid JSON and slow headers, every outcome
    /// classified), crash rounds (SIGKILLs during cache writes, with lost unsynced writes) and a
    /// memory soak. Exit 1 when a request hung, was silently truncated or answered wrongly.
    Chaos(ChaosArgs),
    /// (internal) Serve spillway from a config file, for the crash rounds.
    #[command(hide = true)]
    ServeConfig {
        /// The config file.
        config: PathBuf,
    },
    /// (internal) Serve a limit-free mock for a benchmark.
    #[command(hide = true)]
    ServeMock,
    /// (internal) Serve the bare forwarder in front of a mock for a benchmark.
    #[command(hide = true)]
    ServeForwarder {
        /// The mock's base URL.
        #[arg(long)]
        upstream: String,
    },
    /// (internal) Serve spillway in front of a mock for a benchmark.
    #[command(hide = true)]
    ServeProxy {
        /// The mock's base URL.
        #[arg(long)]
        upstream: String,
        /// Where the proxy keeps its cache.
        #[arg(long)]
        cache_dir: PathBuf,
        /// Hold the key's requests in flight to a congestion window while its limits are
        /// unknown (spillway's default) instead of leaving them uncapped.
        #[arg(long)]
        adaptive: bool,
        /// Give the key per-minute limits too high to be met, so each miss reserves them.
        #[arg(long)]
        limits_known: bool,
        /// Be a member of a fleet on the Redis at this URL.
        #[arg(long)]
        fleet_redis: Option<String>,
    },
    /// (internal) Serve a redis-server on a free port for a benchmark's fleet rows.
    #[command(hide = true)]
    ServeRedis,
}

// `run`'s flags.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Scenario files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Where to write NAME.json and NAME.svg (NAME: the scenario file's name without .toml).
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Use this seed instead of each scenario's own.
    #[arg(long)]
    seed: Option<u64>,
    /// Only scenarios whose name or file name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Print every report as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

// `replay`'s flags.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["proxy_config", "against"])))]
struct ReplayArgs {
    /// The recording (JSONL).
    recording: PathBuf,
    /// The spillway config to run (one of --proxy-config and --against is required): its
    /// `mock:NAME` providers get mocks with Groq's free-plan limits (see --mock-rpm), and its
    /// `env:NAME` keys are read from the environment.
    #[arg(long, value_name = "FILE")]
    proxy_config: Option<PathBuf>,
    /// Divide the recorded inter-arrival times by this.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Send to this running proxy (`http://host:port/v1`) instead of starting one from
    /// --proxy-config (one of the two is required); only the client side is seen.
    #[arg(long, value_name = "URL")]
    against: Option<String>,
    /// Requests per minute each key of the `mock:NAME` mocks allows on every model, instead of
    /// Groq's free-plan figure (the other limits stay Groq's).
    #[arg(long, value_name = "N", conflicts_with = "against")]
    mock_rpm: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Simulated seconds per wall second for the mocks and proxy started from the config.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// An expectation, `NAME CHECK` in the words of a scenario's `[expect]`: the name its
    /// verdict prints, then its check (`--expect 'client_status.429 == 0'`,
    /// `--expect 'upstream_429 <= 3'`, `--expect 'peak_within_limits true'`); repeatable.
    /// Exit 1 when one fails; with none, the verdict is `no expectations`.
    #[arg(long = "expect", value_name = "NAME CHECK")]
    expect: Vec<String>,
    /// A TOML file whose `[expect]` table is checked, written as in a scenario file (a
    /// scenario file serves; its other tables are ignored); `--expect` adds to it.
    #[arg(long, value_name = "FILE")]
    expect_file: Option<PathBuf>,
}

// `plan`'s flags.
#[derive(clap::Args, Debug)]
struct PlanArgs {
    /// The traffic: a recording (JSONL from `spillway serve --record`), or a TOML file with a
    /// `[traffic]` table (a scenario file serves; its `[proxy]` is the config when --config is
    /// not given).
    traffic: PathBuf,
    /// The spillway config whose routes and providers are planned (its providers' URLs and keys
    /// are replaced by mocks).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tiers to try for the route's first provider, lowest first (built in: free, developer;
    /// more from --limits).
    #[arg(long, value_delimiter = ',', default_value = "free,developer")]
    tiers: Vec<String>,
    /// A TOML file of `[TIER."MODEL"]` limit tables (spillway-mock's limit fields); each
    /// replaces the built-in table of that tier and model.
    #[arg(long, value_name = "FILE")]
    limits: Option<PathBuf>,
    /// A TOML file of prices, `[PROVIDER] TIER = per-key` or `TIER = { key = .., million_tokens
    /// = .. }`: then the cheapest candidate by cost is recommended.
    #[arg(long, value_name = "FILE")]
    costs: Option<PathBuf>,
    /// Most keys to try on the route's first provider.
    #[arg(long, default_value_t = 8)]
    max_keys: usize,
    /// Simulated seconds per wall second for mocks, proxy and traffic (the recording's own
    /// times are kept).
    #[arg(long, default_value_t = 100.0)]
    speed: f64,
    /// What a candidate must meet: terms joined by `&&`, each a metric (client_429,
    /// client_errors, upstream_429, fallbacks, wait_p50, wait_p99, wait_max) and an upper bound
    /// written as in `[expect]` (`== 0`, `<= 2s`, `< 5`).
    #[arg(long, default_value = spillway_harness::plan::goal::DEFAULT_GOAL)]
    goal: String,
    /// Plan only the requests for this route (client-facing model).
    #[arg(long, value_name = "NAME")]
    route: Option<String>,
    /// Concurrent clients (default: 1000 for a recording, so requests keep their recorded
    /// times; a `[traffic]` table's own `clients` otherwise).
    #[arg(long)]
    clients: Option<usize>,
    /// Seed of synthetic traffic.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write NAME.plan.json, NAME.plan.svg and NAME.plan.toml (NAME: the traffic
    /// file's name without its extension).
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

// `bench`'s flags.
#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// Measured time per run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up per run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Runs per subject and level.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Peers to measure too, comma-separated (known: litellm); one that cannot be installed
    /// or started is skipped with a message.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Where the peers' scripts are.
    #[arg(long, default_value = "bench/peers")]
    peers_dir: PathBuf,
    /// Longest a peer may take to install (first run) and start.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    peer_start: Duration,
    /// Requests per memory-soak stage (three stages through a fresh spillway; 0: no soak).
    #[arg(long, default_value_t = 100_000)]
    soak: u64,
    /// Where to write bench.json, bench.md and bench.svg.
    #[arg(long, default_value = "out/bench")]
    out: PathBuf,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Also measure spillway in a fleet (a redis-server on this machine, started on a free
    /// port) beside the same spillway alone, both with the key's per-minute limits known, and
    /// the load spread over three members of the fleet.
    #[arg(long)]
    fleet: bool,
}

// `load`'s flags.
#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// Full URL of the chat-completions endpoint.
    #[arg(long)]
    url: http::Uri,
    /// Bearer token sent with every request.
    #[arg(long, default_value = "mock-key")]
    key: String,
    /// Model id sent in every request.
    #[arg(long, default_value = "llama-3.1-8b-instant")]
    model: String,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured duration.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Number of distinct prompts cycled through (1: every request identical; 0: a new
    /// prompt for every request, however many are sent).
    #[arg(long, default_value_t = 1000)]
    distinct: usize,
    /// Stop after this many requests past the warm-up, if `--duration` has not ended first.
    #[arg(long)]
    requests: Option<u64>,
    /// Text every prompt starts with (runs with different prefixes share no prompt).
    #[arg(long, default_value = "")]
    prefix: String,
    /// Ask for streamed answers (each must end with `data: [DONE]`).
    #[arg(long)]
    stream: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

// `chaos`'s flags.
#[derive(clap::Args, Debug)]
struct ChaosArgs {
    /// `short` (CI: 1,000 requests, 4 crash rounds, no soak) or `full` (10,000 requests,
    /// 20 crash rounds, a 500,000-request soak).
    #[arg(long, default_value = "short", value_parser = ["short", "full"])]
    profile: String,
    /// Requests in the fault matrix, instead of the profile's.
    #[arg(long)]
    requests: Option<u64>,
    /// Crash rounds, instead of the profile's (0: none).
    #[arg(long)]
    crash_rounds: Option<u32>,
    /// Soak requests in all, instead of the profile's (0: no soak).
    #[arg(long)]
    soak: Option<u64>,
    /// Seed of the faults, prompts, kill times and losses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write chaos.json and chaos.md.
    #[arg(long, default_value = "out/chaos")]
    out: PathBuf,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
}

/// mimalloc: the proxy allocates per request in many threads, where glibc's per-thread arenas
/// cost more.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Reports `(done, total)` of one stage.
type Progress = Box<dyn Fn(usize, usize) + Send + Sync>;

/// Shows progress as a bar on a terminal, or as plain lines (no terminal, or `CI` set).
fn progress_for(name: &str) -> Progress {
    let fancy = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    if fancy {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix:40} {bar:30} {pos}/{len} requests")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(name.to_string());
        Box::new(move |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if done == total {
                bar.finish_and_clear();
            }
        })
    } else {
        eprintln!("running {name}");
        Box::new(|_, _| {})
    }
}

async fn run_command(args: RunArgs) -> anyhow::Result<ExitCode> {
    let files = spillway_harness::scenario::collect(&args.paths).map_err(anyhow::Error::msg)?;
    let mut reports = Vec::new();
    let (mut invalid, mut errors) = (0, 0);
    for file in files {
        if let Some(f) = &args.filter
            && !matches_filter(&file, f)
        {
            continue;
        }
        let label = file.display().to_string();
        let progress = progress_for(&label);
        match run_scenario(&file, args.seed, Some(&args.out), &*progress).await {
            ScenarioOutcome::Ran(r) => {
                eprintln!(
                    "{} {} ({} requests, {:.1} s)",
                    r.verdict, r.scenario, r.requests, r.wall_seconds
                );
                for line in report::failures(&r) {
                    eprintln!("  {line}");
                }
                if let Some(line) = report::degraded(&r) {
                    eprintln!("  {line}");
                }
                reports.push(*r);
            }
            ScenarioOutcome::Invalid(e) => {
                eprintln!("invalid scenario: {e}");
                invalid += 1;
            }
            ScenarioOutcome::Error(e) => {
                eprintln!("error: {e}");
                errors += 1;
            }
            ScenarioOutcome::Skipped(why) => eprintln!("skipped {label}: {why}"),
        }
    }
    if args.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&reports)?
        )?;
    } else if !reports.is_empty() {
        write!(std::io::stdout(), "{}", report::table(&reports))?;
        writeln!(
            std::io::stdout(),
            "reports and timelines in {}",
            args.out.display()
        )?;
    }
    Ok(if invalid > 0 {
        ExitCode::from(2)
    } else if errors > 0 || reports.iter().any(|r| !r.pass) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// True when `--filter TEXT` selects `file`: its file name or its scenario's name contains
/// `TEXT` (an unreadable file is selected by its file name only).
fn matches_filter(file: &Path, filter: &str) -> bool {
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let name = Scenario::load(file).map(|s| s.name).unwrap_or_default();
    stem.contains(filter) || name.contains(filter)
}

/// Prints a line to stdout, ignoring a closed pipe: `up` keeps serving when its reader has gone
/// (`spillway-harness up ... | head -1`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

async fn up_command(path: PathBuf) -> anyhow::Result<ExitCode> {
    let scenario = match Scenario::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("invalid scenario: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    // Stop on Ctrl-C or SIGTERM: handlers installed before anyone is told where to connect.
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let started = runner::start(&scenario).await.map_err(anyhow::Error::msg)?;
    say_how_to_connect(&scenario, &started);
    #[cfg(unix)]
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    started.proxy.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// `up`'s greeting: where the proxy and each mock listen, then a `curl` line and an OpenAI SDK
/// snippet that ask the scenario's model.
fn say_how_to_connect(scenario: &Scenario, started: &runner::Started) {
    let url = started.url();
    let model = example_model(scenario);
    say!("listening on {url}");
    say!(
        "scenario {:?}: {} mock(s), time scale {}",
        scenario.name,
        started.mocks.len(),
        scenario.time_scale
    );
    for (name, mock) in &started.mocks {
        say!(
            "  mock {name}: {}  (stats: {}/_mock/stats)",
            mock.url(),
            mock.base_url()
        );
    }
    say!(
        "\ncurl {url}/chat/completions -H 'content-type: application/json' \\\n  -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
    );
    say!(
        "\nfrom openai import OpenAI\nclient = OpenAI(base_url=\"{url}\", api_key=\"unused\")\nprint(client.chat.completions.create(model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"hi\"}}]).choices[0].message.content)"
    );
    say!("\nCtrl-C to stop.");
}

/// The model the examples ask for: the traffic's, else the first route's, else a placeholder.
fn example_model(scenario: &Scenario) -> String {
    scenario
        .traffic
        .model
        .clone()
        .or_else(|| {
            scenario
                .proxy
                .get("routes")
                .and_then(|r| r.as_array())
                .and_then(|r| r.first())
                .and_then(|r| r.get("model"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "MODEL".into())
}

/// A scenario made from a plain spillway config: each `mock:NAME` gets a default mock with
/// Groq's free-plan limits (requests per minute from `--mock-rpm` when given).
fn replay_scenario(config: &PathBuf, args: &ReplayArgs) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let proxy: toml::Table = toml::from_str(&text).with_context(|| config.display().to_string())?;
    // Read from the parsed values, not the file's text: a comment that mentions `mock:NAME`
    // starts no mock.
    let values = toml::to_string(&proxy).unwrap_or_default();
    let mut names: Vec<String> = mock_references(&values).collect();
    names.sort();
    names.dedup();
    let mocks = names
        .into_iter()
        .map(|name| MockEntry {
            limits: spillway_mock::spec::GROQ_PRODUCTION_MODELS
                .iter()
                .map(|m| {
                    let mut limits = spillway_mock::Limits::groq_free_tier(m);
                    if let Some(rpm) = args.mock_rpm {
                        limits.requests_per_minute = Some(rpm);
                    }
                    (m.to_string(), limits)
                })
                .collect(),
            name,
            keys: Vec::new(),
            models: None,
            faults: Default::default(),
            dialect: None,
            flex_capacity_exceeded: false,
        })
        .collect();
    Ok(Scenario {
        path: config.clone(),
        name: format!("replay of {}", args.recording.display()),
        description: None,
        seed: 0,
        time_scale: args.time_scale,
        mocks,
        proxy,
        fleet: Default::default(),
        traffic: toml::from_str::<traffic::Traffic>(&format!(
            "clients = {}\nreplay = {:?}\nspeed = {}\n",
            args.clients,
            args.recording.display().to_string(),
            args.speed
        ))?,
        expect: Default::default(),
    })
}

/// `replay`'s expectations: `--expect-file`'s `[expect]` table, then every `--expect`.
fn replay_expectations(args: &ReplayArgs) -> anyhow::Result<Expect> {
    let file = match &args.expect_file {
        Some(path) => Some((
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        )),
        None => None,
    };
    let file = file
        .as_ref()
        .map(|(text, name)| (text.as_str(), name.as_str()));
    let expect = expect::from_cli(file, &args.expect).map_err(anyhow::Error::msg)?;
    let unseen = expect.beyond_the_client();
    if args.against.is_some() && !unseen.is_empty() {
        anyhow::bail!(
            "{} cannot be checked with --against: a running proxy shows only the client side",
            unseen.join(", ")
        );
    }
    Ok(expect)
}

async fn replay_command(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let recording = &args.recording;
    let expect = match replay_expectations(&args) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("invalid expectations: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let planned = traffic::from_recording(recording, args.speed).map_err(anyhow::Error::msg)?;
    let progress = progress_for(&recording.display().to_string());
    let result = match &args.against {
        Some(url) => drive_running_proxy(url, planned, args.clients, &*progress).await,
        None => {
            let config = args
                .proxy_config
                .as_ref()
                .context("--proxy-config or --against is needed")?;
            let scenario = replay_scenario(config, &args)?;
            runner::run(&scenario, None, &*progress)
                .await
                .map_err(anyhow::Error::msg)?
        }
    };
    let scenario = Scenario {
        path: recording.clone(),
        name: format!("replay of {}", recording.display()),
        description: None,
        seed: 0,
        time_scale: args.time_scale,
        mocks: Vec::new(),
        proxy: toml::Table::new(),
        fleet: Default::default(),
        traffic: toml::from_str(&format!("replay = {:?}", recording.display().to_string()))?,
        expect,
    };
    let verdicts = verdict::evaluate(&scenario.expect, &result);
    let r = report::build(&scenario, 0, &result, verdicts);
    for line in report::failures(&r) {
        eprintln!("  {line}");
    }
    write!(
        std::io::stdout(),
        "{}",
        report::table(std::slice::from_ref(&r))
    )?;
    writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&r)?)?;
    Ok(if r.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `replay --against URL`: the recording driven through a proxy already running, on the wall
/// clock; only the client side is seen.
async fn drive_running_proxy(
    url: &str,
    planned: Vec<traffic::Planned>,
    clients: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> record::RunResult {
    let clock = spillway_clock::Clock::real();
    let clients_seen = runner::drive(
        &[url.to_string()],
        &clock,
        &[planned],
        clients,
        Duration::from_secs(600),
        progress,
    )
    .await;
    record::RunResult {
        sim_seconds: clock.now().as_secs_f64(),
        wall_seconds: clock.now().as_secs_f64(),
        clients: clients_seen,
        mocks: Vec::new(),
        fallbacks: 0,
        passes: 1,
        time_scale: 1.0,
        fleet_degraded: Vec::new(),
    }
}

/// `plan`'s inputs, read and checked: an error here is the user's (exit 2).
fn plan_spec(args: &PlanArgs) -> Result<plan::PlanSpec, String> {
    let goal = plan::goal::Goal::parse(&args.goal)?;
    let mut traffic = plan::source::load(&args.traffic, args.clients, args.seed)?;
    if let Some(route) = &args.route {
        traffic.only_route(route)?;
    }
    if traffic.requests() == 0 {
        return Err(format!("{}: no requests", args.traffic.display()));
    }
    let read =
        |path: &Path| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()));
    let (config, config_name) = match (&args.config, &traffic.proxy) {
        (Some(path), _) => {
            let table: toml::Table =
                toml::from_str(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
            (table, path.display().to_string())
        }
        (None, Some(proxy)) => (proxy.clone(), format!("{} [proxy]", args.traffic.display())),
        (None, None) => return Err("--config FILE is needed: the spillway config to plan".into()),
    };
    let mut tables = plan::tiers::LimitTables::builtin();
    if let Some(path) = &args.limits {
        tables = tables.with_file(&read(path)?, &path.display().to_string())?;
    }
    let costs = match &args.costs {
        Some(path) => Some(plan::costs::CostTable::parse(
            &read(path)?,
            &path.display().to_string(),
        )?),
        None => None,
    };
    let chain = plan::chain::Chain::new(config, &config_name, traffic.routes(), &tables)?;
    let spec = plan::PlanSpec {
        traffic,
        chain,
        config_name,
        tables,
        tiers: args.tiers.clone(),
        costs,
        max_keys: args.max_keys,
        goal,
        speed: args.speed,
        seed: args.seed,
    };
    spec.check()?;
    Ok(spec)
}

/// A progress bar over the candidate running (its answers so far), on a terminal only.
fn plan_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:32} {bar:30} {pos}/{len} answers")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

async fn plan_command(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let spec = match plan_spec(&args) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("invalid plan: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let bar = plan_bar();
    let progress = |label: &str, done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_prefix(label.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let report = plan::plan(&spec, &progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report.map_err(anyhow::Error::msg)?;
    let written = plan::write(&args.out, &spec, &report).map_err(anyhow::Error::msg)?;
    if args.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&report)?
        )?;
    } else {
        write!(std::io::stdout(), "{}", plan::report::table(&report))?;
        for note in &report.notes {
            writeln!(std::io::stdout(), "note: {note}")?;
        }
        writeln!(
            std::io::stdout(),
            "{}",
            plan::report::recommendation_line(&report)
        )?;
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        writeln!(
            std::io::stdout(),
            "written: {} ({:.1} s)",
            names.join(", "),
            report.wall_seconds
        )?;
    }
    Ok(if report.recommendation.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn bench_command(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(unknown) = args
        .peers
        .iter()
        .find(|p| !subjects::PEERS.contains(&p.as_str()))
    {
        eprintln!(
            "unknown peer {unknown:?} (known: {})",
            subjects::PEERS.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    if args.concurrency.contains(&0) || args.repeat == 0 {
        eprintln!("--concurrency levels and --repeat must be at least 1");
        return Ok(ExitCode::from(2));
    }
    let spec = BenchSpec {
        duration: args.duration,
        warmup: args.warmup,
        soak_concurrency: args.concurrency.iter().copied().max().unwrap_or(64),
        concurrency: args.concurrency,
        repeat: args.repeat,
        exe: std::env::current_exe().context("cannot find the harness executable")?,
        peers: args.peers,
        peers_dir: args.peers_dir,
        peer_start: args.peer_start,
        soak: args.soak,
        fleet: args.fleet,
    };
    let report = run_bench(&spec).await.map_err(anyhow::Error::msg)?;
    let md = bench::table::markdown(&report);
    let svg = bench::chart::render_svg(&report.rows, "spillway-harness bench: requests per second");
    write_files(
        &args.out,
        &[
            ("bench.json", &serde_json::to_string_pretty(&report)?),
            ("bench.md", &md),
            ("bench.svg", &svg),
        ],
    )?;
    if args.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&report)?
        )?;
    } else {
        write!(std::io::stdout(), "{md}")?;
        writeln!(
            std::io::stdout(),
            "\nbench.json, bench.md and bench.svg in {}",
            args.out.display()
        )?;
    }
    Ok(if report.all_correct() {
        ExitCode::SUCCESS
    } else {
        eprintln!("some subject answered wrongly: see the probes and the failures above");
        ExitCode::from(1)
    })
}

/// Writes each `(name, contents)` into the folder `out`, made first where it is missing.
fn write_files(out: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (name, contents) in files {
        std::fs::write(out.join(name), contents)?;
    }
    Ok(())
}

async fn load_command(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let spec = LoadSpec {
        url: args.url.clone(),
        spread: Vec::new(),
        headers: json_headers(&args.key).context("the key is not a valid header value")?,
        bodies: if args.distinct == 0 {
            numbered_bodies(&args.model, 200, &args.prefix, args.stream)
        } else {
            Bodies::Cycle(Arc::new(bodies(
                &args.model,
                args.distinct,
                200,
                &args.prefix,
                args.stream,
            )))
        },
        concurrency: args.concurrency,
        duration: args.duration,
        warmup: args.warmup,
        max_requests: args.requests,
        check: if args.stream {
            BodyCheck::Stream
        } else {
            BodyCheck::Chat
        },
    };
    let report = run_load(spec).await?;
    if args.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&report)?
        )?;
    } else {
        say_load(&args, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `load`'s summary: throughput, percentiles, errors and statuses, malformed answers, the first
/// error.
fn say_load(args: &LoadArgs, report: &LoadReport) -> std::io::Result<()> {
    writeln!(
        std::io::stdout(),
        "{}  concurrency {}: {:.0} requests/s over {:.1} s, p50 {} µs, p99 {} µs, p99.9 {} µs, errors {}, statuses {:?}",
        args.url,
        args.concurrency,
        report.rps,
        report.seconds,
        report.p50_us,
        report.p99_us,
        report.p999_us,
        report.errors,
        report.by_status
    )?;
    if report.invalid > 0 {
        writeln!(
            std::io::stdout(),
            "{} answers with status 200 were not well-formed",
            report.invalid
        )?;
    }
    if let Some(e) = &report.first_error {
        writeln!(std::io::stdout(), "first error: {e}")?;
    }
    Ok(())
}

async fn chaos_command(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let spec = chaos_spec(&args);
    let exe = std::env::current_exe().context("cannot find the harness executable")?;
    let bars: std::sync::Mutex<HashMap<String, Progress>> = Default::default();
    let report = run_chaos(&spec, &exe, &|stage: &str, done: u64, total: u64| {
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars
            .entry(stage.to_string())
            .or_insert_with(|| progress_for(stage));
        bar(done as usize, total as usize);
    })
    .await
    .map_err(anyhow::Error::msg)?;
    let md = report.markdown();
    write_files(
        &args.out,
        &[
            ("chaos.json", &serde_json::to_string_pretty(&report)?),
            ("chaos.md", &md),
        ],
    )?;
    if args.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&report)?
        )?;
    } else {
        write!(std::io::stdout(), "{md}")?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The profile's spec with the flags that override it: a count of 0 turns crash rounds or the
/// soak off; a count for a part the profile leaves out takes the full profile's settings.
fn chaos_spec(args: &ChaosArgs) -> ChaosSpec {
    let seed = args.seed;
    let mut spec = if args.profile == "full" {
        ChaosSpec::full(seed)
    } else {
        ChaosSpec::short(seed)
    };
    if let Some(n) = args.requests {
        spec.matrix.requests = n;
    }
    if let Some(rounds) = args.crash_rounds {
        spec.crash = (rounds > 0).then(|| {
            let mut c = spec
                .crash
                .clone()
                .unwrap_or(ChaosSpec::full(seed).crash.expect("full has crash rounds"));
            c.rounds = rounds;
            c
        });
    }
    if let Some(total) = args.soak {
        spec.soak = (total > 0).then(|| {
            let mut s = spec
                .soak
                .clone()
                .unwrap_or(ChaosSpec::full(seed).soak.expect("full has a soak"));
            s.per_stage = total.div_ceil(s.stages as u64);
            s
        });
    }
    spec
}

/// A hidden `serve-*` command's end: it serves until killed, so it returns only on an error.
fn served(outcome: Result<(), String>) -> anyhow::Result<ExitCode> {
    outcome.map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}

/// True when `e` (or one of its causes) is a write to a closed pipe (`... | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    match command(Args::parse().command).await {
        Ok(code) => code,
        // The reader went away (`| head`): what it wanted it has; nothing failed.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
async fn command(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => run_command(args).await,
        Command::Up { scenario } => up_command(scenario).await,
        Command::Replay(args) => replay_command(args).await,
        Command::Plan(args) => plan_command(args).await,
        Command::Bench(args) => bench_command(args).await,
        Command::Load(args) => load_command(args).await,
        Command::Chaos(args) => chaos_command(args).await,
        Command::ServeConfig { config } => served(subjects::serve_config(&config).await),
        Command::ServeMock => served(subjects::serve_mock().await),
        Command::ServeForwarder { upstream } => served(subjects::serve_forwarder(&upstream).await),
        Command::ServeRedis => served(subjects::serve_redis().await),
        Command::ServeProxy {
            upstream,
            cache_dir,
            adaptive,
            limits_known,
            fleet_redis,
        } => {
            let shape = subjects::ProxyShape {
                adaptive,
                limits_known,
                fleet_redis,
            };
            served(subjects::serve_proxy(&upstream, &cache_dir, &shape).await)
        }
    }
}
