//! A closed-loop HTTP/1.1 load generator: `concurrency` workers, each on its own keep-alive
//! connection, each sending its next request as soon as the previous answer is fully read.
//! Latencies go into HDR histograms, so percentiles are exact to three significant figures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::InvalidHeaderValue;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use spillway::upstream::describe;
use spillway_clock::Clock;
use tokio::net::TcpStream;

/// What to send, how hard and for how long.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Target URL (`http://host:port/path`).
    pub url: Uri,
    /// More instances of the same service (the same path): the workers take `url` and these
    /// in turn (worker `i` the `i mod n`th), so the load spreads evenly over all of them.
    pub spread: Vec<Uri>,
    /// Extra request headers (authorization, content type...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Request bodies.
    pub bodies: Bodies,
    /// Concurrent connections, each with one request in flight.
    pub concurrency: usize,
    /// How long to measure.
    pub duration: Duration,
    /// How long to send before measuring (connections and caches warm up).
    pub warmup: Duration,
    /// Send at most this many requests after the warm-up (stopping early if `duration` ends first).
    pub max_requests: Option<u64>,
    /// What every 200 answer's body must look like to count as correct.
    pub check: BodyCheck,
}

/// What a load run sends.
#[derive(Clone, Debug)]
pub enum Bodies {
    /// These bodies in turn, starting again after the last (none: GET requests).
    Cycle(Arc<Vec<Bytes>>),
    /// A body of its own for every request: `head`, the request's number, `tail`. No two
    /// requests of a run share a prompt, however many the run sends.
    Numbered {
        /// What comes before the number.
        head: Bytes,
        /// What comes after it.
        tail: Bytes,
    },
}

impl Bodies {
    /// The `n`th request's body; `None` for a GET.
    pub fn nth(&self, n: usize) -> Option<Bytes> {
        match self {
            Bodies::Cycle(all) if all.is_empty() => None,
            Bodies::Cycle(all) => Some(all[n % all.len()].clone()),
            Bodies::Numbered { head, tail } => {
                let number = n.to_string();
                let mut body = Vec::with_capacity(head.len() + number.len() + tail.len());
                body.extend_from_slice(head);
                body.extend_from_slice(number.as_bytes());
                body.extend_from_slice(tail);
                Some(Bytes::from(body))
            }
        }
    }
}

/// A cheap check of each answer's body, so a subject that answers fast but wrongly is caught
/// without the load generator parsing JSON on every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyCheck {
    /// Accept any body.
    #[default]
    Any,
    /// A chat completion: the body holds `"choices"` and `"content"`.
    Chat,
    /// A chat-completion stream: the body holds a `chat.completion.chunk` and ends with
    /// `data: [DONE]`.
    Stream,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl BodyCheck {
    /// Whether `body` passes.
    pub fn passes(self, body: &[u8]) -> bool {
        match self {
            BodyCheck::Any => true,
            BodyCheck::Chat => contains(body, b"\"choices\"") && contains(body, b"\"content\""),
            BodyCheck::Stream => {
                let trimmed = body.trim_ascii_end();
                trimmed.ends_with(b"data: [DONE]") && contains(body, b"chat.completion.chunk")
            }
        }
    }
}

/// What a load run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Requests answered during the measured period.
    pub requests: u64,
    /// Requests that failed at the connection level.
    pub errors: u64,
    /// What the first of those errors was.
    pub first_error: Option<String>,
    /// 200 answers whose body failed the check.
    pub invalid: u64,
    /// Answers by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Measured wall time, in seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: u64,
    /// Slowest answer, microseconds.
    pub max_us: u64,
}

