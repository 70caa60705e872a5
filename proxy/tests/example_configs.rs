//! Every example config in `proxy/examples/` validates, with its variables set, both as the
//! library reads it and as `spillway check` (the real binary) does; says in a comment what
//! `[cache] when` does; and has a row in proxy/README.md's table of examples naming its base
//! URLs and dialects as the config resolves them. `eval.toml` caches every request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

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

/// A made-up value for every `env:NAME` the text mentions (a URL for a Redis variable).
fn dummy_env(text: &str) -> HashMap<String, String> {
    text.split("env:")
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
        .collect()
}

/// An example parsed, every `env:NAME` it mentions given a value.
fn parse(name: &str, text: &str) -> Config {
    spillway::config::parse(text, name, &dummy_env(text)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_example_config_validates() {
    let examples = examples();
    for (name, text) in &examples {
        assert!(!parse(name, text).routes.is_empty(), "{name} has no route");
    }
    let names: Vec<&str> = examples.iter().map(|(name, _)| name.as_str()).collect();
    for provider in [
        "groq-keys",
        "cerebras",
        "openai",
        "mistral",
        "deepinfra",
        "anthropic",
        "gemini",
    ] {
        assert!(
            names.contains(&format!("{provider}.toml").as_str()),
            "no {provider}.toml among {names:?}"
        );
    }
}

#[test]
fn spillway_check_accepts_every_example_with_its_variables_set() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    // Run from a folder of its own: a relative cache path resolves there, not in the tree.
    let cwd = tempfile::tempdir().expect("temp dir");
    for (name, text) in examples() {
        let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args(["check", "--config"])
            .arg(format!("{dir}/{name}"))
            .current_dir(cwd.path())
            .envs(dummy_env(&text))
            .output()
            .expect("spillway runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "spillway check refused {name}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("route "), "{name}: {stdout}");
        // Each provider's line names the dialect its headers are read in.
        for p in parse(&name, &text).providers {
            let line = format!(
                "provider {}: {} [{} headers",
                p.name,
                p.base_url,
                p.dialect.name()
            );
            assert!(stdout.contains(&line), "{name}: no {line:?} in {stdout}");
        }
    }
}

#[test]
fn the_readme_table_lists_every_example_with_its_base_urls_and_dialects() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("proxy/README.md");
    for (name, text) in examples() {
        let link = format!("[`examples/{name}`](examples/{name})");
        let row = readme
            .lines()
            .find(|line| line.starts_with('|') && line.contains(&link))
            .unwrap_or_else(|| panic!("proxy/README.md has no table row for examples/{name}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | provider | example | base URL | dialect | learned from headers |
        let (urls, dialects) = (cells[3], cells[4]);
        for p in parse(&name, &text).providers {
            assert!(
                urls.contains(&format!("`{}`", p.base_url)),
                "{name}: the row's base URL cell {urls:?} does not name {}",
                p.base_url
            );
            assert!(
                dialects.contains(&format!("`{}`", p.dialect.name())),
                "{name}: the row's dialect cell {dialects:?} does not name {}",
                p.dialect.name()
            );
        }
    }
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
