//! Configuration: [`raw`] (what the file says) → [`validate`] (what the program uses), with
//! secrets from the environment through [`secret`], Groq's published limits by plan in
//! [`tiers`], and the fleet's Redis in [`fleet`].

pub mod cache;
pub mod fleet;
pub mod log;
pub mod raw;
pub mod secret;
pub mod telemetry;
pub mod tiers;
pub mod validate;

use std::path::Path;

pub use raw::RawConfig;
pub use secret::{ApiKey, Env, ProcessEnv};
pub use validate::{
    Client, Config, ConfigError, Provider, ProviderKey, Route, ServerConfig, Target,
};

/// Parses TOML text; errors name `file`, the line and the field.
pub fn parse(text: &str, file: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    parse_with_cache_mode(text, file, env, None)
}

/// Parses TOML text with `mode` (a command-line flag) over the file's `[cache] mode`: the mode
/// is known before the keys are read, because in replay mode no provider key is read.
pub fn parse_with_cache_mode(
    text: &str,
    file: &str,
    env: &dyn Env,
    mode: Option<cache::CacheMode>,
) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError {
        file: file.to_string(),
        field: "(syntax)".into(),
        message: e.to_string(),
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            file: file.to_string(),
            field: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })?;
    validate::validate_with_cache_mode(&raw, file, env, mode)
}

/// Reads a config file as the file says it, before validation.
fn read_raw(path: &Path) -> Result<(String, RawConfig), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        field: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    let de = toml::Deserializer::parse(&text).map_err(|e| ConfigError {
        file: file.clone(),
        field: "(syntax)".into(),
        message: e.to_string(),
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| ConfigError {
        file: file.clone(),
        field: e.path().to_string(),
        message: e.into_inner().to_string(),
    })?;
    Ok((file, raw))
}

/// Reads only the `[cache]` section of a config file (the cache tools need no provider keys).
pub fn load_cache_section(path: &Path) -> Result<cache::CacheConfig, ConfigError> {
    let (file, raw) = read_raw(path)?;
    validate::cache_section(&raw.cache, &file)
}

/// Reads only the `[log]` section of a config file (logging starts before the keys are read).
pub fn load_log_section(path: &Path) -> Result<log::LogConfig, ConfigError> {
    let (file, raw) = read_raw(path)?;
    validate::log_section(&file, &raw.log)
}

/// Reads and validates a config file.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    load_with_cache_mode(path, env, None)
}

/// Reads and validates a config file, `mode` over its `[cache] mode` (see
/// [`parse_with_cache_mode`]).
pub fn load_with_cache_mode(
    path: &Path,
    env: &dyn Env,
    mode: Option<cache::CacheMode>,
) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        field: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse_with_cache_mode(&text, &file, env, mode)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("GROQ_API_KEY".to_string(), "gsk_one".to_string()),
            ("GROQ_API_KEY_2".to_string(), "gsk_two".to_string()),
            ("CEREBRAS_API_KEY".to_string(), "csk_one".to_string()),
        ])
    }

    const ISSUE_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[providers]]
name = "groq"
base_url = "https://api.groq.com/openai/v1"
keys = ["env:GROQ_API_KEY", "env:GROQ_API_KEY_2"]
timeout = "60s"
[providers.limits."llama-3.1-8b-instant"]
requests_per_minute = 30
tokens_per_minute = 6000
requests_per_day = 14400
tokens_per_day = 500000

[[providers]]
name = "cerebras"
base_url = "https://api.cerebras.ai/v1"
keys = ["env:CEREBRAS_API_KEY"]

