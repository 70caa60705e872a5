//! Traffic: synthetic (arrivals, prompt sizes, duplicates, streams, all from the seed) or a
//! recording made by `spillway serve --record`, replayed with its inter-arrival times divided by
//! `speed`. Planning is a pure function of the scenario and the seed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

/// How requests arrive.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Arrival {
    /// Exponential inter-arrival times at this mean rate.
    Poisson {
        /// Mean requests per (simulated) minute.
        rate_per_minute: f64,
    },
    /// Evenly spaced at this rate.
    Constant {
        /// Requests per (simulated) minute.
        rate_per_minute: f64,
    },
    /// All at once, or `size` at a time every `every`.
    Burst {
        /// Requests per burst (default: all of them).
        #[serde(default)]
        size: Option<usize>,
        /// Time between bursts.
        #[serde(default, with = "humantime_serde")]
        every: Option<Duration>,
    },
}

impl Default for Arrival {
    fn default() -> Self {
        Arrival::Burst {
            size: None,
            every: None,
        }
    }
}

/// A range of prompt sizes, in the mock's tokens.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenRange {
    /// Smallest prompt.
    pub min: u64,
    /// Largest prompt.
    pub max: u64,
}

/// The `[traffic]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Concurrent clients: at most this many requests in flight.
    #[serde(default = "default_clients")]
    pub clients: usize,
    /// Requests per pass (synthetic traffic).
    pub requests: Option<usize>,
    /// How they arrive.
    #[serde(default)]
    pub arrival: Arrival,
    /// The model (route) clients ask for.
    pub model: Option<String>,
    /// Prompt sizes (default 50 to 200 tokens).
    pub prompt_tokens: Option<TokenRange>,
    /// `max_tokens` of every request (default 100).
    pub max_tokens: Option<u64>,
    /// Share of requests repeating an earlier prompt.
    #[serde(default)]
    pub duplicate_ratio: f64,
    /// Share of requests asking for a stream.
    #[serde(default)]
    pub stream_ratio: f64,
    /// `temperature` of every request (default 0: cacheable).
    pub temperature: Option<f64>,
    /// Times the whole traffic is sent, one pass after the other (default 1).
    #[serde(default = "one")]
    pub repeat: usize,
    /// A recording to replay instead of synthetic traffic.
    pub replay: Option<PathBuf>,
    /// Replay speed-up: inter-arrival times are divided by this (default 1).
    pub speed: Option<f64>,
    /// Longest a client waits for one answer (simulated time; default 30m).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

fn default_clients() -> usize {
    8
}

fn one() -> usize {
    1
}

/// One request to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// When, in simulated seconds from the start of its pass.
    pub at: f64,
    /// The body.
    pub body: Value,
    /// `"stream": true`.
    pub stream: bool,
    /// The endpoint (`chat` or `embeddings`).
    pub endpoint: String,
}

impl Traffic {
    /// Checks the table; on error, the field and what is wrong.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.clients == 0 {
            return Err(("clients", "expected at least 1".into()));
        }
        if self.repeat == 0 {
            return Err(("repeat", "expected at least 1".into()));
        }
        for (field, v) in [
            ("duplicate_ratio", self.duplicate_ratio),
            ("stream_ratio", self.stream_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err((field, format!("expected a share between 0 and 1 (got {v})")));
            }
        }
        if let Some(s) = self.speed
            && !(s.is_finite() && s > 0.0)
        {
            return Err((
                "speed",
                format!("expected a number greater than 0 (got {s})"),
            ));
        }
        if let Some(r) = self.prompt_tokens
            && (r.min < 8 || r.max < r.min)
        {
            return Err(("prompt_tokens", "expected 8 <= min <= max".into()));
        }
        match &self.arrival {
            Arrival::Poisson { rate_per_minute } | Arrival::Constant { rate_per_minute }
                if !(rate_per_minute.is_finite() && *rate_per_minute > 0.0) =>
            {
                return Err(("arrival", "rate_per_minute must be greater than 0".into()));
            }
            Arrival::Burst { size: Some(0), .. } => {
                return Err(("arrival", "size must be at least 1".into()));
            }
            _ => {}
        }
        match (&self.replay, self.requests, &self.model) {
            (Some(_), None, None) => Ok(()),
            (Some(_), _, _) => Err((
                "replay",
                "a replayed recording brings its own requests and models: leave out `requests` and `model`".into(),
            )),
            (None, None, _) | (None, Some(0), _) => {
                Err(("requests", "expected a number of requests (or `replay`)".into()))
            }
            (None, _, None) => Err(("model", "expected the model (route name) clients ask for".into())),
            (None, Some(_), Some(_)) => Ok(()),
        }
    }

    /// The client timeout (simulated).
    pub fn client_timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(30 * 60))
    }
}

