//! Talking to providers: one pooled HTTP/1.1 client per provider (hyper, with rustls for
//! `https://`), its endpoint URLs parsed once, each key's `Authorization` header built once and
//! marked sensitive; answers read whole (plain) or up to their first event (streams, read on as
//! [`stream::EventStream`] events from [`sse`]); provider keys masked in whatever comes back
//! ([`scrub`]); failures classified by [`disposition`]. The router sends through the
//! [`Transport`] trait, so its attempt loop can be tested against scripted answers.

pub mod disposition;
pub mod scrub;
pub mod sse;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, BodyStream, Full, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use spillway_clock::Clock;
use tokio_util::sync::CancellationToken;

pub use disposition::{Disposition, UpstreamError};
pub use stream::{ByteStream, EventStream, Next, StreamEnd};

use crate::config::Provider;
use scrub::Scrubber;

/// Largest error body kept from a provider.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest plain answer read from a provider.
const MAX_ANSWER_BODY: usize = 64 * 1024 * 1024;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Which API an attempt calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /chat/completions`.
    Chat = 0,
    /// `POST /embeddings`.
    Embeddings = 1,
}

impl Endpoint {
    /// The path after the provider's base URL.
    pub const fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    /// A short name for logs and recordings.
    pub const fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// A usable answer.
pub enum Answer {
    /// A plain answer, read whole (and checked to be JSON).
    Full {
        /// Response headers.
        headers: HeaderMap,
        /// The body.
        body: Bytes,
        /// `(prompt, completion)` tokens from its `usage`, when present.
        usage: Option<(u64, u64)>,
    },
    /// A streamed answer whose first event has arrived.
    Stream {
        /// Response headers.
        headers: HeaderMap,
        /// Its events, the first one ready.
        events: EventStream,
    },
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Full { body, .. } => write!(f, "Answer::Full({} bytes)", body.len()),
            Answer::Stream { events, .. } => write!(f, "Answer::Stream({events:?})"),
        }
    }
}

impl Answer {
    /// The answer's headers.
    pub fn headers(&self) -> &HeaderMap {
        match self {
            Answer::Full { headers, .. } | Answer::Stream { headers, .. } => headers,
        }
    }
}

/// One attempt: which provider, key and endpoint, with the body to send.
#[derive(Debug, Clone)]
pub struct Call {
    /// The provider's index.
    pub provider: usize,
    /// The key's index among the provider's keys.
    pub key: usize,
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// The request body, with the target's model.
    pub body: Bytes,
    /// Ask for a stream.
    pub stream: bool,
}

/// What an attempt's future resolves to.
pub type Sent<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Answer, UpstreamError>> + Send + 'a>>;

/// Sends attempts to providers: [`Upstream`] over HTTP, or scripted answers in tests.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends one attempt and waits (at most the provider's timeout) for a usable answer: a
    /// whole plain body, or a stream's first event.
    fn send(&self, call: Call) -> Sent<'_>;
}

/// A provider's per-attempt timings.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Longest wait for an answer (a stream's first event).
    timeout: Duration,
    /// Longest silence inside a stream.
    stream_idle_timeout: Duration,
}

/// HTTP clients for every provider, their endpoint URLs, and their keys' headers.
#[derive(Clone)]
pub struct Upstream {
    clients: Vec<HttpClient>,
    urls: Vec<[Uri; 2]>,
    auth: Vec<Vec<HeaderValue>>,
    timing: Vec<Timing>,
    clock: Clock,
    /// Every provider key's value, masked in whatever comes back.
    scrub: Arc<Scrubber>,
    /// Ends the streams in progress when the gateway's shutdown deadline passes.
    stop: CancellationToken,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("providers", &self.clients.len())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct UsageOnly {
    usage: Option<UsageCounts>,
}

#[derive(Deserialize)]
struct UsageCounts {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// Checks that a plain answer is JSON and reads `(prompt, completion)` tokens from its `usage`,
/// in one pass.
pub fn parse_answer(body: &[u8]) -> Result<Option<(u64, u64)>, serde_json::Error> {
    let parsed: UsageOnly = serde_json::from_slice(body)?;
    Ok(parsed
        .usage
        .and_then(|u| Some((u.prompt_tokens?, u.completion_tokens.unwrap_or(0)))))
}

/// An error and its sources, on one line (`outer: cause: root cause`).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The whole body, in an allocation of its own: a one-chunk body is otherwise a slice of the
/// connection's read buffer (8 KiB or more), which the cache's writer queue and in-flight
/// requests would keep alive for a few hundred bytes of answer.
async fn read_bounded(body: Incoming, limit: usize) -> Result<Bytes, String> {
    Limited::new(body, limit)
        .collect()
        .await
        .map(|c| Bytes::copy_from_slice(&c.to_bytes()))
        .map_err(|e| describe(&*e))
}

fn client(provider: &Provider) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(provider.connect_timeout));
    // The system's trust store when it can be read, else Mozilla's bundled roots.
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().try_with_platform_verifier() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(provider = %provider.name, error = %e, "system trust store unavailable; using bundled roots");
            hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots()
        }
    };
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}

impl Upstream {
    /// Clients for `providers`, in order, timed on `clock`; `stop` ends every stream in
    /// progress.
    pub fn new(
        providers: &[Provider],
        clock: Clock,
        stop: CancellationToken,
    ) -> Result<Self, String> {
        let mut clients = Vec::new();
        let mut urls = Vec::new();
        let mut auth = Vec::new();
        for p in providers {
            clients.push(client(p)?);
            let parse = |e: Endpoint| {
                format!("{}{}", p.base_url, e.path())
                    .parse::<Uri>()
                    .map_err(|err| format!("provider {}: invalid base_url: {err}", p.name))
            };
            urls.push([parse(Endpoint::Chat)?, parse(Endpoint::Embeddings)?]);
            auth.push(
                p.keys
                    .iter()
                    .map(|k| {
                        let mut v = HeaderValue::from_str(&format!("Bearer {}", k.key.expose()))
                            .map_err(|_| {
                                format!(
                                    "provider {}: key {} is not a valid header value",
                                    p.name, k.alias
                                )
                            })?;
                        v.set_sensitive(true);
                        Ok(v)
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            );
        }
        let scrub = Arc::new(Scrubber::new(
            providers
                .iter()
                .flat_map(|p| p.keys.iter().map(|k| k.key.expose())),
        ));
        let timing = providers
            .iter()
            .map(|p| Timing {
                timeout: p.timeout,
                stream_idle_timeout: p.stream_idle_timeout,
            })
            .collect();
        Ok(Upstream {
            clients,
            urls,
            auth,
            timing,
            clock,
            scrub,
            stop,
        })
    }

    async fn send_now(&self, call: Call) -> Result<Answer, UpstreamError> {
        let Call {
            provider: index,
            key: key_index,
            endpoint,
            body,
            stream,
        } = call;
        let timing = self.timing[index];
        let request = http::Request::post(self.urls[index][endpoint as usize].clone())
            .header(
                http::header::AUTHORIZATION,
                self.auth[index][key_index].clone(),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Connection(format!("cannot build the request: {e}")))?;
        let attempt = async {
            let resp = self.clients[index]
                .request(request)
                .await
                .map_err(|e| UpstreamError::Connection(describe(&e)))?;
            let (parts, body) = resp.into_parts();
            let status = parts.status;
            let mut headers = parts.headers;
            self.scrub.headers(&mut headers);
            if status != StatusCode::OK {
                let body = read_bounded(body, MAX_ERROR_BODY).await.unwrap_or_default();
                return Err(UpstreamError::Status {
                    status,
                    headers,
                    body: self.scrub.body(body),
                });
            }
            if stream {
                self.open_stream(body, headers, timing.stream_idle_timeout)
                    .await
            } else {
                let body = read_bounded(body, MAX_ANSWER_BODY)
                    .await
                    .map_err(UpstreamError::Connection)?;
                let body = self.scrub.body(body);
                let usage = parse_answer(&body).map_err(|_| {
                    UpstreamError::InvalidBody("status 200 with a body that is not JSON".into())
                })?;
                Ok(Answer::Full {
                    headers,
                    body,
                    usage,
                })
            }
        };
        self.clock
            .timeout(timing.timeout, attempt)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(timing.timeout)))
    }
}

impl Upstream {
    /// A 200 stream, once its first event has arrived: until then the attempt can still fail
    /// and the request move on, as nothing has reached the client.
    async fn open_stream(
        &self,
        body: Incoming,
        headers: HeaderMap,
        idle_timeout: Duration,
    ) -> Result<Answer, UpstreamError> {
        let bytes: ByteStream = Box::pin(BodyStream::new(body).filter_map(|frame| {
            futures_util::future::ready(match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(e) => Some(Err(describe(&e))),
            })
        }));
        let mut events =
            EventStream::new(bytes, self.scrub.clone(), idle_timeout, self.stop.clone());
        match events.first().await {
            // An error before anything of an answer: the attempt failed.
            Ok(()) if events.error().is_some() => Err(UpstreamError::InvalidBody(format!(
                "the stream opened with an error: {}",
                events.error().unwrap_or_default()
            ))),
            Ok(()) => Ok(Answer::Stream { headers, events }),
            Err(StreamEnd::Stalled(after)) => Err(UpstreamError::Timeout(after)),
            Err(end) => Err(UpstreamError::InvalidBody(format!(
                "the stream ended before its first event: {}",
                end.why().unwrap_or_default()
            ))),
        }
    }
}

impl Transport for Upstream {
    fn send(&self, call: Call) -> Sent<'_> {
        Box::pin(self.send_now(call))
    }
}
