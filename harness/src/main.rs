//! `spillway-harness`: parse arguments and hand over to the library.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use http::{HeaderName, HeaderValue};
use spillway_harness::load::{LoadSpec, chat_bodies, run_load};

/// Scenarios and benchmarks for spillway.
#[derive(Parser, Debug)]
#[command(name = "spillway-harness", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
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
                bodies: Arc::new(chat_bodies(&model, distinct, 200)),
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
