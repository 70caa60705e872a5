//! One candidate: a tier and a number of keys for the primary provider, and which fallback
//! providers stay in the chain; and the scenario that tries it (mocks with the candidate's
//! limits, spillway told the same limits, the planned traffic, the goal as `[expect]`).

use std::collections::BTreeMap;

use serde::Serialize;
use toml::{Table, Value};

use super::chain::{Chain, Fallback};
use super::goal::{Goal, Metric};
use super::tiers::LimitTables;

/// A tier and key count for the primary provider, and the fallbacks kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Candidate {
    /// The primary provider's tier.
    pub tier: String,
    /// The primary provider's keys.
    pub keys: usize,
    /// The fallback providers kept in the chain (in chain order).
    pub fallbacks: Vec<String>,
}

impl Candidate {
    /// `groq free ×2`, `groq developer ×1 + cerebras`.
    pub fn label(&self, chain: &Chain) -> String {
        let mut s = format!("{} {} ×{}", chain.primary, self.tier, self.keys);
        for f in &self.fallbacks {
            s.push_str(" + ");
            s.push_str(f);
        }
        s
    }

    /// Keys over every provider in the chain.
    pub fn total_keys(&self, chain: &Chain) -> usize {
        self.keys + self.kept(chain).map(|f| f.keys).sum::<usize>()
    }

    /// The fallbacks kept, as the config describes them.
    pub fn kept<'a>(&'a self, chain: &'a Chain) -> impl Iterator<Item = &'a Fallback> + 'a {
        chain
            .fallbacks
            .iter()
            .filter(|f| self.fallbacks.contains(&f.name))
    }
}

/// What every candidate's scenario shares.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Simulated seconds per wall second.
    pub time_scale: f64,
    /// Seed of the synthetic traffic.
    pub seed: u64,
    /// The `[traffic]` table (a recording's path absolute).
    pub traffic: Table,
}

/// The scenario that tries `candidate`, as a scenario file's TOML.
pub fn scenario_toml(
    candidate: &Candidate,
    chain: &Chain,
    tables: &LimitTables,
    goal: &Goal,
    setup: &Setup,
) -> Table {
    let proxy = proxy(candidate, chain, tables);
    let mut mocks = vec![mock(
        &chain.primary,
        candidate.keys,
        chain.primary_models.iter().cloned().collect(),
        chain
            .primary_models
            .iter()
            .filter_map(|m| Some((m.clone(), tables.limits(&candidate.tier, m)?)))
            .collect(),
    )];
    for f in candidate.kept(chain) {
        mocks.push(mock(
            &f.name,
            f.keys,
            f.models.iter().cloned().collect(),
            f.limits.clone(),
        ));
    }
    for m in mocks.iter_mut().filter_map(Value::as_table_mut) {
        let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
        if let Some(dialect) = dialect_of(&proxy, name) {
            m.insert("dialect".into(), dialect);
        }
    }
    let mut s = Table::new();
    s.insert(
        "name".into(),
        Value::String(format!("plan: {}", candidate.label(chain))),
    );
    s.insert(
        "description".into(),
        Value::String(format!(
            "spillway-harness plan's candidate, checked against: {}",
            goal.text()
        )),
    );
    s.insert("seed".into(), Value::Integer(setup.seed as i64));
    s.insert("time_scale".into(), Value::Float(setup.time_scale));
    s.insert("mocks".into(), Value::Array(mocks));
    s.insert("proxy".into(), Value::Table(proxy));
    s.insert("traffic".into(), Value::Table(setup.traffic.clone()));
    s.insert("expect".into(), Value::Table(expect(goal)));
    s
}

/// A `[[mocks]]` entry: `keys` keys named `NAME-key-1`..., serving `models` with `limits`.
fn mock(
    name: &str,
    keys: usize,
    models: Vec<String>,
    limits: BTreeMap<String, spillway_mock::Limits>,
) -> Value {
    let mut m = Table::new();
    m.insert("name".into(), Value::String(name.into()));
    let keys = (1..=keys)
        .map(|i| Value::String(format!("{name}-key-{i}")))
        .collect();
    m.insert("keys".into(), Value::Array(keys));
    m.insert(
        "models".into(),
        Value::Array(models.into_iter().map(Value::String).collect()),
    );
    let limits: Table = limits
        .into_iter()
        .filter_map(|(model, l)| Some((model, Value::try_from(l).ok()?)))
        .collect();
    m.insert("limits".into(), Value::Table(limits));
    Value::Table(m)
}

