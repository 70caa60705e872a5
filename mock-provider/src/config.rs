//! The mock's config file (TOML, documented in `mock-provider/README.md`) and the command-line
//! overrides laid over it, resolved into a [`MockSpec`]. The one secret, the admin token, is
//! named by environment variable (`env:NAME`), never written inline, and read through [`Env`]
//! so tests can pass a map.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::admin_token::AdminToken;

use crate::spec::{
    DEFAULT_JOURNAL_CAPACITY, DEFAULT_KEY, DEFAULT_MAX_BODY_BYTES, DEFAULT_ORGANIZATION,
    DEFAULT_READ_TIMEOUT, Dialect, Faults, GROQ_PRODUCTION_MODELS, LimitKind, Limits, MockSpec,
};

/// Where a model's limits come from when the config does not give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitsPreset {
    /// Groq's free-plan limits (generic free-plan-like ones for unknown ids).
    GroqFree,
    /// No limits.
    None,
}

/// A mock config file as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Accepted API keys.
    pub keys: Option<Vec<String>>,
    /// Served model ids.
    pub models: Option<Vec<String>>,
    /// Limits for models without a `[limits."model"]` table (default `none` in a file).
    pub limits_preset: Option<LimitsPreset>,
    /// Per-model limits.
    #[serde(default)]
    pub limits: BTreeMap<String, Limits>,
    /// Header dialect.
    pub dialect: Option<Dialect>,
    /// Organization id in messages.
    pub organization: Option<String>,
    /// Answer flex-tier requests with 498.
    #[serde(default)]
    pub flex_capacity_exceeded: bool,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Journal entries kept.
    pub journal_capacity: Option<usize>,
    /// Clock seconds per wall second.
    pub time_scale: Option<f64>,
    /// Wall-clock time a client gets to send a request's headers, then its body (`"30s"`).
    #[serde(default, with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    /// The control plane's token, as `"env:NAME"`.
    pub admin_token: Option<String>,
    /// Faults and latency.
    #[serde(default)]
    pub faults: Faults,
}

impl MockConfig {
    /// Parses config text; errors name `origin`, the line and the field.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| format!("{origin}: {e}"))
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }
}

