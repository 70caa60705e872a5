//! Groq's published per-model limits, by plan, so a user who knows their plan goes at full speed
//! from the first request (`[[providers]] tier = "free" | "developer"`). A provider's own
//! `[providers.limits."MODEL"]` values, and a `limits_file`, take precedence.
//!
//! Where the numbers come from:
//! - `free`: Groq's rate-limits page (console.groq.com/docs/rate-limits), the free plan's
//!   table as read on 2026-12-04 (requests per minute, requests per day, tokens per minute,
//!   tokens per day).
//! - `developer`: the developer plan's figures as Groq has published them for these models;
//!   they could not be checked against Groq's page when this table was written, so treat them
//!   as a starting point and put your organization's own limits (the console's limits page) in
//!   a `limits_file` or in `[providers.limits]`.

use std::collections::BTreeMap;

use crate::limits::kind::{Kind, Limits};

/// A Groq plan whose limits spillway knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// The free plan.
    Free,
    /// The developer (pay-as-you-go) plan.
    Developer,
}

impl Tier {
    /// Reads `free` or `developer`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Tier::Free),
            "developer" => Some(Tier::Developer),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Developer => "developer",
        }
    }

    /// Every plan.
    pub const ALL: [Tier; 2] = [Tier::Free, Tier::Developer];
}

/// (model, requests per minute, requests per day, tokens per minute, tokens per day; 0: none).
type Row = (&'static str, u64, u64, u64, u64);

const FREE: &[Row] = &[
    ("allam-2-7b", 30, 7_000, 6_000, 500_000),
    ("groq/compound", 30, 250, 70_000, 0),
    ("groq/compound-mini", 30, 250, 70_000, 0),
    ("llama-3.1-8b-instant", 30, 14_400, 6_000, 500_000),
    ("llama-3.3-70b-versatile", 30, 1_000, 12_000, 100_000),
    (
        "meta-llama/llama-4-maverick-17b-128e-instruct",
        30,
        1_000,
        6_000,
        500_000,
    ),
    (
        "meta-llama/llama-4-scout-17b-16e-instruct",
        30,
        1_000,
        30_000,
        500_000,
    ),
    ("meta-llama/llama-guard-4-12b", 30, 14_400, 15_000, 500_000),
    (
        "meta-llama/llama-prompt-guard-2-22m",
        30,
        14_400,
        15_000,
        500_000,
    ),
    (
        "meta-llama/llama-prompt-guard-2-86m",
        30,
        14_400,
        15_000,
        500_000,
    ),
    ("moonshotai/kimi-k2-instruct", 60, 1_000, 10_000, 300_000),
    (
        "moonshotai/kimi-k2-instruct-0905",
        60,
        1_000,
        10_000,
        300_000,
    ),
    ("openai/gpt-oss-120b", 30, 1_000, 8_000, 200_000),
    ("openai/gpt-oss-20b", 30, 1_000, 8_000, 200_000),
    ("openai/gpt-oss-safeguard-20b", 30, 1_000, 8_000, 200_000),
    ("qwen/qwen3-32b", 60, 1_000, 6_000, 500_000),
];

const DEVELOPER: &[Row] = &[
    ("llama-3.1-8b-instant", 1_000, 500_000, 250_000, 0),
    ("llama-3.3-70b-versatile", 1_000, 500_000, 300_000, 0),
    ("meta-llama/llama-guard-4-12b", 100, 50_000, 30_000, 0),
    ("openai/gpt-oss-120b", 1_000, 500_000, 250_000, 0),
    ("openai/gpt-oss-20b", 1_000, 500_000, 250_000, 0),
    ("qwen/qwen3-32b", 1_000, 500_000, 300_000, 0),
    ("moonshotai/kimi-k2-instruct", 1_000, 500_000, 250_000, 0),
];

fn limits_of(row: &Row) -> Limits {
    let (_, rpm, rpd, tpm, tpd) = *row;
    let mut l = Limits::default();
    for (kind, v) in [
        (Kind::RequestsPerMinute, rpm),
        (Kind::RequestsPerDay, rpd),
        (Kind::TokensPerMinute, tpm),
        (Kind::TokensPerDay, tpd),
    ] {
        if v > 0 {
            l.set(kind, Some(v));
        }
    }
    l
}

/// Every model the table knows on `tier`, with its limits.
pub fn groq_table(tier: Tier) -> BTreeMap<String, Limits> {
    let table = match tier {
        Tier::Free => FREE,
        Tier::Developer => DEVELOPER,
    };
    table
        .iter()
        .map(|r| (r.0.to_string(), limits_of(r)))
        .collect()
}

/// `base` with every limit `over` sets put over it.
pub fn overlay(base: Limits, over: Limits) -> Limits {
    let mut out = base;
    for (kind, v) in over.iter() {
        out.set(kind, Some(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_plan_has_groqs_published_numbers_and_config_values_override_them() {
        let l = groq_table(Tier::Free)
            .remove("llama-3.1-8b-instant")
            .expect("known");
        assert_eq!(l.get(Kind::RequestsPerMinute), Some(30));
        assert_eq!(l.get(Kind::RequestsPerDay), Some(14_400));
        assert_eq!(l.get(Kind::TokensPerMinute), Some(6_000));
        assert_eq!(l.get(Kind::TokensPerDay), Some(500_000));
        let compound = groq_table(Tier::Free)
            .remove("groq/compound")
            .expect("known");
        assert_eq!(
            compound.get(Kind::TokensPerDay),
            None,
            "a dash in the table"
        );
        assert!(!groq_table(Tier::Developer).contains_key("no-such-model"));
        let over = overlay(l, Limits::default().with(Kind::RequestsPerMinute, 45));
        assert_eq!(over.get(Kind::RequestsPerMinute), Some(45));
        assert_eq!(over.get(Kind::TokensPerMinute), Some(6_000));
        assert_eq!(Tier::parse("developer"), Some(Tier::Developer));
        assert!(groq_table(Tier::Developer).len() >= 5);
    }
}
