//! Every refusal and failure the proxy answers a client with, as data: the router, the cache
//! and the server produce these, and the server renders them (in OpenAI's error format) in one
//! place, `server::error`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::limits::kind::Kind;
use spillway_store::Key as CacheKey;

/// The closest stored request to one that missed the cache (a replay miss names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closest {
    /// Its key.
    pub key: CacheKey,
    /// The JSON paths where it differs.
    pub differences: Vec<String>,
}

/// Something the proxy refuses or could not do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// Wrong or missing client key.
    #[error("Incorrect or missing API key: send `Authorization: Bearer <spillway client key>`")]
    Unauthorized,
    /// Wrong or missing admin key on an admin endpoint.
    #[error(
        "Incorrect or missing admin key: send `Authorization: Bearer <spillway admin key>` ([server] admin_keys)"
    )]
    AdminUnauthorized,
    /// The caller is known but may not do this (a client key on an admin endpoint, a route
    /// outside a client's allow-list, admin endpoints with no admin key configured).
    #[error("{message}")]
    Forbidden {
        /// What is not allowed, and why.
        message: String,
    },
    /// `POST /spillway/reload` read a config that cannot be put in force; the old one stays.
    #[error("The config was not reloaded (the config in force stays): {why}")]
    ReloadRefused {
        /// What is wrong with the file, or why it could not be read.
        why: String,
    },
    /// `POST /spillway/reload` on a gateway that was not started from a config file.
    #[error("This gateway was not started from a config file: there is nothing to reload")]
    ReloadUnavailable,
    /// A client is over its own limit (`[[clients]]`), not a provider's.
    #[error("Client `{client}` is over its own limit of {limit} {} on this gateway (not a provider's limit); it frees in {:.1}s", .kind.describe(), .retry_after.as_secs_f64())]
    ClientLimited {
        /// The client's name.
        client: String,
        /// The limit that is full.
        kind: Kind,
        /// Its value.
        limit: u64,
        /// Wall-clock time until the request fits.
        retry_after: Duration,
    },
    /// Larger than one of a client's own limits: it never fits.
    #[error("Request too large for client `{client}`: it exceeds the client's own limit of {limit} {}", .kind.describe())]
    ClientTooLarge {
        /// The client's name.
        client: String,
        /// The limit.
        kind: Kind,
        /// Its value.
        limit: u64,
    },
    /// Body over the configured size.
    #[error("Request body too large: the limit is {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body could not be read: a malformed chunked encoding, or the client hung up midway.
    #[error("The request body could not be read: {why}")]
    BodyUnreadable {
        /// What went wrong.
        why: String,
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
    #[error("Method {method} is not allowed for {path} (allowed: {allow})")]
    MethodNotAllowed {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The methods the path allows (the `Allow` header).
        allow: &'static str,
    },
    /// Every target is limited or cooling, and waiting would pass `max_wait`.
    #[error("All targets for model `{route}` are at their rate limits{}; the earliest frees in {:.1}s", .kind.map(|k| format!(" ({})", k.describe())).unwrap_or_default(), .retry_after.as_secs_f64())]
    Exhausted {
        /// The route.
        route: String,
        /// Wall-clock time until the earliest target frees (every duration on the wire is
        /// wall-clock time, whatever the proxy's time scale).
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
    /// No target can answer now for reasons other than rate limits: every target failing
    /// (its circuit open), every key refused by its provider, or every target refused this
    /// request.
    #[error("{}", unavailable_message(.route, .retry_after.as_ref(), .attempts))]
    Unavailable {
        /// The route.
        route: String,
        /// Wall-clock time until the first target may be tried again, when one will be.
        retry_after: Option<Duration>,
        /// The attempts that failed before this answer (alias, model, what happened).
        attempts: Vec<String>,
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
        key: CacheKey,
        /// The route.
        route: String,
        /// The closest stored request for the same route, and where it differs.
        closest: Option<Closest>,
        /// Replay mode (404) rather than `only-if-cached` (504).
        offline: bool,
    },
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

fn unavailable_message(route: &str, retry_after: Option<&Duration>, attempts: &[String]) -> String {
    let mut m = format!("No target for model `{route}` can answer now");
    if attempts.is_empty() {
        m.push_str(": every target is failing or refused the request, or every key was refused by its provider");
    } else {
        m.push_str(&format!(
            ": every target is failing ({})",
            attempts.join("; ")
        ));
    }
    if let Some(d) = retry_after {
        m.push_str(&format!(
            "; the first may be tried again in {:.1}s",
            d.as_secs_f64()
        ));
    }
    m
}

fn cache_miss_message(
    key: &CacheKey,
    route: &str,
    closest: Option<&Closest>,
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
            ProxyError::Unauthorized | ProxyError::AdminUnauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::ReloadRefused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::ReloadUnavailable => StatusCode::CONFLICT,
            ProxyError::ClientLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::ClientTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } | ProxyError::TooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ProxyError::ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::InvalidRequest { .. } | ProxyError::BodyUnreadable { .. } => {
                StatusCode::BAD_REQUEST
            }
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

    /// OpenAI's error `type` and `code` for this error.
    pub fn type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ProxyError::Unauthorized | ProxyError::AdminUnauthorized => {
                ("invalid_request_error", Some("invalid_api_key"))
            }
            ProxyError::Forbidden { .. } => ("invalid_request_error", Some("permission_denied")),
            ProxyError::ReloadRefused { .. } => ("invalid_request_error", Some("invalid_config")),
            ProxyError::ReloadUnavailable => ("invalid_request_error", Some("no_config_file")),
            ProxyError::ClientLimited { kind, .. } | ProxyError::ClientTooLarge { kind, .. } => (
                if kind.counts_requests() {
                    "requests"
                } else {
                    "tokens"
                },
                Some("client_rate_limit_exceeded"),
            ),
            ProxyError::BodyTooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            ProxyError::ClientTimeout { .. } => ("invalid_request_error", Some("request_timeout")),
            ProxyError::InvalidRequest { .. } => ("invalid_request_error", None),
            ProxyError::BodyUnreadable { .. } => ("invalid_request_error", Some("body_unreadable")),
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
            ProxyError::Unavailable { .. } => ("upstream_error", Some("service_unavailable")),
            ProxyError::CacheMiss { .. } => ("invalid_request_error", Some("cache_miss")),
            ProxyError::Passthrough { .. } | ProxyError::Internal(_) => ("server_error", None),
        }
    }

    /// Wall-clock time until the client may try again, for the errors that know it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::Exhausted { retry_after, .. }
            | ProxyError::ClientLimited { retry_after, .. } => Some(*retry_after),
            ProxyError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