/// Command-line settings laid over the config.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--keys`.
    pub keys: Option<Vec<String>>,
    /// `--models`.
    pub models: Option<Vec<String>>,
    /// `--rpm`, applied to every model.
    pub rpm: Option<u64>,
    /// `--tpm`, applied to every model.
    pub tpm: Option<u64>,
    /// `--rpd`, applied to every model.
    pub rpd: Option<u64>,
    /// `--tpd`, applied to every model.
    pub tpd: Option<u64>,
    /// `--no-limits`.
    pub no_limits: bool,
    /// `--dialect`.
    pub dialect: Option<Dialect>,
    /// `--latency`.
    pub latency: Option<Duration>,
    /// `--time-scale`.
    pub time_scale: Option<f64>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--read-timeout`.
    pub read_timeout: Option<Duration>,
    /// `--admin-token-env`: the variable holding the control plane's token.
    pub admin_token_env: Option<String>,
}

/// Where `env:NAME` references are looked up, and the process environment: shared with the
/// proxy, which reads its keys the same way.
pub use spillway_plumbing::env::{Env, ProcessEnv};

/// The admin token named by `--admin-token-env NAME` (which wins) or `admin_token = "env:NAME"`.
fn admin_token(
    flag: Option<&str>,
    file: Option<&str>,
    env: &dyn Env,
) -> Result<Option<AdminToken>, String> {
    let (field, token) = match (flag, file) {
        (Some(name), _) => ("--admin-token-env", env.read(name)),
        (None, Some(reference)) => ("admin_token", env.resolve(reference).map(|(_, v)| v)),
        (None, None) => return Ok(None),
    };
    match token {
        Ok(token) => Ok(Some(AdminToken::new(&token))),
        Err(e) => Err(format!("{field}: {e}")),
    }
}

/// A resolved configuration: the spec, the time scale and where to listen.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Behaviour.
    pub spec: MockSpec,
    /// Clock seconds per wall second.
    pub time_scale: f64,
    /// Listen address.
    pub listen: SocketAddr,
}

/// The address the binary listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8090";

/// Resolves a config (or, without one, the defaults: key `mock-key`, Groq's production models,
/// Groq's free-plan limits) with command-line overrides on top; `env` resolves `env:NAME`.
pub fn resolve(
    config: Option<MockConfig>,
    overrides: &Overrides,
    env: &dyn Env,
) -> Result<Resolved, String> {
    let from_file = config.is_some();
    let config = config.unwrap_or_default();
    let preset = config.limits_preset.unwrap_or(if from_file {
        LimitsPreset::None
    } else {
        LimitsPreset::GroqFree
    });
    let keys = overrides
        .keys
        .clone()
        .or(config.keys)
        .unwrap_or_else(|| vec![DEFAULT_KEY.to_string()]);
    let models = match overrides.models.clone().or(config.models) {
        Some(m) => m,
        None => {
            let mut m: Vec<String> = GROQ_PRODUCTION_MODELS
                .iter()
                .map(|s| s.to_string())
                .collect();
            for named in config.limits.keys() {
                if !m.contains(named) {
                    m.push(named.clone());
                }
            }
            m
        }
    };
    let mut limits = config.limits;
    if preset == LimitsPreset::GroqFree {
        for model in &models {
            limits
                .entry(model.clone())
                .or_insert_with(|| Limits::groq_free_tier(model));
        }
    }
    for (kind, value) in [
        (LimitKind::RequestsPerMinute, overrides.rpm),
        (LimitKind::TokensPerMinute, overrides.tpm),
        (LimitKind::RequestsPerDay, overrides.rpd),
        (LimitKind::TokensPerDay, overrides.tpd),
    ] {
        if let Some(v) = value {
            for model in &models {
                limits.entry(model.clone()).or_default().set(kind, Some(v));
            }
        }
    }
    if overrides.no_limits {
        limits.clear();
    }
    let mut faults = config.faults;
    if let Some(latency) = overrides.latency {
        faults.latency = Some(latency);
    }
    let spec = MockSpec {
        keys,
        models,
        limits,
        dialect: overrides.dialect.or(config.dialect).unwrap_or_default(),
        organization: config
            .organization
            .unwrap_or_else(|| DEFAULT_ORGANIZATION.to_string()),
        flex_capacity_exceeded: config.flex_capacity_exceeded,
        max_body_bytes: config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        journal_capacity: config.journal_capacity.unwrap_or(DEFAULT_JOURNAL_CAPACITY),
        read_timeout: overrides
            .read_timeout
            .or(config.read_timeout)
            .unwrap_or(DEFAULT_READ_TIMEOUT),
        admin_token: admin_token(
            overrides.admin_token_env.as_deref(),
            config.admin_token.as_deref(),
            env,
        )?,
        faults,
    };
    spec.validate()?;
    let time_scale = overrides.time_scale.or(config.time_scale).unwrap_or(1.0);
    if !(time_scale.is_finite() && time_scale > 0.0) {
        return Err(format!(
            "time_scale must be a number greater than 0 (got {time_scale})"
        ));
    }
    let listen = match overrides.listen.or(config.listen) {
        Some(l) => l,
        None => DEFAULT_LISTEN.parse().expect("the default address parses"),
    };
    Ok(Resolved {
        spec,
        time_scale,
        listen,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(config: Option<MockConfig>, overrides: &Overrides) -> Result<Resolved, String> {
        super::resolve(config, overrides, &HashMap::new())
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_admin_token_comes_from_a_named_variable_never_inline() {
        let vars = env(&[("MOCK_ADMIN", "s3cret"), ("EMPTY", " ")]);
        let cfg = MockConfig::parse("admin_token = \"env:MOCK_ADMIN\"\n", "f").expect("parses");
        let r = super::resolve(Some(cfg), &Overrides::default(), &vars).expect("resolves");
        assert!(r.spec.admin_token.expect("a token").matches("s3cret"));

        let inline = MockConfig::parse("admin_token = \"s3cret\"\n", "f").expect("parses");
        let err = super::resolve(Some(inline), &Overrides::default(), &vars)
            .expect_err("inline secrets are refused");
        assert!(
            err.contains("admin_token") && err.contains("env:NAME"),
            "{err}"
        );

        let unset = MockConfig::parse("admin_token = \"env:NOPE\"\n", "f").expect("parses");
        let err = super::resolve(Some(unset), &Overrides::default(), &vars).expect_err("unset");
        assert!(err.contains("NOPE is not set"), "{err}");

        let flag = Overrides {
            admin_token_env: Some("EMPTY".into()),
            ..Overrides::default()
        };
        let err = super::resolve(None, &flag, &vars).expect_err("empty");
        assert!(
            err.contains("--admin-token-env") && err.contains("empty"),
            "{err}"
        );

        assert!(
            resolve(None, &Overrides::default())
                .expect("resolves")
                .spec
                .admin_token
                .is_none()
        );
    }

    #[test]
    fn the_admin_token_flag_wins_over_the_file() {
        let vars = env(&[("A", "from-file"), ("B", "from-flag")]);
        let cfg = MockConfig::parse("admin_token = \"env:A\"\n", "f").expect("parses");
        let flag = Overrides {
            admin_token_env: Some("B".into()),
            ..Overrides::default()
        };
        let token = super::resolve(Some(cfg), &flag, &vars)
            .expect("resolves")
            .spec
            .admin_token
            .expect("a token");
        assert!(token.matches("from-flag") && !token.matches("from-file"));
    }

    #[test]
    fn no_config_means_one_key_groq_models_and_free_tier_limits() {
        let r = resolve(None, &Overrides::default()).expect("defaults resolve");
        assert_eq!(r.spec.keys, vec!["mock-key"]);
        assert!(r.spec.models.iter().any(|m| m == "llama-3.1-8b-instant"));
        assert_eq!(
            r.spec.limits_for("llama-3.1-8b-instant"),
            Limits::rpm(30)
                .with_rpd(14_400)
                .with_tpm(6_000)
                .with_tpd(500_000)
        );
    }

    #[test]
    fn flags_override_every_models_window_and_no_limits_clears_them() {
        let o = Overrides {
            rpm: Some(5),
            ..Overrides::default()
        };
        let r = resolve(None, &o).expect("resolves");
        assert!(
            r.spec
                .limits
                .values()
                .all(|l| l.requests_per_minute == Some(5))
        );
        let o = Overrides {
            no_limits: true,
            ..Overrides::default()
        };
        assert!(resolve(None, &o).expect("resolves").spec.limits.is_empty());
    }

    #[test]
    fn a_config_file_enforces_only_what_it_says() {
        let cfg = MockConfig::parse(
            r#"
            keys = ["a", "b"]
            models = ["m"]
            [limits.m]
            requests_per_minute = 3
            "#,
            "mock.toml",
        )
        .expect("parses");
        let r = resolve(Some(cfg), &Overrides::default()).expect("resolves");
        assert_eq!(r.spec.limits_for("m"), Limits::rpm(3));
    }

    #[test]
    fn the_read_timeout_defaults_to_30s_reads_from_the_file_and_the_flag_wins() {
        let r = resolve(None, &Overrides::default()).expect("defaults resolve");
        assert_eq!(r.spec.read_timeout, Duration::from_secs(30));
        let cfg = MockConfig::parse("read_timeout = \"5s\"\n", "mock.toml").expect("parses");
        let r = resolve(Some(cfg.clone()), &Overrides::default()).expect("resolves");
        assert_eq!(r.spec.read_timeout, Duration::from_secs(5));
        let o = Overrides {
            read_timeout: Some(Duration::from_millis(300)),
            ..Overrides::default()
        };
        let r = resolve(Some(cfg), &o).expect("resolves");
        assert_eq!(r.spec.read_timeout, Duration::from_millis(300));
        let zero = MockConfig::parse("read_timeout = \"0s\"\n", "mock.toml").expect("parses");
        let err = resolve(Some(zero), &Overrides::default()).expect_err("zero is refused");
        assert!(err.contains("read_timeout"), "{err}");
        let bad = MockConfig::parse("read_timeout = \"soon\"\n", "mock.toml")
            .expect_err("not a duration");
        assert!(bad.contains("read_timeout"), "{bad}");
    }

    #[test]
    fn an_unknown_field_is_an_error_naming_file_and_field() {
        let err = MockConfig::parse("keyz = [\"a\"]\n", "mock.toml").expect_err("unknown field");
        assert!(err.contains("mock.toml") && err.contains("keyz"), "{err}");
    }

    #[test]
    fn limits_for_a_model_not_served_are_refused() {
        let cfg = MockConfig::parse(
            "models = [\"m\"]\n[limits.x]\nrequests_per_minute = 1\n",
            "f",
        )
        .expect("parses");
        let err = resolve(Some(cfg), &Overrides::default()).expect_err("x is not served");
        assert!(err.contains("limits.\"x\""), "{err}");
    }
}
