//! Token estimates before sending: the prompt counted with a real tokenizer (OpenAI's
//! `cl100k_base`, close to Llama 3's; GitHub's `bpe-openai` implementation, which counts exactly
//! as tiktoken does at twice its speed), the chat format's overhead, and the completion
//! allowance; corrected per target by what providers report in `usage`.

use serde_json::Value;

/// Tokens added per chat message, and once to prime the reply.
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

/// Loads the tokenizer now rather than on the first request.
pub fn warm_up() {
    let _ = bpe_openai::cl100k_base().count("warm up");
}

/// Tokens of a text.
pub fn text_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe_openai::cl100k_base().count(text) as u64
}

fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(s) => text_tokens(s),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) => text_tokens(t),
                None => text_tokens(&p.to_string()),
            })
            .sum(),
        Value::Null => 0,
        other => text_tokens(&other.to_string()),
    }
}

/// Prompt tokens of a chat request's `messages`.
pub fn chat_prompt_tokens(messages: &[Value]) -> u64 {
    let mut total = REPLY_PRIMING;
    for message in messages {
        total += PER_MESSAGE;
        if let Some(obj) = message.as_object() {
            for (field, value) in obj {
                total += match field.as_str() {
                    "role" => 0,
                    "content" => content_tokens(value),
                    "name" => 1 + value.as_str().map(text_tokens).unwrap_or(0),
                    _ => text_tokens(&value.to_string()),
                };
            }
        }
    }
    total
}

/// Prompt tokens of an embeddings request's `input`.
pub fn embeddings_input_tokens(input: &Value) -> u64 {
    match input {
        Value::String(s) => text_tokens(s),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => text_tokens(s),
                Value::Array(ids) => ids.len() as u64,
                other => text_tokens(&other.to_string()),
            })
            .sum(),
        other => text_tokens(&other.to_string()),
    }
}

/// How a target counts prompts compared with the estimate: a running ratio of reported to
/// estimated prompt tokens.
#[derive(Debug, Clone, Copy)]
pub struct Correction {
    ratio: f64,
    samples: u32,
}

impl Default for Correction {
    fn default() -> Self {
        Correction {
            ratio: 1.0,
            samples: 0,
        }
    }
}

impl Correction {
    /// An estimate corrected by what this target has reported so far: with a 20% margin until
    /// its first answer (tokenizers differ by that much on ordinary text), 2% after.
    pub fn apply(&self, estimate: u64) -> u64 {
        if self.samples == 0 {
            return (estimate as f64 * 1.2).ceil() as u64;
        }
        (estimate as f64 * self.ratio * 1.02).ceil() as u64
    }

    /// True once the target has reported a prompt count.
    pub fn calibrated(&self) -> bool {
        self.samples > 0
    }

    /// Learns from one answer: `estimate` was the uncorrected prompt estimate, `reported` the
    /// provider's `usage.prompt_tokens`.
    pub fn learn(&mut self, estimate: u64, reported: u64) {
        if estimate == 0 {
            return;
        }
        let sample = (reported as f64 / estimate as f64).clamp(0.25, 4.0);
        self.ratio = if self.samples == 0 {
            sample
        } else {
            // Follow increases at once (undercounting risks a 429), decreases slowly.
            if sample > self.ratio {
                sample
            } else {
                self.ratio * 0.9 + sample * 0.1
            }
        };
        self.samples = self.samples.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompts_count_like_a_tokenizer_plus_chat_overhead() {
        let messages = [json!({"role": "user", "content": "hello world"})];
        assert_eq!(chat_prompt_tokens(&messages), 3 + 3 + 2);
    }

    #[test]
    fn corrections_follow_a_provider_that_counts_more_at_once() {
        let mut c = Correction::default();
        assert_eq!(c.apply(100), 120);
        c.learn(100, 130);
        assert!(c.apply(100) >= 130);
        c.learn(100, 100);
        assert!(c.apply(100) > 120, "decreases are followed slowly");
    }
}
