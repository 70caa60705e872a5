//! Every error the proxy answers with, rendered in one place in OpenAI's format:
//! `{"error":{"message","type","param","code"}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::limits::kind::Kind;

/// Waits the official SDKs obey; beyond it, clients are told not to retry.
pub const SDK_MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Something the proxy refuses or could not do.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Wrong or missing client key.
    #[error("Incorrect or missing API key: send `Authorization: Bearer <spillway client key>`")]
    Unauthorized,
    /// Body over the configured size.
    #[error("Request body too large: the limit is {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The client did not send the whole body within `[server] client_timeout`.
    #[error("The request body did not arrive within {:.1}s", .after.as_secs_f64())]
    ClientTimeout {
        /// The timeout.
        after: Duration,
    },
    /// Malformed JSON or a missing or mistyped field.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// The field.
        param: Option<String>,
    },
    /// No route for the model.
    #[error("The model `{model}` does not exist on this gateway (routes: {known})")]
    UnknownModel {
        /// The model asked for.
        model: String,
        /// The route names.
        known: String,
    },
    /// No such path.
    #[error("Unknown request URL: {method} {path}")]
    NotFound {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// Wrong method for a path.
    #[error("Method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// Every target is limited or cooling, and waiting would pass `max_wait`.
    #[error("All targets for model `{route}` are at their rate limits{}; the earliest frees in {:.1}s", .kind.map(|k| format!(" ({})", k.describe())).unwrap_or_default(), .retry_after.as_secs_f64())]
    Exhausted {
        /// The route.
        route: String,
        /// Clock time until the earliest target frees.
        retry_after: Duration,
        /// The limit holding it back.
        kind: Option<Kind>,
    },
    /// Larger than a limit of every target.
    #[error("Request too large for every target of model `{route}`: it exceeds their {} limit", .kind.describe())]
    TooLarge {
        /// The route.
        route: String,
        /// The limit exceeded.
        kind: Kind,
    },
    /// Every attempt failed.
    #[error("All targets for model `{route}` failed: {}", .attempts.join("; "))]
    AllFailed {
        /// The route.
        route: String,
        /// One line per attempt (alias, model, what happened).
        attempts: Vec<String>,
    },
    /// No key or target is usable.
    #[error(
        "No usable target for model `{route}`: every key is disabled or every target refused the request"
    )]
    Unavailable {
        /// The route.
        route: String,
    },
    /// A provider's own answer, given to the client unchanged (400, 404, 422...).
    #[error("upstream answered {status}")]
    Passthrough {
        /// Its status.
        status: StatusCode,
        /// Its content type.
        content_type: Option<HeaderValue>,
        /// Its body.
        body: Bytes,
    },
    /// No stored answer, and the request may not (replay mode, `only-if-cached`) reach a
    /// provider.
    #[error("{}", cache_miss_message(.key, .route, .closest.as_ref(), *.offline))]
    CacheMiss {
        /// The request's cache key.
        key: crate::cache::key::CacheKey,
        /// The route.
        route: String,
        /// The closest stored request for the same route, and where it differs.
        closest: Option<crate::cache::Closest>,
        /// Replay mode (404) rather than `only-if-cached` (504).
        offline: bool,
    },
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

fn cache_miss_message(
    key: &crate::cache::key::CacheKey,
    route: &str,
    closest: Option<&crate::cache::Closest>,
    offline: bool,
) -> String {
    let why = if offline {
        "replay mode: no provider is called"
    } else {
        "x-spillway-cache: only-if-cached"
    };
    let mut m = format!("No cached answer for this request to `{route}` (key {key}; {why}).");
    match closest {
        Some(c) if c.differences.is_empty() => m.push_str(&format!(
            " The closest stored request (key {}) differs only in fields left out of the key.",
            c.key
        )),
        Some(c) => m.push_str(&format!(
            " Closest stored request for `{route}`: key {}, differing at {}.",
            c.key,
            c.differences.join(", ")
        )),
        None if offline => m.push_str(&format!(" Nothing is stored for `{route}`.")),
        None => {}
    }
    m
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closest: Option<serde_json::Value>,
}

impl ProxyError {
    /// A 400 naming a field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ProxyError::InvalidRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::BodyTooLarge { .. } | ProxyError::TooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ProxyError::ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UnknownModel { .. } | ProxyError::NotFound { .. } => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Exhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::AllFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Passthrough { status, .. } => *status,
            ProxyError::CacheMiss { offline: true, .. } => StatusCode::NOT_FOUND,
            ProxyError::CacheMiss { offline: false, .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ProxyError::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            ProxyError::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            ProxyError::ClientTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            ProxyError::InvalidRequest { .. } => ("invalid_request_error", None),
            ProxyError::UnknownModel { .. } => ("invalid_request_error", Some("model_not_found")),
            ProxyError::NotFound { .. } => ("invalid_request_error", Some("unknown_url")),
            ProxyError::MethodNotAllowed { .. } => {
                ("invalid_request_error", Some("method_not_allowed"))
            }
            ProxyError::Exhausted { kind, .. } => (
                match kind {
                    Some(k) if !k.counts_requests() => "tokens",
                    _ => "requests",
                },
                Some("rate_limit_exceeded"),
            ),
            ProxyError::TooLarge { .. } => ("tokens", Some("rate_limit_exceeded")),
            ProxyError::AllFailed { .. } => ("upstream_error", Some("upstream_failed")),
            ProxyError::Unavailable { .. } => ("upstream_error", Some("no_usable_target")),
            ProxyError::CacheMiss { .. } => ("invalid_request_error", Some("cache_miss")),
            ProxyError::Passthrough { .. } | ProxyError::Internal(_) => ("server_error", None),
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        if let ProxyError::Passthrough {
            status,
            content_type,
            body,
        } = self
        {
            let mut response = (status, body).into_response();
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            return response;
        }
        let status = self.status();
        let message = self.to_string();
        let (kind, code) = self.type_and_code();
        let param = match &self {
            ProxyError::InvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        };
        let (key, closest) = match &self {
            ProxyError::CacheMiss { key, closest, .. } => (
                Some(key.to_hex()),
                closest.as_ref().map(
                    |c| serde_json::json!({"key": c.key.to_hex(), "differences": c.differences}),
                ),
            ),
            _ => (None, None),
        };
        let body = serde_json::to_string(&Body {
            error: Inner {
                message: &message,
                kind,
                param,
                code,
                key,
                closest,
            },
        })
        .expect("an error body always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let ProxyError::Exhausted { retry_after, .. } = self {
            let secs = retry_after.as_micros().div_ceil(1_000_000).max(1);
            let ms = retry_after.as_micros().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
            headers.insert("retry-after-ms", HeaderValue::from(ms as u64));
            let should = if retry_after > SDK_MAX_RETRY_WAIT {
                "false"
            } else {
                "true"
            };
            headers.insert("x-should-retry", HeaderValue::from_static(should));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exhausted_says_when_and_whether_to_retry() {
        let resp = ProxyError::Exhausted {
            route: "r".into(),
            retry_after: Duration::from_millis(2_300),
            kind: Some(Kind::RequestsPerMinute),
        }
        .into_response();
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["retry-after"], "3");
        assert_eq!(resp.headers()["retry-after-ms"], "2300");
        assert_eq!(resp.headers()["x-should-retry"], "true");
        let daily = ProxyError::Exhausted {
            route: "r".into(),
            retry_after: Duration::from_secs(3 * 3600),
            kind: Some(Kind::RequestsPerDay),
        }
        .into_response();
        assert_eq!(daily.headers()["x-should-retry"], "false");
    }
}
