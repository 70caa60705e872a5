//! The mock's behaviour as data: keys, models, per-model limits, header dialect and faults.
//!
//! Nothing in the mock keys off magic model names or global switches; everything it does is
//! described by a [`MockSpec`], built in code with [`crate::MockProvider::builder`] or read from a
//! config file by [`crate::config`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin_token::AdminToken;

/// Groq's production chat model ids, served when no model list is given.
pub const GROQ_PRODUCTION_MODELS: &[&str] = &[
    "llama-3.1-8b-instant",
    "llama-3.3-70b-versatile",
    "meta-llama/llama-guard-4-12b",
    "openai/gpt-oss-120b",
    "openai/gpt-oss-20b",
];

/// The organization id that appears in Groq-style error messages unless configured.
pub const DEFAULT_ORGANIZATION: &str = "org_01mockspillway0000000000";

/// The key a mock accepts when none is configured.
pub const DEFAULT_KEY: &str = "mock-key";

/// Largest request body the mock reads unless configured (bytes).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// How many journal entries the mock keeps (oldest dropped first) unless configured.
pub const DEFAULT_JOURNAL_CAPACITY: usize = 100_000;

/// How long a client gets to send a request's headers, and then its body, unless configured
/// (wall-clock time).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One model's rate limits for one API key. A `None` window is not enforced, and the headers that
/// would report it are left out, as Groq leaves out requests-per-minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute (RPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Tokens per minute (TPM): prompt plus completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    /// Requests per day (RPD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
    /// Tokens per day (TPD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    /// Input (prompt) tokens per minute (ITPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens_per_minute: Option<u64>,
    /// Output (completion) tokens per minute (OTPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_per_minute: Option<u64>,
}

impl Limits {
    /// No limit at all.
    pub const fn none() -> Self {
        Limits {
            requests_per_minute: None,
            tokens_per_minute: None,
            requests_per_day: None,
            tokens_per_day: None,
            input_tokens_per_minute: None,
            output_tokens_per_minute: None,
        }
    }

    /// Only a requests-per-minute limit.
    pub const fn rpm(n: u64) -> Self {
        Limits::none().with_rpm(n)
    }

    /// Only a tokens-per-minute limit.
    pub const fn tpm(n: u64) -> Self {
        Limits::none().with_tpm(n)
    }

    /// This limit with requests per minute set.
    pub const fn with_rpm(mut self, n: u64) -> Self {
        self.requests_per_minute = Some(n);
        self
    }

    /// This limit with tokens per minute set.
    pub const fn with_tpm(mut self, n: u64) -> Self {
        self.tokens_per_minute = Some(n);
        self
    }

    /// This limit with requests per day set.
    pub const fn with_rpd(mut self, n: u64) -> Self {
        self.requests_per_day = Some(n);
        self
    }

    /// This limit with tokens per day set.
    pub const fn with_tpd(mut self, n: u64) -> Self {
        self.tokens_per_day = Some(n);
        self
    }

    /// This limit with input tokens per minute set.
    pub const fn with_itpm(mut self, n: u64) -> Self {
        self.input_tokens_per_minute = Some(n);
        self
    }

    /// This limit with output tokens per minute set.
    pub const fn with_otpm(mut self, n: u64) -> Self {
        self.output_tokens_per_minute = Some(n);
        self
    }

    /// True when no window is limited.
    pub fn is_unlimited(&self) -> bool {
        LimitKind::ALL.iter().all(|k| self.get(*k).is_none())
    }

