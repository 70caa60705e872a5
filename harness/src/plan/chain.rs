//! What a spillway config means for a plan: the routes the traffic asks for, the provider those
//! routes start at (the one whose tier and keys are searched), and the fallback providers
//! after it, each as the config describes it (its keys, its `tier`, its `[providers.limits]`).

use std::collections::{BTreeMap, BTreeSet};

use spillway_mock::Limits;
use spillway_mock::spec::LimitKind;

use super::tiers::LimitTables;

/// The tier name of a fallback whose config names none: its limits are as configured.
pub const CONFIGURED: &str = "configured";

/// A fallback provider, as the config describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Fallback {
    /// Its name in the config.
    pub name: String,
    /// Upstream models the routes ask it for.
    pub models: BTreeSet<String>,
    /// How many keys the config gives it (at least 1).
    pub keys: usize,
    /// Its `tier`, or [`CONFIGURED`].
    pub tier: String,
    /// One key's limits per model: its tier's table with its `[providers.limits]` over it
    /// (models with none are left out: unlimited).
    pub limits: BTreeMap<String, Limits>,
}

/// The providers of the planned routes.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    /// The config, as given.
    pub config: toml::Table,
    /// The routes the traffic asks for.
    pub routes: BTreeSet<String>,
    /// The provider every planned route starts at.
    pub primary: String,
    /// Upstream models the routes ask the primary for.
    pub primary_models: BTreeSet<String>,
    /// The providers after it, in the order the routes first name them.
    pub fallbacks: Vec<Fallback>,
}

/// The `[[routes]]` and `[[providers]]` entries of a config, as tables.
fn entries<'a>(config: &'a toml::Table, name: &str) -> Vec<&'a toml::Table> {
    config
        .get(name)
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_table()).collect())
        .unwrap_or_default()
}

fn text<'a>(table: &'a toml::Table, field: &str) -> Option<&'a str> {
    table.get(field).and_then(|v| v.as_str())
}

