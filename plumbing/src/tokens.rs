//! Token counts of chat requests: how a request's `messages` add up (each message's content and
//! fields, the chat format's per-message overhead), over any rule for counting a text, and
//! the real tokenizer the proxy estimates with.
//!
//! The walk is shared because the mock and the proxy model the same chat format. The rule for a
//! text is not: the mock counts about four bytes per token on purpose, unlike any real
//! tokenizer, so the proxy (counting with [`cl100k_tokens`]) has to learn each provider's own
//! count from `usage`, as it must with Groq. Each crate passes its rule in.

use serde_json::Value;

/// Tokens added for each chat message (role and separators).
pub const PER_MESSAGE: u64 = 3;
/// Tokens added once per request to prime the assistant's reply.
pub const REPLY_PRIMING: u64 = 3;

/// Tokens of a text by OpenAI's `cl100k_base` (close to Llama 3's), as GitHub's `bpe-openai`
/// counts it: exactly as tiktoken does, at twice its speed. The tokenizer is built on first
/// use and kept for the life of the process; see [`warm_up`].
pub fn cl100k_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    bpe_openai::cl100k_base().count(text) as u64
}

/// Builds the tokenizer now, so the first request that counts does not wait for it.
pub fn warm_up() {
    let _ = bpe_openai::cl100k_base().count("warm up");
}

/// Tokens of a message's `content`: a string, or an array of parts whose `text` counts (a part
/// without one counts as its JSON text); `null` is nothing.
pub fn content_tokens(content: &Value, text_tokens: impl Fn(&str) -> u64) -> u64 {
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

/// Prompt tokens of a chat request's `messages`: [`REPLY_PRIMING`], then per message
/// [`PER_MESSAGE`], its content, one more for a `name` and its text, and the JSON text of any
/// other field (tool calls and the like); `role` adds nothing beyond the overhead.
pub fn chat_prompt_tokens(messages: &[Value], text_tokens: impl Fn(&str) -> u64 + Copy) -> u64 {
    let mut total = REPLY_PRIMING;
    for message in messages {
        total += PER_MESSAGE;
        if let Some(obj) = message.as_object() {
            for (field, value) in obj {
                total += match field.as_str() {
                    "role" => 0,
                    "content" => content_tokens(value, text_tokens),
                    "name" => 1 + value.as_str().map(text_tokens).unwrap_or(0),
                    _ => text_tokens(&value.to_string()),
                };
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A rule that makes every count visible: one token per byte.
    fn bytes(text: &str) -> u64 {
        text.len() as u64
    }

    #[test]
    fn the_real_tokenizer_counts_words_not_bytes() {
        assert_eq!(cl100k_tokens(""), 0);
        assert_eq!(cl100k_tokens("hello world"), 2);
    }

    #[test]
    fn content_is_a_string_or_parts_with_text() {
        assert_eq!(content_tokens(&json!("1234"), bytes), 4);
        let parts = json!([{"type": "text", "text": "12"}, {"type": "image_url"}]);
        assert_eq!(
            content_tokens(&parts, bytes),
            2 + r#"{"type":"image_url"}"#.len() as u64
        );
        assert_eq!(content_tokens(&Value::Null, bytes), 0);
        assert_eq!(content_tokens(&json!(12), bytes), 2);
    }

    #[test]
    fn a_prompt_is_its_fields_plus_the_chat_overhead() {
        let messages = [
            json!({"role": "system", "content": "12345678"}),
            json!({"role": "user", "name": "ab", "content": [{"type": "text", "text": "1234"}]}),
            json!({"role": "tool", "tool_call_id": "x", "content": null}),
        ];
        assert_eq!(
            chat_prompt_tokens(&messages, bytes),
            REPLY_PRIMING
                + (PER_MESSAGE + 8)
                + (PER_MESSAGE + (1 + 2) + 4)
                + (PER_MESSAGE + "\"x\"".len() as u64)
        );
        assert_eq!(
            chat_prompt_tokens(
                &[json!({"role": "user", "content": "hello world"})],
                cl100k_tokens
            ),
            3 + 3 + 2
        );
    }
}
