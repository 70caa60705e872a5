//! What the pipeline hands the server for each request, as data: what the cache did, the
//! answer's origin and usage, its body in the shape the client asked for, or the error. The
//! server renders it as HTTP and writes the log line and the recording from it.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::HeaderValue;

use crate::cache::key::CacheKey;
use crate::error::ProxyError;
use crate::trail::{self, Step};

/// What the cache did for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the store.
    Hit,
    /// Not stored: this request's upstream call made the answer.
    Miss,
    /// The client asked not to use the cache (`x-spillway-cache: bypass`).
    Bypass,
    /// The cache's policy left this request out (why: [`CacheStatus::reason`]).
    Skip(SkipReason),
    /// Joined an identical request's upstream call.
    Coalesced,
    /// Answered from the fleet's shared tier: another gateway's answer.
    FleetHit,
    /// Waited for another gateway's upstream call for an identical request (fleet-wide
    /// single-flight).
    FleetCoalesced,
    /// The request never reached the cache (it was refused before: bad input, no key).
    None,
}

/// Why the cache's policy left a request out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `when = "deterministic"` and the request is not (no `temperature: 0`, no `seed`).
    Nondeterministic,
    /// `when = "never"`.
    Never,
    /// `mode = "off"`.
    Off,
}

impl CacheStatus {
    /// The name clients see (`x-spillway-cache`) and logs and recordings keep.
    pub const fn name(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Skip(_) => "skip",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::FleetHit => "hit",
            CacheStatus::FleetCoalesced => "coalesced",
            CacheStatus::None => "none",
        }
    }

    /// Which tier answered a hit or a coalesced request (`x-spillway-cache-tier`): `local`
    /// (this gateway) or `fleet` (another gateway, through Redis).
    pub const fn tier(self) -> Option<&'static str> {
        match self {
            CacheStatus::Hit | CacheStatus::Coalesced => Some("local"),
            CacheStatus::FleetHit | CacheStatus::FleetCoalesced => Some("fleet"),
            _ => None,
        }
    }

    /// Why a request was skipped (`x-spillway-cache-reason`).
    pub const fn reason(self) -> Option<&'static str> {
        match self {
            CacheStatus::Skip(SkipReason::Nondeterministic) => Some("nondeterministic"),
            CacheStatus::Skip(SkipReason::Never) => Some("never"),
            CacheStatus::Skip(SkipReason::Off) => Some("off"),
            _ => None,
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The provider that answered, when known.
    pub provider: Option<String>,
    /// The upstream model id that answered, when known.
    pub model: Option<String>,
    /// The alias of the key that answered (a cache hit has none).
    pub key_alias: Option<String>,
    /// Upstream attempts the answer took (0 for a hit).
    pub attempts: u32,
    /// Wall-clock time the upstream call waited for headroom before its first attempt.
    pub waited: Duration,
    /// The provider's request id.
    pub request_id: Option<HeaderValue>,
    /// Each key or target tried or passed over, and why it was left, the answering one last.
    pub trail: Vec<Step>,
}

impl Origin {
    /// The trail as one line (`groq#1:429, cerebras#1:200`), when more than one key or target
    /// was tried or passed over.
    pub fn fallback(&self) -> Option<String> {
        (self.trail.len() > 1).then(|| trail::line(&self.trail))
    }
}

/// SSE bytes as they arrive.
pub type LiveEvents = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// An answer's body in the shape the client asked for.
pub enum ReplyBody {
    /// A JSON document, with its content type when the provider named one.
    Json {
        /// The document.
        bytes: Bytes,
        /// The provider's content type (else `application/json`).
        content_type: Option<HeaderValue>,
    },
    /// A whole stream of SSE events, framed, ending with `[DONE]`.
    Events(Bytes),
    /// SSE events framed as they arrive, ending with `[DONE]` or an error event.
    Live(LiveEvents),
}

impl std::fmt::Debug for ReplyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyBody::Json { bytes, .. } => write!(f, "Json({} bytes)", bytes.len()),
            ReplyBody::Events(bytes) => write!(f, "Events({} bytes)", bytes.len()),
            ReplyBody::Live(_) => f.write_str("Live"),
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    /// Where it came from.
    pub origin: Origin,
    /// `(prompt, completion)` tokens a plain answer reported.
    pub usage: Option<(u64, u64)>,
    /// The body.
    pub body: ReplyBody,
}

/// A request's outcome.
#[derive(Debug)]
pub struct Outcome {
    /// What the cache did.
    pub cache: CacheStatus,
    /// The request's cache key, when the cache keyed it.
    pub key: Option<CacheKey>,
    /// The answer, or why there is none.
    pub reply: Result<Reply, ProxyError>,
    /// For an error the router gave: each key or target it tried or passed over, and why it
    /// was left (an answer's is in its [`Origin`]).
    pub trail: Vec<Step>,
}

impl Outcome {
    /// What the request tried or passed over, as one line: for an answer, when more than one
    /// key or target was considered; for the router's error, whenever anything was.
    pub fn fallback(&self) -> Option<String> {
        match &self.reply {
            Ok(reply) => reply.origin.fallback(),
            Err(_) => (!self.trail.is_empty()).then(|| trail::line(&self.trail)),
        }
    }

    /// An outcome the cache had no part in.
    pub fn refused(error: ProxyError) -> Self {
        Outcome {
            cache: CacheStatus::None,
            key: None,
            reply: Err(error),
            trail: Vec::new(),
        }
    }
}