/// A small, fast, seedable generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5151_5EED_5151_5EED)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi].
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

const WORDS: &[&str] = &[
    "summarize",
    "the",
    "river",
    "report",
    "explain",
    "why",
    "a",
    "weir",
    "controls",
    "flow",
    "list",
    "three",
    "risks",
    "of",
    "flooding",
    "in",
    "delta",
    "towns",
    "compare",
    "two",
    "reservoir",
    "designs",
    "and",
    "their",
    "costs",
    "describe",
    "how",
    "gauges",
    "measure",
    "levels",
    "during",
    "storms",
    "write",
    "short",
    "note",
    "about",
    "canal",
    "locks",
];

/// A prompt the mock counts as `tokens` prompt tokens (4 bytes per token, 6 tokens of chat
/// overhead for one user message).
pub fn prompt_of(tokens: u64, rng: &mut Rng) -> String {
    let bytes = (tokens.saturating_sub(6) * 4) as usize;
    let mut text = String::with_capacity(bytes + 16);
    while text.len() < bytes {
        text.push_str(WORDS[(rng.next_u64() % WORDS.len() as u64) as usize]);
        text.push(' ');
    }
    text.truncate(bytes.max(1));
    text
}

fn arrival_times(arrival: &Arrival, n: usize, rng: &mut Rng) -> Vec<f64> {
    match arrival {
        Arrival::Constant { rate_per_minute } => {
            let gap = 60.0 / rate_per_minute;
            (0..n).map(|i| i as f64 * gap).collect()
        }
        Arrival::Poisson { rate_per_minute } => {
            let mean = 60.0 / rate_per_minute;
            let mut t = 0.0;
            (0..n)
                .map(|_| {
                    let at = t;
                    t += -mean * (1.0 - rng.unit()).ln();
                    at
                })
                .collect()
        }
        Arrival::Burst { size, every } => {
            let size = size.unwrap_or(n).max(1);
            let every = every.map_or(60.0, |d| d.as_secs_f64());
            (0..n).map(|i| (i / size) as f64 * every).collect()
        }
    }
}

/// The synthetic traffic of one pass.
pub fn synthetic(traffic: &Traffic, seed: u64) -> Vec<Planned> {
    let n = traffic.requests.unwrap_or(0);
    let mut rng = Rng::new(seed);
    let times = arrival_times(&traffic.arrival, n, &mut rng);
    let range = traffic
        .prompt_tokens
        .unwrap_or(TokenRange { min: 50, max: 200 });
    let model = traffic.model.clone().unwrap_or_default();
    let mut prompts: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(n);
    for (i, at) in times.into_iter().enumerate() {
        let duplicate = !prompts.is_empty() && rng.unit() < traffic.duplicate_ratio;
        let prompt = if duplicate {
            prompts[(rng.next_u64() % prompts.len() as u64) as usize].clone()
        } else {
            let tokens = rng.between(range.min, range.max);
            let p = format!("#{i} {}", prompt_of(tokens, &mut rng));
            prompts.push(p.clone());
            p
        };
        let stream = rng.unit() < traffic.stream_ratio;
        let mut body = json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": traffic.max_tokens.unwrap_or(100),
            "temperature": traffic.temperature.unwrap_or(0.0),
        });
        if stream {
            body["stream"] = json!(true);
        }
        out.push(Planned {
            at,
            body,
            stream,
            endpoint: "chat".into(),
        });
    }
    out
}

