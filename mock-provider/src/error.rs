//! Every error the mock answers with, rendered in one place in the dialect's own body shape:
//! Groq's and OpenAI's `{"error":{"message","type","code"}}`, Anthropic's
//! `{"type":"error","error":{"type","message"}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::headers::go_duration;
use crate::limiter::Denial;
use crate::spec::{Dialect, LimitKind};

/// The link Groq appends to its rate-limit messages.
const GROQ_UPGRADE: &str = "Upgrade to Dev Tier today at https://console.groq.com/settings/billing";

#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// Something the mock refuses or fails on purpose.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MockError {
    /// No key, or a key the mock does not accept (401 `invalid_api_key`).
    #[error("Invalid API Key")]
    InvalidApiKey,
    /// A model the mock does not serve (404 `model_not_found`).
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    /// Malformed JSON, or a missing or mistyped field (400 `invalid_request_error`).
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, naming the field.
        message: String,
        /// The field, as a path (`messages[0].role`).
        param: Option<String>,
    },
    /// A body over the configured size (413).
    #[error("Request body too large: the limit is {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive within the read timeout (408 `request_timeout`).
    #[error(
        "Request timeout: the request body did not arrive within {}. Send the whole body promptly.",
        humantime::format_duration(*.after)
    )]
    RequestTimeout {
        /// The read timeout.
        after: Duration,
    },
    /// A control-plane request without the configured admin token (401 `invalid_admin_token`).
    #[error(
        "The control plane needs the admin token this mock was started with: send `Authorization: Bearer TOKEN`"
    )]
    AdminTokenRequired,
    /// `?keys=full` on a mock without an admin token (403 `permission_denied`).
    #[error(
        "`keys=full` shows whole keys only to a caller with the admin token, and this mock has none: configure `admin_token` (admin_token = \"env:NAME\" in the config, --admin-token-env NAME, or the builder's .admin_token(..))"
    )]
    FullKeysNeedAdminToken,
    /// A path the API does not have (404 `unknown_url`).
    #[error(
        "Unknown request URL: {method} {path}. Please check the URL for typos, or see the docs at https://console.groq.com/docs/"
    )]
    UnknownUrl {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// A path the API has, with another method (405).
    #[error("Method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// Over a rate limit (429 `rate_limit_exceeded`).
    #[error("rate limit reached on {}", .denial.kind.groq_name())]
    RateLimited {
        /// The model limited.
        model: String,
        /// The organization named in the message.
        organization: String,
        /// Which limit, the figures and the wait.
        denial: Denial,
    },
    /// Larger than a whole token limit (413 `rate_limit_exceeded`).
    #[error("request too large on {}", .kind.groq_name())]
    RequestTooLarge {
        /// The model limited.
        model: String,
        /// The organization named in the message.
        organization: String,
        /// The token limit exceeded.
        kind: LimitKind,
        /// Its value.
        limit: u64,
        /// The request's size.
        requested: u64,
    },
    /// Flex tier at capacity (498 `capacity_exceeded`).
    #[error("flex tier capacity exceeded")]
    CapacityExceeded {
        /// The model requested.
        model: String,
    },
    /// An injected server failure (500, 502, 503 or 529).
    #[error("injected server error {status}")]
    ServerFault {
        /// The status.
        status: u16,
        /// The model requested.
        model: String,
    },
}

