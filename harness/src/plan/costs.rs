//! A cost table (`--costs FILE`): what a key of a provider on a tier costs, and optionally what
//! its tokens cost, so the planner can rank candidates by money rather than by tier and keys.
//!
//! ```toml
//! [groq]
//! free = 0                                          # per key
//! developer = { key = 0, million_tokens = 0.08 }    # per key, and per million tokens served
//! [cerebras]
//! configured = 10                                   # a fallback as the config describes it
//! ```
//!
//! Units are the user's: a candidate's cost is the sum over its providers of keys × `key` plus
//! the tokens it served in the planned traffic / 1,000,000 × `million_tokens`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What one key of a provider on a tier costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per key.
    #[serde(default)]
    pub key: f64,
    /// Per million tokens (prompt and completion) the provider served.
    #[serde(default)]
    pub million_tokens: f64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPrice {
    PerKey(f64),
    Table(Price),
}

/// Per provider, per tier, a price.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostTable {
    prices: BTreeMap<String, BTreeMap<String, Price>>,
}

impl CostTable {
    /// Reads a cost file (`name` names it in errors).
    pub fn parse(text: &str, name: &str) -> Result<CostTable, String> {
        let raw: BTreeMap<String, BTreeMap<String, RawPrice>> = toml::from_str(text)
            .map_err(|e| {
                format!("{name}: {e} (expected [PROVIDER] tables of TIER = price per key, or TIER = {{ key = .., million_tokens = .. }})")
            })?;
        let mut prices = BTreeMap::new();
        for (provider, tiers) in raw {
            let mut row = BTreeMap::new();
            for (tier, price) in tiers {
                let price = match price {
                    RawPrice::PerKey(key) => Price {
                        key,
                        million_tokens: 0.0,
                    },
                    RawPrice::Table(p) => p,
                };
                let fine = |v: f64| v.is_finite() && v >= 0.0;
                if !(fine(price.key) && fine(price.million_tokens)) {
                    return Err(format!(
                        "{name}: [{provider}] {tier}: a price is a number of at least 0"
                    ));
                }
                row.insert(tier, price);
            }
            prices.insert(provider, row);
        }
        Ok(CostTable { prices })
    }

    /// The price of `provider` on `tier`, if the table gives one.
    pub fn price(&self, provider: &str, tier: &str) -> Option<Price> {
        self.prices.get(provider)?.get(tier).copied()
    }
}

impl Price {
    /// What `keys` keys that served `tokens` tokens cost.
    pub fn of(&self, keys: usize, tokens: u64) -> f64 {
        keys as f64 * self.key + tokens as f64 / 1e6 * self.million_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_per_key_and_per_token_add_up() {
        let t = CostTable::parse(
            "[groq]\nfree = 0\ndeveloper = { key = 1, million_tokens = 0.5 }\n[cerebras]\nconfigured = 10\n",
            "costs.toml",
        )
        .unwrap();
        assert_eq!(t.price("groq", "free").unwrap().of(3, 1_000_000), 0.0);
        assert_eq!(t.price("groq", "developer").unwrap().of(2, 4_000_000), 4.0);
        assert_eq!(t.price("cerebras", "configured").unwrap().of(1, 0), 10.0);
        assert!(t.price("groq", "enterprise").is_none());
        let e = CostTable::parse("[groq]\nfree = \"cheap\"\n", "c.toml").unwrap_err();
        assert!(e.contains("c.toml"), "{e}");
        assert!(CostTable::parse("[groq]\nfree = -1\n", "c.toml").is_err());
    }
}
