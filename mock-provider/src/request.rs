//! Reading and validating request bodies the way Groq does: a body over the size limit is a
//! 413, one that does not arrive within the read timeout a 408, one that cannot be read (broken
//! chunked framing, a client that hung up) a 400; a malformed body or a missing or mistyped
//! field is a 400 that names the field; unknown fields are ignored.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

use crate::error::MockError;
use crate::tokens;

/// The token of an `Authorization: Bearer TOKEN` header (`bearer` in lower case too), trimmed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Reads a whole request body: at most `limit` bytes (413 beyond, refused at once when
/// `content-length` says so), within `timeout` of wall-clock time (408 after it).
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, MockError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(MockError::BodyTooLarge { limit });
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(MockError::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(MockError::InvalidRequest {
            message: format!("The request body could not be read: {e}"),
            param: None,
        }),
        Err(_) => Err(MockError::RequestTimeout { after: timeout }),
    }
}

/// A validated chat-completions request: what the mock's answer depends on.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The requested model id.
    pub model: String,
    /// The `messages` array, as sent.
    pub messages: Vec<Value>,
    /// `"stream": true`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `seed`.
    pub seed: Option<i64>,
    /// `service_tier`.
    pub service_tier: Option<String>,
    /// Prompt tokens by the mock's estimator.
    pub prompt_tokens: u64,
}

/// A validated embeddings request.
#[derive(Debug, Clone)]
pub struct EmbeddingsRequest {
    /// The requested model id.
    pub model: String,
    /// The input texts.
    pub inputs: Vec<String>,
    /// Vector length (`dimensions`, default 256).
    pub dimensions: usize,
    /// Prompt tokens by the mock's estimator.
    pub prompt_tokens: u64,
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];
const SERVICE_TIERS: &[&str] = &["auto", "on_demand", "flex", "performance"];

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, MockError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| MockError::InvalidRequest {
        message: format!("The request body is not valid JSON: {e}"),
        param: None,
    })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(MockError::InvalidRequest {
            message: "The request body must be a JSON object".into(),
            param: None,
        }),
    }
}

fn missing(field: &str) -> MockError {
    MockError::invalid(field, format!("property '{field}' is missing"))
}

fn wrong_type(field: &str, expected: &str) -> MockError {
    MockError::invalid(field, format!("'{field}' : value must be {expected}"))
}

/// A present, non-null field.
fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|v| !v.is_null())
}

fn required_string(map: &Map<String, Value>, name: &str) -> Result<String, MockError> {
    match map.get(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(wrong_type(name, "a string")),
    }
}

fn optional_bool(map: &Map<String, Value>, name: &str) -> Result<Option<bool>, MockError> {
    match field(map, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type(name, "a boolean")),
    }
}

fn optional_positive(map: &Map<String, Value>, name: &str) -> Result<Option<u64>, MockError> {
    match field(map, name) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(wrong_type(name, "an integer of at least 1")),
        },
    }
}

impl ChatRequest {
    /// Parses and validates a chat-completions body.
    pub fn parse(body: &[u8]) -> Result<Self, MockError> {
        let map = parse_object(body)?;
        let model = required_string(&map, "model")?;
        let messages = match map.get("messages") {
            None | Some(Value::Null) => return Err(missing("messages")),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(wrong_type("messages", "an array")),
        };
        if messages.is_empty() {
            return Err(MockError::invalid(
                "messages",
                "'messages' : minimum number of items is 1",
            ));
        }
        for (i, message) in messages.iter().enumerate() {
            check_message(i, message)?;
        }
        let stream = optional_bool(&map, "stream")?.unwrap_or(false);
        let include_usage = match field(&map, "stream_options") {
            None => false,
            Some(Value::Object(opts)) => match field(opts, "include_usage") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(wrong_type("stream_options.include_usage", "a boolean")),
            },
            Some(_) => return Err(wrong_type("stream_options", "an object")),
        };
        let max_tokens = match optional_positive(&map, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => optional_positive(&map, "max_tokens")?,
        };
        let seed = match field(&map, "seed") {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| wrong_type("seed", "an integer"))?),
        };
        if let Some(t) = field(&map, "temperature") {
            match t.as_f64() {
                Some(t) if (0.0..=2.0).contains(&t) => {}
                Some(_) => {
                    return Err(MockError::invalid(
                        "temperature",
                        "'temperature' : number must be between 0 and 2",
                    ));
                }
                None => return Err(wrong_type("temperature", "a number")),
            }
        }
        if let Some(n) = field(&map, "n") {
            match n.as_u64() {
                Some(1) => {}
                Some(_) => {
                    return Err(MockError::invalid("n", "'n' : number must be at most 1"));
                }
                None => return Err(wrong_type("n", "an integer")),
            }
        }
        let service_tier = match field(&map, "service_tier") {
            None => None,
            Some(Value::String(s)) if SERVICE_TIERS.contains(&s.as_str()) => Some(s.clone()),
            Some(_) => {
                return Err(wrong_type(
                    "service_tier",
                    "one of \"auto\", \"on_demand\", \"flex\", \"performance\"",
                ));
            }
        };
        let prompt_tokens = tokens::prompt_tokens(&messages);
        Ok(ChatRequest {
            model,
            messages,
            stream,
            include_usage,
            max_tokens,
            seed,
            service_tier,
            prompt_tokens,
        })
    }
}