impl MockError {
    /// A 400 naming a field.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        MockError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// The HTTP status in a dialect (Anthropic's over-capacity is 529).
    pub fn status(&self, dialect: Dialect) -> StatusCode {
        let code = match self {
            MockError::InvalidApiKey | MockError::AdminTokenRequired => 401,
            MockError::FullKeysNeedAdminToken => 403,
            MockError::UnknownModel(_) | MockError::UnknownUrl { .. } => 404,
            MockError::InvalidRequest { .. } => 400,
            MockError::BodyTooLarge { .. } | MockError::RequestTooLarge { .. } => 413,
            MockError::MethodNotAllowed { .. } => 405,
            MockError::RequestTimeout { .. } => 408,
            MockError::RateLimited { .. } => 429,
            MockError::CapacityExceeded { .. } => 498,
            MockError::ServerFault { status: 503, .. } if dialect == Dialect::Anthropic => 529,
            MockError::ServerFault { status, .. } => *status,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The message text in a dialect.
    fn message(&self, dialect: Dialect) -> String {
        match self {
            MockError::RateLimited {
                model,
                organization,
                denial,
            } => match dialect {
                Dialect::Groq => format!(
                    "Rate limit reached for model `{model}` in organization `{organization}` service tier `on_demand` on {}: Limit {}, Used {}, Requested {}. Please try again in {}. Need more {}? {GROQ_UPGRADE}",
                    denial.kind.groq_name(),
                    denial.limit,
                    denial.used,
                    denial.requested,
                    go_duration(denial.wait),
                    denial.kind.error_type(),
                ),
                Dialect::OpenAi => format!(
                    "Rate limit reached for {model} in organization {organization} on {}: Limit {}, Used {}, Requested {}. Please try again in {}. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    denial.kind.groq_name(),
                    denial.limit,
                    denial.used,
                    denial.requested,
                    go_duration(denial.wait),
                ),
                Dialect::Cerebras => match denial.kind.error_type() {
                    "requests" => {
                        "Requests per day limit exceeded - too many requests sent.".into()
                    }
                    _ => "Tokens per minute limit exceeded - too many tokens processed.".into(),
                },
                Dialect::Anthropic => format!(
                    "This request would exceed your organization's rate limit of {} {}. Please try again later.",
                    denial.limit,
                    denial.kind.groq_name(),
                ),
            },
            MockError::RequestTooLarge {
                model,
                organization,
                kind,
                limit,
                requested,
            } => format!(
                "Request too large for model `{model}` in organization `{organization}` service tier `on_demand` on {}: Limit {limit}, Requested {requested}, please reduce your message size and try again. Need more tokens? {GROQ_UPGRADE}",
                kind.groq_name()
            ),
            MockError::CapacityExceeded { model } => format!(
                "The flex tier is at capacity for model `{model}`. Please retry later or use the on_demand service tier."
            ),
            MockError::ServerFault { status, model } => match (dialect, status) {
                (Dialect::Anthropic, 503 | 529) => "Overloaded".into(),
                (_, 503) => format!(
                    "{model} is currently over capacity. Please try again and back off exponentially. Visit https://groqstatus.com to see if there is an ongoing incident."
                ),
                (_, 502) => "Bad Gateway".into(),
                _ => "Internal Server Error".into(),
            },
            other => other.to_string(),
        }
    }

    /// (type, code) in the OpenAI/Groq shape.
    fn type_and_code(&self, dialect: Dialect) -> (&'static str, Option<&'static str>) {
        match self {
            MockError::InvalidApiKey => ("invalid_request_error", Some("invalid_api_key")),
            MockError::AdminTokenRequired => ("invalid_request_error", Some("invalid_admin_token")),
            MockError::FullKeysNeedAdminToken => {
                ("invalid_request_error", Some("permission_denied"))
            }
            MockError::UnknownModel(_) => ("invalid_request_error", Some("model_not_found")),
            MockError::InvalidRequest { .. } => ("invalid_request_error", None),
            MockError::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            MockError::UnknownUrl { .. } => ("invalid_request_error", Some("unknown_url")),
            MockError::MethodNotAllowed { .. } => {
                ("invalid_request_error", Some("method_not_allowed"))
            }
            MockError::RequestTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            MockError::RateLimited { denial, .. } => match dialect {
                Dialect::Cerebras => (
                    "too_many_requests_error",
                    Some(match denial.kind.error_type() {
                        "requests" => "request_quota_exceeded",
                        _ => "token_quota_exceeded",
                    }),
                ),
                _ => (denial.kind.error_type(), Some("rate_limit_exceeded")),
            },
            MockError::RequestTooLarge { kind, .. } => {
                (kind.error_type(), Some("rate_limit_exceeded"))
            }
            MockError::CapacityExceeded { .. } => ("capacity_exceeded", Some("capacity_exceeded")),
            MockError::ServerFault { status: 503, .. } => {
                ("internal_server_error", Some("over_capacity"))
            }
            MockError::ServerFault { .. } => ("internal_server_error", None),
        }
    }

    /// Anthropic's error `type`.
    fn anthropic_type(&self) -> &'static str {
        match self {
            MockError::InvalidApiKey | MockError::AdminTokenRequired => "authentication_error",
            MockError::FullKeysNeedAdminToken => "permission_error",
            MockError::UnknownModel(_) | MockError::UnknownUrl { .. } => "not_found_error",
            MockError::BodyTooLarge { .. } | MockError::RequestTooLarge { .. } => {
                "request_too_large"
            }
            MockError::RateLimited { .. } => "rate_limit_error",
            MockError::ServerFault {
                status: 503 | 529, ..
            }
            | MockError::CapacityExceeded { .. } => "overloaded_error",
            MockError::ServerFault { .. } => "api_error",
            MockError::InvalidRequest { .. }
            | MockError::MethodNotAllowed { .. }
            | MockError::RequestTimeout { .. } => "invalid_request_error",
        }
    }

    /// The JSON body in a dialect, with fields in the provider's order (`message`, `type`,
    /// `param`, `code`).
    pub fn body(&self, dialect: Dialect) -> String {
        let message = self.message(dialect);
        let json = if dialect == Dialect::Anthropic {
            serde_json::to_string(&AnthropicBody {
                kind: "error",
                error: AnthropicError {
                    kind: self.anthropic_type(),
                    message: &message,
                },
            })
        } else {
            let (kind, code) = self.type_and_code(dialect);
            let param = match self {
                MockError::InvalidRequest { param, .. } => Some(param.as_deref()),
                _ => None,
            };
            serde_json::to_string(&OpenAiBody {
                error: OpenAiError {
                    message: &message,
                    kind,
                    param,
                    code,
                },
            })
        };
        json.expect("an error body always serializes")
    }

    /// The complete response in a dialect (status and JSON body; callers add limit headers).
    pub fn into_response_in(self, dialect: Dialect) -> Response {
        let status = self.status(dialect);
        let mut body = self.body(dialect);
        body.push('\n');
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groq_rate_limit_body_matches_groqs_wording() {
        let err = MockError::RateLimited {
            model: "llama-3.1-8b-instant".into(),
            organization: "org_01abc".into(),
            denial: Denial {
                kind: LimitKind::TokensPerMinute,
                limit: 6000,
                used: 4093,
                requested: 3531,
                wait: Duration::from_millis(16_240),
            },
        };
        let body = err.body(Dialect::Groq);
        assert!(
            body.starts_with("{\"error\":{\"message\":\"Rate limit"),
            "{body}"
        );
        let body: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            body["error"]["message"],
            "Rate limit reached for model `llama-3.1-8b-instant` in organization `org_01abc` service tier `on_demand` on tokens per minute (TPM): Limit 6000, Used 4093, Requested 3531. Please try again in 16.24s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing"
        );
        assert_eq!(body["error"]["type"], "tokens");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn anthropic_overload_is_529_with_its_body() {
        let err = MockError::ServerFault {
            status: 503,
            model: "m".into(),
        };
        assert_eq!(err.status(Dialect::Anthropic).as_u16(), 529);
        assert_eq!(
            err.body(Dialect::Anthropic),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        );
        assert_eq!(err.status(Dialect::Groq).as_u16(), 503);
    }

    #[test]
    fn a_body_that_does_not_arrive_in_time_is_408_request_timeout() {
        let err = MockError::RequestTimeout {
            after: Duration::from_secs(30),
        };
        assert_eq!(err.status(Dialect::Groq).as_u16(), 408);
        let body: serde_json::Value = serde_json::from_str(&err.body(Dialect::Groq)).expect("json");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "request_timeout");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("a message")
                .contains("within 30s"),
            "{body}"
        );
    }
}
