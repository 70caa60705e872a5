//! `spillway-harness`: parse arguments and hand over to the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue};
use spillway_harness::bench::{BenchSpec, run_bench, table};
use spillway_harness::load::{LoadSpec, chat_bodies, run_load};
use spillway_harness::subjects;

/// Scenarios and benchmarks for spillway.
#[derive(Parser, Debug)]
#[command(name = "spillway-harness", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure spillway against going direct to the mock, in one run: the same request mix,
    /// closed loop, subjects in turn, medians of `--repeat` runs.
    Bench {
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
        /// Print the rows as JSON instead of a table.
        #[arg(long)]
        json: bool,
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
    },
    /// Drive an OpenAI-compatible chat endpoint with a closed-loop load and print throughput and
    /// latency percentiles.
    Load {
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
        /// Number of distinct prompts cycled through (1: every request identical).
        #[arg(long, default_value_t = 1000)]
        distinct: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// mimalloc: the proxy allocates per request in many threads; glibc's arenas showed up in
/// profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Command::Bench {
            duration,
            warmup,
            concurrency,
            repeat,
            json,
        } => {
            let spec = BenchSpec {
                duration,
                warmup,
                concurrency,
                repeat,
                exe: std::env::current_exe().context("cannot find the harness executable")?,
            };
            let rows = run_bench(&spec).await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", table(&rows));
            }
        }
        Command::ServeMock => subjects::serve_mock().await.map_err(anyhow::Error::msg)?,
        Command::ServeForwarder { upstream } => subjects::serve_forwarder(&upstream)
            .await
            .map_err(anyhow::Error::msg)?,
        Command::ServeProxy {
            upstream,
            cache_dir,
        } => subjects::serve_proxy(&upstream, &cache_dir)
            .await
            .map_err(anyhow::Error::msg)?,
        Command::Load {
            url,
            key,
            model,
            concurrency,
            duration,
            warmup,
            distinct,
            json,
        } => {
            let spec = LoadSpec {
                url: url.clone(),
                headers: vec![
                    (
                        HeaderName::from_static("authorization"),
                        HeaderValue::from_str(&format!("Bearer {key}"))
                            .context("the key is not a valid header value")?,
                    ),
                    (
                        HeaderName::from_static("content-type"),
                        HeaderValue::from_static("application/json"),
                    ),
                ],
                bodies: Arc::new(chat_bodies(&model, distinct, 200, "")),
                concurrency,
                duration,
                warmup,
                max_requests: None,
            };
            let report = run_load(spec).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{url}  concurrency {concurrency}: {:.0} requests/s over {:.1} s, p50 {} µs, p99 {} µs, p99.9 {} µs, errors {}, statuses {:?}",
                    report.rps,
                    report.seconds,
                    report.p50_us,
                    report.p99_us,
                    report.p999_us,
                    report.errors,
                    report.by_status
                );
            }
        }
    }
    Ok(())
}
