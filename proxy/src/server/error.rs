//! Renders a [`ProxyError`] as the client's answer, in OpenAI's format:
//! `{"error":{"message","type","param","code"}}`, with `retry-after` (and `retry-after-ms`,
//! `x-should-retry`) when the error says when to try again.

use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ProxyError;

/// Waits the official SDKs obey; beyond it, clients are told not to retry.
pub const SDK_MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

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
        if let ProxyError::MethodNotAllowed { allow, .. } = &self {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(retry_after) = self.retry_after() {
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
    use crate::limits::kind::Kind;

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
