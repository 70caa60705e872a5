//! What a failed attempt means, read from the provider's answer: which limit a 429 named and
//! how long the key must wait, whether the key itself was refused, whether the target is
//! failing. The ledger applies the verdict; the router logs it.

use std::time::Duration;

use spillway_clock::{Clock, Instant};

use crate::limits::headers::{self, RateLimitSnapshot};
use crate::limits::ledger::{Failure, Verdict};
use crate::upstream::{Disposition, UpstreamError};

/// How long a key waits after a 429 that says nothing about when it frees.
const DEFAULT_WAIT: Duration = Duration::from_secs(1);

/// The failure of an attempt at `now`, with what its headers said.
pub fn failure(
    err: &UpstreamError,
    snapshot: RateLimitSnapshot,
    now: Instant,
    clock: &Clock,
) -> Failure {
    let verdict = match err.disposition() {
        Disposition::NextKey => rate_limited(err, &snapshot, now, clock),
        Disposition::DisableKey => Verdict::KeyRefused { why: refusal(err) },
        Disposition::NextTarget if err.is_outage() => Verdict::Outage {
            counted: matches!(err, UpstreamError::Timeout(_)),
        },
        Disposition::NextTarget => Verdict::Declined,
        Disposition::ReturnToClient => Verdict::RequestRefused,
    };
    Failure {
        snapshot,
        verdict,
        answered: matches!(err, UpstreamError::Status { .. }),
    }
}

/// A 429: the limit its message names, and the most precise of what the provider said about
/// when the key frees: the message's "try again in" (to the millisecond), the named limit's
/// reset, then `retry-after` (whole seconds: at a time scale of 60, a whole simulated minute).
fn rate_limited(
    err: &UpstreamError,
    snapshot: &RateLimitSnapshot,
    now: Instant,
    clock: &Clock,
) -> Verdict {
    let message = err.error_message();
    let learned = message.as_deref().and_then(headers::parse_limit_message);
    let kind = learned.map(|(k, _)| k);
    let wait = message
        .as_deref()
        .and_then(headers::parse_try_again)
        .map(|d| clock.from_wall(d))
        .or_else(|| {
            snapshot
                .readings
                .iter()
                .find(|r| Some(r.kind) == kind)
                .and_then(|r| r.reset)
        })
        .or(snapshot.retry_after)
        .unwrap_or(DEFAULT_WAIT);
    Verdict::RateLimited {
        until: now + wait,
        kind,
        learned,
    }
}

/// What a refusal of a key said: its status and the provider's code.
fn refusal(err: &UpstreamError) -> String {
    let status = err
        .status()
        .map(|s| s.as_u16().to_string())
        .unwrap_or_default();
    match err.error_code() {
        Some(code) => format!("{status} {code}"),
        None => status,
    }
}

/// The attempt's outcome as `/metrics` labels it.
pub fn outcome_label(err: &UpstreamError) -> String {
    match err {
        UpstreamError::Status { status, .. } => status.as_u16().to_string(),
        UpstreamError::Timeout(_) => "timeout".into(),
        UpstreamError::Connection(_) => "error".into(),
        UpstreamError::InvalidBody(_) => "invalid".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::kind::Kind;
    use http::{HeaderMap, StatusCode};

    fn status(code: u16, headers: &[(&str, &str)], body: &str) -> UpstreamError {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        UpstreamError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            headers: map,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    fn verdict_of(err: &UpstreamError) -> Failure {
        let clock = Clock::manual();
        let snapshot = match err {
            UpstreamError::Status { headers, .. } => headers::parse(
                crate::limits::headers::Dialect::Groq,
                headers,
                clock.wall_unix_now(),
            )
            .on_clock(&clock),
            _ => RateLimitSnapshot::default(),
        };
        failure(err, snapshot, Instant::ORIGIN, &clock)
    }

    #[test]
    fn a_429_waits_for_the_most_precise_time_the_provider_gave() {
        let message = r#"{"error":{"message":"Rate limit reached for model `m` in organization `o` on requests per minute (RPM): Limit 30, Used 30, Requested 1. Please try again in 2.5s.","type":"requests","code":"rate_limit_exceeded"}}"#;
        let f = verdict_of(&status(429, &[("retry-after", "3")], message));
        assert_eq!(
            f.verdict,
            Verdict::RateLimited {
                until: Instant::ORIGIN + Duration::from_millis(2500),
                kind: Some(Kind::RequestsPerMinute),
                learned: Some((Kind::RequestsPerMinute, 30)),
            }
        );
        assert!(f.answered);
        let plain = verdict_of(&status(429, &[("retry-after", "3")], "{}"));
        assert!(matches!(
            plain.verdict,
            Verdict::RateLimited { until, kind: None, learned: None }
                if until == Instant::ORIGIN + Duration::from_secs(3)
        ));
        let bare = verdict_of(&status(429, &[], "{}"));
        assert!(matches!(
            bare.verdict,
            Verdict::RateLimited { until, .. } if until == Instant::ORIGIN + DEFAULT_WAIT
        ));
    }

    #[test]
    fn refusals_outages_and_the_clients_own_errors_are_told_apart() {
        let quota = r#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(
            verdict_of(&status(429, &[], quota)).verdict,
            Verdict::KeyRefused {
                why: "429 insufficient_quota".into()
            }
        );
        assert_eq!(
            verdict_of(&status(401, &[], "{}")).verdict,
            Verdict::KeyRefused { why: "401".into() }
        );
        assert_eq!(
            verdict_of(&status(503, &[], "{}")).verdict,
            Verdict::Outage { counted: false }
        );
        let timeout = verdict_of(&UpstreamError::Timeout(Duration::from_secs(1)));
        assert_eq!(timeout.verdict, Verdict::Outage { counted: true });
        assert!(!timeout.answered);
        assert_eq!(
            verdict_of(&status(408, &[], "{}")).verdict,
            Verdict::Declined
        );
        assert_eq!(
            verdict_of(&status(400, &[], "{}")).verdict,
            Verdict::RequestRefused
        );
    }
}
