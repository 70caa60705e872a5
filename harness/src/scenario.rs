//! Scenario files (TOML, documented in harness/README.md): mock providers, a spillway config
//! that may point at them (`base_url = "mock:groq"`, `keys = ["mock:groq"]`), traffic, and
//! expectations. An unknown field or a malformed value is an error naming the file, the line
//! and the field.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use spillway_mock::{Dialect, Faults, Limits, MockSpec};

use crate::expect::Expect;
use crate::traffic::Traffic;

/// One mock provider of a scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockEntry {
    /// The name proxies refer to (`mock:NAME`).
    pub name: String,
    /// Its keys (default: one, `NAME-key`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Served model ids (default: Groq's production models plus any named in `limits`).
    pub models: Option<Vec<String>>,
    /// Limits per model, as spillway-mock's config.
    #[serde(default)]
    pub limits: BTreeMap<String, Limits>,
    /// Faults and latency, as spillway-mock's config.
    #[serde(default)]
    pub faults: Faults,
    /// Header dialect.
    pub dialect: Option<Dialect>,
    /// Answer flex-tier requests with 498.
    #[serde(default)]
    pub flex_capacity_exceeded: bool,
}

impl MockEntry {
    /// The keys this mock accepts.
    pub fn key_names(&self) -> Vec<String> {
        if self.keys.is_empty() {
            vec![format!("{}-key", self.name)]
        } else {
            self.keys.clone()
        }
    }

    /// The mock's spec.
    pub fn spec(&self) -> MockSpec {
        let mut models = self.models.clone().unwrap_or_else(|| {
            spillway_mock::spec::GROQ_PRODUCTION_MODELS
                .iter()
                .map(|m| m.to_string())
                .collect()
        });
        for m in self.limits.keys() {
            if !models.contains(m) {
                models.push(m.clone());
            }
        }
        MockSpec {
            keys: self.key_names(),
            models,
            limits: self.limits.clone(),
            dialect: self.dialect.unwrap_or_default(),
            flex_capacity_exceeded: self.flex_capacity_exceeded,
            faults: self.faults.clone(),
            ..MockSpec::default()
        }
    }
}

/// `[fleet]`: several gateways in front of the mocks, the traffic spread over them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// How many gateways (1 to 16).
    pub proxies: usize,
    /// They share their keys' limits through a `redis-server` the harness starts (from
    /// `PATH`) on a free port; `false`: each keeps its own, as without a fleet.
    #[serde(default = "sharing")]
    pub redis: bool,
    /// Redis is stopped this long after the traffic starts and brought back at the second
    /// time (scenario clock), to show the gateways going on their shares and rejoining.
    #[serde(default, deserialize_with = "outage_window")]
    pub redis_down: Option<(Duration, Duration)>,
}

/// `redis_down = ["40s", "100s"]`: from, until.
fn outage_window<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<(Duration, Duration)>, D::Error> {
    let pair: Option<[String; 2]> = Option::deserialize(de)?;
    let Some([from, until]) = pair else {
        return Ok(None);
    };
    let parse = |s: &str| humantime::parse_duration(s).map_err(serde::de::Error::custom);
    let (from, until) = (parse(&from)?, parse(&until)?);
    if until <= from {
        return Err(serde::de::Error::custom(
            "redis_down: expected [from, until] with until after from",
        ));
    }
    Ok(Some((from, until)))
}

fn sharing() -> bool {
    true
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            proxies: 1,
            redis: false,
            redis_down: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    description: Option<String>,
    #[serde(default)]
    seed: u64,
    time_scale: Option<f64>,
    #[serde(default)]
    mocks: Vec<MockEntry>,
    proxy: toml::Table,
    fleet: Option<FleetSpec>,
    traffic: Traffic,
    #[serde(default)]
    expect: Expect,
}

/// A loaded, checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The file it came from.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// What it shows.
    pub description: Option<String>,
    /// Seed for everything random (arrivals, prompts, faults).
    pub seed: u64,
    /// Simulated seconds per wall-clock second.
    pub time_scale: f64,
    /// Mock providers.
    pub mocks: Vec<MockEntry>,
    /// The spillway config, as written (with `mock:` references).
    pub proxy: toml::Table,
    /// How many gateways run it, and whether they share limits (one, alone, by default).
    pub fleet: FleetSpec,
    /// The traffic.
    pub traffic: Traffic,
    /// The expectations.
    pub expect: Expect,
}

/// An invalid scenario: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// The line (1-based; 0 when unknown).
    pub line: usize,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key assigned on the line around `offset` (`served_by.groq = ...` → `groq`).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let before = &text[start..offset];
    let eq = before.rfind('=')?;
    let key = before[..eq]
        .trim_end()
        .rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace())
        .next()?
        .trim_matches('"');
    (!key.is_empty()).then(|| key.to_string())
}