    /// The limit of one kind, if set.
    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::RequestsPerMinute => self.requests_per_minute,
            LimitKind::TokensPerMinute => self.tokens_per_minute,
            LimitKind::RequestsPerDay => self.requests_per_day,
            LimitKind::TokensPerDay => self.tokens_per_day,
            LimitKind::InputTokensPerMinute => self.input_tokens_per_minute,
            LimitKind::OutputTokensPerMinute => self.output_tokens_per_minute,
        }
    }

    /// Sets (or clears) the limit of one kind.
    pub fn set(&mut self, kind: LimitKind, value: Option<u64>) {
        let slot = match kind {
            LimitKind::RequestsPerMinute => &mut self.requests_per_minute,
            LimitKind::TokensPerMinute => &mut self.tokens_per_minute,
            LimitKind::RequestsPerDay => &mut self.requests_per_day,
            LimitKind::TokensPerDay => &mut self.tokens_per_day,
            LimitKind::InputTokensPerMinute => &mut self.input_tokens_per_minute,
            LimitKind::OutputTokensPerMinute => &mut self.output_tokens_per_minute,
        };
        *slot = value;
    }

    /// Groq's free-plan limits for a production model id, and generic free-plan-like limits
    /// (30 RPM, 1,000 RPD, 6,000 TPM, 100,000 TPD) for any other id.
    /// Figures from <https://console.groq.com/docs/rate-limits>.
    pub fn groq_free_tier(model: &str) -> Self {
        let (rpm, rpd, tpm, tpd) = match model {
            "llama-3.1-8b-instant" => (30, 14_400, 6_000, 500_000),
            "llama-3.3-70b-versatile" => (30, 1_000, 12_000, 100_000),
            "meta-llama/llama-guard-4-12b" => (30, 14_400, 15_000, 500_000),
            "openai/gpt-oss-120b" | "openai/gpt-oss-20b" => (30, 1_000, 8_000, 200_000),
            _ => (30, 1_000, 6_000, 100_000),
        };
        Limits::rpm(rpm).with_rpd(rpd).with_tpm(tpm).with_tpd(tpd)
    }
}

/// The window a limit is counted over. Every window is rolling: a unit used at time `t` counts
/// against the limit until `t + window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// 60 seconds.
    Minute,
    /// 86,400 seconds.
    Day,
}

impl Window {
    /// Both windows, shortest first.
    pub const ALL: [Window; 2] = [Window::Minute, Window::Day];

    /// The window's length.
    pub const fn length(self) -> Duration {
        match self {
            Window::Minute => Duration::from_secs(60),
            Window::Day => Duration::from_secs(86_400),
        }
    }

    /// `"minute"` or `"day"`, as stats name it.
    pub const fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Day => "day",
        }
    }
}

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantity {
    /// Requests.
    Requests,
    /// Prompt plus completion tokens.
    Tokens,
    /// Prompt tokens only.
    InputTokens,
    /// Completion tokens only.
    OutputTokens,
}

/// One limited (quantity, window) pair, named as Groq names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// RPM.
    RequestsPerMinute,
    /// TPM.
    TokensPerMinute,
    /// RPD.
    RequestsPerDay,
    /// TPD.
    TokensPerDay,
    /// ITPM.
    InputTokensPerMinute,
    /// OTPM.
    OutputTokensPerMinute,
}

impl LimitKind {
    /// Every kind, in the order they are checked.
    pub const ALL: [LimitKind; 6] = [
        LimitKind::RequestsPerMinute,
        LimitKind::TokensPerMinute,
        LimitKind::InputTokensPerMinute,
        LimitKind::OutputTokensPerMinute,
        LimitKind::RequestsPerDay,
        LimitKind::TokensPerDay,
    ];

    /// The window this kind is counted over.
    pub const fn window(self) -> Window {
        match self {
            LimitKind::RequestsPerDay | LimitKind::TokensPerDay => Window::Day,
            _ => Window::Minute,
        }
    }

    /// What this kind counts.
    pub const fn quantity(self) -> Quantity {
        match self {
            LimitKind::RequestsPerMinute | LimitKind::RequestsPerDay => Quantity::Requests,
            LimitKind::TokensPerMinute | LimitKind::TokensPerDay => Quantity::Tokens,
            LimitKind::InputTokensPerMinute => Quantity::InputTokens,
            LimitKind::OutputTokensPerMinute => Quantity::OutputTokens,
        }
    }

