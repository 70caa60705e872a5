//! The header dialects: which provider's rate-limit headers and error bodies a response
//! carries. The mock speaks one and the proxy reads one, and both take it from config files and
//! flags under the same four names, so the names live here once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which provider's rate-limit headers and error bodies are spoken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Groq (the default): `x-ratelimit-*-requests` per day, `x-ratelimit-*-tokens` per minute,
    /// Go-duration resets.
    #[default]
    Groq,
    /// OpenAI: the same six names, both per minute.
    #[serde(rename = "openai")]
    OpenAi,
    /// Cerebras: `x-ratelimit-*-requests-day` and `-tokens-minute`, float-second resets.
    Cerebras,
    /// Anthropic: `anthropic-ratelimit-*`, RFC 3339 resets, Anthropic's error bodies and 529.
    Anthropic,
}

impl Dialect {
    /// Every dialect, in the order error messages list them.
    pub const ALL: [Dialect; 4] = [
        Dialect::Groq,
        Dialect::OpenAi,
        Dialect::Cerebras,
        Dialect::Anthropic,
    ];

    /// The dialect's name as configs and flags spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Dialect::Groq => "groq",
            Dialect::OpenAi => "openai",
            Dialect::Cerebras => "cerebras",
            Dialect::Anthropic => "anthropic",
        }
    }

    /// Reads a dialect name, exactly as [`Dialect::name`] spells it.
    pub fn parse(name: &str) -> Result<Self, UnknownDialect> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| UnknownDialect(name.to_string()))
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(name: &str) -> Result<Self, UnknownDialect> {
        Dialect::parse(name)
    }
}

/// A name that is none of the four dialects; its message lists them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown dialect {0:?}: expected groq, openai, cerebras or anthropic")]
pub struct UnknownDialect(
    /// The name as given.
    pub String,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_and_serde_spells_it_the_same() {
        for dialect in Dialect::ALL {
            assert_eq!(Dialect::parse(dialect.name()), Ok(dialect));
            assert_eq!(dialect.name().parse::<Dialect>(), Ok(dialect));
            assert_eq!(dialect.to_string(), dialect.name());
            let json = serde_json::to_string(&dialect).expect("serializes");
            assert_eq!(json, format!("\"{}\"", dialect.name()));
            assert_eq!(
                serde_json::from_str::<Dialect>(&json).expect("deserializes"),
                dialect
            );
        }
        assert_eq!(Dialect::default(), Dialect::Groq);
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_four_names() {
        let err = Dialect::parse("OpenAI").expect_err("names are lowercase");
        assert_eq!(
            err.to_string(),
            "unknown dialect \"OpenAI\": expected groq, openai, cerebras or anthropic"
        );
        assert!(serde_json::from_str::<Dialect>("\"open_ai\"").is_err());
    }
}
