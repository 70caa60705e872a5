//! `spillway`: parse arguments, load the config, bind, serve. Nothing else.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use spillway::config::cache::CacheMode;
use spillway::config::log::LogFormat;
use spillway::config::{self, ProcessEnv, validate};
use spillway::log_sink::LogSink;
use spillway::{AppState, Clock, Live};

/// An OpenAI-compatible gateway that keeps LLM calls flowing through provider rate limits.
#[derive(Parser, Debug)]
#[command(name = "spillway", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the gateway. Prints `listening on http://ADDR` first; reloads the config file on
    /// SIGHUP; stops on SIGINT or SIGTERM after finishing in-flight requests.
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
        /// Cache mode, overriding `[cache] mode`: read-write, read-only, replay (offline: a miss
        /// is a 404, no provider is called, provider keys are not read) or off.
        #[arg(long)]
        cache_mode: Option<String>,
        /// The cache's directory, overriding `[cache] path` (several gateways on one machine,
        /// such as a fleet tried locally, each need their own).
        #[arg(long)]
        cache_path: Option<PathBuf>,
        /// Record every client request to this JSONL file (replayable by the harness).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Record request bodies (true) or only their cache keys and token counts (false).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        record_bodies: bool,
        /// Log lines as `text` or `json` (one object per line), overriding `[log] format`.
        #[arg(long, value_parser = log_format_flag)]
        log_format: Option<LogFormat>,
    },
    /// Inspect and manage the response cache (the proxy using it must be stopped).
    Cache {
        /// Config file whose `[cache] path` to use.
        #[arg(long, default_value = "spillway.toml")]
        config: PathBuf,
        /// The cache directory, instead of the config's.
        #[arg(long)]
        path: Option<PathBuf>,
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Show a running gateway's limits, keys, circuits, queues and clients (GET
    /// /spillway/status) as a table per route, fitted to 80 columns.
    Status {
        /// The gateway's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The environment variable holding an admin key ([server] admin_keys).
        #[arg(long, default_value = "SPILLWAY_ADMIN_KEY")]
        admin_key_env: String,
        /// Redraw every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Print the status document as JSON instead of the table.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
    },
    /// Validate a config and print the resolved routes, without starting.
    Check {
        /// Config file.
        #[arg(long, default_value = "spillway.toml")]
        config: PathBuf,
        /// Cache mode, overriding `[cache] mode`, as `serve --cache-mode` would run with it
        /// (in replay mode, provider keys are not read).
        #[arg(long)]
        cache_mode: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// Entries, size, age, and counts per route and namespace.
    Stats,
    /// One entry, as a cassette line (pretty).
    Get {
        /// The entry's key (64 hex digits, as in `x-spillway-cache-key`).
        key: String,
    },
    /// Remove entries (all of them unless filtered).
    Purge {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only entries older than this (e.g. 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
    /// Write every entry to a cassette (JSONL, sorted by key, no credentials).
    Export {
        /// The cassette file.
        file: PathBuf,
    },
    /// Read a cassette into the cache.
    Import {
        /// The cassette file.
        file: PathBuf,
    },
}

/// Opens the cache a `spillway cache` command works on: the config's `[cache]` section (or the
/// defaults, when only `--path` is given), with `--path` over its path.
fn open_cache(
    config: &std::path::Path,
    path: Option<PathBuf>,
) -> anyhow::Result<spillway::cache::Cache> {
    use spillway::config::cache::CacheConfig;
    let mut cache_config = if path.is_some() && !config.exists() {
        CacheConfig::default()
    } else {
        config::load_cache_section(config)?
    };
    if let Some(p) = path {
        cache_config.path = p;
    }
    if cache_config.mode == CacheMode::Off {
        cache_config.mode = CacheMode::ReadWrite;
    }
    let dir = cache_config.path.clone();
    spillway::cache::Cache::open(cache_config, Clock::real()).with_context(|| {
        format!(
            "cannot open the cache at {} (is a spillway using it?)",
            dir.display()
        )
    })
}

fn cache_tool(
    config: &std::path::Path,
    path: Option<PathBuf>,
    command: CacheCommand,
) -> anyhow::Result<()> {
    let cache = open_cache(config, path)?;
    let mut out = std::io::stdout().lock();
    match command {
        CacheCommand::Stats => cache_stats(&cache, &mut out)?,
        CacheCommand::Get { key } => cache_get(&cache, &key, &mut out)?,
        CacheCommand::Purge {
            namespace,
            older_than,
        } => {
            let n = cache.purge(namespace.as_deref(), older_than)?;
            writeln!(out, "removed {n} entries")?;
        }
        CacheCommand::Export { file } => cache_export(&cache, &file, &mut out)?,
        CacheCommand::Import { file } => {
            let input = std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            );
            let n = spillway::cache::cassette::import(&cache, input)
                .with_context(|| file.display().to_string())?;
            writeln!(out, "imported {n} entries from {}", file.display())?;
        }
    }
    cache.flush();
    Ok(())
}

/// `spillway cache stats`: entries, bytes, their age span, and counts per route and namespace.
fn cache_stats(cache: &spillway::cache::Cache, out: &mut impl Write) -> anyhow::Result<()> {
    let store = cache.store().context("the cache has no store")?;
    let mut routes: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let (mut oldest, mut newest) = (u64::MAX, 0);
    let mut corrupt = 0;
    for key in store.keys()? {
        match cache.lookup(&key) {
            Some(s) => {
                *routes
                    .entry((s.route.clone(), s.namespace.clone()))
                    .or_default() += 1;
                oldest = oldest.min(s.created);
                newest = newest.max(s.created);
            }
            None => corrupt += 1,
        }
    }
    writeln!(out, "cache {}", cache.config.path.display())?;
    writeln!(out, "entries {} ({} bytes)", store.len(), store.bytes())?;
    if newest > 0 {
        let at = |s: u64| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
            )
        };
        writeln!(out, "oldest {}, newest {}", at(oldest), at(newest))?;
    }
    if corrupt > 0 {
        writeln!(out, "removed {corrupt} corrupt or expired entries")?;
    }
    for ((route, ns), n) in routes {
        let ns = if ns.is_empty() { "(none)".into() } else { ns };
        writeln!(out, "  route {route}  namespace {ns}: {n}")?;
    }
    Ok(())
}

