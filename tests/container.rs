//! The container files checked without Docker: `docker-compose.yml` parses and its services,
//! ports, commands and variables agree with the config the image ships
//! (`proxy/examples/docker.toml`); every file the `Dockerfile` copies exists, every binary it
//! copies out of the build is one the packages it builds define, and it runs as a user that is
//! not root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Dockerfile's instructions, continuation lines joined: (keyword, arguments).
fn instructions() -> Vec<(String, String)> {
    read("Dockerfile")
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (keyword, rest) = l.split_once(' ').unwrap_or((l, ""));
            (keyword.to_uppercase(), rest.trim().to_string())
        })
        .collect()
}

/// The JSON-array form of an instruction's arguments (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args}: not an exec form: {e}"))
}

/// The package names `cargo build -p` names, and the binaries each of them defines.
fn built_binaries(build: &str) -> Vec<String> {
    let words: Vec<&str> = build.split_whitespace().collect();
    let packages: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    assert!(!packages.is_empty(), "no -p in {build}");
    let mut bins = Vec::new();
    for package in packages {
        let manifest = ["proxy", "mock-provider", "harness"]
            .iter()
            .map(|dir| read(&format!("{dir}/Cargo.toml")))
            .map(|text| toml::from_str::<toml::Table>(&text).expect("a manifest"))
            .find(|m| m["package"]["name"].as_str() == Some(package))
            .unwrap_or_else(|| panic!("no package {package} in the workspace"));
        for bin in manifest["bin"].as_array().expect("[[bin]]") {
            bins.push(bin["name"].as_str().expect("a name").to_string());
        }
    }
    bins
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_from_a_small_image_as_a_user() {
    let steps = instructions();
    let stages: Vec<&String> = steps
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[0].ends_with(" AS build"), "{}", stages[0]);
    assert!(
        stages[1].contains("-slim"),
        "a small runtime: {}",
        stages[1]
    );
    let build = steps
        .iter()
        .find(|(k, a)| k == "RUN" && a.contains("cargo build"))
        .expect("a cargo build");
    assert!(build.1.contains("--release") && build.1.contains("--locked"));
    let bins = built_binaries(&build.1);
    let mut copied = HashMap::new();
    for (_, args) in steps.iter().filter(|(k, _)| k == "COPY") {
        let words: Vec<&str> = args.split_whitespace().collect();
        match words.as_slice() {
            ["--from=build", from, to] => {
                let bin = from
                    .strip_prefix("/src/target/release/")
                    .unwrap_or_else(|| panic!("copies {from}, not a release binary"));
                assert!(
                    bins.iter().any(|b| b == bin),
                    "{bin} is not built: {bins:?}"
                );
                copied.insert(to.to_string(), bin.to_string());
            }
            [".", "."] => {}
            [from, to] => {
                assert!(root().join(from).is_file(), "COPY {from}: no such file");
                copied.insert(to.to_string(), from.to_string());
            }
            _ => panic!("COPY {args}: not understood"),
        }
    }
    let user = steps
        .iter()
        .rfind(|(k, _)| k == "USER")
        .map(|(_, a)| a.clone())
        .expect("a USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    let entry = exec_form(
        &steps
            .iter()
            .rfind(|(k, _)| k == "ENTRYPOINT")
            .expect("ENTRYPOINT")
            .1,
    );
    assert_eq!(
        copied.get(&format!("/usr/local/bin/{}", entry[0])),
        Some(&entry[0])
    );
    let cmd = exec_form(&steps.iter().rfind(|(k, _)| k == "CMD").expect("CMD").1);
    let config = &cmd[cmd.iter().position(|a| a == "--config").expect("--config") + 1];
    assert_eq!(
        copied.get(config).map(String::as_str),
        Some("proxy/examples/docker.toml"),
        "the config the image serves is the example it ships"
    );
    assert!(read(".dockerignore").lines().any(|l| l == "target"));
}

/// `host:port` of a `scheme://host:port/...` URL.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().expect("an authority");
    let (host, port) = authority.rsplit_once(':').expect("a port");
    (host.to_string(), port.parse().expect("a number"))
}

#[test]
fn compose_runs_spillway_a_mock_and_redis_that_agree_with_the_images_config() {
    let compose: serde_norway::Value =
        serde_norway::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML");
    let services = &compose["services"];
    for name in ["spillway", "mock", "redis"] {
        assert!(services[name].is_mapping(), "no service {name}");
    }
    let text = |v: &serde_norway::Value| v.as_str().expect("text").to_string();
    let list = |v: &serde_norway::Value| -> Vec<String> {
        v.as_sequence().expect("a list").iter().map(text).collect()
    };
    let config_text = read("proxy/examples/docker.toml");
    let config: toml::Table = toml::from_str(&config_text).expect("TOML");

    let spillway = &services["spillway"];
    let listen = config["server"]["listen"].as_str().expect("listen");
    let port = listen.rsplit_once(':').expect("a port").1;
    assert!(
        listen.starts_with("0.0.0.0:"),
        "reachable from outside the container"
    );
    assert_eq!(
        list(&spillway["ports"]),
        [format!("127.0.0.1:{port}:{port}")]
    );
    let env = spillway["environment"].as_mapping().expect("environment");
    let names: Vec<String> = env.keys().map(text).collect();
    for var in config_text.split("env:").skip(1) {
        let var = var.split('"').next().expect("a name");
        assert!(
            names.iter().any(|n| n == var),
            "{var} is not set: {names:?}"
        );
    }
    let command = list(&spillway["command"]);
    assert_eq!(command[..2], ["serve", "--config"]);
    assert_eq!(command[2], "/etc/spillway/spillway.toml");
    let depends = list(&spillway["depends_on"]);
    assert!(depends.contains(&"mock".into()) && depends.contains(&"redis".into()));

    // The provider's URL names the mock service on the port it listens on.
    let base_url = config["providers"][0]["base_url"]
        .as_str()
        .expect("base_url");
    let mock_command = list(&services["mock"]["command"]);
    let mock_listen = &mock_command[mock_command.iter().position(|a| a == "--listen").unwrap() + 1];
    let mock_port: u16 = mock_listen.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(host_port(base_url), ("mock".to_string(), mock_port));
    let mock_keys = &mock_command[mock_command.iter().position(|a| a == "--keys").unwrap() + 1];
    let mock_key = env.get("MOCK_KEY").map(text);
    assert_eq!(mock_key.as_deref(), Some(mock_keys.as_str()));
    assert_eq!(list(&services["mock"]["entrypoint"]), ["spillway-mock"]);

    // Redis is the redis service on its default port.
    let redis = text(env.get("SPILLWAY_REDIS_URL").expect("SPILLWAY_REDIS_URL"));
    assert_eq!(host_port(&redis), ("redis".to_string(), 6379));
    assert!(text(&services["redis"]["image"]).starts_with("redis:"));

    // The cache lives in the volume mounted over the spillway user's home.
    let cache = config["cache"]["path"].as_str().expect("cache path");
    let volumes = list(&spillway["volumes"]);
    let home = volumes[0].split_once(':').expect("name:path").1;
    assert!(cache.starts_with(home), "{cache} outside {home}");
}