    /// The name used in Groq's messages, e.g. `tokens per minute (TPM)`.
    pub const fn groq_name(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests per minute (RPM)",
            LimitKind::TokensPerMinute => "tokens per minute (TPM)",
            LimitKind::RequestsPerDay => "requests per day (RPD)",
            LimitKind::TokensPerDay => "tokens per day (TPD)",
            LimitKind::InputTokensPerMinute => "input tokens per minute (ITPM)",
            LimitKind::OutputTokensPerMinute => "output tokens per minute (OTPM)",
        }
    }

    /// The error `type` Groq gives when this limit trips: `requests` or `tokens`.
    pub const fn error_type(self) -> &'static str {
        match self.quantity() {
            Quantity::Requests => "requests",
            _ => "tokens",
        }
    }
}

/// Which provider's rate-limit headers and error bodies a mock speaks: the one definition the
/// proxy reads by too, so a config names a dialect the same way for both.
pub use spillway_plumbing::Dialect;

/// Latency added to responses. All durations are clock time, so they shrink with the time scale
/// like everything else the mock does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Fixed delay before the response headers.
    #[serde(default, with = "humantime_serde")]
    pub latency: Option<Duration>,
    /// Extra delay, uniformly between zero and this, before the response headers.
    #[serde(default, with = "humantime_serde")]
    pub jitter: Option<Duration>,
    /// For streams: delay between the headers and the first content chunk.
    #[serde(default, with = "humantime_serde")]
    pub time_to_first_token: Option<Duration>,
    /// For streams: pace of content chunks after the first one (tokens per second).
    #[serde(default)]
    pub tokens_per_second: Option<f64>,
}

/// A failure the mock can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (500, 502, 503 or 529) and the dialect's body for it; 503 is
    /// Groq's over-capacity answer, and becomes Anthropic's 529 `overloaded_error`.
    Status(u16),
    /// Reset the connection before any response byte.
    Reset,
    /// Stream: send this many content chunks, then a chunk whose `x_groq.error` says why, and
    /// end the body without `[DONE]`. Non-streaming: send part of the body and cut it.
    CutStream {
        /// Content chunks delivered before the cut.
        after_chunks: u32,
    },
    /// Stream: send this many content chunks, then nothing more, without ending the body, until
    /// the client goes away or the mock shuts down (then the body breaks). Non-streaming: send
    /// the headers and half the body, then stall likewise.
    StallStream {
        /// Content chunks delivered before the stall.
        after_chunks: u32,
    },
    /// Status 200 with a body that is not valid JSON (for streams: a chunk that is not JSON).
    InvalidJson,
    /// Never send the response headers (until the client gives up or the mock shuts down).
    Hang,
}

impl Fault {
    /// A short name for logs and the journal.
    pub fn label(&self) -> String {
        match self {
            Fault::Status(s) => format!("status_{s}"),
            Fault::Reset => "reset".into(),
            Fault::CutStream { .. } => "cut_stream".into(),
            Fault::StallStream { .. } => "stall_stream".into(),
            Fault::InvalidJson => "invalid_json".into(),
            Fault::Hang => "hang".into(),
        }
    }

    /// True for faults decided before the rate limiter (the request is not counted).
    pub fn precedes_admission(&self) -> bool {
        matches!(self, Fault::Status(_) | Fault::Reset | Fault::Hang)
    }
}

/// When a fault rule fires.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// Each matching request independently, with this probability (deterministic per seed).
    Probability(f64),
    /// Matching requests number `from` to `to`, inclusive, counting from 1 (per model when the
    /// rule names a model, over all chat and embedding requests otherwise).
    Requests {
        /// First request number hit.
        from: u64,
        /// Last request number hit.
        to: u64,
    },
}

/// One fault rule: which fault, when, and for which model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawFaultRule", into = "RawFaultRule")]
pub struct FaultRule {
    /// What goes wrong.
    pub fault: Fault,
    /// When it goes wrong.
    pub trigger: Trigger,
    /// Only requests for this model (all models when `None`).
    pub model: Option<String>,
}

/// The file form of a [`FaultRule`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaultRule {
    fault: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after_chunks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requests: Option<[u64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
}

impl TryFrom<RawFaultRule> for FaultRule {
    type Error = String;

