//! The proxy's layers, as ARCHITECTURE.md lists them, hold in the code: every `crate::` path in
//! `proxy/src` names a module on a lower layer than its own (or its own module), so data and
//! calls flow one way and no module can reach back up (ARCHITECTURE.md, invariant 8).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The layers from ARCHITECTURE.md's `layers` block, top first: module name → layer number
/// (0 is the top).
fn layers() -> HashMap<String, usize> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md at the repository's root");
    let block = doc
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```layers block in ARCHITECTURE.md");
    let mut out = HashMap::new();
    for (layer, line) in block.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        for module in line.split_whitespace() {
            assert!(
                out.insert(module.to_string(), layer).is_none(),
                "{module} is listed twice"
            );
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `proxy/src` belongs to (`None` for the crate root and the
/// binary, which sit above every layer).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// Every module named after `crate::` in `text`, with its line number.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let name: String = rest[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = &rest[at + 7..];
        }
    }
    out
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let layers = layers();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(&own) = layers.get(&module) else {
            wrong.push(format!(
                "{}: module `{module}` is in no layer of ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable");
        for (line, used) in crate_paths(&text) {
            if used == module {
                continue;
            }
            match layers.get(&used) {
                Some(&layer) if layer > own => {}
                Some(_) => wrong.push(format!(
                    "{}:{line}: `{module}` (layer {own}) uses `{used}`, which is not below it",
                    file.display()
                )),
                None => wrong.push(format!(
                    "{}:{line}: `{used}` is in no layer of ARCHITECTURE.md",
                    file.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_that_runs_up() {
    let paths = crate_paths(
        "use crate::server::names::X; // crate::ignored\nlet x = crate::pipeline::run();",
    );
    assert_eq!(
        paths,
        vec![(1, "server".to_string()), (2, "pipeline".to_string())]
    );
}

#[test]
fn the_router_reaches_limit_state_only_through_the_ledger() {
    // The state's own modules; the router may name the ledger, the in-process ledger it
    // builds, and the vocabulary (kinds, headers, policies, token counts).
    const STATE: [&str; 4] = [
        "limits::window",
        "limits::pacer",
        "limits::circuit",
        "limits::key_health",
    ];
    let router = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/router");
    let mut files = Vec::new();
    rust_files(&router, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for state in STATE {
                if code.contains(state) {
                    wrong.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the router reaches past the ledger (ARCHITECTURE.md, invariant 10):\n{}",
        wrong.join("\n")
    );
}
