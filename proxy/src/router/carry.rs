//! A reload's router takes over its predecessor's limit state for every key that is still
//! there: the same provider (by name), the same model and the same key alias. Anything new
//! starts fresh; anything gone is forgotten.

use crate::config::Config;
use crate::limits::ledger::CarryMap;
use crate::router::{Plan, Router};

impl Router {
    /// Takes over `previous`'s state (windows, learned limits, blocks, circuits, refused keys)
    /// for the targets and keys this router shares with it. Called before it serves.
    pub fn carry_from(&self, previous: &Router) {
        let map = carry_map(
            (&self.config, &self.plan),
            (&previous.config, &previous.plan),
        );
        let carried = previous.ledger.carry_out(previous.clock.instant());
        self.ledger.carry_in(carried, &map);
    }
}

/// Which old target and key each new one continues.
fn carry_map(new: (&Config, &Plan), old: (&Config, &Plan)) -> CarryMap {
    let (new_config, new_plan) = new;
    let (old_config, old_plan) = old;
    let old_provider = |name: &str| old_config.providers.iter().position(|p| p.name == name);
    let old_key = |provider: usize, alias: &str| {
        old_config.providers[provider]
            .keys
            .iter()
            .position(|k| k.alias == alias)
    };
    let mut map = CarryMap::default();
    for target in &new_plan.targets {
        let provider = &new_config.providers[target.provider];
        let old_target = old_provider(&provider.name).and_then(|op| {
            old_plan
                .targets
                .iter()
                .position(|t| t.provider == op && t.model == target.model)
        });
        let keys = provider
            .keys
            .iter()
            .map(|k| {
                let old_target = &old_plan.targets[old_target?];
                old_key(old_target.provider, &k.alias)
            })
            .collect();
        map.targets.push(old_target);
        map.target_keys.push(keys);
    }
    map.provider_keys = new_config
        .providers
        .iter()
        .map(|p| {
            let op = old_provider(&p.name);
            p.keys
                .iter()
                .map(|k| op.and_then(|op| Some((op, old_key(op, &k.alias)?))))
                .collect()
        })
        .collect();
    map
}