/// `spillway cache get KEY`: the entry and its canonical request, as JSON.
fn cache_get(
    cache: &spillway::cache::Cache,
    key: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let key =
        spillway::cache::key::CacheKey::from_hex(key).context("expected a key of 64 hex digits")?;
    let (stored, request) = cache
        .lookup_full(&key)
        .context("no valid entry under that key")?;
    let line = serde_json::json!({
        "key": key.to_hex(),
        "namespace": stored.namespace,
        "route": stored.route,
        "endpoint": stored.endpoint,
        "created": stored.created,
        "provider": stored.provider,
        "model": stored.model,
        "request": request,
        "response": {
            "status": stored.status,
            "headers": stored.headers,
            "body": stored.body,
            "chunks": stored.chunks,
        },
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&line)?)?;
    Ok(())
}

/// `spillway cache export FILE`: a cassette written beside the file, then moved into place, so
/// a failed export never leaves half a cassette under the name.
fn cache_export(
    cache: &spillway::cache::Cache,
    file: &std::path::Path,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let tmp = file.with_extension("partial");
    let mut cassette_file = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?,
    );
    let n = spillway::cache::cassette::export(cache, &mut cassette_file);
    drop(cassette_file);
    match n {
        Ok(n) => {
            std::fs::rename(&tmp, file)?;
            writeln!(out, "exported {n} entries to {}", file.display())?;
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.into())
        }
    }
}