/// The first line mentioning `needle`.
fn find_line(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(0, |i| line_of(text, i))
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            field: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&text, path)
    }

    /// Parses and checks scenario text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let source = Source {
            file: path.display().to_string(),
            text,
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
        let time_scale = raw.time_scale.unwrap_or(1.0);
        if !(time_scale.is_finite() && time_scale > 0.0) {
            return Err(source.error(
                "time_scale",
                "time_scale",
                "expected a number greater than 0".into(),
            ));
        }
        check_mocks(&raw, &source)?;
        raw.expect.check().map_err(|(field, message)| {
            source.error(&format!("expect.{field}"), "client_status", message)
        })?;
        raw.traffic.check().map_err(|(field, message)| {
            source.error(&format!("traffic.{field}"), field, message)
        })?;
        let fleet = raw.fleet.unwrap_or_default();
        if !(1..=16).contains(&fleet.proxies) {
            return Err(source.error(
                "fleet.proxies",
                "proxies",
                "expected 1 to 16 gateways".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut traffic = raw.traffic;
        if let Some(replay) = &traffic.replay
            && replay.is_relative()
        {
            traffic.replay = Some(base.join(replay));
        }
        Ok(Scenario {
            path: path.to_path_buf(),
            name: raw.name,
            description: raw.description,
            seed: raw.seed,
            time_scale,
            mocks: raw.mocks,
            proxy: raw.proxy,
            fleet,
            traffic,
            expect: raw.expect,
        })
    }

    /// The name of its report files (`OUT/NAME.json`, `OUT/NAME.svg`): the scenario file's
    /// name without `.toml`, so `ls out/` lines up with `ls scenarios/`.
    pub fn report_name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "scenario".into())
    }
}

/// A scenario's text and the name of its file, to place an error on the line it concerns.
struct Source<'a> {
    file: String,
    text: &'a str,
}

impl Source<'_> {
    /// An error about `field`, on the first line that mentions `needle`.
    fn error(&self, field: &str, needle: &str, message: String) -> ScenarioError {
        ScenarioError {
            file: self.file.clone(),
            line: find_line(self.text, needle),
            field: field.to_string(),
            message,
        }
    }

    /// A TOML error as a scenario error: the field it names (an unknown or missing one, else
    /// the key assigned where it happened) and its line.
    fn toml_error(&self, e: &toml::de::Error) -> ScenarioError {
        let offset = e.span().map_or(0, |s| s.start);
        let message = e.message().trim().to_string();
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| {
                message.starts_with("unknown field") || message.starts_with("missing field")
            })
            .map(str::to_string)
            .or_else(|| key_at(self.text, offset))
            .unwrap_or_else(|| "(syntax)".into());
        ScenarioError {
            file: self.file.clone(),
            line: if e.span().is_some() {
                line_of(self.text, offset)
            } else {
                0
            },
            field,
            message,
        }
    }
}

/// Every mock is named once and valid, and every `mock:NAME` the proxy mentions names one.
fn check_mocks(raw: &RawScenario, source: &Source) -> Result<(), ScenarioError> {
    let mut names = HashMap::new();
    for (i, m) in raw.mocks.iter().enumerate() {
        if names.insert(m.name.clone(), i).is_some() {
            return Err(source.error(
                &format!("mocks[{i}].name"),
                &format!("\"{}\"", m.name),
                format!("mock {:?} is defined twice", m.name),
            ));
        }
        m.spec()
            .validate()
            .map_err(|e| source.error(&format!("mocks[{i}]"), &format!("\"{}\"", m.name), e))?;
    }
    let proxy_text = toml::to_string(&raw.proxy).unwrap_or_default();
    for name in mock_references(&proxy_text) {
        if !names.contains_key(&name) {
            let known: Vec<&str> = raw.mocks.iter().map(|m| m.name.as_str()).collect();
            return Err(source.error(
                "proxy",
                &format!("mock:{name}"),
                format!("no mock named {name:?} (mocks: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// The NAME of every `mock:NAME` in `text`, in order, repeats included.
pub fn mock_references(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split("mock:").skip(1).map(|piece| {
        piece
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    })
}

/// Every `.toml` file under `paths` (files as given, folders searched one level deep), sorted.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().and_then(|x| x.to_str()) == Some("toml"))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "two keys"
seed = 7
time_scale = 60

[[mocks]]
name = "groq"
keys = ["gk1", "gk2"]
[mocks.limits."llama-3.1-8b-instant"]
requests_per_minute = 30

[proxy]
[[proxy.providers]]
name = "groq"
base_url = "mock:groq"
keys = ["mock:groq"]
[[proxy.routes]]
model = "fast"
targets = [{ provider = "groq", model = "llama-3.1-8b-instant" }]

[traffic]
clients = 4
requests = 20
model = "fast"

[expect]
client_status = { 200 = "all" }
upstream_429 = { max = 0 }
served_by = { groq = ">= 0.5" }
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("scenarios/x.toml"))
    }

    #[test]
    fn a_good_scenario_loads() {
        let s = parse(GOOD).expect("valid");
        assert_eq!(s.mocks[0].key_names(), vec!["gk1", "gk2"]);
        assert_eq!(s.report_name(), "x");
    }

    #[test]
    fn an_unknown_field_names_file_line_and_field() {
        let bad = GOOD.replace("clients = 4", "clients = 4\nclientz = 5");
        let e = parse(&bad).expect_err("unknown field");
        assert_eq!(
            (e.file.as_str(), e.field.as_str()),
            ("scenarios/x.toml", "clientz")
        );
        assert_eq!(
            e.line,
            bad.lines().position(|l| l.starts_with("clientz")).unwrap() + 1
        );
    }

    #[test]
    fn a_malformed_value_names_its_field_and_line() {
        let bad = GOOD.replace("\">= 0.5\"", "\"lots\"");
        let e = parse(&bad).expect_err("bad comparison");
        assert_eq!(e.field, "groq");
        assert!(e.message.contains("comparison"), "{e}");
        assert_eq!(
            e.line,
            bad.lines().position(|l| l.contains("served_by")).unwrap() + 1
        );
    }

    #[test]
    fn an_unknown_mock_reference_is_named() {
        let bad = GOOD.replace("base_url = \"mock:groq\"", "base_url = \"mock:groc\"");
        let e = parse(&bad).expect_err("unknown mock");
        assert!(e.message.contains("groc"), "{e}");
        assert!(e.line > 0);
    }
}