/// The requests of a recording, in the order they arrived, at their recorded times divided by
/// `speed`. A recording lists each request when it was answered, so one answered after a
/// later arrival comes later in the file: sorting by arrival puts it back in its place.
pub fn from_recording(path: &Path, speed: f64) -> Result<Vec<Planned>, String> {
    let mut lines = spillway::record::read(path)?;
    lines.sort_by(|a, b| a.t.total_cmp(&b.t));
    let start = lines.first().map_or(0.0, |l| l.t);
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let mut body = line.body.ok_or_else(|| {
                format!(
                    "{}: line {}: recorded without bodies (--record-bodies false); it cannot be replayed",
                    path.display(),
                    i + 1
                )
            })?;
            if line.stream {
                body["stream"] = json!(true);
            }
            Ok(Planned {
                at: (line.t - start).max(0.0) / speed,
                body,
                stream: line.stream,
                endpoint: line.endpoint,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(extra: &str) -> Traffic {
        toml::from_str(&format!("requests = 200\nmodel = \"m\"\n{extra}")).expect("valid traffic")
    }

    #[test]
    fn the_same_seed_plans_the_same_traffic() {
        let t = traffic(
            "duplicate_ratio = 0.3\nstream_ratio = 0.5\narrival = { kind = \"poisson\", rate_per_minute = 120 }",
        );
        assert_eq!(synthetic(&t, 7), synthetic(&t, 7));
        assert_ne!(synthetic(&t, 7), synthetic(&t, 8));
    }

    #[test]
    fn shares_and_rates_come_out_about_right() {
        let t = traffic(
            "duplicate_ratio = 0.3\nstream_ratio = 0.5\narrival = { kind = \"poisson\", rate_per_minute = 120 }",
        );
        let plan = synthetic(&t, 1);
        let streams = plan.iter().filter(|p| p.stream).count();
        assert!((70..130).contains(&streams), "{streams}");
        let distinct: std::collections::HashSet<String> = plan
            .iter()
            .map(|p| p.body["messages"][0]["content"].to_string())
            .collect();
        assert!((120..165).contains(&distinct.len()), "{}", distinct.len());
        let span = plan.last().unwrap().at;
        assert!(
            (70.0..130.0).contains(&span),
            "200 at 120/min should span ~100 s: {span}"
        );
    }

    #[test]
    fn bursts_and_constant_rates_are_exact() {
        let burst = synthetic(
            &traffic("arrival = { kind = \"burst\", size = 50, every = \"30s\" }"),
            1,
        );
        assert_eq!(burst[49].at, 0.0);
        assert_eq!(burst[50].at, 30.0);
        let constant = synthetic(
            &traffic("arrival = { kind = \"constant\", rate_per_minute = 60 }"),
            1,
        );
        assert_eq!(constant[10].at, 10.0);
    }

    #[test]
    fn prompts_have_the_size_the_mock_counts() {
        let mut rng = Rng::new(1);
        let p = prompt_of(100, &mut rng);
        assert_eq!(p.len(), 94 * 4);
    }

    #[test]
    fn a_recording_replays_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let line = |t: f64, n: u32| {
            format!(
                "{{\"t\":{t},\"route\":\"m\",\"endpoint\":\"chat\",\"stream\":false,\"body\":{{\"model\":\"m\",\"n\":{n}}},\"key\":\"k\",\"prompt_tokens\":1,\"max_tokens\":1,\"outcome\":{{\"status\":200,\"latency_ms\":1.0}}}}\n"
            )
        };
        // Answered in the order 2, 1, 3: the second arrival's answer was written first.
        std::fs::write(&path, line(2.0, 2) + &line(1.0, 1) + &line(3.0, 3)).unwrap();
        let plan = from_recording(&path, 2.0).unwrap();
        let order: Vec<u64> = plan.iter().map(|p| p.body["n"].as_u64().unwrap()).collect();
        assert_eq!(order, [1, 2, 3]);
        let times: Vec<f64> = plan.iter().map(|p| p.at).collect();
        assert_eq!(times, [0.0, 0.5, 1.0]);
    }

    #[test]
    fn a_bad_table_names_its_field() {
        assert_eq!(
            traffic("stream_ratio = 2.0").check().unwrap_err().0,
            "stream_ratio"
        );
        let t: Traffic = toml::from_str("requests = 5").unwrap();
        assert_eq!(t.check().unwrap_err().0, "model");
    }
}
