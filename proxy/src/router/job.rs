//! One request as the router takes it, and the answer it gives back.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::router::ticket::Ticket;
use crate::upstream::{Answer, Endpoint};

/// One request, ready to route.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index of the route in the config.
    pub route: usize,
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// The client's JSON body, parsed; `model` is replaced per target.
    pub body: Map<String, Value>,
    /// The client's JSON body as it arrived (sent on with only `model` replaced).
    pub raw: Bytes,
    /// `"stream": true`.
    pub stream: bool,
    /// Prompt tokens by the local tokenizer (before per-target correction), counted on first
    /// use: a cache hit never needs them.
    pub prompt_estimate: std::sync::OnceLock<u64>,
    /// Completion tokens the request may use (`max_completion_tokens` or `max_tokens`); `None`
    /// when it names none (each target then estimates from what its answers used).
    pub max_output: Option<u64>,
}

impl Job {
    /// Prompt tokens by the local tokenizer, counted once.
    pub fn prompt_tokens(&self) -> u64 {
        *self.prompt_estimate.get_or_init(|| match self.endpoint {
            Endpoint::Chat => self
                .body
                .get("messages")
                .and_then(Value::as_array)
                .map(|m| crate::limits::estimate::chat_prompt_tokens(m))
                .unwrap_or(0),
            Endpoint::Embeddings => self
                .body
                .get("input")
                .map(crate::limits::estimate::embeddings_input_tokens)
                .unwrap_or(0),
        })
    }

    /// Completion tokens the request may use: none for embeddings, the client's allowance
    /// for chat (`None`: each target estimates it).
    pub fn completion(&self) -> Option<u64> {
        match self.endpoint {
            Endpoint::Embeddings => Some(0),
            Endpoint::Chat => self.max_output,
        }
    }
}

/// A successful answer and where it came from.
#[derive(Debug)]
pub struct Served {
    /// The answer.
    pub answer: Answer,
    /// Provider name.
    pub provider: String,
    /// Upstream model id.
    pub model: String,
    /// Key alias.
    pub key_alias: String,
    /// Attempts made (1 when the first target answered).
    pub attempts: u32,
    /// Wall-clock time the request waited for headroom before its first attempt.
    pub waited: Duration,
    /// Each key or target tried or passed over, and why it was left, this one last.
    pub trail: Vec<crate::trail::Step>,
    /// For streams: settles the key's limit state when the stream ends.
    pub ticket: Option<Ticket>,
}
