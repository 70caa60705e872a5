//! Token estimates before sending: the prompt counted with a real tokenizer (OpenAI's
//! `cl100k_base`, close to Llama 3's; GitHub's `bpe-openai` implementation, which counts exactly
//! as tiktoken does at twice its speed), the chat format's overhead (both in
//! `spillway_plumbing::tokens`), and the completion allowance; corrected per target by what
//! providers report in `usage`.

use serde_json::Value;

/// Builds the tokenizer now rather than on the first request.
pub use spillway_plumbing::tokens::warm_up;

/// Tokens of a text.
pub fn text_tokens(text: &str) -> u64 {
    spillway_plumbing::tokens::cl100k_tokens(text)
}

/// Prompt tokens of a chat request's `messages`.
pub fn chat_prompt_tokens(messages: &[Value]) -> u64 {
    spillway_plumbing::tokens::chat_prompt_tokens(messages, text_tokens)
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

/// Answers kept to estimate the completion of a request that names no `max_tokens`.
const COMPLETION_SAMPLES: usize = 128;
/// Answers needed before they are trusted over `default_max_tokens`.
const COMPLETION_MIN_SAMPLES: usize = 8;

/// What a target's answers actually used, to estimate the completion tokens of a request that
/// names no `max_tokens`: the 95th percentile of the last [`COMPLETION_SAMPLES`] answers, once
/// there are [`COMPLETION_MIN_SAMPLES`]; until then, `default_max_tokens`. An answer that uses
/// more than the estimate is settled to its real count, so an estimate too low costs a moment of
/// over-reservation elsewhere, never a limit broken for long; one too high only holds requests
/// back until their answers settle.
#[derive(Debug, Clone, Default)]
pub struct CompletionEstimate {
    recent: std::collections::VecDeque<u64>,
    p95: u64,
}

impl CompletionEstimate {
    /// Learns from one answer's `usage.completion_tokens`.
    pub fn learn(&mut self, completion: u64) {
        if self.recent.len() == COMPLETION_SAMPLES {
            self.recent.pop_front();
        }
        self.recent.push_back(completion);
        if self.recent.len() >= COMPLETION_MIN_SAMPLES {
            let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
            sorted.sort_unstable();
            // Nearest rank: the smallest value at or above 95% of the samples.
            let rank = (sorted.len() * 95).div_ceil(100).max(1);
            self.p95 = sorted[rank - 1];
        }
    }

    /// Completion tokens to reserve for a request without `max_tokens`.
    pub fn estimate(&self, default: u64) -> u64 {
        if self.recent.len() < COMPLETION_MIN_SAMPLES {
            default
        } else {
            self.p95.max(1)
        }
    }

    /// Answers learned from (at most [`COMPLETION_SAMPLES`]).
    pub fn samples(&self) -> usize {
        self.recent.len()
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
    fn completions_are_estimated_from_what_answers_used_once_there_are_enough() {
        let mut e = CompletionEstimate::default();
        for used in [40, 60, 50, 45, 55, 70] {
            e.learn(used);
        }
        assert_eq!(e.estimate(1024), 1024, "too few answers: the default");
        for used in 1..=100 {
            e.learn(used * 2);
        }
        assert_eq!(e.samples(), 106);
        assert_eq!(e.estimate(1024), 190, "the 95th percentile");
        for _ in 0..200 {
            e.learn(30);
        }
        assert_eq!(e.samples(), 128);
        assert_eq!(e.estimate(1024), 30, "the oldest answers are forgotten");
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
