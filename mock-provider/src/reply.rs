//! Deterministic answers and their wire forms: the reply text is a pure function of (model,
//! messages, seed), so caches and replays can be checked byte for byte; bodies and SSE chunks
//! follow Groq's shapes (`x_groq.id` on the first chunk, `x_groq.usage` on the last content
//! chunk, an extra usage chunk with `stream_options.include_usage`, then `data: [DONE]`).

use serde::Serialize;
use serde_json::{Value, json};

use crate::request::{ChatRequest, EmbeddingsRequest};
use crate::tokens::text_tokens;

/// The answer to a chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The assistant's text.
    pub text: String,
    /// Completion tokens by the mock's estimator.
    pub completion_tokens: u64,
    /// `stop`, or `length` when `max_tokens` cut the text.
    pub finish_reason: &'static str,
}

const WORDS: &[&str] = &[
    "river",
    "spill",
    "gauge",
    "flow",
    "basin",
    "channel",
    "weir",
    "crest",
    "flood",
    "level",
    "reservoir",
    "outlet",
    "stream",
    "delta",
    "current",
    "surge",
    "valley",
    "stone",
    "bridge",
    "meadow",
    "rain",
    "cloud",
    "summit",
    "harbor",
    "lantern",
    "signal",
    "window",
    "minute",
    "token",
    "request",
    "limit",
    "pace",
    "steady",
    "quiet",
    "rapid",
    "gentle",
    "north",
    "south",
    "amber",
    "cobalt",
    "silver",
    "granite",
    "willow",
    "cedar",
    "maple",
    "orchard",
    "field",
    "market",
    "engine",
    "ledger",
    "answer",
    "question",
    "model",
    "prompt",
    "cache",
    "route",
    "beacon",
    "compass",
    "anchor",
    "tide",
    "shore",
    "island",
    "canyon",
    "plain",
];

/// A stream of pseudo-random numbers drawn from a blake3 hash of the request.
struct Draws(blake3::OutputReader);

impl Draws {
    fn next(&mut self) -> u64 {
        let mut buf = [0u8; 8];
        self.0.fill(&mut buf);
        u64::from_le_bytes(buf)
    }
}

fn draws_for(model: &str, messages: &[Value], seed: Option<i64>) -> Draws {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"spillway-mock reply v1\0");
    hasher.update(model.as_bytes());
    hasher.update(b"\0");
    // serde_json's maps are sorted, so this encoding ignores field order.
    if serde_json::to_writer(&mut hasher, messages).is_err() {
        hasher.update(b"<unencodable>");
    }
    hasher.update(b"\0");
    match seed {
        Some(s) => hasher.update(&s.to_le_bytes()),
        None => hasher.update(b"no-seed"),
    };
    Draws(hasher.finalize_xof())
}

/// The reply to a chat request: 20 to 199 tokens of words, cut at `max_tokens`.
pub fn reply_for(req: &ChatRequest) -> Reply {
    let mut draws = draws_for(&req.model, &req.messages, req.seed);
    let target = 20 + draws.next() % 180;
    let mut text = String::with_capacity(target as usize * 4 + 16);
    let mut sentence_left = 0;
    while text_tokens(&text) < target {
        let word = WORDS[(draws.next() % WORDS.len() as u64) as usize];
        if sentence_left == 0 {
            if !text.is_empty() {
                text.pop();
                text.push_str(". ");
            }
            sentence_left = 6 + draws.next() % 8;
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
        } else {
            text.push_str(word);
        }
        text.push(' ');
        sentence_left -= 1;
    }
    text.pop();
    text.push('.');
    let mut finish_reason = "stop";
    if let Some(max) = req.max_tokens
        && text_tokens(&text) > max
    {
        // ASCII only, so any byte index is a character boundary.
        text.truncate((max * 4) as usize);
        finish_reason = "length";
    }
    let completion_tokens = text_tokens(&text);
    Reply {
        text,
        completion_tokens,
        finish_reason,
    }
}

/// The pieces a streamed reply is sent in: one word (with its trailing space) per chunk. They
/// concatenate to exactly [`Reply::text`].
pub fn stream_pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ')
}

