//! Every TOML block of the READMEs parses as what it shows: a scenario file (it has `[traffic]`
//! or `[[mocks]]`) loads as one, its `[proxy]` included; a block that opens with
//! `# plan --limits` or `# plan --costs` reads as `plan`'s limits or cost file; anything else is
//! a spillway config whose sections and fields spillway knows. A README that shows a field the program does not read
//! fails here, not in a reader's hands.

use std::path::Path;

use spillway::config::RawConfig;
use spillway_harness::plan::costs::CostTable;
use spillway_harness::plan::tiers::LimitTables;
use spillway_harness::scenario::Scenario;

/// The READMEs, relative to the workspace root.
const READMES: [&str; 4] = [
    "README.md",
    "proxy/README.md",
    "harness/README.md",
    "mock-provider/README.md",
];

/// Each ```toml block of `text`, with the line it starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_start().starts_with("```toml") => open = Some((i + 2, String::new())),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(open.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    assert!(open.is_none(), "a ```toml block is never closed");
    blocks
}

#[test]
fn every_readme_toml_block_parses_as_a_scenario_or_a_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for readme in READMES {
        let text = std::fs::read_to_string(root.join(readme)).expect("the README");
        for (line, block) in toml_blocks(&text) {
            let at = format!("{readme}:{line}");
            let table: toml::Table =
                toml::from_str(&block).unwrap_or_else(|e| panic!("{at}: not TOML: {e}"));
            if block.starts_with("# plan --limits") {
                let tables = LimitTables::builtin().with_file(&block, &at);
                tables.unwrap_or_else(|e| panic!("{at}: not a limits file: {e}"));
                checked += 1;
                continue;
            }
            if block.starts_with("# plan --costs") {
                CostTable::parse(&block, &at)
                    .unwrap_or_else(|e| panic!("{at}: not a cost file: {e}"));
                checked += 1;
                continue;
            }
            let proxy = if table.contains_key("traffic") || table.contains_key("mocks") {
                let scenario = Scenario::parse(&block, Path::new(&at))
                    .unwrap_or_else(|e| panic!("{at}: not a scenario: {e}"));
                scenario.proxy
            } else {
                table
            };
            if let Err(e) = toml::Value::Table(proxy).try_into::<RawConfig>() {
                panic!("{at}: not a spillway config: {e}");
            }
            checked += 1;
        }
    }
    // The harness's scenario example and the proxy's three config examples, at least.
    assert!(checked >= 4, "only {checked} TOML blocks found");
}

#[test]
fn blocks_are_found_with_their_lines() {
    let text = "intro\n```toml\na = 1\n```\n```sh\nb\n```\n```toml\n[x]\n```\n";
    assert_eq!(
        toml_blocks(text),
        vec![(3, "a = 1\n".to_string()), (9, "[x]\n".to_string())]
    );
}