/// The config for one candidate: the planned routes with the kept providers only, each
/// provider pointed at its mock and told its limits (the primary its tier's), and nothing
/// that belongs to a deployment (client keys, recording, cache path and mode, fleet).
fn proxy(candidate: &Candidate, chain: &Chain, tables: &LimitTables) -> Table {
    let mut config = chain.config.clone();
    config.remove("fleet");
    if let Some(Value::Table(server)) = config.get_mut("server") {
        for field in ["client_keys", "record", "record_bodies", "listen"] {
            server.remove(field);
        }
    }
    if let Some(Value::Table(cache)) = config.get_mut("cache") {
        cache.remove("path");
        cache.remove("mode");
    }
    let kept: Vec<&str> = std::iter::once(chain.primary.as_str())
        .chain(candidate.fallbacks.iter().map(String::as_str))
        .collect();
    if let Some(Value::Array(providers)) = config.get_mut("providers") {
        providers.retain(|p| {
            p.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| kept.contains(&n))
        });
        for p in providers.iter_mut().filter_map(Value::as_table_mut) {
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            point_at_mock(p, &name);
            let limits: BTreeMap<String, spillway_mock::Limits> = if name == chain.primary {
                chain
                    .primary_models
                    .iter()
                    .filter_map(|m| Some((m.clone(), tables.limits(&candidate.tier, m)?)))
                    .collect()
            } else {
                candidate
                    .kept(chain)
                    .find(|f| f.name == name)
                    .map(|f| f.limits.clone())
                    .unwrap_or_default()
            };
            let limits: Table = limits
                .into_iter()
                .filter_map(|(m, l)| Some((m, Value::try_from(l).ok()?)))
                .collect();
            p.insert("limits".into(), Value::Table(limits));
        }
    }
    if let Some(Value::Array(routes)) = config.get_mut("routes") {
        routes.retain(|r| {
            r.get("model")
                .and_then(Value::as_str)
                .is_some_and(|m| chain.routes.contains(m))
        });
        for r in routes.iter_mut().filter_map(Value::as_table_mut) {
            if let Some(Value::Array(targets)) = r.get_mut("targets") {
                targets.retain(|t| {
                    t.get("provider")
                        .and_then(Value::as_str)
                        .is_some_and(|p| kept.contains(&p))
                });
            }
        }
    }
    config
}

/// The dialect the config's provider `name` speaks (set on every provider by [`proxy`]), for
/// its mock to speak too.
fn dialect_of(proxy: &Table, name: &str) -> Option<Value> {
    proxy
        .get("providers")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get("dialect")
        .cloned()
}

/// Points a `[[providers]]` table at the mock of its name, in the dialect its real host speaks
/// (or the one it names), with the limits it is given written by the caller.
fn point_at_mock(p: &mut Table, name: &str) {
    let url = p
        .get("base_url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let dialect = match p.get("dialect").and_then(Value::as_str) {
        Some(d) => d.to_string(),
        None => serde_json::to_value(spillway::config::validate::dialect_for_url(url))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "groq".into()),
    };
    p.insert("dialect".into(), Value::String(dialect));
    p.insert("base_url".into(), Value::String(format!("mock:{name}")));
    p.insert(
        "keys".into(),
        Value::Array(vec![Value::String(format!("mock:{name}"))]),
    );
    for field in ["tier", "limits_file"] {
        p.remove(field);
    }
}

/// The goal in `[expect]`'s words, so the scenario checks what the plan checked
/// (`client_errors` has no `[expect]` twin and is left out).
fn expect(goal: &Goal) -> Table {
    let mut e = Table::new();
    for term in &goal.terms {
        let check = Value::String(term.check.to_string());
        let field = match term.metric {
            Metric::Client429 => {
                let mut statuses = Table::new();
                statuses.insert("429".into(), check);
                e.insert("client_status".into(), Value::Table(statuses));
                continue;
            }
            Metric::ClientErrors => continue,
            Metric::Upstream429 => "upstream_429",
            Metric::Fallbacks => "fallbacks",
            Metric::WaitP50 => "p50_latency",
            Metric::WaitP99 => "p99_latency",
            Metric::WaitMax => "max_latency",
        };
        e.insert(field.into(), check);
    }
    e
}
