//! Finds, when the tests are built, what the tests that need something outside Rust can use,
//! so a test whose need is missing shows as ignored with its reason instead of passing empty:
//! `cfg(openai_sdk)` when a Python with the `openai` package is found (`SPILLWAY_PYTHON`, else
//! `.venv/bin/python` at the workspace root); `cfg(redis_server)` when `redis-server` runs from
//! `PATH`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(openai_sdk)");
    println!("cargo:rerun-if-env-changed=SPILLWAY_PYTHON");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("..");
    let venv = root.join(".venv/bin/python");
    // Made anew with the virtual environment (its python is a link to an old file).
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".venv/pyvenv.cfg").display()
    );
    // Changes when a package is installed into an existing environment (`pip install openai`).
    println!(
        "cargo:rerun-if-changed={}",
        root.join(".venv/lib").display()
    );
    let candidates = [
        std::env::var_os("SPILLWAY_PYTHON").map(PathBuf::from),
        Some(venv),
    ];
    let found = candidates.into_iter().flatten().any(|p| {
        Command::new(p)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found {
        println!("cargo:rustc-cfg=openai_sdk");
    }
    println!("cargo:rustc-check-cfg=cfg(redis_server)");
    println!("cargo:rerun-if-env-changed=PATH");
    // Looked at again when redis-server appears in (or leaves) a directory of PATH, as when
    // scripts/test.sh installs it after an earlier build.
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("redis-server").display()
        );
    }
    let redis = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if redis {
        println!("cargo:rustc-cfg=redis_server");
    }
}