fn check_message(i: usize, message: &Value) -> Result<(), MockError> {
    let path = |f: &str| format!("messages[{i}].{f}");
    let Value::Object(obj) = message else {
        return Err(MockError::invalid(
            format!("messages[{i}]"),
            format!("'messages[{i}]' : value must be an object"),
        ));
    };
    let role = match obj.get("role") {
        None | Some(Value::Null) => return Err(missing(&path("role"))),
        Some(Value::String(r)) => r,
        Some(_) => return Err(wrong_type(&path("role"), "a string")),
    };
    if !ROLES.contains(&role.as_str()) {
        return Err(MockError::invalid(
            path("role"),
            format!(
                "'{}' : value must be one of \"system\", \"developer\", \"user\", \"assistant\", \"tool\" (got {role:?})",
                path("role")
            ),
        ));
    }
    match obj.get("content") {
        Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                if !part.is_object() {
                    return Err(wrong_type(
                        &format!("{}[{j}]", path("content")),
                        "an object",
                    ));
                }
            }
            Ok(())
        }
        // An assistant turn that only calls tools has no content.
        None | Some(Value::Null) if role == "assistant" => Ok(()),
        None | Some(Value::Null) => Err(missing(&path("content"))),
        Some(_) => Err(wrong_type(
            &path("content"),
            "a string or an array of parts",
        )),
    }
}

impl EmbeddingsRequest {
    /// Parses and validates an embeddings body.
    pub fn parse(body: &[u8]) -> Result<Self, MockError> {
        let map = parse_object(body)?;
        let model = required_string(&map, "model")?;
        let inputs = match map.get("input") {
            None | Some(Value::Null) => return Err(missing("input")),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    // Token-id arrays: count them as their JSON text.
                    Value::Array(_) => Ok(item.to_string()),
                    _ => Err(wrong_type(&format!("input[{i}]"), "a string")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(wrong_type(
                    "input",
                    "a string or a non-empty array of strings",
                ));
            }
        };
        let dimensions = match optional_positive(&map, "dimensions")? {
            None => 256,
            Some(d) if d <= 4096 => d as usize,
            Some(_) => {
                return Err(MockError::invalid(
                    "dimensions",
                    "'dimensions' : number must be at most 4096",
                ));
            }
        };
        let prompt_tokens = inputs.iter().map(|s| tokens::text_tokens(s)).sum();
        Ok(EmbeddingsRequest {
            model,
            inputs,
            dimensions,
            prompt_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(body: &str) -> Option<String> {
        match ChatRequest::parse(body.as_bytes()) {
            Err(MockError::InvalidRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(param_of(r#"{"messages":[]}"#).as_deref(), Some("model"));
        assert_eq!(param_of(r#"{"model":"m"}"#).as_deref(), Some("messages"));
        assert_eq!(
            param_of(r#"{"model":3,"messages":[]}"#).as_deref(),
            Some("model")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":"hi"}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"content":"x"}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#)
                .as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#)
                .as_deref(),
            Some("stream")
        );
        assert_eq!(param_of("{not json"), None);
    }

    #[test]
    fn a_valid_request_reads_every_field_the_answer_depends_on() {
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":true,
                "stream_options":{"include_usage":true},"max_completion_tokens":7,"seed":42,
                "unknown_field":{"ignored":true}}"#,
        )
        .expect("valid");
        assert!(req.stream && req.include_usage);
        assert_eq!((req.max_tokens, req.seed), (Some(7), Some(42)));
        assert_eq!(req.prompt_tokens, 3 + 3 + 2);
    }
}
