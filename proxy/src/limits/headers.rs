//! Every provider's rate-limit headers, read in one place into a [`RateLimitSnapshot`].
//!
//! - Groq: `x-ratelimit-{limit,remaining,reset}-requests` report requests per **day**,
//!   `...-tokens` tokens per **minute**; resets are Go durations (`2m59.56s`).
//! - OpenAI: the same six names, both per minute.
//! - Cerebras: `x-ratelimit-{limit,remaining,reset}-requests-day` and `-tokens-minute`; resets in
//!   float seconds.
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
//!   remaining,reset}`, per minute, resets as RFC 3339 timestamps.
//! - Everyone: `retry-after-ms`, then `retry-after` (seconds, possibly fractional, or an HTTP
//!   date).
//!
//! Parsing takes "now" (real calendar time) as an argument and never reads a clock itself.
//! Durations are as the provider wrote them: wall-clock time, the rule for everything on the
//! wire; [`RateLimitSnapshot::on_clock`] turns them into the proxy's clock time.

use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;

use crate::limits::kind::Kind;

/// Which provider's headers a response carries: the one definition the mock writes by too.
pub use spillway_plumbing::Dialect;

/// One limit as a response reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Which limit.
    pub kind: Kind,
    /// Its value, if reported.
    pub limit: Option<u64>,
    /// What is left, if reported.
    pub remaining: Option<u64>,
    /// Clock time until it is whole again, if reported.
    pub reset: Option<Duration>,
}

/// Everything a response said about limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitSnapshot {
    /// One reading per reported limit.
    pub readings: Vec<Reading>,
    /// `retry-after-ms` or `retry-after`, as a duration from now.
    pub retry_after: Option<Duration>,
}

impl RateLimitSnapshot {
    /// The snapshot with its durations (wall-clock time, as every duration on the wire is)
    /// taken as `clock`'s time: at a time scale of 60, a reset of 1 s is a minute of limits.
    pub fn on_clock(mut self, clock: &spillway_clock::Clock) -> Self {
        for r in &mut self.readings {
            r.reset = r.reset.map(|d| clock.from_wall(d));
        }
        self.retry_after = self.retry_after.map(|d| clock.from_wall(d));
        self
    }
}

/// A header's text, unless it was empty or unreadable.
fn text(t: Option<&str>) -> Option<&str> {
    t.filter(|t| !t.is_empty())
}

