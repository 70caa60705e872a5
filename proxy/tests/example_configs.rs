//! Every example config in `proxy/examples/` validates, with its variables set.

use std::collections::HashMap;

#[test]
fn every_example_config_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).expect("examples folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        // Give every `env:NAME` the example mentions a value.
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
        let config = spillway::config::parse(&text, &path.display().to_string(), &env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.routes.is_empty());
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the three documented examples, found {checked}"
    );
}
