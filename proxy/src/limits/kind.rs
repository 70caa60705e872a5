//! The vocabulary of limits: which (quantity, window) pairs exist, a set of known limit values,
//! and what a request costs.

use std::time::Duration;

/// A rolling window's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// 60 seconds.
    Minute,
    /// 86,400 seconds.
    Day,
}

impl Window {
    /// The window's length.
    pub const fn length(self) -> Duration {
        match self {
            Window::Minute => Duration::from_secs(60),
            Window::Day => Duration::from_secs(86_400),
        }
    }
}

/// One kind of limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Requests per minute.
    RequestsPerMinute,
    /// Tokens per minute.
    TokensPerMinute,
    /// Input tokens per minute.
    InputTokensPerMinute,
    /// Output tokens per minute.
    OutputTokensPerMinute,
    /// Requests per day.
    RequestsPerDay,
    /// Tokens per day.
    TokensPerDay,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::RequestsPerMinute,
        Kind::TokensPerMinute,
        Kind::InputTokensPerMinute,
        Kind::OutputTokensPerMinute,
        Kind::RequestsPerDay,
        Kind::TokensPerDay,
    ];

    /// Position in [`Kind::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Kind::RequestsPerMinute => 0,
            Kind::TokensPerMinute => 1,
            Kind::InputTokensPerMinute => 2,
            Kind::OutputTokensPerMinute => 3,
            Kind::RequestsPerDay => 4,
            Kind::TokensPerDay => 5,
        }
    }

    /// The window it is counted over.
    pub const fn window(self) -> Window {
        match self {
            Kind::RequestsPerDay | Kind::TokensPerDay => Window::Day,
            _ => Window::Minute,
        }
    }

    /// Short name used in metrics and messages (`rpm`, `tpm`, ...).
    pub const fn short(self) -> &'static str {
        match self {
            Kind::RequestsPerMinute => "rpm",
            Kind::TokensPerMinute => "tpm",
            Kind::InputTokensPerMinute => "itpm",
            Kind::OutputTokensPerMinute => "otpm",
            Kind::RequestsPerDay => "rpd",
            Kind::TokensPerDay => "tpd",
        }
    }

    /// Long name used in messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Kind::RequestsPerMinute => "requests per minute",
            Kind::TokensPerMinute => "tokens per minute",
            Kind::InputTokensPerMinute => "input tokens per minute",
            Kind::OutputTokensPerMinute => "output tokens per minute",
            Kind::RequestsPerDay => "requests per day",
            Kind::TokensPerDay => "tokens per day",
        }
    }

    /// True for request-counting kinds.
    pub const fn counts_requests(self) -> bool {
        matches!(self, Kind::RequestsPerMinute | Kind::RequestsPerDay)
    }

    /// The amount of `cost` this kind counts.
    pub fn amount(self, cost: &Cost) -> u64 {
        match self {
            Kind::RequestsPerMinute | Kind::RequestsPerDay => cost.requests,
            Kind::TokensPerMinute | Kind::TokensPerDay => {
                cost.input_tokens.saturating_add(cost.output_tokens)
            }
            Kind::InputTokensPerMinute => cost.input_tokens,
            Kind::OutputTokensPerMinute => cost.output_tokens,
        }
    }
}

/// A value for each kind that is limited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits(pub [Option<u64>; 6]);

impl Limits {
    /// The limit of one kind.
    pub fn get(&self, kind: Kind) -> Option<u64> {
        self.0[kind.index()]
    }

    /// Sets the limit of one kind.
    pub fn set(&mut self, kind: Kind, value: Option<u64>) {
        self.0[kind.index()] = value;
    }

    /// These limits with one more set.
    pub fn with(mut self, kind: Kind, value: u64) -> Self {
        self.set(kind, Some(value));
        self
    }

    /// The limited kinds and their values.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL
            .iter()
            .filter_map(|k| self.get(*k).map(|v| (*k, v)))
    }

    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// What one request costs (or is estimated to cost) against a key's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Requests (1 for a request).
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens (before the answer: the most the request may use).
    pub output_tokens: u64,
}

impl Cost {
    /// One request with these token counts.
    pub fn request(input_tokens: u64, output_tokens: u64) -> Self {
        Cost {
            requests: 1,
            input_tokens,
            output_tokens,
        }
    }

    /// Prompt plus completion tokens.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}