/// A route's targets as (provider, model).
fn targets(route: &toml::Table) -> Vec<(String, String)> {
    route
        .get("targets")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_table())
                .filter_map(|t| {
                    Some((
                        text(t, "provider")?.to_string(),
                        text(t, "model")?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Chain {
    /// The chain of `routes` in `config` (`config_name` names it in errors).
    pub fn new(
        config: toml::Table,
        config_name: &str,
        routes: BTreeSet<String>,
        tables: &LimitTables,
    ) -> Result<Chain, String> {
        let all = entries(&config, "routes");
        let mut chains = Vec::new();
        for name in &routes {
            let route = all
                .iter()
                .find(|r| text(r, "model") == Some(name.as_str()))
                .ok_or_else(|| {
                    let known: Vec<&str> = all.iter().filter_map(|r| text(r, "model")).collect();
                    format!(
                        "the traffic asks for model {name:?}, which no route of {config_name} names (routes: {})",
                        known.join(", ")
                    )
                })?;
            let t = targets(route);
            if t.is_empty() {
                return Err(format!("{config_name}: route {name:?} has no targets"));
            }
            chains.push(t);
        }
        let primary = chains
            .first()
            .map(|t| t[0].0.clone())
            .ok_or("the traffic has no requests")?;
        if let Some(other) = chains.iter().find(|t| t[0].0 != primary) {
            return Err(format!(
                "the traffic's routes start at different providers ({primary}, {}): plan one route at a time with --route",
                other[0].0
            ));
        }
        let mut primary_models = BTreeSet::new();
        let mut order: Vec<String> = Vec::new();
        let mut models: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (provider, model) in chains.into_iter().flatten() {
            if provider == primary {
                primary_models.insert(model);
            } else {
                if !order.contains(&provider) {
                    order.push(provider.clone());
                }
                models.entry(provider).or_default().insert(model);
            }
        }
        let providers = entries(&config, "providers");
        let fallbacks = order
            .into_iter()
            .map(|name| {
                let table = providers
                    .iter()
                    .find(|p| text(p, "name") == Some(name.as_str()))
                    .ok_or_else(|| format!("{config_name}: a route names provider {name:?}, which is not among [[providers]]"))?;
                fallback(name.clone(), table, models.remove(&name).unwrap_or_default(), tables, config_name)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !providers
            .iter()
            .any(|p| text(p, "name") == Some(primary.as_str()))
        {
            return Err(format!(
                "{config_name}: a route names provider {primary:?}, which is not among [[providers]]"
            ));
        }
        Ok(Chain {
            config,
            routes,
            primary,
            primary_models,
            fallbacks,
        })
    }

    /// Checks that every tier to plan knows a limit for every model the primary serves.
    pub fn check_tiers(&self, tiers: &[String], tables: &LimitTables) -> Result<(), String> {
        for tier in tiers {
            if !tables.has_tier(tier) {
                return Err(format!(
                    "no limit table for tier {tier:?} (known: {}; add one in a limits file)",
                    tables.tier_names().join(", ")
                ));
            }
            for model in &self.primary_models {
                if tables.limits(tier, model).is_none() {
                    return Err(format!(
                        "tier {tier:?} has no limits for {model}: give them in a limits file as [{tier}.\"{model}\"]"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A fallback provider from its `[[providers]]` table.
fn fallback(
    name: String,
    table: &toml::Table,
    models: BTreeSet<String>,
    tables: &LimitTables,
    config_name: &str,
) -> Result<Fallback, String> {
    let keys = table
        .get("keys")
        .and_then(|k| k.as_array())
        .map_or(1, |k| k.len().max(1));
    let tier = text(table, "tier").unwrap_or(CONFIGURED).to_string();
    let written: BTreeMap<String, Limits> = match table.get("limits") {
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| format!("{config_name}: providers {name:?} limits: {e}"))?,
        None => BTreeMap::new(),
    };
    let mut limits = BTreeMap::new();
    for model in &models {
        let mut l = tables.limits(&tier, model).unwrap_or(Limits::none());
        if let Some(over) = written.get(model) {
            for kind in LimitKind::ALL {
                if let Some(v) = over.get(kind) {
                    l.set(kind, Some(v));
                }
            }
        }
        if !l.is_unlimited() {
            limits.insert(model.clone(), l);
        }
    }
    Ok(Fallback {
        name,
        models,
        keys,
        tier,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[providers]]
name = "groq"
base_url = "https://api.groq.com/openai/v1"
keys = ["env:GROQ_API_KEY"]
[[providers]]
name = "cerebras"
base_url = "https://api.cerebras.ai/v1"
keys = ["env:C1", "env:C2"]
[providers.limits."llama3.1-8b"]
requests_per_minute = 30
[[providers]]
name = "other"
base_url = "https://example.com/v1"
keys = ["env:O"]
[[routes]]
model = "llama-3.1-8b"
targets = [{ provider = "groq", model = "llama-3.1-8b-instant" }, { provider = "cerebras", model = "llama3.1-8b" }]
[[routes]]
model = "elsewhere"
targets = [{ provider = "other", model = "m" }]
"#;

    fn chain(routes: &[&str]) -> Result<Chain, String> {
        let config: toml::Table = toml::from_str(CONFIG).unwrap();
        let routes = routes.iter().map(|r| r.to_string()).collect();
        Chain::new(config, "c.toml", routes, &LimitTables::builtin())
    }

    #[test]
    fn a_route_gives_its_primary_and_its_fallbacks_as_configured() {
        let c = chain(&["llama-3.1-8b"]).unwrap();
        assert_eq!(c.primary, "groq");
        assert_eq!(
            c.primary_models.iter().collect::<Vec<_>>(),
            ["llama-3.1-8b-instant"]
        );
        assert_eq!(c.fallbacks.len(), 1);
        let f = &c.fallbacks[0];
        assert_eq!(
            (f.name.as_str(), f.keys, f.tier.as_str()),
            ("cerebras", 2, CONFIGURED)
        );
        assert_eq!(f.limits["llama3.1-8b"], Limits::rpm(30));
        assert!(
            c.check_tiers(
                &["free".into(), "developer".into()],
                &LimitTables::builtin()
            )
            .is_ok()
        );
        let e = c
            .check_tiers(&["gold".into()], &LimitTables::builtin())
            .unwrap_err();
        assert!(e.contains("gold") && e.contains("free"), "{e}");
    }

    #[test]
    fn routes_that_start_apart_or_do_not_exist_are_refused() {
        let e = chain(&["llama-3.1-8b", "elsewhere"]).unwrap_err();
        assert!(e.contains("--route"), "{e}");
        let e = chain(&["nope"]).unwrap_err();
        assert!(e.contains("\"nope\"") && e.contains("llama-3.1-8b"), "{e}");
    }
}
