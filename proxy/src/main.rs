//! `spillway`: parse arguments, load the config, bind, serve. Nothing else.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spillway::config::{self, ProcessEnv, validate};
use spillway::{AppState, Clock};

/// An OpenAI-compatible gateway that keeps LLM calls flowing through provider rate limits.
#[derive(Parser, Debug)]
#[command(name = "spillway", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the gateway. Prints `listening on http://ADDR` first; stops on SIGINT or SIGTERM
    /// after finishing in-flight requests.
    Serve {
        /// Config file.
        #[arg(long, default_value = "spillway.toml")]
        config: PathBuf,
        /// Listen address, overriding `[server] listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Run windows, waits and backoff on a clock this many times faster than real time
        /// (to match a spillway-mock started with the same --time-scale).
        #[arg(long, hide = true)]
        time_scale: Option<f64>,
    },
    /// Validate a config and print the resolved routes, without starting.
    Check {
        /// Config file.
        #[arg(long, default_value = "spillway.toml")]
        config: PathBuf,
    },
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn describe(config: &config::Config) -> String {
    let mut out = format!("config OK: {}\n", config.source);
    out.push_str(&format!(
        "listen {} ({} client key{})\n",
        config.server.listen,
        config.server.client_keys.len(),
        if config.server.client_keys.len() == 1 {
            ""
        } else {
            "s"
        }
    ));
    for p in &config.providers {
        let keys: Vec<String> = p
            .keys
            .iter()
            .map(|k| format!("{} (${})", k.alias, k.env))
            .collect();
        out.push_str(&format!(
            "provider {}: {} [{} headers, timeout {}] keys: {}\n",
            p.name,
            p.base_url,
            p.dialect.name(),
            humantime::format_duration(p.timeout),
            keys.join(", ")
        ));
    }
    for r in &config.routes {
        out.push_str(&format!(
            "route {} (max_wait {}):\n",
            r.model,
            humantime::format_duration(r.max_wait)
        ));
        for (i, t) in r.targets.iter().enumerate() {
            let p = &config.providers[t.provider];
            let limits = p.limits.get(&t.model).copied().unwrap_or_default();
            let known: Vec<String> = limits
                .iter()
                .map(|(kind, v)| format!("{v} {}", kind.short()))
                .collect();
            out.push_str(&format!(
                "  {}. {}/{} x{} key{}: {}\n",
                i + 1,
                p.name,
                t.model,
                p.keys.len(),
                if p.keys.len() == 1 { "" } else { "s" },
                if known.is_empty() {
                    "limits learned from headers".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    out
}

/// mimalloc: the proxy allocates per request in many threads; glibc's arenas showed up in
/// profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Args::parse().command {
        Command::Check { config } => {
            let config = config::load(&config, &ProcessEnv)?;
            print!("{}", describe(&config));
        }
        Command::Serve {
            config,
            listen,
            time_scale,
        } => {
            let mut config = config::load(&config, &ProcessEnv)?;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            if let Some(scale) = time_scale {
                config.server.time_scale = scale;
            }
            validate::check_exposure(config.server.listen, &config.server.client_keys)
                .map_err(anyhow::Error::msg)?;
            let clock = Clock::scaled(config.server.time_scale)?;
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.listen))?;
            let addr = listener.local_addr()?;
            let state = AppState::new(config, clock).map_err(anyhow::Error::msg)?;
            let mut stdout = std::io::stdout();
            writeln!(stdout, "listening on http://{addr}")?;
            stdout.flush()?;
            spillway::run(listener, state, shutdown_signal()).await?;
        }
    }
    Ok(())
}
