//! The traffic a plan is for: a recording (`spillway serve --record`), kept at its recorded
//! times, or a `[traffic]` table (a scenario file's) describing synthetic traffic when no
//! recording exists yet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::traffic::{self, Planned, Traffic};

/// Requests in flight at most when replaying a recording: enough that arrivals keep their
/// recorded times (a request waits at the gateway, not in the harness).
pub const RECORDING_CLIENTS: usize = 1000;

/// The planned traffic.
#[derive(Clone, Debug)]
pub struct PlanTraffic {
    /// Names the report files (`NAME.plan.json`): the file's name without its extension.
    pub name: String,
    /// The file it came from.
    pub path: PathBuf,
    /// The passes to send.
    pub passes: Vec<Vec<Planned>>,
    /// The `[traffic]` table a scenario replays it with (a recording's path absolute).
    pub table: Table,
    /// The file's `[proxy]` table, when it has one (a scenario file).
    pub proxy: Option<Table>,
}

impl PlanTraffic {
    /// Requests over every pass.
    pub fn requests(&self) -> usize {
        self.passes.iter().map(Vec::len).sum()
    }

    /// The routes (client-facing models) the requests ask for.
    pub fn routes(&self) -> BTreeSet<String> {
        self.passes
            .iter()
            .flatten()
            .filter_map(|p| {
                p.body
                    .get("model")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .collect()
    }

    /// Keeps only the requests for `route`.
    pub fn only_route(&mut self, route: &str) -> Result<(), String> {
        for pass in &mut self.passes {
            pass.retain(|p| p.body.get("model").and_then(|m| m.as_str()) == Some(route));
        }
        if self.requests() == 0 {
            return Err(format!(
                "{}: no request asks for route {route:?}",
                self.path.display()
            ));
        }
        Ok(())
    }
}

/// Reads `path`: a `.toml` file's `[traffic]` table (and `[proxy]`, if any), else a recording;
/// `clients` overrides the concurrent clients; `seed` plans synthetic traffic.
pub fn load(path: &Path, clients: Option<usize>, seed: u64) -> Result<PlanTraffic, String> {
    let name = path
        .file_stem()
        .map_or("traffic".into(), |s| s.to_string_lossy().into_owned());
    if path.extension().and_then(|e| e.to_str()) == Some("toml") {
        return from_table_file(path, name, clients, seed);
    }
    let passes = vec![traffic::from_recording(path, 1.0)?];
    let abs = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut table = Table::new();
    table.insert(
        "clients".into(),
        Value::Integer(clients.unwrap_or(RECORDING_CLIENTS) as i64),
    );
    table.insert("replay".into(), Value::String(abs.display().to_string()));
    Ok(PlanTraffic {
        name,
        path: path.to_path_buf(),
        passes,
        table,
        proxy: None,
    })
}

fn from_table_file(
    path: &Path,
    name: String,
    clients: Option<usize>,
    seed: u64,
) -> Result<PlanTraffic, String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let mut whole: Table = toml::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    let Some(Value::Table(mut table)) = whole.remove("traffic") else {
        return Err(format!(
            "{file}: no [traffic] table (give a recording, or a file with [traffic])"
        ));
    };
    if let Some(n) = clients {
        table.insert("clients".into(), Value::Integer(n as i64));
    }
    if let Some(Value::String(replay)) = table.get("replay") {
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = std::fs::canonicalize(base.join(replay))
            .map_err(|e| format!("{file}: traffic.replay {replay:?}: {e}"))?;
        table.insert("replay".into(), Value::String(abs.display().to_string()));
    }
    let traffic: Traffic = Value::Table(table.clone())
        .try_into()
        .map_err(|e| format!("{file}: [traffic]: {e}"))?;
    traffic
        .check()
        .map_err(|(field, message)| format!("{file}: traffic.{field}: {message}"))?;
    let pass = match &traffic.replay {
        Some(recording) => traffic::from_recording(recording, traffic.speed.unwrap_or(1.0))?,
        None => traffic::synthetic(&traffic, seed),
    };
    let proxy = match whole.remove("proxy") {
        Some(Value::Table(p)) => Some(p),
        _ => None,
    };
    Ok(PlanTraffic {
        name,
        path: path.to_path_buf(),
        passes: vec![pass; traffic.repeat],
        table,
        proxy,
    })
}