/// `spillway status`: the gateway's status document, drawn once, redrawn every second until
/// Ctrl-C (`--watch`), or printed as JSON. Colours only on a terminal (and never with
/// `NO_COLOR` set).
async fn status(url: &str, key_env: &str, watch: bool, json: bool) -> anyhow::Result<()> {
    let key = std::env::var(key_env).with_context(|| {
        format!("the admin key is read from ${key_env}, which is not set (--admin-key-env NAME names another variable)")
    })?;
    let terminal = std::io::stdout().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none();
    let fetch = || spillway::status::fetch::fetch(url, &key);
    if !watch {
        let doc = fetch().await.map_err(anyhow::Error::msg)?;
        let text = if json {
            format!("{}\n", serde_json::to_string_pretty(&doc)?)
        } else {
            spillway::status::render::render(&doc, color)
        };
        write!(std::io::stdout().lock(), "{text}")?;
        return Ok(());
    }
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        let text = match fetch().await {
            Ok(doc) => spillway::status::render::render(&doc, color),
            Err(e) => format!("{e}\n(trying again every second; Ctrl-C stops)\n"),
        };
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home and clear, then the new frame.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        drop(out);
        tokio::select! {
            _ = &mut stop => return Ok(()),
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// SIGINT or SIGTERM, said in the log: what follows (in-flight requests finishing) can take a
/// while.
async fn shutdown_signal() {
    spillway_plumbing::shutdown::signal().await;
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
    out.push_str(&format!(
        "cache {} at {} (when: {:?}{}{})\n",
        config.cache.mode.name(),
        config.cache.path.display(),
        config.cache.when,
        config
            .cache
            .ttl
            .map(|t| format!(", ttl {}", humantime::format_duration(t)))
            .unwrap_or_default(),
        config
            .cache
            .max_size
            .map(|m| format!(", max {m} bytes"))
            .unwrap_or_default()
    ));
    describe_access(config, &mut out);
    if let Some(f) = &config.fleet {
        out.push_str(&format!(
            "fleet {} through Redis at ${} (timeout {})\n",
            f.name,
            f.redis_env,
            humantime::format_duration(f.timeout)
        ));
    }
    describe_providers(config, &mut out);
    describe_routes(config, &mut out);
    out
}

/// `check`'s lines for the admin keys and the named clients (by name and variable only).
fn describe_access(config: &config::Config, out: &mut String) {
    if !config.server.admin_keys.is_empty() {
        out.push_str(&format!(
            "admin endpoints: {} admin key{}{}\n",
            config.server.admin_keys.len(),
            if config.server.admin_keys.len() == 1 {
                ""
            } else {
                "s"
            },
            if config.server.metrics_admin_only {
                ", /metrics included"
            } else {
                ""
            }
        ));
    }
    for c in &config.clients {
        let routes = c.routes.as_ref().map_or("every route".to_string(), |r| {
            r.iter()
                .map(|&i| config.routes[i].model.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        });
        let limits: Vec<String> = c
            .limits
            .iter()
            .map(|(kind, v)| format!("{v} {}", kind.short()))
            .collect();
        out.push_str(&format!(
            "client {} (${}): {routes}; {}\n",
            c.name,
            c.env,
            if limits.is_empty() {
                "no limits of its own".to_string()
            } else {
                limits.join(", ")
            }
        ));
    }
}

/// `check`'s lines for the providers and their keys (by alias and variable only).
fn describe_providers(config: &config::Config, out: &mut String) {
    let offline = config.cache.mode == CacheMode::Replay;
    if offline {
        out.push_str("provider keys not read: replay mode calls no provider\n");
    }
    for p in &config.providers {
        let keys: Vec<String> = p
            .keys
            .iter()
            .map(|k| {
                format!(
                    "{} (${}{})",
                    k.alias,
                    k.env,
                    if offline { ", not read" } else { "" }
                )
            })
            .collect();
        out.push_str(&format!(
            "provider {}: {} [{} headers, timeout {}{}] keys: {}\n",
            p.name,
            p.base_url,
            p.dialect.name(),
            humantime::format_duration(p.timeout),
            p.tier
                .map(|t| format!(", Groq {} plan limits", t.name()))
                .unwrap_or_default(),
            keys.join(", ")
        ));
    }
}

/// `check`'s lines for the routes, their targets and the limits known for each.
fn describe_routes(config: &config::Config, out: &mut String) {
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
}

/// mimalloc: the proxy allocates per request in many threads, where glibc's per-thread arenas
/// cost more. Build with `--no-default-features` for the system allocator (heap profilers).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Log lines go out through a buffer (one write per burst, not per request), written out
    // before a panic is reported and before the process exits. Colors only on a terminal.
    let sink = match LogSink::new(Box::new(std::io::stderr())) {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("error: cannot start logging: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let before_panic = sink.clone();
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        before_panic.flush();
        report_panic(info);
    }));
    let args = Args::parse();
    let format = log_format(&args.command);
    start_logging(&sink, format);
    let result = run(args).await;
    match result {
        Ok(()) => {
            sink.flush();
            std::process::ExitCode::SUCCESS
        }
        // A reader that went away (`spillway cache stats | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => {
            sink.flush();
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // The message and its causes only: a user's mistake is not a program's fault,
            // so no backtrace, whatever RUST_BACKTRACE says. In JSON, a line like the others.
            if format == LogFormat::Json {
                tracing::error!(error = %format!("{e:#}"), "stopped");
                sink.flush();
            } else {
                sink.flush();
                eprintln!("error: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--log-format`'s value.
fn log_format_flag(text: &str) -> Result<LogFormat, String> {
    LogFormat::parse(text).ok_or_else(|| format!("expected text or json (got {text:?})"))
}

/// The log format `command` runs with: `serve`'s flag, else its config's `[log] format` (a
/// config that cannot be read logs as text, and the load that follows says what is wrong).
fn log_format(command: &Command) -> LogFormat {
    match command {
        Command::Serve {
            log_format: Some(format),
            ..
        } => *format,
        Command::Serve { config, .. } => config::load_log_section(config)
            .map(|log| log.format)
            .unwrap_or_default(),
        _ => LogFormat::Text,
    }
}

/// Installs the log subscriber, writing to `sink`: text (colours only on a terminal) or one
/// JSON object per line with the event's fields at the top level.
fn start_logging(sink: &LogSink, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(sink.clone())
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// True when `e` (or one of its causes) is a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A `--cache-mode` flag's value, read before the config: in replay mode no provider key is read.
fn cache_mode_flag(mode: Option<String>) -> anyhow::Result<Option<CacheMode>> {
    mode.map(|mode| {
        CacheMode::parse(&mode).with_context(|| {
            format!("--cache-mode: expected read-write, read-only, replay or off (got {mode:?})")
        })
    })
    .transpose()
}

/// `serve`'s flags that override the config file's fields.
struct ServeFlags {
    cache_mode: Option<CacheMode>,
    cache_path: Option<PathBuf>,
    listen: Option<SocketAddr>,
    time_scale: Option<f64>,
    record: Option<PathBuf>,
    record_bodies: bool,
    log_format: Option<LogFormat>,
}

impl ServeFlags {
    /// Reads and validates the config file with the flags over it.
    fn load(&self, path: &std::path::Path) -> anyhow::Result<config::Config> {
        let mut config = config::load_with_cache_mode(path, &ProcessEnv, self.cache_mode)?;
        if let Some(cache_path) = &self.cache_path {
            config.cache.path = cache_path.clone();
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(record) = &self.record {
            config.server.record = Some(record.clone());
            config.server.record_bodies = self.record_bodies;
        }
        if let Some(scale) = self.time_scale {
            config.server.time_scale = scale;
        }
        validate::check_exposure(config.server.listen, config.authenticates_clients())
            .map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// `spillway serve`: serves until SIGINT or SIGTERM, reloading the config file on SIGHUP.
async fn serve(path: PathBuf, flags: ServeFlags) -> anyhow::Result<()> {
    let config = flags.load(&path)?;
    if config.cache.mode == CacheMode::Replay {
        tracing::info!("replay mode: provider keys are not read, no provider is called");
    }
    let clock = Clock::scaled(config.server.time_scale)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState::new(config, clock).map_err(anyhow::Error::msg)?;
    let live = Live::with_source(
        state,
        Box::new(move || flags.load(&path).map_err(|e| format!("{e:#}"))),
    );
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let reloads = {
        let live = live.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                let live = live.clone();
                // The result is logged where it is made; a refused file keeps the old config.
                let _ =
                    tokio::task::spawn_blocking(move || live.reload_from_source("SIGHUP")).await;
            }
        })
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    let served = spillway::run_live(listener, live, shutdown_signal()).await;
    reloads.abort();
    Ok(served?)
}

/// Runs one command.
async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Check { config, cache_mode } => {
            let mode = cache_mode_flag(cache_mode)?;
            let config = config::load_with_cache_mode(&config, &ProcessEnv, mode)?;
            write!(std::io::stdout().lock(), "{}", describe(&config))?;
        }
        Command::Cache {
            config,
            path,
            command,
        } => cache_tool(&config, path, command)?,
        Command::Status {
            url,
            admin_key_env,
            watch,
            json,
        } => status(&url, &admin_key_env, watch, json).await?,
        Command::Serve {
            config,
            listen,
            time_scale,
            cache_mode,
            cache_path,
            record,
            record_bodies,
            log_format,
        } => {
            let flags = ServeFlags {
                cache_mode: cache_mode_flag(cache_mode)?,
                cache_path,
                listen,
                time_scale,
                record,
                record_bodies,
                log_format,
            };
            serve(config, flags).await?;
        }
    }
    Ok(())
}