impl LoadReport {
    /// Answers with any status but 200 (errors and malformed 200s are counted apart).
    pub fn non_200(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| **s != 200)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL has no host or port, or is not `http`.
    #[error("unsupported URL {0}: expected http://host:port/path")]
    Url(String),
    /// No connection could be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

fn authority(url: &Uri) -> Result<String, LoadError> {
    if url.scheme_str() != Some("http") {
        return Err(LoadError::Url(url.to_string()));
    }
    let host = url.host().ok_or_else(|| LoadError::Url(url.to_string()))?;
    Ok(format!("{host}:{}", url.port_u16().unwrap_or(80)))
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: &str) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Runs the load and reports what was measured after the warm-up.
pub async fn run_load(spec: LoadSpec) -> Result<LoadReport, LoadError> {
    let addrs = std::iter::once(&spec.url)
        .chain(&spec.spread)
        .map(authority)
        .collect::<Result<Vec<_>, _>>()?;
    // Fail fast when nothing listens.
    for addr in &addrs {
        connect(addr).await.map_err(|source| LoadError::Connect {
            addr: addr.clone(),
            source,
        })?;
    }
    let clock = Clock::real();
    let from = clock.now() + spec.warmup;
    let window = Window {
        from,
        to: from + spec.duration,
    };
    let workers = spec.concurrency.max(1);
    let run = Arc::new(Run {
        spec,
        addrs,
        clock: clock.clone(),
        window,
        sent: AtomicU64::new(0),
        slots: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(work(run.clone(), w)))
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.absorb(tally);
        }
    }
    let measured = clock.now().min(window.to).saturating_sub(window.from);
    Ok(total.report(measured))
}

/// The measured period of a run, as times on its clock: answers to requests sent before `from`
/// (the warm-up) are not counted, and nothing is sent after `to`.
#[derive(Clone, Copy)]
struct Window {
    from: Duration,
    to: Duration,
}

/// What every worker of a run shares: what to send, where, when, and the request counters.
struct Run {
    spec: LoadSpec,
    /// `host:port` of the URL and of each instance it is spread over.
    addrs: Vec<String>,
    clock: Clock,
    window: Window,
    /// Requests sent so far, by every worker: the next one's number.
    sent: AtomicU64,
    /// Measured requests started so far, against `max_requests`.
    slots: AtomicU64,
}

impl Run {
    /// Takes one of `max_requests` slots for a request about to be sent; false when none is
    /// left. A measured request takes its slot before it is sent, so exactly that many are
    /// measured however many workers run.
    fn take_slot(&self) -> bool {
        match self.spec.max_requests {
            Some(max) => {
                self.clock.now() < self.window.from
                    || self.slots.fetch_add(1, Ordering::Relaxed) < max
            }
            None => true,
        }
    }