/// Identifiers and timestamps of one response.
#[derive(Debug, Clone)]
pub struct Ids {
    /// `chatcmpl-...` / `embd-...`.
    pub completion: String,
    /// Groq's `req_...` request id (also the `x-request-id` header).
    pub request: String,
    /// Unix seconds (calendar time of the mock's clock).
    pub created: u64,
}

impl Ids {
    /// Ids derived from the mock instance and the request's sequence number.
    pub fn new(instance: u64, seq: u64, created: u64) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&instance.to_le_bytes());
        h.update(&seq.to_le_bytes());
        let hex = h.finalize().to_hex();
        Ids {
            completion: format!("chatcmpl-{}", &hex[..32]),
            request: format!("req_{}", &hex[32..58]),
            created,
        }
    }
}

/// Groq's usage object, with its timing fields.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GroqUsage {
    /// Seconds queued.
    pub queue_time: f64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Seconds spent on the prompt.
    pub prompt_time: f64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Seconds spent generating.
    pub completion_time: f64,
    /// Prompt plus completion tokens.
    pub total_tokens: u64,
    /// Total seconds.
    pub total_time: f64,
}

impl GroqUsage {
    /// Usage for these counts, with plausible timings.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        let round = |x: f64| (x * 1e6).round() / 1e6;
        let prompt_time = round(prompt_tokens as f64 / 20_000.0);
        let completion_time = round(completion_tokens as f64 / 800.0);
        let queue_time = 0.000_05;
        GroqUsage {
            queue_time,
            prompt_tokens,
            prompt_time,
            completion_tokens,
            completion_time,
            total_tokens: prompt_tokens + completion_tokens,
            total_time: round(prompt_time + completion_time),
        }
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: GroqUsage,
    usage_breakdown: Option<()>,
    system_fingerprint: &'static str,
    x_groq: XGroq<'a>,
    service_tier: &'a str,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<()>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct XGroq<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<GroqUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The fingerprint every response carries.
pub const SYSTEM_FINGERPRINT: &str = "fp_spillway_mock";

fn tier(req: &ChatRequest) -> &str {
    match req.service_tier.as_deref() {
        Some("flex") => "flex",
        Some("performance") => "performance",
        _ => "on_demand",
    }
}

/// The non-streaming `chat.completion` body.
pub fn completion_body(req: &ChatRequest, reply: &Reply, ids: &Ids) -> String {
    let body = Completion {
        id: &ids.completion,
        object: "chat.completion",
        created: ids.created,
        model: &req.model,
        choices: [CompletionChoice {
            index: 0,
            message: Message {
                role: "assistant",
                content: &reply.text,
            },
            logprobs: None,
            finish_reason: reply.finish_reason,
        }],
        usage: GroqUsage::new(req.prompt_tokens, reply.completion_tokens),
        usage_breakdown: None,
        system_fingerprint: SYSTEM_FINGERPRINT,
        x_groq: XGroq {
            id: &ids.request,
            usage: None,
            error: None,
        },
        service_tier: tier(req),
    };
    serde_json::to_string(&body).expect("a completion body always serializes")
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_groq: Option<XGroq<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<GroqUsage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// Builds the SSE events of one streamed answer.
pub struct StreamWriter<'a> {
    req: &'a ChatRequest,
    ids: &'a Ids,
}

impl<'a> StreamWriter<'a> {
    /// A writer for this request's stream.
    pub fn new(req: &'a ChatRequest, ids: &'a Ids) -> Self {
        StreamWriter { req, ids }
    }

    fn event(&self, chunk: &Chunk<'_>) -> String {
        let json = serde_json::to_string(chunk).expect("a chunk always serializes");
        format!("data: {json}\n\n")
    }

    fn chunk(
        &self,
        delta: Delta<'a>,
        finish: Option<&'a str>,
        x_groq: Option<XGroq<'a>>,
    ) -> Chunk<'a> {
        Chunk {
            id: &self.ids.completion,
            object: "chat.completion.chunk",
            created: self.ids.created,
            model: &self.req.model,
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            x_groq,
            usage: None,
        }
    }

    /// The first event: the assistant role, empty content, and `x_groq.id`.
    pub fn first(&self) -> String {
        self.event(&self.chunk(
            Delta {
                role: Some("assistant"),
                content: Some(""),
            },
            None,
            Some(XGroq {
                id: &self.ids.request,
                usage: None,
                error: None,
            }),
        ))
    }

