//! `cfg(redis_server)` when `redis-server` runs from `PATH`, so the harness's tests that start
//! one (the bench's fleet) show as ignored with the reason where it is missing.

use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(redis_server)");
    println!("cargo:rerun-if-env-changed=PATH");
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("redis-server").display()
        );
    }
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        println!("cargo:rustc-cfg=redis_server");
    }
}
