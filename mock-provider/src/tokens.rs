//! The mock's one token estimator, used for prompts, completions, usage and every limit.
//!
//! It follows OpenAI's rule of thumb of about four bytes per token, with the chat format's
//! per-message overhead (three tokens per message plus three to prime the reply). It is not any
//! real tokenizer on purpose: a client (the proxy) cannot count exactly what a provider counts,
//! so it must learn the provider's count from `usage`, as it must with Groq.

use serde_json::Value;

/// Tokens added for each chat message (role and separators).
pub const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens added once per request to prime the assistant's reply.
pub const TOKENS_REPLY_PRIMING: u64 = 3;

/// Tokens in a piece of text: its length in bytes divided by four, rounded up.
pub fn text_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Prompt tokens of a chat request's `messages` array (already validated to be an array).
pub fn prompt_tokens(messages: &[Value]) -> u64 {
    let mut total = TOKENS_REPLY_PRIMING;
    for message in messages {
        total += TOKENS_PER_MESSAGE;
        if let Some(obj) = message.as_object() {
            for (field, value) in obj {
                match field.as_str() {
                    "role" => {}
                    "content" => total += content_tokens(value),
                    "name" => total += 1 + value.as_str().map(text_tokens).unwrap_or(0),
                    // tool calls, tool_call_id and the like: count their JSON text
                    _ => total += text_tokens(&value.to_string()),
                }
            }
        }
    }
    total
}

/// Tokens of a message's `content`: a string, or an array of parts whose `text` counts.
pub fn content_tokens(content: &Value) -> u64 {
    match content {
        Value::String(s) => text_tokens(s),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("text").and_then(Value::as_str) {
                Some(text) => text_tokens(text),
                None => text_tokens(&part.to_string()),
            })
            .sum(),
        Value::Null => 0,
        other => text_tokens(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn four_bytes_make_a_token_rounded_up() {
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens("abcde"), 2);
    }

    #[test]
    fn prompt_counts_content_plus_message_overhead() {
        let messages = [
            json!({"role": "system", "content": "12345678"}),
            json!({"role": "user", "content": [{"type": "text", "text": "1234"}]}),
        ];
        assert_eq!(prompt_tokens(&messages), 3 + (3 + 2) + (3 + 1));
    }
}
