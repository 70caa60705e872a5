//! `spillway-mock`: parse arguments, resolve the config, bind, serve until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use spillway_mock::config::{self, MockConfig, Overrides};
use spillway_mock::{Clock, Dialect, MockState};

/// A faithful mock of Groq's API: rate limits with Groq's exact 429s and headers, faults and
/// latency. Prints `listening on http://ADDR` first; stops cleanly on SIGINT or SIGTERM.
#[derive(Parser, Debug)]
#[command(name = "spillway-mock", version)]
struct Args {
    /// Address to listen on (port 0: any free port) [default: 127.0.0.1:8090]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Config file (TOML; see mock-provider/README.md). Without one: key `mock-key`, Groq's
    /// production models and Groq's free-plan limits.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Accepted API keys, comma-separated.
    #[arg(long, value_delimiter = ',')]
    keys: Option<Vec<String>>,
    /// Served model ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Requests per minute, for every model.
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens per minute, for every model.
    #[arg(long)]
    tpm: Option<u64>,
    /// Requests per day, for every model.
    #[arg(long)]
    rpd: Option<u64>,
    /// Tokens per day, for every model.
    #[arg(long)]
    tpd: Option<u64>,
    /// Enforce no limit at all (for benchmarks).
    #[arg(long)]
    no_limits: bool,
    /// Clock seconds per wall-clock second: 60 makes a minute pass in a second. Windows,
    /// resets, retry-after and latency all run on this clock.
    #[arg(long)]
    time_scale: Option<f64>,
    /// Fixed latency before every answer (clock time), e.g. 20ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    latency: Option<Duration>,
    /// Header dialect: groq, openai, cerebras or anthropic.
    #[arg(long)]
    dialect: Option<Dialect>,
    /// Wall-clock time a client gets to send a request's headers (idle connections are closed
    /// after it too), then its body (else 408), e.g. 30s [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration)]
    read_timeout: Option<Duration>,
    /// Name of the environment variable holding the control plane's token: every /_mock/*
    /// request must then send `Authorization: Bearer TOKEN` (open without one).
    #[arg(long, value_name = "NAME")]
    admin_token_env: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let file = match &args.config {
        Some(path) => Some(MockConfig::from_file(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let overrides = Overrides {
        keys: args.keys,
        models: args.models,
        rpm: args.rpm,
        tpm: args.tpm,
        rpd: args.rpd,
        tpd: args.tpd,
        no_limits: args.no_limits,
        dialect: args.dialect,
        latency: args.latency,
        time_scale: args.time_scale,
        listen: args.listen,
        read_timeout: args.read_timeout,
        admin_token_env: args.admin_token_env,
    };
    let resolved =
        config::resolve(file, &overrides, &config::ProcessEnv).map_err(anyhow::Error::msg)?;
    let clock = Clock::scaled(resolved.time_scale)?;
    let listener = tokio::net::TcpListener::bind(resolved.listen)
        .await
        .with_context(|| format!("cannot listen on {}", resolved.listen))?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    let state = Arc::new(MockState::new(resolved.spec, clock));
    spillway_mock::run(listener, state, spillway_plumbing::shutdown::signal()).await?;
    Ok(())
}