    /// The next request to `addr`: the next body (a GET when there are none), the extra
    /// headers.
    fn next_request(&self, addr: &str) -> Request<Full<Bytes>> {
        let n = self.sent.fetch_add(1, Ordering::Relaxed) as usize;
        let (method, body) = match self.spec.bodies.nth(n) {
            Some(b) => (Method::POST, b),
            None => (Method::GET, Bytes::new()),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(
                self.spec
                    .url
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/"),
            )
            .header(http::header::HOST, addr);
        for (name, value) in &self.spec.headers {
            req = req.header(name, value);
        }
        req.body(Full::new(body)).expect("a valid request")
    }
}

/// Worker `w`: its own connection to its instance (made again after a failure), one request in
/// flight, until the window ends or the slots run out.
async fn work(run: Arc<Run>, w: usize) -> Tally {
    let (clock, window) = (&run.clock, run.window);
    let addr = &run.addrs[w % run.addrs.len()];
    let mut tally = Tally::new();
    let mut sender: Option<Sender> = None;
    loop {
        let now = clock.now();
        if now >= window.to {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => sender.insert(s),
                Err(_) => {
                    tally.errors += u64::from(now >= window.from);
                    clock.sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if !run.take_slot() {
            break;
        }
        let req = run.next_request(addr);
        let started = clock.now();
        let outcome = exchange(s, req, run.spec.check).await;
        let ended = clock.now();
        let failed = outcome.is_err();
        if started >= window.from && ended <= window.to {
            tally.count(outcome, ended - started);
        }
        if failed {
            sender = None;
        }
    }
    tally
}

/// Sends one request and reads its whole answer: its status, and whether its body passed the
/// check (any other status than 200 passes).
async fn exchange(
    s: &mut Sender,
    req: Request<Full<Bytes>>,
    check: BodyCheck,
) -> Result<(u16, bool), String> {
    // hyper's connection may still be finishing the previous answer (the end of a chunked
    // body); sending before it is ready fails with "connection was not ready".
    let outcome = match s.ready().await {
        Ok(()) => s.send_request(req).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(resp) => {
            let status = resp.status().as_u16();
            resp.into_body()
                .collect()
                .await
                .map(|b| (status, status != 200 || check.passes(&b.to_bytes())))
                .map_err(|e| format!("reading the answer: {}", describe(&e)))
        }
        Err(e) => Err(format!("sending: {}", describe(&e))),
    }
}

/// What one worker, or every worker together, counted in the measured window.
struct Tally {
    histogram: Histogram<u64>,
    by_status: BTreeMap<u16, u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    invalid: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("valid histogram bounds"),
            by_status: BTreeMap::new(),
            requests: 0,
            errors: 0,
            first_error: None,
            invalid: 0,
        }
    }

    /// Counts one measured request: its answer's status and validity, and its latency; or the
    /// error that ended it.
    fn count(&mut self, outcome: Result<(u16, bool), String>, latency: Duration) {
        match outcome {
            Ok((status, valid)) => {
                self.invalid += u64::from(!valid);
                let us = latency.as_micros().max(1) as u64;
                let _ = self.histogram.record(us.min(60_000_000));
                *self.by_status.entry(status).or_insert(0) += 1;
                self.requests += 1;
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// Adds another worker's counts to these (the first error seen stays the first).
    fn absorb(&mut self, other: Tally) {
        let _ = self.histogram.add(&other.histogram);
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.invalid += other.invalid;
        for (status, n) in other.by_status {
            *self.by_status.entry(status).or_insert(0) += n;
        }
    }

    /// The report of these counts over `measured` time.
    fn report(self, measured: Duration) -> LoadReport {
        let seconds = measured.as_secs_f64().max(1e-9);
        LoadReport {
            requests: self.requests,
            errors: self.errors,
            first_error: self.first_error,
            invalid: self.invalid,
            by_status: self.by_status,
            seconds,
            rps: self.requests as f64 / seconds,
            p50_us: self.histogram.value_at_quantile(0.50),
            p99_us: self.histogram.value_at_quantile(0.99),
            p999_us: self.histogram.value_at_quantile(0.999),
            max_us: self.histogram.max(),
        }
    }
}

/// The two headers every JSON request to an OpenAI-compatible endpoint carries: the bearer
/// `key` and the content type.
pub fn json_headers(key: &str) -> Result<Vec<(HeaderName, HeaderValue)>, InvalidHeaderValue> {
    Ok(vec![
        (
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(&format!("Bearer {key}"))?,
        ),
        (
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        ),
    ])
}

/// `count` chat-completions bodies for load runs, each with a different prompt of about
/// `prompt_bytes` bytes starting with `tag` (so separate runs can be kept from sharing prompts).
pub fn chat_bodies(model: &str, count: usize, prompt_bytes: usize, tag: &str) -> Vec<Bytes> {
    bodies(model, count, prompt_bytes, tag, false)
}

/// As [`chat_bodies`], with `"stream": true` when `stream`.
pub fn bodies(
    model: &str,
    count: usize,
    prompt_bytes: usize,
    tag: &str,
    stream: bool,
) -> Vec<Bytes> {
    let (head, tail) = chat_template(model, prompt_bytes, tag, stream);
    (0..count.max(1))
        .map(|i| Bytes::from(format!("{head}{i}{tail}")))
        .collect()
}

/// The same chat bodies as [`bodies`], but a new one for every request of a run, however long
/// it is: for measuring a cache's miss path, where a repeated prompt would be a hit.
pub fn numbered_bodies(model: &str, prompt_bytes: usize, tag: &str, stream: bool) -> Bodies {
    let (head, tail) = chat_template(model, prompt_bytes, tag, stream);
    Bodies::Numbered {
        head: Bytes::from(head),
        tail: Bytes::from(tail),
    }
}

/// A chat body in two halves, to be joined around a request number: the JSON around the number
/// is escaped once, so making a body costs one copy.
fn chat_template(model: &str, prompt_bytes: usize, tag: &str, stream: bool) -> (String, String) {
    let filler = "lorem ipsum ".repeat(prompt_bytes / 12 + 1);
    let filler = &filler[..prompt_bytes.min(filler.len())];
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    let model = quoted(model);
    let tag = quoted(tag);
    let tag = &tag[1..tag.len() - 1];
    let stream = if stream { ",\"stream\":true" } else { "" };
    (
        format!(
            "{{\"model\":{model},\"messages\":[{{\"role\":\"user\",\"content\":\"{tag}request "
        ),
        format!(": {filler}\"}}],\"max_tokens\":64,\"temperature\":0{stream}}}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_checks_tell_answers_from_impostors() {
        let chat = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}"#;
        let error = br#"{"error":{"message":"Rate limit reached","type":"requests"}}"#;
        let stream =
            b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\ndata: [DONE]\n\n";
        let cut = b"data: {\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n";
        assert!(BodyCheck::Chat.passes(chat));
        assert!(!BodyCheck::Chat.passes(error));
        assert!(!BodyCheck::Chat.passes(b""));
        assert!(BodyCheck::Stream.passes(stream));
        assert!(!BodyCheck::Stream.passes(cut));
        assert!(!BodyCheck::Stream.passes(chat));
        assert!(BodyCheck::Any.passes(error));
    }

    #[test]
    fn bodies_are_distinct_tagged_and_stream_when_asked() {
        let plain = bodies("m", 3, 50, "t1 ", false);
        assert_eq!(plain.len(), 3);
        assert_ne!(plain[0], plain[1]);
        let v: serde_json::Value = serde_json::from_slice(&plain[2]).unwrap();
        assert_eq!(v["model"], "m");
        assert!(
            v["messages"][0]["content"]
                .as_str()
                .unwrap()
                .starts_with("t1 request 2: ")
        );
        assert!(v.get("stream").is_none());
        let streamed = bodies("m", 1, 50, "", true);
        let v: serde_json::Value = serde_json::from_slice(&streamed[0]).unwrap();
        assert_eq!(v["stream"], true);
        let odd = bodies("m\"x", 1, 12, "a\"b\\ ", false);
        let v: serde_json::Value = serde_json::from_slice(&odd[0]).unwrap();
        assert_eq!(v["model"], "m\"x");
        assert_eq!(
            v["messages"][0]["content"],
            "a\"b\\ request 0: lorem ipsum "
        );
        assert_eq!(v["max_tokens"], 64);
    }

    #[test]
    fn numbered_bodies_never_repeat_and_match_the_cycled_ones() {
        let numbered = numbered_bodies("m\"x", 30, "run 1 ", true);
        let cycled = bodies("m\"x", 3, 30, "run 1 ", true);
        for (i, body) in cycled.iter().enumerate() {
            assert_eq!(numbered.nth(i).as_ref(), Some(body));
        }
        let seen: std::collections::HashSet<Bytes> =
            (0..5_000).filter_map(|n| numbered.nth(n)).collect();
        assert_eq!(seen.len(), 5_000, "a numbered body repeated");
        let v: serde_json::Value = serde_json::from_slice(&numbered.nth(123_456).unwrap()).unwrap();
        assert!(
            v["messages"][0]["content"]
                .as_str()
                .unwrap()
                .starts_with("run 1 request 123456: ")
        );
        assert_eq!(Bodies::Cycle(Arc::new(Vec::new())).nth(7), None);
        let two = Bodies::Cycle(Arc::new(bodies("m", 2, 10, "", false)));
        assert_eq!(two.nth(0), two.nth(2));
        assert_ne!(two.nth(0), two.nth(1));
    }
}