[[routes]]
model = "llama-3.1-8b"
targets = [
  { provider = "groq", model = "llama-3.1-8b-instant" },
  { provider = "cerebras", model = "llama3.1-8b" },
]
max_wait = "30s"
"#;

    #[test]
    fn the_issue_example_validates() {
        let config = parse(ISSUE_EXAMPLE, "spillway.toml", &env()).expect("valid");
        assert_eq!(config.providers[0].keys[1].alias, "groq#2");
        assert_eq!(
            config.providers[1].dialect,
            crate::limits::headers::Dialect::Cerebras
        );
        assert_eq!(config.routes[0].targets[1].provider, 1);
        assert_eq!(
            config.providers[0].limits["llama-3.1-8b-instant"].get(Kind::RequestsPerMinute),
            Some(30)
        );
    }

    use crate::limits::kind::Kind;

    fn error_of(text: &str) -> ConfigError {
        parse(text, "spillway.toml", &env()).expect_err("invalid")
    }

    #[test]
    fn an_unset_variable_is_named_never_its_value() {
        let err = error_of(&ISSUE_EXAMPLE.replace("env:GROQ_API_KEY_2", "env:NOPE"));
        assert_eq!(err.field, "providers[0].keys[1]");
        assert!(err.to_string().contains("NOPE is not set"), "{err}");
        assert!(!err.to_string().contains("gsk_"), "{err}");
    }

    #[test]
    fn a_fleet_takes_its_redis_url_by_variable_and_names_what_is_wrong() {
        let with = |fleet: &str, url: &str| {
            let mut env = env();
            env.insert("REDIS_URL".into(), url.into());
            parse(
                &format!("{ISSUE_EXAMPLE}\n[fleet]\n{fleet}"),
                "spillway.toml",
                &env,
            )
        };
        let config = with("redis = \"env:REDIS_URL\"", "redis://h:6379/0").expect("valid");
        let fleet = config.fleet.expect("a fleet");
        assert_eq!(
            (fleet.name.as_str(), fleet.redis_env.as_str()),
            ("spillway", "REDIS_URL")
        );
        assert_eq!(fleet.timeout, std::time::Duration::from_millis(50));
        assert!(
            !format!("{fleet:?}").contains("redis://h"),
            "the URL may hold a password"
        );
        let err = with("name = \"prod\"", "redis://h").expect_err("no redis");
        assert_eq!(err.field, "fleet.redis");
        let err = with("redis = \"redis://h:6379\"", "x").expect_err("inline URL");
        assert_eq!(err.field, "fleet.redis");
        let err = with("redis = \"env:REDIS_URL\"", "http://h:6379").expect_err("not redis");
        assert!(err.message.contains("redis://"), "{err}");
        assert!(
            !err.message.contains("http://h"),
            "the value is not echoed: {err}"
        );
        let err = with("redis = \"env:REDIS_URL\"\nname = \"a b\"", "redis://h").expect_err("name");
        assert_eq!(err.field, "fleet.name");
        let err = with("redis = \"env:REDIS_URL\"\ntimeout = \"0s\"", "redis://h").expect_err("0");
        assert_eq!(err.field, "fleet.timeout");
        assert!(
            parse(ISSUE_EXAMPLE, "spillway.toml", &env())
                .expect("valid")
                .fleet
                .is_none()
        );
    }

    #[cfg(not(feature = "otel"))]
    #[test]
    fn a_build_without_otel_refuses_a_telemetry_section() {
        let text = format!("{ISSUE_EXAMPLE}\n[telemetry]\notlp_endpoint = \"http://c:4318\"");
        let err = parse(&text, "spillway.toml", &env()).expect_err("no otel feature");
        assert_eq!(err.field, "telemetry");
        assert!(err.message.contains("--features otel"), "{err}");
    }

    #[cfg(feature = "otel")]
    #[test]
    fn telemetry_takes_a_collector_url_and_header_values_by_variable() {
        let with = |telemetry: &str| {
            let mut env = env();
            env.insert("OTLP_URL".into(), "https://user:pw@collector:4318".into());
            env.insert("VENDOR_KEY".into(), "vendor-5ecret".into());
            parse(
                &format!("{ISSUE_EXAMPLE}\n[telemetry]\n{telemetry}"),
                "spillway.toml",
                &env,
            )
        };
        let t = with("otlp_endpoint = \"http://127.0.0.1:4318\"")
            .expect("valid")
            .telemetry
            .expect("telemetry");
        assert_eq!(t.traces_url.expose(), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.service_name, "spillway");
        assert_eq!(t.timeout, std::time::Duration::from_secs(5));
        let t = with(
            "otlp_endpoint = \"env:OTLP_URL\"\nservice_name = \"gw\"\ntimeout = \"2s\"\n\
             headers = { \"x-api-key\" = \"env:VENDOR_KEY\" }",
        )
        .expect("valid")
        .telemetry
        .expect("telemetry");
        assert_eq!(t.service_name, "gw");
        assert_eq!(t.headers[0].0, "x-api-key");
        assert_eq!(t.headers[0].1.expose(), "vendor-5ecret");
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("pw@") && !shown.contains("vendor-5ecret"),
            "{shown}"
        );
        for (bad, field) in [
            ("service_name = \"x\"", "telemetry.otlp_endpoint"),
            (
                "otlp_endpoint = \"collector:4318\"",
                "telemetry.otlp_endpoint",
            ),
            ("otlp_endpoint = \"env:NOPE\"", "telemetry.otlp_endpoint"),
            (
                "otlp_endpoint = \"http://c\"\nheaders = { \"x-api-key\" = \"inline\" }",
                "telemetry.headers.x-api-key",
            ),
            (
                "otlp_endpoint = \"http://c\"\nheaders = { \"bad header\" = \"env:VENDOR_KEY\" }",
                "telemetry.headers.bad header",
            ),
            (
                "otlp_endpoint = \"http://c\"\ntimeout = \"0s\"",
                "telemetry.timeout",
            ),
            (
                "otlp_endpoint = \"http://c\"\nservice_name = \" \"",
                "telemetry.service_name",
            ),
        ] {
            let err = with(bad).expect_err(bad);
            assert_eq!(err.field, field, "{bad}: {err}");
            assert!(!err.to_string().contains("vendor-5ecret"), "{err}");
        }
        assert!(
            with("otlp_endpoint = \"http://c\"\nsampling = 1").is_err(),
            "unknown field"
        );
    }

    #[test]
    fn replay_mode_reads_no_provider_key_but_still_checks_the_references() {
        let no_keys: HashMap<String, String> = HashMap::new();
        let replay = |text: &str| {
            parse_with_cache_mode(
                text,
                "spillway.toml",
                &no_keys,
                Some(cache::CacheMode::Replay),
            )
        };
        let config = replay(ISSUE_EXAMPLE).expect("no key is needed offline");
        assert_eq!(config.cache.mode, cache::CacheMode::Replay);
        let key = &config.providers[0].keys[1];
        assert_eq!(
            (key.alias.as_str(), key.env.as_str()),
            ("groq#2", "GROQ_API_KEY_2")
        );
        assert_eq!(key.key.expose(), "", "not read");
        // The file's own `mode = "replay"` is the same as the flag.
        let in_file = format!("{ISSUE_EXAMPLE}\n[cache]\nmode = \"replay\"\n");
        assert!(parse(&in_file, "spillway.toml", &no_keys).is_ok());
        // A key written inline is still refused, and client keys are still read.
        let err = replay(&ISSUE_EXAMPLE.replace("env:CEREBRAS_API_KEY", "csk_inline"))
            .expect_err("inline");
        assert_eq!(err.field, "providers[1].keys[0]");
        let with_clients = ISSUE_EXAMPLE.replace(
            "[server]\n",
            "[server]\nclient_keys = [\"env:SPILLWAY_CLIENT_KEY\"]\n",
        );
        let err = replay(&with_clients).expect_err("a client key is needed to serve");
        assert_eq!(err.field, "server.client_keys[0]");
        // Any other mode still needs every key.
        let err = parse_with_cache_mode(
            ISSUE_EXAMPLE,
            "spillway.toml",
            &no_keys,
            Some(cache::CacheMode::ReadOnly),
        )
        .expect_err("keys are needed online");
        assert_eq!(err.field, "providers[0].keys[0]");
    }

    #[test]
    fn clients_take_a_key_an_allow_list_and_their_own_limits() {
        let mut env = env();
        env.insert("EVAL".into(), "sk-eval".into());
        env.insert("ADMIN".into(), "sk-admin".into());
        env.insert("OLD".into(), "sk-old".into());
        let with = |server: &str, clients: &str, env: &HashMap<String, String>| {
            parse(
                &format!(
                    "{}\n{clients}",
                    ISSUE_EXAMPLE.replace("[server]\n", &format!("[server]\n{server}\n"))
                ),
                "spillway.toml",
                env,
            )
        };
        let eval = "[[clients]]\nname = \"eval-team\"\nkey = \"env:EVAL\"\nroutes = [\"llama-3.1-8b\"]\nrequests_per_minute = 600\ntokens_per_day = 5_000_000\n";
        let config = with(
            "client_keys = [\"env:OLD\"]\nadmin_keys = [\"env:ADMIN\"]\nmetrics_admin_only = true",
            eval,
            &env,
        )
        .expect("valid");
        let client = &config.clients[0];
        assert_eq!(client.name, "eval-team");
        assert_eq!(client.routes, Some(vec![0]));
        assert_eq!(client.limits.get(Kind::RequestsPerMinute), Some(600));
        assert_eq!(client.limits.get(Kind::TokensPerDay), Some(5_000_000));
        assert_eq!(client.limits.get(Kind::TokensPerMinute), None);
        assert!(config.server.metrics_admin_only && config.authenticates_clients());
        assert_eq!(config.server.admin_keys.len(), 1);

        let err = with("", &eval.replace("[\"llama-3.1-8b\"]", "[\"nope\"]"), &env)
            .expect_err("unknown route");
        assert_eq!(err.field, "clients[0].routes[0]");
        assert!(err.message.contains("nope"), "{err}");
        let err = with("", &eval.replace("600", "0"), &env).expect_err("zero");
        assert_eq!(err.field, "clients[0].requests_per_minute");
        let err = with("", &eval.replace("eval-team", "eval team"), &env).expect_err("name");
        assert_eq!(err.field, "clients[0].name");
        let err = with("", &format!("{eval}\n{eval}"), &env).expect_err("two keys");
        assert_eq!(err.field, "clients[1].key");
        let err = with("admin_keys = [\"env:EVAL\"]", eval, &env).expect_err("admin = client");
        assert_eq!(err.field, "server.admin_keys[0]");
        assert!(err.message.contains("clients[0].key"), "{err}");
        assert!(!err.to_string().contains("sk-eval"), "{err}");
        let err = with("metrics_admin_only = true", "", &env).expect_err("no admin key");
        assert_eq!(err.field, "server.metrics_admin_only");
        let mut unset = env.clone();
        unset.remove("EVAL");
        let err = with("", eval, &unset).expect_err("unset");
        assert!(err.to_string().contains("EVAL is not set"), "{err}");
    }

    #[test]
    fn inline_secrets_are_refused() {
        let err = error_of(&ISSUE_EXAMPLE.replace("env:CEREBRAS_API_KEY", "csk_inline"));
        assert_eq!(err.field, "providers[1].keys[0]");
        assert!(!err.to_string().contains("csk_inline"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_values_name_file_and_field() {
        let err = error_of(&ISSUE_EXAMPLE.replace("timeout = \"60s\"", "timeout = \"soon\""));
        assert_eq!(err.field, "providers[0].timeout");
        assert!(
            err.to_string()
                .starts_with("spillway.toml: providers[0].timeout"),
            "{err}"
        );
        let err = error_of(&ISSUE_EXAMPLE.replace("max_wait", "max_waiting"));
        assert!(err.to_string().contains("max_waiting"), "{err}");
        let err =
            error_of(&ISSUE_EXAMPLE.replace("provider = \"cerebras\"", "provider = \"cerebro\""));
        assert_eq!(err.field, "routes[0].targets[1].provider");
        assert!(err.message.contains("cerebro"), "{err}");
    }

    #[test]
    fn the_client_timeout_defaults_to_30s_and_must_be_positive() {
        let config = parse(ISSUE_EXAMPLE, "spillway.toml", &env()).expect("valid");
        assert_eq!(
            config.server.client_timeout,
            std::time::Duration::from_secs(30)
        );
        let with = |value: &str| {
            ISSUE_EXAMPLE.replace(
                "[server]\n",
                &format!("[server]\nclient_timeout = \"{value}\"\n"),
            )
        };
        let config = parse(&with("2s"), "spillway.toml", &env()).expect("valid");
        assert_eq!(
            config.server.client_timeout,
            std::time::Duration::from_secs(2)
        );
        let err = error_of(&with("0s"));
        assert_eq!(err.field, "server.client_timeout");
        assert!(err.message.contains("greater than 0"), "{err}");
    }

    #[test]
    fn without_client_keys_only_loopback_is_served() {
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let local: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert!(validate::check_exposure(any, false).is_err());
        assert!(validate::check_exposure(local, false).is_ok());
        assert!(validate::check_exposure(any, true).is_ok());
    }

    #[test]
    fn a_tier_fills_in_groqs_limits_a_limits_file_and_the_config_override_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("limits.toml");
        std::fs::write(
            &file,
            "[\"llama-3.1-8b-instant\"]\ntokens_per_minute = 7000\n[\"my-model\"]\nrequests_per_minute = 5\n",
        )
        .unwrap();
        let text = ISSUE_EXAMPLE.replace(
            "timeout = \"60s\"",
            &format!(
                "timeout = \"60s\"\ntier = \"free\"\nlimits_file = {:?}",
                file.display().to_string()
            ),
        );
        let config = parse(&text, "spillway.toml", &env()).expect("valid");
        let groq = &config.providers[0];
        let l = groq.limits["llama-3.1-8b-instant"];
        assert_eq!(l.get(Kind::RequestsPerMinute), Some(30), "the config's own");
        assert_eq!(
            l.get(Kind::TokensPerMinute),
            Some(6000),
            "the config's own over the file's"
        );
        assert_eq!(
            groq.limits["llama-3.3-70b-versatile"].get(Kind::RequestsPerDay),
            Some(1_000),
            "from the free plan's table"
        );
        assert_eq!(
            groq.limits["my-model"].get(Kind::RequestsPerMinute),
            Some(5),
            "from the file"
        );
        assert_eq!(groq.tier, Some(tiers::Tier::Free));
        let err = error_of(&ISSUE_EXAMPLE.replace("timeout = \"60s\"", "tier = \"gold\""));
        assert_eq!(err.field, "providers[0].tier");
        let err = error_of(
            &ISSUE_EXAMPLE.replace("timeout = \"60s\"", "limits_file = \"/nonexistent.toml\""),
        );
        assert_eq!(err.field, "providers[0].limits_file");
    }
}