    fn try_from(raw: RawFaultRule) -> Result<Self, Self::Error> {
        let fault = match raw.fault.as_str() {
            "status" => {
                let status = raw.status.ok_or(
                    "fault \"status\" needs `status` (one of 500, 502, 503, 529)".to_string(),
                )?;
                if !matches!(status, 500 | 502 | 503 | 529) {
                    return Err(format!(
                        "`status` must be one of 500, 502, 503, 529 (got {status})"
                    ));
                }
                Fault::Status(status)
            }
            "reset" => Fault::Reset,
            "cut_stream" => Fault::CutStream {
                after_chunks: raw.after_chunks.unwrap_or(3),
            },
            "stall_stream" => Fault::StallStream {
                after_chunks: raw.after_chunks.unwrap_or(3),
            },
            "invalid_json" => Fault::InvalidJson,
            "hang" => Fault::Hang,
            other => {
                return Err(format!(
                    "unknown fault {other:?}: expected one of status, reset, cut_stream, stall_stream, invalid_json, hang"
                ));
            }
        };
        if raw.status.is_some() && !matches!(fault, Fault::Status(_)) {
            return Err("`status` only applies to fault = \"status\"".into());
        }
        if raw.after_chunks.is_some()
            && !matches!(fault, Fault::CutStream { .. } | Fault::StallStream { .. })
        {
            return Err(
                "`after_chunks` only applies to fault = \"cut_stream\" or \"stall_stream\"".into(),
            );
        }
        let trigger = match (raw.probability, raw.requests) {
            (Some(p), None) => {
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("`probability` must be between 0 and 1 (got {p})"));
                }
                Trigger::Probability(p)
            }
            (None, Some([from, to])) => {
                if from == 0 || to < from {
                    return Err(format!(
                        "`requests` must be [first, last] with 1 <= first <= last (got [{from}, {to}])"
                    ));
                }
                Trigger::Requests { from, to }
            }
            (None, None) => {
                return Err(
                    "a fault rule needs `probability = 0.1` or `requests = [10, 20]`".into(),
                );
            }
            (Some(_), Some(_)) => {
                return Err("a fault rule takes `probability` or `requests`, not both".into());
            }
        };
        Ok(FaultRule {
            fault,
            trigger,
            model: raw.model,
        })
    }
}

impl From<FaultRule> for RawFaultRule {
    fn from(rule: FaultRule) -> Self {
        let mut raw = RawFaultRule {
            model: rule.model,
            ..RawFaultRule::default()
        };
        raw.fault = match rule.fault {
            Fault::Status(s) => {
                raw.status = Some(s);
                "status".into()
            }
            Fault::Reset => "reset".into(),
            Fault::CutStream { after_chunks } => {
                raw.after_chunks = Some(after_chunks);
                "cut_stream".into()
            }
            Fault::StallStream { after_chunks } => {
                raw.after_chunks = Some(after_chunks);
                "stall_stream".into()
            }
            Fault::InvalidJson => "invalid_json".into(),
            Fault::Hang => "hang".into(),
        };
        match rule.trigger {
            Trigger::Probability(p) => raw.probability = Some(p),
            Trigger::Requests { from, to } => raw.requests = Some([from, to]),
        }
        raw
    }
}

/// Faults and latency: globally, per model, and as rules. Replaceable at run time through
/// `PUT /_mock/faults` or [`crate::MockProvider::set_faults`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Fixed delay before the response headers, for every model without its own entry in
    /// `models`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub latency: Option<Duration>,
    /// Extra delay, uniformly between zero and this (see [`Latency::jitter`]).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
    /// Streams: delay before the first content chunk (see [`Latency::time_to_first_token`]).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_to_first_token: Option<Duration>,
    /// Streams: content chunk pace (see [`Latency::tokens_per_second`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Per-model latency, replacing the global one for that model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, Latency>,
    /// Fault rules, checked in order; the first that fires applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<FaultRule>,
    /// Seed for probability rules and jitter, so a run can be repeated exactly.
    #[serde(default)]
    pub seed: u64,
}