/// Reads a count: an integer, or a non-negative decimal (truncated).
fn number(text: Option<&str>) -> Option<u64> {
    let t = text?;
    t.parse::<u64>().ok().or_else(|| {
        t.parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Seconds as a duration; `None` for a value that is negative, not a number, or too large
/// for one (2^64 s and more: a provider's garbage must not panic the request).
fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// Parses a Go-style duration (`1m2.5s`, `850ms`, `6m0s`, `1h2m3s`, `1.5µs`) or a bare number of
/// seconds (`2`, `0.5`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs);
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (factor, len) = if rest.starts_with("ms") {
            (1e-3, 2)
        } else if rest.starts_with("µs") {
            (1e-6, "µs".len())
        } else if rest.starts_with("us") {
            (1e-6, 2)
        } else if rest.starts_with("ns") {
            (1e-9, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * factor;
        rest = &rest[len..];
    }
    seconds(total)
}

/// Writes a duration as Go (and Groq's reset headers) spell it: `850ms`, `7.66s`, `2m59.56s`,
/// `6m0s`, `1h2m3s`; rounded up to the millisecond below a second, to the hundredth above.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let ms = d.as_micros().div_ceil(1000);
        if ms < 1000 {
            return format!("{ms}ms");
        }
    }
    let centis = d.as_micros().div_ceil(10_000);
    let (hours, rest) = (centis / 360_000, centis % 360_000);
    let (minutes, rest) = (rest / 6_000, rest % 6_000);
    let (secs, frac) = (rest / 100, rest % 100);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    match frac {
        0 => out.push_str(&format!("{secs}s")),
        f if f % 10 == 0 => out.push_str(&format!("{secs}.{}s", f / 10)),
        f => out.push_str(&format!("{secs}.{f:02}s")),
    }
    out
}

/// `retry-after-ms` first, then `retry-after` (seconds, fractional allowed, or an HTTP date),
/// as a duration from `now_unix` (calendar time since the epoch).
fn retry_after(ms: Option<&str>, value: Option<&str>, now_unix: Duration) -> Option<Duration> {
    if let Some(ms) = ms.and_then(|t| t.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return seconds(ms / 1000.0);
    }
    let value = value?;
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at = at.duration_since(UNIX_EPOCH).ok()?;
    Some(at.saturating_sub(now_unix))
}

/// One limit's three headers (limit, remaining, reset) and what it measures.
type Family = (Kind, [&'static str; 3]);

const OPENAI_REQUESTS: [&str; 3] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const OPENAI_TOKENS: [&str; 3] = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];
const GROQ: &[Family] = &[
    (Kind::RequestsPerDay, OPENAI_REQUESTS),
    (Kind::TokensPerMinute, OPENAI_TOKENS),
];
const OPENAI: &[Family] = &[
    (Kind::RequestsPerMinute, OPENAI_REQUESTS),
    (Kind::TokensPerMinute, OPENAI_TOKENS),
];
const CEREBRAS: &[Family] = &[
    (
        Kind::RequestsPerDay,
        [
            "x-ratelimit-limit-requests-day",
            "x-ratelimit-remaining-requests-day",
            "x-ratelimit-reset-requests-day",
        ],
    ),
    (
        Kind::TokensPerMinute,
        [
            "x-ratelimit-limit-tokens-minute",
            "x-ratelimit-remaining-tokens-minute",
            "x-ratelimit-reset-tokens-minute",
        ],
    ),
];
const ANTHROPIC: &[Family] = &[
    (
        Kind::RequestsPerMinute,
        [
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ],
    ),
    (
        Kind::TokensPerMinute,
        [
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ],
    ),
    (
        Kind::InputTokensPerMinute,
        [
            "anthropic-ratelimit-input-tokens-limit",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ],
    ),
    (
        Kind::OutputTokensPerMinute,
        [
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ],
    ),
];

/// The limits `dialect` reports, in the order their readings are listed.
const fn families(dialect: Dialect) -> &'static [Family] {
    match dialect {
        Dialect::Groq => GROQ,
        Dialect::OpenAi => OPENAI,
        Dialect::Cerebras => CEREBRAS,
        Dialect::Anthropic => ANTHROPIC,
    }
}

/// The most limits a dialect reports.
const MAX_FAMILIES: usize = 4;

/// Reads a response's rate-limit headers in `dialect`; `now_unix` is calendar time on the
/// proxy's clock (for Anthropic's timestamps and HTTP dates).
///
/// One pass over the response's headers picks out the ones the dialect names (the first value
/// of a repeated header counts), instead of a lookup per name, each of which would parse and
/// hash the name again.
pub fn parse(dialect: Dialect, headers: &HeaderMap, now_unix: Duration) -> RateLimitSnapshot {
    let families = families(dialect);
    let mut found = [[None::<&str>; 3]; MAX_FAMILIES];
    let (mut retry_ms, mut retry) = (None, None);
    for (name, value) in headers {
        let name = name.as_str();
        let slot = if name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-") {
            families
                .iter()
                .enumerate()
                .find_map(|(f, (_, names))| Some((f, names.iter().position(|n| *n == name)?)))
                .map(|(f, i)| &mut found[f][i])
        } else if name == "retry-after-ms" {
            Some(&mut retry_ms)
        } else if name == "retry-after" {
            Some(&mut retry)
        } else {
            None
        };
        if let Some(slot) = slot
            && slot.is_none()
        {
            *slot = Some(value.to_str().map(str::trim).unwrap_or(""));
        }
    }
    let reset = |t: &str| match dialect {
        Dialect::Groq | Dialect::OpenAi => parse_go_duration(t),
        Dialect::Cerebras => t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .and_then(seconds),
        Dialect::Anthropic => {
            let at = humantime::parse_rfc3339_weak(t).ok()?;
            Some(at.duration_since(UNIX_EPOCH).ok()?.saturating_sub(now_unix))
        }
    };
    let readings = families
        .iter()
        .zip(found)
        .filter_map(|((kind, _), [limit, remaining, reset_at])| {
            let r = Reading {
                kind: *kind,
                limit: number(text(limit)),
                remaining: number(text(remaining)),
                reset: text(reset_at).and_then(reset),
            };
            (r.limit.is_some() || r.remaining.is_some() || r.reset.is_some()).then_some(r)
        })
        .collect();
    RateLimitSnapshot {
        readings,
        retry_after: retry_after(text(retry_ms), text(retry), now_unix),
    }
}

