//! Talking to providers: one reqwest client per provider (its own pool and connect timeout),
//! requests with the key in the `Authorization` header and nowhere else, answers read whole
//! (plain) or up to their first byte (streams), failures classified by [`disposition`].

pub mod disposition;
pub mod sse;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};
use spillway_clock::Clock;

pub use disposition::{Disposition, UpstreamError};

use crate::config::{Provider, ProviderKey};

/// Largest error body kept from a provider.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest plain answer read from a provider.
const MAX_ANSWER_BODY: usize = 64 * 1024 * 1024;

/// Which API an attempt calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /chat/completions`.
    Chat,
    /// `POST /embeddings`.
    Embeddings,
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

/// The rest of a streamed answer.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// A usable answer.
pub enum Answer {
    /// A plain answer, read whole.
    Full {
        /// Response headers.
        headers: HeaderMap,
        /// The body.
        body: Bytes,
    },
    /// A streamed answer whose first bytes have arrived.
    Stream {
        /// Response headers.
        headers: HeaderMap,
        /// The first bytes.
        first: Bytes,
        /// Everything after them.
        rest: ByteStream,
    },
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Full { body, .. } => write!(f, "Answer::Full({} bytes)", body.len()),
            Answer::Stream { first, .. } => {
                write!(f, "Answer::Stream(first {} bytes)", first.len())
            }
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

/// HTTP clients for every provider.
#[derive(Debug, Clone)]
pub struct Upstream {
    clients: Vec<reqwest::Client>,
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's messages name the URL (never a header): keep the chain short and readable.
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn read_bounded(resp: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| describe(&e))?;
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

impl Upstream {
    /// Clients for `providers`, in order.
    pub fn new(providers: &[Provider]) -> Result<Self, String> {
        let clients = providers
            .iter()
            .map(|p| {
                reqwest::Client::builder()
                    .connect_timeout(p.connect_timeout)
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(256)
                    .tcp_nodelay(true)
                    .build()
                    .map_err(|e| format!("provider {}: cannot build an HTTP client: {e}", p.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Upstream { clients })
    }

    /// Sends one attempt and waits (at most the provider's timeout, in clock time) for a
    /// usable answer: a whole plain body, or a stream's first bytes.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        index: usize,
        provider: &Provider,
        key: &ProviderKey,
        endpoint: Endpoint,
        body: Bytes,
        stream: bool,
        clock: &Clock,
    ) -> Result<Answer, UpstreamError> {
        let url = format!("{}{}", provider.base_url, endpoint.path());
        let request = self.clients[index]
            .post(url)
            .bearer_auth(key.key.expose())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        let attempt = async {
            let resp = request
                .send()
                .await
                .map_err(|e| UpstreamError::Connection(describe(&e)))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if status != StatusCode::OK {
                let body = read_bounded(resp, MAX_ERROR_BODY).await.unwrap_or_default();
                return Err(UpstreamError::Status {
                    status,
                    headers,
                    body,
                });
            }
            if stream {
                let mut rest = resp.bytes_stream();
                let first = loop {
                    match rest.next().await {
                        Some(Ok(b)) if b.is_empty() => continue,
                        Some(Ok(b)) => break b,
                        Some(Err(e)) => return Err(UpstreamError::Connection(describe(&e))),
                        None => {
                            return Err(UpstreamError::InvalidBody(
                                "the stream ended before its first byte".into(),
                            ));
                        }
                    }
                };
                let rest: ByteStream = Box::pin(rest.map(|r| r.map_err(|e| describe(&e))));
                Ok(Answer::Stream {
                    headers,
                    first,
                    rest,
                })
            } else {
                let body = read_bounded(resp, MAX_ANSWER_BODY)
                    .await
                    .map_err(UpstreamError::Connection)?;
                if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                    return Err(UpstreamError::InvalidBody(
                        "status 200 with a body that is not JSON".into(),
                    ));
                }
                Ok(Answer::Full { headers, body })
            }
        };
        clock
            .timeout(provider.timeout, attempt)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(provider.timeout)))
    }
}
