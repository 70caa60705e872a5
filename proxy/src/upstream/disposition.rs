//! What an upstream failure means for the request: try the next key, the next target, disable
//! the key, or give the answer to the client. Decided in one function, with a table test over
//! every status and error kind.

use http::{HeaderMap, StatusCode};
use serde_json::Value;

/// Why an attempt did not produce a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The provider answered with a non-success status.
    #[error("HTTP {status}")]
    Status {
        /// The status.
        status: StatusCode,
        /// Its headers.
        headers: HeaderMap,
        /// Its body (bounded).
        body: bytes::Bytes,
    },
    /// No connection could be made, or it broke before an answer.
    #[error("connection failed: {0}")]
    Connection(String),
    /// No answer (for streams: no first byte) within the provider's timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Status 200 with a body that is not what was asked for (invalid JSON, a cut stream).
    #[error("invalid answer: {0}")]
    InvalidBody(String),
}

/// What the router does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Rate-limited on this key: block it until its reset, try another key, then target.
    NextKey,
    /// This target cannot answer now: try the next target (and cool this one down when
    /// [`UpstreamError::is_outage`]).
    NextTarget,
    /// The request itself is the problem: the client gets the provider's answer unchanged.
    ReturnToClient,
    /// This key is unusable (revoked, out of credit): disable it and try the next key.
    DisableKey,
}

impl UpstreamError {
    /// The provider's error `code` (OpenAI/Groq shape) or `type` (Anthropic shape).
    pub fn error_code(&self) -> Option<String> {
        let UpstreamError::Status { body, .. } = self else {
            return None;
        };
        let v: Value = serde_json::from_slice(body).ok()?;
        let err = v.get("error")?;
        err.get("code")
            .and_then(Value::as_str)
            .or_else(|| err.get("type").and_then(Value::as_str))
            .map(str::to_string)
    }

    /// The provider's error message, if the body has one.
    pub fn error_message(&self) -> Option<String> {
        let UpstreamError::Status { body, .. } = self else {
            return None;
        };
        let v: Value = serde_json::from_slice(body).ok()?;
        v.get("error")?.get("message")?.as_str().map(str::to_string)
    }

    /// The status, when the provider answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            UpstreamError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for failures of the provider itself (5xx, 529, no connection, timeout, garbage):
    /// they cool the target down.
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => {
                status.is_server_error() || status.as_u16() == 529
            }
            _ => true,
        }
    }

    /// The decision table.
    pub fn disposition(&self) -> Disposition {
        let status = match self {
            UpstreamError::Status { status, .. } => status.as_u16(),
            UpstreamError::Connection(_)
            | UpstreamError::Timeout(_)
            | UpstreamError::InvalidBody(_) => return Disposition::NextTarget,
        };
        let code = self.error_code();
        match status {
            429 if code.as_deref() == Some("insufficient_quota") => Disposition::DisableKey,
            429 => Disposition::NextKey,
            401 | 403 => Disposition::DisableKey,
            // "Request too large" for this target's per-minute token limit: another target
            // (with a larger limit) may take it; waiting cannot help.
            413 if code.as_deref() == Some("rate_limit_exceeded")
                || self
                    .error_message()
                    .is_some_and(|m| m.starts_with("Request too large")) =>
            {
                Disposition::NextTarget
            }
            408 | 498 | 529 => Disposition::NextTarget,
            500..=599 => Disposition::NextTarget,
            _ => Disposition::ReturnToClient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn status(code: u16, body: &str) -> UpstreamError {
        UpstreamError::Status {
            status: StatusCode::from_u16(code).expect("valid status"),
            headers: HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn every_status_and_error_kind_has_its_disposition() {
        use Disposition::*;
        let rate = r#"{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}"#;
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let too_large = r#"{"error":{"message":"Request too large for model `m`","type":"tokens","code":"rate_limit_exceeded"}}"#;
        let body_too_large =
            r#"{"error":{"message":"Request Entity Too Large","type":"invalid_request_error"}}"#;
        let overloaded =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let table: Vec<(UpstreamError, Disposition, bool)> = vec![
            (status(429, rate), NextKey, false),
            (status(429, quota), DisableKey, false),
            (status(429, "not json"), NextKey, false),
            (status(401, "{}"), DisableKey, false),
            (status(403, "{}"), DisableKey, false),
            (status(413, too_large), NextTarget, false),
            (status(413, body_too_large), ReturnToClient, false),
            (status(400, "{}"), ReturnToClient, false),
            (status(404, "{}"), ReturnToClient, false),
            (status(422, "{}"), ReturnToClient, false),
            (status(408, "{}"), NextTarget, false),
            (status(498, "{}"), NextTarget, false),
            (status(500, "{}"), NextTarget, true),
            (status(502, "{}"), NextTarget, true),
            (status(503, "{}"), NextTarget, true),
            (status(504, "{}"), NextTarget, true),
            (status(529, overloaded), NextTarget, true),
            (UpstreamError::Connection("reset".into()), NextTarget, true),
            (
                UpstreamError::Timeout(Duration::from_secs(1)),
                NextTarget,
                true,
            ),
            (
                UpstreamError::InvalidBody("not json".into()),
                NextTarget,
                true,
            ),
        ];
        for (err, expected, outage) in table {
            assert_eq!(err.disposition(), expected, "{err:?}");
            assert_eq!(err.is_outage(), outage, "{err:?}");
        }
    }
}