/// When a rate-limit message says to try again ("Please try again in 2.5s."), as a duration
/// (wall-clock time, as the message was written). More precise than `retry-after`, which is
/// whole seconds.
pub fn parse_try_again(message: &str) -> Option<Duration> {
    let after = &message[message.find("try again in ")? + "try again in ".len()..];
    let end = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == 'µ'))
        .unwrap_or(after.len());
    // "2.5s." ends with the sentence's full stop.
    parse_go_duration(after[..end].trim_end_matches('.'))
}

/// The limit a 429 (or 413) message names, as Groq and OpenAI word it: `... on requests per
/// minute (RPM): Limit 30, Used 30, Requested 1 ...`. The only way to learn limits no header
/// reports (Groq's requests per minute and tokens per day).
pub fn parse_limit_message(message: &str) -> Option<(Kind, u64)> {
    let kinds = [
        ("(RPM)", Kind::RequestsPerMinute),
        ("(TPM)", Kind::TokensPerMinute),
        ("(RPD)", Kind::RequestsPerDay),
        ("(TPD)", Kind::TokensPerDay),
        ("(ITPM)", Kind::InputTokensPerMinute),
        ("(OTPM)", Kind::OutputTokensPerMinute),
    ];
    let (kind, after) = kinds.iter().find_map(|(tag, kind)| {
        message
            .find(tag)
            .map(|at| (*kind, &message[at + tag.len()..]))
    })?;
    let after = after.trim_start_matches(':').trim_start();
    let digits = after.strip_prefix("Limit ")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    let limit = digits[..end].parse().ok()?;
    Some((kind, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("valid header"));
        }
        h
    }

    #[test]
    fn go_durations_in_every_spelling() {
        let d = |s| parse_go_duration(s).expect(s);
        assert_eq!(d("1m2.5s"), Duration::from_millis(62_500));
        assert_eq!(d("850ms"), Duration::from_millis(850));
        assert_eq!(d("6m0s"), Duration::from_secs(360));
        assert_eq!(d("2m59.56s"), Duration::from_millis(179_560));
        assert_eq!(d("1h2m3s"), Duration::from_secs(3723));
        assert_eq!(d("2"), Duration::from_secs(2));
        assert_eq!(d("0.5"), Duration::from_millis(500));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn groq_requests_are_per_day_and_tokens_per_minute() {
        let snap = parse(
            Dialect::Groq,
            &headers(&[
                ("x-ratelimit-limit-requests", "14400"),
                ("x-ratelimit-remaining-requests", "14370"),
                ("x-ratelimit-reset-requests", "2m59.56s"),
                ("x-ratelimit-limit-tokens", "18000"),
                ("x-ratelimit-remaining-tokens", "17997"),
                ("x-ratelimit-reset-tokens", "7.66s"),
                ("retry-after", "2"),
            ]),
            Duration::ZERO,
        );
        assert_eq!(
            snap.readings,
            vec![
                Reading {
                    kind: Kind::RequestsPerDay,
                    limit: Some(14400),
                    remaining: Some(14370),
                    reset: Some(Duration::from_millis(179_560)),
                },
                Reading {
                    kind: Kind::TokensPerMinute,
                    limit: Some(18000),
                    remaining: Some(17997),
                    reset: Some(Duration::from_millis(7660)),
                },
            ]
        );
        assert_eq!(snap.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn openai_requests_are_per_minute() {
        let snap = parse(
            Dialect::OpenAi,
            &headers(&[
                ("x-ratelimit-limit-requests", "500"),
                ("x-ratelimit-reset-requests", "120ms"),
            ]),
            Duration::ZERO,
        );
        assert_eq!(snap.readings[0].kind, Kind::RequestsPerMinute);
        assert_eq!(snap.readings[0].reset, Some(Duration::from_millis(120)));
    }

    #[test]
    fn cerebras_resets_are_float_seconds() {
        let snap = parse(
            Dialect::Cerebras,
            &headers(&[
                ("x-ratelimit-limit-requests-day", "14400"),
                ("x-ratelimit-reset-requests-day", "33011.382867097855"),
                ("x-ratelimit-remaining-tokens-minute", "59000"),
            ]),
            Duration::ZERO,
        );
        assert_eq!(snap.readings[0].kind, Kind::RequestsPerDay);
        let reset = snap.readings[0].reset.expect("reset");
        assert!((reset.as_secs_f64() - 33011.382867).abs() < 1e-3);
        assert_eq!(snap.readings[1].remaining, Some(59000));
    }

    /// Mistral's answers name their tokens-per-minute headers as Cerebras does, so its example
    /// config reads them in the `cerebras` dialect; its per-minute request headers (`-req-`)
    /// and its per-request cost header are not read, and must not be misread as another limit.
    #[test]
    fn mistral_tokens_per_minute_read_in_the_cerebras_dialect() {
        let snap = parse(
            Dialect::Cerebras,
            &headers(&[
                ("x-ratelimit-limit-tokens-minute", "5000000"),
                ("x-ratelimit-remaining-tokens-minute", "4999911"),
                ("x-ratelimit-tokens-query-cost", "52"),
                ("x-ratelimit-limit-req-minute", "720"),
                ("x-ratelimit-remaining-req-minute", "717"),
            ]),
            Duration::ZERO,
        );
        assert_eq!(
            snap.readings,
            vec![Reading {
                kind: Kind::TokensPerMinute,
                limit: Some(5_000_000),
                remaining: Some(4_999_911),
                reset: None,
            }]
        );
    }

    #[test]
    fn anthropic_resets_are_timestamps_relative_to_now() {
        let now = humantime::parse_rfc3339("2025-02-24T22:25:00Z")
            .expect("ts")
            .duration_since(UNIX_EPOCH)
            .expect("after epoch");
        let snap = parse(
            Dialect::Anthropic,
            &headers(&[
                ("anthropic-ratelimit-requests-limit", "50"),
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "2025-02-24T22:25:32Z"),
                ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ]),
            now,
        );
        assert_eq!(snap.readings[0].reset, Some(Duration::from_secs(32)));
        assert_eq!(snap.readings[1].kind, Kind::OutputTokensPerMinute);
    }

    #[test]
    fn the_first_value_of_a_repeated_header_counts_and_unreadable_ones_do_not() {
        let mut h = headers(&[("content-type", "application/json")]);
        h.append(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("10"),
        );
        h.append(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("99"),
        );
        h.append(
            "x-ratelimit-limit-tokens",
            HeaderValue::from_bytes(b"\xff").expect("opaque bytes are a valid value"),
        );
        h.append("retry-after", HeaderValue::from_static(" 3 "));
        let snap = parse(Dialect::OpenAi, &h, Duration::ZERO);
        assert_eq!(
            snap.readings,
            vec![Reading {
                kind: Kind::TokensPerMinute,
                limit: None,
                remaining: Some(10),
                reset: None,
            }]
        );
        assert_eq!(snap.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(
            parse(Dialect::Groq, &headers(&[("x-other", "1")]), Duration::ZERO),
            RateLimitSnapshot::default()
        );
    }

    #[test]
    fn retry_after_in_every_form() {
        let now = Duration::from_secs(1_700_000_000);
        let ra =
            |pairs: &[(&'static str, &str)]| parse(Dialect::Groq, &headers(pairs), now).retry_after;
        assert_eq!(ra(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            ra(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            ra(&[("retry-after-ms", "250"), ("retry-after", "9")]),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(UNIX_EPOCH + now + Duration::from_secs(30));
        assert_eq!(ra(&[("retry-after", &date)]), Some(Duration::from_secs(30)));
        assert_eq!(ra(&[("retry-after", "later")]), None);
    }

    #[test]
    fn limit_messages_reveal_unreported_limits() {
        let m = "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_1` service tier `on_demand` on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2s.";
        assert_eq!(parse_limit_message(m), Some((Kind::RequestsPerMinute, 30)));
        let m = "Request too large for model `m` in organization `o` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Requested 7000, please reduce";
        assert_eq!(parse_limit_message(m), Some((Kind::TokensPerMinute, 6000)));
        assert_eq!(parse_limit_message("Rate limit reached"), None);
    }

    #[test]
    fn durations_are_written_as_go_spells_them_and_read_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_micros(12_001), "13ms"),
            (Duration::from_millis(7_660), "7.66s"),
            (Duration::from_millis(179_560), "2m59.56s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_millis(1_500), "1.5s"),
        ] {
            assert_eq!(format_go_duration(d), text);
            assert!(parse_go_duration(text).expect(text) >= d);
        }
    }

    #[test]
    fn a_limit_message_says_when_to_try_again_to_the_millisecond() {
        let m = "... on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2.34s. Need more requests?";
        assert_eq!(parse_try_again(m), Some(Duration::from_millis(2340)));
        assert_eq!(
            parse_try_again("Please try again in 34ms."),
            Some(Duration::from_millis(34))
        );
        assert_eq!(
            parse_try_again("Please try again in 1m2s"),
            Some(Duration::from_secs(62))
        );
        assert_eq!(parse_try_again("Please try again later."), None);
    }
}