    /// One content event.
    pub fn content(&self, piece: &'a str) -> String {
        self.event(&self.chunk(
            Delta {
                role: None,
                content: Some(piece),
            },
            None,
            None,
        ))
    }

    /// The last content event: empty delta, the finish reason, and `x_groq.usage`.
    pub fn finish(&self, reply: &'a Reply) -> String {
        self.event(&self.chunk(
            Delta::default(),
            Some(reply.finish_reason),
            Some(XGroq {
                id: &self.ids.request,
                usage: Some(GroqUsage::new(
                    self.req.prompt_tokens,
                    reply.completion_tokens,
                )),
                error: None,
            }),
        ))
    }

    /// The extra usage event sent with `stream_options.include_usage`: no choices.
    pub fn usage(&self, reply: &Reply) -> String {
        let mut chunk = self.chunk(Delta::default(), None, None);
        chunk.choices.clear();
        chunk.usage = Some(GroqUsage::new(
            self.req.prompt_tokens,
            reply.completion_tokens,
        ));
        self.event(&chunk)
    }

    /// An event that says why the stream stops early, in `x_groq.error`.
    pub fn error(&self, why: &'a str) -> String {
        let mut chunk = self.chunk(Delta::default(), None, None);
        chunk.choices.clear();
        chunk.x_groq = Some(XGroq {
            id: &self.ids.request,
            usage: None,
            error: Some(why),
        });
        self.event(&chunk)
    }

    /// The terminator.
    pub fn done() -> &'static str {
        "data: [DONE]\n\n"
    }
}

/// Every event of a complete stream, in order.
pub fn stream_events(req: &ChatRequest, reply: &Reply, ids: &Ids) -> Vec<String> {
    let writer = StreamWriter::new(req, ids);
    let mut events = vec![writer.first()];
    events.extend(stream_pieces(&reply.text).map(|p| writer.content(p)));
    events.push(writer.finish(reply));
    if req.include_usage {
        events.push(writer.usage(reply));
    }
    events.push(StreamWriter::done().to_string());
    events
}

/// The embeddings body: one deterministic unit vector per input.
pub fn embeddings_body(req: &EmbeddingsRequest) -> String {
    let data: Vec<Value> = req
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            json!({
                "object": "embedding",
                "index": i,
                "embedding": embedding(&req.model, input, req.dimensions),
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": { "prompt_tokens": req.prompt_tokens, "total_tokens": req.prompt_tokens },
    })
    .to_string()
}

fn embedding(model: &str, input: &str, dimensions: usize) -> Vec<f32> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"spillway-mock embedding v1\0");
    hasher.update(model.as_bytes());
    hasher.update(b"\0");
    hasher.update(input.as_bytes());
    let mut draws = Draws(hasher.finalize_xof());
    let raw: Vec<f32> = (0..dimensions)
        .map(|_| (draws.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    raw.iter().map(|x| (x / norm * 1e6).round() / 1e6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> ChatRequest {
        ChatRequest::parse(body.as_bytes()).expect("valid request")
    }

    #[test]
    fn the_reply_depends_on_messages_model_and_seed_only() {
        let a = request(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.3}"#,
        );
        let b = request(r#"{"messages":[{"content":"hi","role":"user"}],"model":"m"}"#);
        let c = request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#);
        let d = request(r#"{"model":"n","messages":[{"role":"user","content":"hi"}]}"#);
        assert_eq!(reply_for(&a), reply_for(&b));
        assert_ne!(reply_for(&a).text, reply_for(&c).text);
        assert_ne!(reply_for(&a).text, reply_for(&d).text);
    }

    #[test]
    fn max_tokens_caps_the_reply_and_says_length() {
        let req =
            request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#);
        let reply = reply_for(&req);
        assert_eq!(reply.completion_tokens, 5);
        assert_eq!(reply.finish_reason, "length");
    }

    #[test]
    fn stream_pieces_reassemble_the_text() {
        let req = request(r#"{"model":"m","messages":[{"role":"user","content":"a question"}]}"#);
        let reply = reply_for(&req);
        assert_eq!(stream_pieces(&reply.text).collect::<String>(), reply.text);
        assert!(stream_pieces(&reply.text).count() > 5);
    }
}
