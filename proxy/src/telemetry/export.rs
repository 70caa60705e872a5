//! The exporter: spans queue in a bounded channel; one task sends them in batches (at most
//! [`MAX_BATCH`], at least every [`FLUSH_EVERY`]) to the collector, one export at a time. An
//! export that fails or takes longer than `[telemetry] timeout` drops its spans (counted, and
//! logged once per run of failures): traces never hold a request back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{mpsc, oneshot};

use super::otlp;
use super::span::SpanData;

/// Spans one export carries at most.
pub const MAX_BATCH: usize = 512;

/// The longest a span waits in the queue before it is sent.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Spans the queue holds before new ones are dropped.
const QUEUE: usize = 8192;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

enum Command {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

/// Where and how spans are sent.
#[derive(Clone)]
pub struct Destination {
    /// The URL spans are posted to (`.../v1/traces`).
    pub traces_url: String,
    /// The resource's `service.name`.
    pub service_name: String,
    /// Headers each export sends.
    pub headers: Vec<(String, String)>,
    /// The longest one export may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL and the header values may carry credentials.
        f.debug_struct("Destination")
            .field("service_name", &self.service_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Hands spans to the exporter task; counts what was sent and what was dropped.
#[derive(Debug)]
pub struct Tracer {
    queue: mpsc::Sender<Command>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Span(s) => write!(f, "Span({})", s.name),
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Spans sent and dropped, for `/metrics`.
#[derive(Debug, Default)]
struct Counts {
    exported: AtomicU64,
    dropped: AtomicU64,
    failing: AtomicBool,
}

impl Tracer {
    /// Starts the exporter to `config` (on the current Tokio runtime).
    pub fn start(config: &Destination) -> Result<Arc<Self>, String> {
        let uri: http::Uri = config
            .traces_url
            .parse()
            .map_err(|_| "telemetry.otlp_endpoint: not a URL".to_string())?;
        let mut headers = http::HeaderMap::new();
        for (name, value) in &config.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("telemetry.headers: {name:?} is no header name"))?;
            let mut value = http::HeaderValue::from_str(value)
                .map_err(|_| format!("telemetry.headers.{name}: no header can carry it"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let (queue, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let sender = Sender {
            client: http_client()?,
            uri,
            headers,
            service_name: config.service_name.clone(),
            timeout: config.timeout,
            counts: counts.clone(),
        };
        tokio::spawn(sender.run(rx));
        Ok(Arc::new(Tracer { queue, counts }))
    }

    /// Queues `spans` for export; drops (and counts) those the full queue cannot take.
    pub fn submit(&self, spans: Vec<SpanData>) {
        for span in spans {
            if self.queue.try_send(Command::Span(Box::new(span))).is_err() {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends every span queued so far, and returns when that export is done (or failed).
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = sent.await;
        }
    }

    /// Spans sent to the collector so far.
    pub fn exported(&self) -> u64 {
        self.counts.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped so far (a full queue, a failed export).
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }
}

fn http_client() -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = match hyper_rustls::HttpsConnectorBuilder::new().try_with_platform_verifier() {
        Ok(b) => b,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
    }
    .https_or_http()
    .enable_http1()
    .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// The exporter task's side.
struct Sender {
    client: HttpClient,
    uri: http::Uri,
    headers: http::HeaderMap,
    service_name: String,
    timeout: Duration,
    counts: Arc<Counts>,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Span(span)) => {
                        batch.push(*span);
                        if batch.len() >= MAX_BATCH {
                            self.send(&mut batch).await;
                        }
                    }
                    Some(Command::Flush(done)) => {
                        self.send(&mut batch).await;
                        let _ = done.send(());
                    }
                    None => {
                        self.send(&mut batch).await;
                        return;
                    }
                },
                _ = tick.tick() => self.send(&mut batch).await,
            }
        }
    }

    /// Sends `batch` (emptying it), in exports of at most [`MAX_BATCH`] spans.
    async fn send(&self, batch: &mut Vec<SpanData>) {
        while !batch.is_empty() {
            let take = batch.len().min(MAX_BATCH);
            let spans: Vec<SpanData> = batch.drain(..take).collect();
            let n = spans.len() as u64;
            match self.export(&spans).await {
                Ok(()) => {
                    self.counts.exported.fetch_add(n, Ordering::Relaxed);
                    if self.counts.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("telemetry: the collector takes spans again");
                    }
                }
                Err(why) => {
                    self.counts.dropped.fetch_add(n, Ordering::Relaxed);
                    if !self.counts.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %why, spans = n, "telemetry: an export failed; its spans are dropped (said once until one succeeds)");
                    }
                }
            }
        }
    }

    async fn export(&self, spans: &[SpanData]) -> Result<(), String> {
        let body = otlp::encode(&self.service_name, spans);
        let mut request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        request.headers_mut().extend(self.headers.clone());
        let answer = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| format!("cannot reach the collector: {e}"))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        }
    }
}
