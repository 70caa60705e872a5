//! Limit tables: per tier, per model, the limits one key gets. The planner gives each
//! candidate's mock keys, and spillway in front of them, the limits of the candidate's tier.
//!
//! Built in: Groq's `free` and `developer` plans, the tables spillway itself uses for
//! `[[providers]] tier = "..."` (`spillway::config::tiers`), so a plan and the gateway that
//! follows it agree. Where the numbers come from:
//! - `free`: Groq's rate-limits page (console.groq.com/docs/rate-limits), the free plan's table
//!   (requests and tokens per minute and per day), as read on 2026-12-04 and checked against the
//!   same page again on 2026-12-05 for the models spillway-mock serves; they equal the mock's own
//!   free-plan figures (`spillway_mock::Limits::groq_free_tier`, a test checks it).
//! - `developer`: the developer plan's figures as Groq has published them for these models;
//!   they could not be checked against Groq's page (it shows the free plan's table only), so
//!   treat them as a starting point and put your organization's limits (the console's limits
//!   page) in a limits file.
//!
//! A limits file (`--limits FILE`) holds `[TIER."MODEL"]` tables in spillway-mock's limit
//! fields; each replaces the built-in table of that tier and model, and a tier the built-in
//! tables lack is added.

use std::collections::BTreeMap;

use spillway::config::tiers::{Tier, groq_table};
use spillway::limits::kind::Kind;
use spillway_mock::Limits;

/// Per tier, per model, one key's limits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LimitTables {
    tiers: BTreeMap<String, BTreeMap<String, Limits>>,
}

impl LimitTables {
    /// Groq's free and developer plans (see the module's notes for where they come from).
    pub fn builtin() -> Self {
        let tiers = Tier::ALL
            .iter()
            .map(|tier| {
                let models = groq_table(*tier)
                    .into_iter()
                    .map(|(model, limits)| (model, mock_limits(&limits)))
                    .collect();
                (tier.name().to_string(), models)
            })
            .collect();
        LimitTables { tiers }
    }

    /// These tables with a limits file's `[TIER."MODEL"]` tables put over them (`name` names
    /// the file in errors).
    pub fn with_file(mut self, text: &str, name: &str) -> Result<Self, String> {
        let file: BTreeMap<String, BTreeMap<String, Limits>> =
            toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
        for (tier, models) in file {
            for (model, limits) in models {
                if limits.is_unlimited() {
                    return Err(format!(
                        "{name}: [{tier}.\"{model}\"] sets no limit (an unlimited key plans nothing)"
                    ));
                }
                self.tiers
                    .entry(tier.clone())
                    .or_default()
                    .insert(model, limits);
            }
        }
        Ok(self)
    }

    /// One key's limits for `model` on `tier`, if the tables know them.
    pub fn limits(&self, tier: &str, model: &str) -> Option<Limits> {
        self.tiers.get(tier)?.get(model).copied()
    }

    /// True when `tier` is a known tier.
    pub fn has_tier(&self, tier: &str) -> bool {
        self.tiers.contains_key(tier)
    }

    /// Every tier's name.
    pub fn tier_names(&self) -> Vec<&str> {
        self.tiers.keys().map(String::as_str).collect()
    }
}

/// The proxy's limits in the mock's terms.
fn mock_limits(limits: &spillway::limits::kind::Limits) -> Limits {
    let mut out = Limits::none();
    for (kind, value) in limits.iter() {
        let slot = match kind {
            Kind::RequestsPerMinute => &mut out.requests_per_minute,
            Kind::TokensPerMinute => &mut out.tokens_per_minute,
            Kind::InputTokensPerMinute => &mut out.input_tokens_per_minute,
            Kind::OutputTokensPerMinute => &mut out.output_tokens_per_minute,
            Kind::RequestsPerDay => &mut out.requests_per_day,
            Kind::TokensPerDay => &mut out.tokens_per_day,
        };
        *slot = Some(value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_free_table_is_the_mocks_own_for_every_model_it_serves() {
        let tables = LimitTables::builtin();
        for model in spillway_mock::spec::GROQ_PRODUCTION_MODELS {
            assert_eq!(
                tables.limits("free", model),
                Some(Limits::groq_free_tier(model)),
                "{model}"
            );
            assert!(tables.limits("developer", model).is_some(), "{model}");
        }
    }

    #[test]
    fn a_limits_file_replaces_a_model_and_adds_a_tier() {
        let file = "[developer.\"llama-3.1-8b-instant\"]\nrequests_per_minute = 500\n\
                    [enterprise.\"llama-3.1-8b-instant\"]\nrequests_per_minute = 10000\n";
        let tables = LimitTables::builtin()
            .with_file(file, "limits.toml")
            .unwrap();
        assert_eq!(
            tables.limits("developer", "llama-3.1-8b-instant"),
            Some(Limits::rpm(500)),
            "the file's table replaces the built-in one"
        );
        assert!(tables.has_tier("enterprise"));
        assert_eq!(
            tables.limits("free", "llama-3.1-8b-instant"),
            Some(Limits::groq_free_tier("llama-3.1-8b-instant"))
        );
        let bad =
            LimitTables::builtin().with_file("[free.\"m\"]\nrequests_per_minit = 3\n", "l.toml");
        assert!(bad.unwrap_err().contains("l.toml"));
        let empty = LimitTables::builtin().with_file("[free.\"m\"]\n", "l.toml");
        assert!(empty.unwrap_err().contains("sets no limit"));
    }
}