impl Faults {
    /// No latency, no faults.
    pub fn none() -> Self {
        Faults::default()
    }

    /// The latency that applies to every model without its own entry.
    pub fn global_latency(&self) -> Latency {
        Latency {
            latency: self.latency,
            jitter: self.jitter,
            time_to_first_token: self.time_to_first_token,
            tokens_per_second: self.tokens_per_second,
        }
    }

    /// The latency that applies to a model.
    pub fn latency_for(&self, model: &str) -> Latency {
        self.models
            .get(model)
            .copied()
            .unwrap_or_else(|| self.global_latency())
    }

    /// These faults plus one rule.
    pub fn with_rule(mut self, rule: FaultRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Every request answered with `status` (e.g. an outage).
    pub fn always_status(status: u16) -> Self {
        Faults::none().with_rule(FaultRule {
            fault: Fault::Status(status),
            trigger: Trigger::Probability(1.0),
            model: None,
        })
    }
}

/// Everything that decides how a mock behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct MockSpec {
    /// Accepted API keys. They double as the key's name in stats and the journal (masked by the
    /// HTTP control plane): mock keys are not secrets.
    pub keys: Vec<String>,
    /// Served model ids, in the order `GET models` lists them.
    pub models: Vec<String>,
    /// Limits per model (each key gets its own windows); a model not listed is unlimited.
    pub limits: BTreeMap<String, Limits>,
    /// Header and error dialect.
    pub dialect: Dialect,
    /// Organization id named in rate-limit messages.
    pub organization: String,
    /// Answer `"service_tier": "flex"` requests with 498 `capacity_exceeded`.
    pub flex_capacity_exceeded: bool,
    /// Largest request body read; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Journal entries kept (oldest dropped first); 0 keeps none.
    pub journal_capacity: usize,
    /// How long a client gets to send a request's headers (an idle keep-alive connection is
    /// closed after it too), and then its body (else 408). Wall-clock time, not the mock's
    /// clock: it protects the process, not the simulation.
    pub read_timeout: Duration,
    /// When set, every `/_mock/*` request must send `Authorization: Bearer TOKEN`; when not,
    /// the control plane is open.
    pub admin_token: Option<AdminToken>,
    /// Faults and latency at start-up.
    pub faults: Faults,
}

impl Default for MockSpec {
    /// One key `mock-key`, Groq's production models, no limits, Groq's dialect, no faults.
    fn default() -> Self {
        MockSpec {
            keys: vec![DEFAULT_KEY.to_string()],
            models: GROQ_PRODUCTION_MODELS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            limits: BTreeMap::new(),
            dialect: Dialect::Groq,
            organization: DEFAULT_ORGANIZATION.to_string(),
            flex_capacity_exceeded: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            journal_capacity: DEFAULT_JOURNAL_CAPACITY,
            read_timeout: DEFAULT_READ_TIMEOUT,
            admin_token: None,
            faults: Faults::none(),
        }
    }
}

impl MockSpec {
    /// The limits a model runs under (unlimited when none are set).
    pub fn limits_for(&self, model: &str) -> Limits {
        self.limits.get(model).copied().unwrap_or_default()
    }

    /// Checks the spec for contradictions; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.keys.is_empty() {
            return Err("keys: at least one key is needed".into());
        }
        if let Some(k) = self.keys.iter().find(|k| k.trim().is_empty()) {
            return Err(format!("keys: empty key {k:?}"));
        }
        if self.models.is_empty() {
            return Err("models: at least one model is needed".into());
        }
        for (model, limits) in &self.limits {
            if !self.models.contains(model) {
                return Err(format!(
                    "limits.\"{model}\": the model is not served (add it to `models`)"
                ));
            }
            for kind in LimitKind::ALL {
                if limits.get(kind) == Some(0) {
                    return Err(format!(
                        "limits.\"{model}\": {} must be at least 1 (leave it out for no limit)",
                        kind.groq_name()
                    ));
                }
            }
        }
        for (i, rule) in self.faults.rules.iter().enumerate() {
            if let Some(m) = &rule.model
                && !self.models.contains(m)
            {
                return Err(format!(
                    "faults.rules[{i}].model: \"{m}\" is not a served model"
                ));
            }
        }
        for (model, latency) in &self.faults.models {
            if !self.models.contains(model) {
                return Err(format!(
                    "faults.models.\"{model}\": the model is not served"
                ));
            }
            check_latency(latency).map_err(|e| format!("faults.models.\"{model}\".{e}"))?;
        }
        check_latency(&self.faults.global_latency()).map_err(|e| format!("faults.{e}"))?;
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes must be at least 1".into());
        }
        if self.read_timeout.is_zero() {
            return Err("read_timeout must be longer than zero".into());
        }
        if self.admin_token.as_ref().is_some_and(AdminToken::is_empty) {
            return Err("admin_token: the token is empty".into());
        }
        Ok(())
    }
}

