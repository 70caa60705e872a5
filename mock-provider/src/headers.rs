//! Rate-limit response headers in each provider's dialect, and the duration spellings they use.
//!
//! Groq, per its rate-limits documentation (<https://console.groq.com/docs/rate-limits>, section
//! "Rate Limit Headers"): every response carries `x-ratelimit-limit-requests`,
//! `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests`, which always refer to
//! requests per day (RPD), and `x-ratelimit-limit-tokens`, `x-ratelimit-remaining-tokens` and
//! `x-ratelimit-reset-tokens`, which always refer to tokens per minute (TPM); `retry-after` (in
//! seconds) is set only when a limit was hit. The documented example values are `14400`,
//! `18000`, `14370`, `17997`, `2m59.56s` and `7.66s`: resets are Go duration strings, written by
//! [`go_duration`]. A window the mock is not given is not reported (as Groq does not report
//! requests per minute at all).

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use spillway_clock::Clock;

use crate::limiter::{Gauge, Snapshot};
use crate::spec::{Dialect, LimitKind};

/// Writes a duration the way Go's `time.Duration` prints it, as Groq's reset headers and
/// messages do: `850ms`, `7.66s`, `2m59.56s`, `6m0s`, `1h2m3s`. Values of a second or more are
/// rounded up to the hundredth of a second, shorter ones up to the millisecond, so a client that
/// waits exactly what it is told is never early.
pub fn go_duration(d: Duration) -> String {
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
    if frac == 0 {
        out.push_str(&format!("{secs}s"));
    } else if frac % 10 == 0 {
        out.push_str(&format!("{secs}.{}s", frac / 10));
    } else {
        out.push_str(&format!("{secs}.{frac:02}s"));
    }
    out
}

/// `retry-after` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_micros().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

fn put(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Adds the dialect's rate-limit headers for `snapshot` (clock time now: `clock.now()`).
pub fn write_rate_limit_headers(
    headers: &mut HeaderMap,
    dialect: Dialect,
    snapshot: &Snapshot,
    clock: &Clock,
) {
    // Durations on the wire are wall-clock time: a client outside the simulation waits in
    // its own time.
    let gauge = |kind| {
        snapshot.get(kind).map(|g| Gauge {
            reset: clock.to_wall(g.reset),
            ..g
        })
    };
    match dialect {
        Dialect::Groq => {
            openai_style(headers, gauge(LimitKind::RequestsPerDay), REQUESTS);
            openai_style(headers, gauge(LimitKind::TokensPerMinute), TOKENS);
        }
        Dialect::OpenAi => {
            openai_style(headers, gauge(LimitKind::RequestsPerMinute), REQUESTS);
            openai_style(headers, gauge(LimitKind::TokensPerMinute), TOKENS);
        }
        Dialect::Cerebras => {
            cerebras_style(headers, gauge(LimitKind::RequestsPerDay), REQUESTS_DAY);
            cerebras_style(headers, gauge(LimitKind::TokensPerMinute), TOKENS_MINUTE);
        }
        Dialect::Anthropic => {
            let now = clock.wall_unix_now();
            for (kind, names, rounded) in [
                (LimitKind::RequestsPerMinute, ANTHROPIC_REQUESTS, false),
                (LimitKind::TokensPerMinute, ANTHROPIC_TOKENS, true),
                (LimitKind::InputTokensPerMinute, ANTHROPIC_INPUT, true),
                (LimitKind::OutputTokensPerMinute, ANTHROPIC_OUTPUT, true),
            ] {
                if let Some(g) = gauge(kind) {
                    anthropic_style(headers, g, names, rounded, now);
                }
            }
        }
    }
}

/// Header names for one limit: (limit, remaining, reset).
type Names = [&'static str; 3];

const REQUESTS: Names = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
];
const TOKENS: Names = [
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];
const REQUESTS_DAY: Names = [
    "x-ratelimit-limit-requests-day",
    "x-ratelimit-remaining-requests-day",
    "x-ratelimit-reset-requests-day",
];
const TOKENS_MINUTE: Names = [
    "x-ratelimit-limit-tokens-minute",
    "x-ratelimit-remaining-tokens-minute",
    "x-ratelimit-reset-tokens-minute",
];
const ANTHROPIC_REQUESTS: Names = [
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
];
const ANTHROPIC_TOKENS: Names = [
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
];
const ANTHROPIC_INPUT: Names = [
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
];
const ANTHROPIC_OUTPUT: Names = [
    "anthropic-ratelimit-output-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
];

fn openai_style(headers: &mut HeaderMap, gauge: Option<Gauge>, names: Names) {
    if let Some(g) = gauge {
        put(headers, names[0], g.limit.to_string());
        put(headers, names[1], g.remaining.to_string());
        put(headers, names[2], go_duration(g.reset));
    }
}

fn cerebras_style(headers: &mut HeaderMap, gauge: Option<Gauge>, names: Names) {
    if let Some(g) = gauge {
        put(headers, names[0], g.limit.to_string());
        put(headers, names[1], g.remaining.to_string());
        put(headers, names[2], format!("{}", g.reset.as_secs_f64()));
    }
}

fn anthropic_style(headers: &mut HeaderMap, g: Gauge, names: Names, round: bool, now: Duration) {
    // Anthropic rounds token figures to the nearest thousand.
    let remaining = if round {
        (g.remaining + 500) / 1000 * 1000
    } else {
        g.remaining
    };
    // Reset is the moment the limit is whole again, rounded up to the second.
    let at = Duration::from_secs((now + g.reset).as_micros().div_ceil(1_000_000) as u64);
    put(headers, names[0], g.limit.to_string());
    put(headers, names[1], remaining.min(g.limit).to_string());
    put(
        headers,
        names[2],
        humantime::format_rfc3339_seconds(UNIX_EPOCH + at).to_string(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_spelled_as_go_and_groq_spell_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(ms(850)), "850ms");
        assert_eq!(go_duration(ms(12)), "12ms");
        assert_eq!(go_duration(ms(7660)), "7.66s");
        assert_eq!(go_duration(ms(2100)), "2.1s");
        assert_eq!(go_duration(ms(179_560)), "2m59.56s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_723_000)), "1h2m3s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
    }

    #[test]
    fn durations_round_up_never_down() {
        assert_eq!(go_duration(Duration::from_micros(7_660_001)), "7.67s");
        assert_eq!(go_duration(Duration::from_micros(999_999)), "1s");
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(go_duration(Duration::from_micros(59_999_999)), "1m0s");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2000)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
