//! Every example config in `proxy/examples/` validates, with its variables set, and says in a
//! comment what `[cache] when` does; `eval.toml` caches every request.

use std::collections::HashMap;
use std::path::PathBuf;

use spillway::config::Config;
use spillway::config::cache::CacheWhen;

/// Every example's file name and its text, in name order.
fn examples() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("examples folder")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("readable"))
        })
        .collect()
}

/// An example parsed, every `env:NAME` it mentions given a value.
fn parse(name: &str, text: &str) -> Config {
    let env: HashMap<String, String> = text
        .split("env:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| {
            let value = if name.ends_with("REDIS_URL") {
                "redis://127.0.0.1:6379/0".to_string()
            } else {
                format!("value-of-{name}")
            };
            (name.to_string(), value)
        })
        .collect();
    spillway::config::parse(text, name, &env).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_example_config_validates() {
    let examples = examples();
    for (name, text) in &examples {
        assert!(!parse(name, text).routes.is_empty(), "{name} has no route");
    }
    assert!(
        examples.len() >= 4,
        "expected the four documented examples, found {}",
        examples.len()
    );
}

#[test]
fn every_example_config_says_what_cache_when_does() {
    for (name, text) in examples() {
        let comments: String = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('#'))
            .collect::<Vec<_>>()
            .join(" ");
        for policy in ["\"deterministic\"", "\"always\"", "temperature 0 or a seed"] {
            assert!(
                comments.contains(policy),
                "{name}: no comment on `when` mentions {policy}"
            );
        }
    }
}

#[test]
fn the_eval_example_caches_every_request_from_the_mock() {
    let (name, text) = examples()
        .into_iter()
        .find(|(name, _)| name == "eval.toml")
        .expect("proxy/examples/eval.toml");
    let config = parse(&name, &text);
    assert_eq!(config.cache.when, CacheWhen::Always);
    assert!(
        config.providers[0].base_url.contains("127.0.0.1:8090"),
        "the mock's default address"
    );
}
