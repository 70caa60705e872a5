//! The mock's one token estimator, used for prompts, completions, usage and every limit.
//!
//! It follows OpenAI's rule of thumb of about four bytes per token, with the chat format's
//! per-message overhead (three tokens per message plus three to prime the reply), added up by
//! `spillway_plumbing::tokens` as the proxy adds them up. It is not any real tokenizer on
//! purpose: a client (the proxy) cannot count exactly what a provider counts, so it must learn
//! the provider's count from `usage`, as it must with Groq.

use serde_json::Value;

/// The chat format's overhead: tokens per message, and once to prime the reply.
pub use spillway_plumbing::tokens::{
    PER_MESSAGE as TOKENS_PER_MESSAGE, REPLY_PRIMING as TOKENS_REPLY_PRIMING,
};

/// Tokens in a piece of text: its length in bytes divided by four, rounded up.
pub fn text_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Prompt tokens of a chat request's `messages` array (already validated to be an array): the
/// chat format's walk, shared with the proxy, over this module's rule for a text.
pub fn prompt_tokens(messages: &[Value]) -> u64 {
    spillway_plumbing::tokens::chat_prompt_tokens(messages, text_tokens)
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