fn check_latency(latency: &Latency) -> Result<(), String> {
    if let Some(tps) = latency.tokens_per_second
        && !(tps.is_finite() && tps > 0.0)
    {
        return Err(format!(
            "tokens_per_second must be a number greater than 0 (got {tps})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rules_read_from_toml_and_name_what_is_wrong() {
        let ok: Faults = toml::from_str(
            r#"
            latency = "20ms"
            [[rules]]
            fault = "status"
            status = 503
            requests = [10, 20]
            "#,
        )
        .expect("valid faults");
        assert_eq!(ok.latency, Some(Duration::from_millis(20)));
        assert_eq!(ok.rules[0].trigger, Trigger::Requests { from: 10, to: 20 });

        let bad = toml::from_str::<Faults>(
            r#"
            [[rules]]
            fault = "status"
            status = 404
            probability = 0.5
            "#,
        )
        .expect_err("404 is not a fault status");
        assert!(bad.to_string().contains("`status` must be one of"), "{bad}");

        let neither = toml::from_str::<Faults>("[[rules]]\nfault = \"reset\"\n")
            .expect_err("a rule needs a trigger");
        assert!(neither.to_string().contains("probability"), "{neither}");
    }

    #[test]
    fn stall_stream_reads_from_toml_with_three_chunks_by_default() {
        let faults: Faults = toml::from_str(
            r#"
            [[rules]]
            fault = "stall_stream"
            probability = 1.0
            [[rules]]
            fault = "stall_stream"
            after_chunks = 7
            requests = [1, 2]
            "#,
        )
        .expect("valid faults");
        assert_eq!(
            faults.rules[0].fault,
            Fault::StallStream { after_chunks: 3 }
        );
        assert_eq!(
            faults.rules[1].fault,
            Fault::StallStream { after_chunks: 7 }
        );
        assert_eq!(faults.rules[0].fault.label(), "stall_stream");
        assert!(!faults.rules[0].fault.precedes_admission(), "it is counted");
        let err = toml::from_str::<Faults>(
            "[[rules]]\nfault = \"hang\"\nafter_chunks = 2\nprobability = 1.0\n",
        )
        .expect_err("after_chunks does not apply to hang");
        assert!(err.to_string().contains("stall_stream"), "{err}");
    }

    #[test]
    fn fault_rules_round_trip_through_json() {
        let faults = Faults::none()
            .with_rule(FaultRule {
                fault: Fault::CutStream { after_chunks: 4 },
                trigger: Trigger::Probability(0.25),
                model: Some("m".into()),
            })
            .with_rule(FaultRule {
                fault: Fault::StallStream { after_chunks: 0 },
                trigger: Trigger::Requests { from: 2, to: 3 },
                model: None,
            });
        let json = serde_json::to_string(&faults).expect("serializes");
        let back: Faults = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, faults);
    }

    #[test]
    fn a_zero_limit_is_refused_with_its_name() {
        let mut spec = MockSpec::default();
        spec.limits
            .insert("llama-3.1-8b-instant".into(), Limits::rpm(0));
        let err = spec.validate().expect_err("zero limit");
        assert!(err.contains("requests per minute"), "{err}");
    }
}
