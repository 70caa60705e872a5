//! The bad-input table: malformed requests of every kind, as raw bytes, each with how it is
//! sent and what the mock must do. `bad_input.rs` runs them.

use crate::common::MODEL;
use crate::common::raw;

/// The table mock's body limit.
pub const LIMIT: usize = 64 * 1024;

const CHAT: &str = "/openai/v1/chat/completions";
const EMBEDDINGS: &str = "/openai/v1/embeddings";

/// How a case's bytes are sent.
#[derive(Clone, Copy, Debug)]
pub enum Sending {
    /// All at once; the write side stays open (the mock must not wait for the client's EOF).
    All,
    /// All at once, then the write side is shut: the client has nothing more to say.
    ThenEof,
    /// All at once, then these bytes one every 20 ms, over and over: forever.
    ThenTrickle(&'static [u8]),
}

/// What the mock must do.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// A JSON error `{"error":{"message":…,"type":…}}` with this status and, when given, this
    /// `code` and `param`.
    Error {
        status: u16,
        code: Option<&'static str>,
        param: Option<&'static str>,
    },
    /// 200 and a chat completion: input the mock accepts (each case says why).
    Completion,
    /// 200 and an embeddings list.
    Embeddings,
    /// hyper's own answer to a request it cannot frame or parse: this status, no body, and the
    /// connection closed. By design: after a broken frame nothing on the connection can be
    /// trusted, and no handler ever sees the request.
    Bare(u16),
    /// No answer, the connection closed. By design: the headers did not arrive within the read
    /// timeout.
    ClosedUnanswered,
    /// An answer to `HEAD`: this status and, as for every `HEAD`, no body.
    Head(u16),
}

fn error(status: u16) -> Expect {
    Expect::Error {
        status,
        code: None,
        param: None,
    }
}

fn error_code(status: u16, code: &'static str) -> Expect {
    Expect::Error {
        status,
        code: Some(code),
        param: None,
    }
}

fn bad_field(param: &'static str) -> Expect {
    Expect::Error {
        status: 400,
        code: None,
        param: Some(param),
    }
}

/// One malformed request.
pub struct Case {
    /// What it is, as a failure names it.
    pub name: String,
    /// The bytes sent.
    pub bytes: Vec<u8>,
    /// How they are sent.
    pub sending: Sending,
    /// What the mock must do.
    pub expect: Expect,
}

impl Case {
    fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>, expect: Expect) -> Self {
        Case {
            name: name.into(),
            bytes: bytes.into(),
            sending: Sending::All,
            expect,
        }
    }

    fn sending(mut self, sending: Sending) -> Self {
        self.sending = sending;
        self
    }
}

/// A chat body with one user message and `extra` fields (`"a":1,"b":2`).
fn chat_with(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":5{sep}{extra}}}"#
    )
}

/// A chat body with these messages (a JSON array's inside).
fn chat_messages(messages: &str) -> String {
    format!(r#"{{"model":"{MODEL}","messages":[{messages}],"max_tokens":5}}"#)
}

/// A chat request with this body and the usual headers.
fn chat_case(name: &str, body: impl AsRef<[u8]>, expect: Expect) -> Case {
    Case::new(name, raw::post(CHAT, "", body.as_ref()), expect)
}

/// An embeddings request with this body.
fn embeddings_case(name: &str, body: &str, expect: Expect) -> Case {
    Case::new(name, raw::post(EMBEDDINGS, "", body.as_bytes()), expect)
}

/// A chat request with a valid body and these header lines instead of the usual ones (each
/// ending in CRLF); `content-length` is added.
fn headers_case(name: &str, headers: &str, expect: Expect) -> Case {
    let body = chat_with("");
    let bytes = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: mock\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Case::new(name, bytes, expect)
}

/// A request with a valid chat body, this method and path.
fn method_case(name: &str, method: &str, path: &str, expect: Expect) -> Case {
    let body = chat_with("");
    let bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Case::new(name, bytes, expect)
}

/// A chat request whose body is sent chunked, as `chunks` (the framing included).
fn chunked_case(name: &str, chunks: &str, expect: Expect) -> Case {
    let bytes = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
    );
    Case::new(name, bytes, expect)
}

/// `body` as one chunk and the last chunk.
fn one_chunk(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

/// A control-plane request.
fn control_case(name: &str, method: &str, path: &str, body: &str, expect: Expect) -> Case {
    let bytes = format!(
        "{method} /_mock/{path} HTTP/1.1\r\nHost: mock\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Case::new(name, bytes, expect)
}

/// Every case.
pub fn cases() -> Vec<Case> {
    [
        bodies_not_json(),
        encodings_and_escapes(),
        nesting_and_numbers(),
        wrong_fields(),
        embeddings(),
        authorization(),
        uninterpreted_headers(),
        header_framing(),
        request_lines(),
        chunked_bodies(),
        sizes(),
        slow_clients(),
        control_plane(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Bodies that are not JSON, or not an object.
fn bodies_not_json() -> Vec<Case> {
    let valid = chat_with("");
    vec![
        chat_case("an empty body", "", error(400)),
        chat_case("only whitespace", " \r\n\t ", error(400)),
        chat_case("truncated JSON", r#"{"model": "#, error(400)),
        chat_case("plain text", "hello there", error(400)),
        chat_case("a JSON array", "[1, 2]", error(400)),
        chat_case("a JSON string", r#""a string""#, error(400)),
        chat_case("a JSON number", "42", error(400)),
        chat_case("JSON null", "null", error(400)),
        chat_case("JSON true", "true", error(400)),
        chat_case("an empty object", "{}", bad_field("model")),
        chat_case(
            "trailing garbage after the object",
            format!("{valid} xyz"),
            error(400),
        ),
        chat_case(
            "two objects back to back",
            format!("{valid}{valid}"),
            error(400),
        ),
        chat_case(
            "a UTF-8 byte order mark first",
            format!("\u{feff}{valid}"),
            error(400),
        ),
        chat_case(
            "a single-quoted JSON-like body",
            "{'model': 'llama-3.1-8b-instant'}",
            error(400),
        ),
        chat_case(
            "a trailing comma",
            chat_with("").replace("}]", "},]"),
            error(400),
        ),
        chat_case(
            "a form body",
            "model=llama-3.1-8b-instant&messages=hi",
            error(400),
        ),
    ]
}

/// Invalid UTF-8, NUL bytes, escapes.
fn encodings_and_escapes() -> Vec<Case> {
    let valid = chat_with("");
    vec![
        chat_case(
            "invalid UTF-8 inside a string",
            [
                format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":""#)
                    .as_bytes(),
                b"\xff\xfe",
                br#""}]}"#,
            ]
            .concat(),
            error(400),
        ),
        chat_case(
            "invalid UTF-8 outside strings",
            [valid.as_bytes(), b"\xfe\xfe"].concat(),
            error(400),
        ),
        chat_case(
            "a raw NUL byte inside a string",
            chat_messages("{\"role\":\"user\",\"content\":\"a\0b\"}"),
            error(400),
        ),
        chat_case(
            "a raw NUL byte between tokens",
            format!("{{\0\"model\":\"{MODEL}\"}}"),
            error(400),
        ),
        // An escaped NUL is valid JSON text: the content is a string like any other.
        chat_case(
            "an escaped NUL in the content (accepted)",
            chat_messages(r#"{"role":"user","content":"a\u0000b"}"#),
            Expect::Completion,
        ),
        chat_case(
            "a lone surrogate escape",
            chat_messages(r#"{"role":"user","content":"\ud800"}"#),
            error(400),
        ),
        chat_case(
            "an invalid escape",
            chat_messages(r#"{"role":"user","content":"\q"}"#),
            error(400),
        ),
    ]
}

/// Deep nesting and huge numbers.
fn nesting_and_numbers() -> Vec<Case> {
    vec![
        chat_case(
            "arrays nested 5,000 deep",
            chat_with(&format!("\"x\":{}{}", "[".repeat(5000), "]".repeat(5000))),
            error(400),
        ),
        chat_case(
            "objects nested 200 deep",
            chat_with(&format!(
                "\"x\":{}1{}",
                "{\"a\":".repeat(200),
                "}".repeat(200)
            )),
            error(400),
        ),
        // Unknown fields are ignored, at any depth the parser accepts.
        chat_case(
            "an unknown field nested 100 deep (accepted)",
            chat_with(&format!("\"x\":{}{}", "[".repeat(100), "]".repeat(100))),
            Expect::Completion,
        ),
        chat_case(
            "a number too large for a double",
            chat_with("\"temperature\":1e400"),
            error(400),
        ),
        chat_case(
            "max_tokens beyond u64",
            chat_with("\"max_completion_tokens\":123456789012345678901234567890"),
            bad_field("max_completion_tokens"),
        ),
        chat_case(
            "max_tokens u64::MAX (accepted: the reply is shorter anyway)",
            chat_messages(r#"{"role":"user","content":"hi"}"#)
                .replace("\"max_tokens\":5", "\"max_tokens\":18446744073709551615"),
            Expect::Completion,
        ),
        chat_case(
            "seed beyond i64",
            chat_with("\"seed\":9223372036854775808"),
            bad_field("seed"),
        ),
        chat_case(
            "seed i64::MIN (accepted)",
            chat_with("\"seed\":-9223372036854775808"),
            Expect::Completion,
        ),
        chat_case(
            "temperature 1e308",
            chat_with("\"temperature\":1e308"),
            bad_field("temperature"),
        ),
    ]
}

/// Wrong types, field by field.
fn wrong_fields() -> Vec<Case> {
    vec![
        chat_case(
            "model a number",
            r#"{"model":17,"messages":[{"role":"user","content":"x"}]}"#,
            bad_field("model"),
        ),
        chat_case(
            "model null",
            r#"{"model":null,"messages":[{"role":"user","content":"x"}]}"#,
            bad_field("model"),
        ),
        chat_case(
            "model an array",
            r#"{"model":["a"],"messages":[{"role":"user","content":"x"}]}"#,
            bad_field("model"),
        ),
        chat_case(
            "model an object",
            r#"{"model":{},"messages":[{"role":"user","content":"x"}]}"#,
            bad_field("model"),
        ),
        chat_case(
            "model missing",
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            bad_field("model"),
        ),
        chat_case(
            "model empty",
            r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
            error_code(404, "model_not_found"),
        ),
        chat_case(
            "model unknown",
            r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
            error_code(404, "model_not_found"),
        ),
        chat_case(
            "model with an escaped NUL",
            format!(r#"{{"model":"{MODEL}\u0000","messages":[{{"role":"user","content":"x"}}]}}"#),
            error_code(404, "model_not_found"),
        ),
        chat_case(
            "model 50,000 characters long",
            format!(
                r#"{{"model":"{}","messages":[{{"role":"user","content":"x"}}]}}"#,
                "m".repeat(50_000)
            ),
            error_code(404, "model_not_found"),
        ),
        chat_case(
            "messages missing",
            format!(r#"{{"model":"{MODEL}"}}"#),
            bad_field("messages"),
        ),
        chat_case(
            "messages null",
            format!(r#"{{"model":"{MODEL}","messages":null}}"#),
            bad_field("messages"),
        ),
        chat_case(
            "messages an object",
            format!(r#"{{"model":"{MODEL}","messages":{{}}}}"#),
            bad_field("messages"),
        ),
        chat_case(
            "messages a string",
            format!(r#"{{"model":"{MODEL}","messages":"hi"}}"#),
            bad_field("messages"),
        ),
        chat_case("messages empty", chat_messages(""), bad_field("messages")),
        chat_case(
            "a message that is a number",
            chat_messages("1"),
            bad_field("messages[0]"),
        ),
        chat_case(
            "a message that is a string",
            chat_messages(r#""hi""#),
            bad_field("messages[0]"),
        ),
        chat_case(
            "a message that is null",
            chat_messages("null"),
            bad_field("messages[0]"),
        ),
        chat_case(
            "a message that is an array",
            chat_messages("[]"),
            bad_field("messages[0]"),
        ),
        chat_case(
            "role missing",
            chat_messages(r#"{"content":"x"}"#),
            bad_field("messages[0].role"),
        ),
        chat_case(
            "role null",
            chat_messages(r#"{"role":null,"content":"x"}"#),
            bad_field("messages[0].role"),
        ),
        chat_case(
            "role a number",
            chat_messages(r#"{"role":5,"content":"x"}"#),
            bad_field("messages[0].role"),
        ),
        chat_case(
            "role unknown",
            chat_messages(r#"{"role":"wizard","content":"x"}"#),
            bad_field("messages[0].role"),
        ),
        chat_case(
            "role empty",
            chat_messages(r#"{"role":"","content":"x"}"#),
            bad_field("messages[0].role"),
        ),
        chat_case(
            "role in capitals",
            chat_messages(r#"{"role":"USER","content":"x"}"#),
            bad_field("messages[0].role"),
        ),
        chat_case(
            "role with a trailing space",
            chat_messages(r#"{"role":"user ","content":"x"}"#),
            bad_field("messages[0].role"),
        ),
        chat_case(
            "a bad role in the second message",
            chat_messages(r#"{"role":"user","content":"x"},{"role":"robot","content":"y"}"#),
            bad_field("messages[1].role"),
        ),
        chat_case(
            "content missing from a user message",
            chat_messages(r#"{"role":"user"}"#),
            bad_field("messages[0].content"),
        ),
        chat_case(
            "content null in a user message",
            chat_messages(r#"{"role":"user","content":null}"#),
            bad_field("messages[0].content"),
        ),
        chat_case(
            "content a number",
            chat_messages(r#"{"role":"user","content":5}"#),
            bad_field("messages[0].content"),
        ),
        chat_case(
            "content a boolean",
            chat_messages(r#"{"role":"user","content":true}"#),
            bad_field("messages[0].content"),
        ),
        chat_case(
            "content an object",
            chat_messages(r#"{"role":"user","content":{}}"#),
            bad_field("messages[0].content"),
        ),
        chat_case(
            "a content part that is a number",
            chat_messages(r#"{"role":"user","content":[1]}"#),
            bad_field("messages[0].content[0]"),
        ),
        chat_case(
            "a content part that is a string",
            chat_messages(r#"{"role":"user","content":["text"]}"#),
            bad_field("messages[0].content[0]"),
        ),
        // An assistant turn that only calls tools has no content.
        chat_case(
            "an assistant message without content (accepted)",
            chat_messages(r#"{"role":"user","content":"x"},{"role":"assistant"}"#),
            Expect::Completion,
        ),
        chat_case(
            "stream a string",
            chat_with(r#""stream":"yes""#),
            bad_field("stream"),
        ),
        chat_case(
            "stream a number",
            chat_with(r#""stream":1"#),
            bad_field("stream"),
        ),
        chat_case(
            "stream_options a string",
            chat_with(r#""stream_options":"x""#),
            bad_field("stream_options"),
        ),
        chat_case(
            "stream_options.include_usage a string",
            chat_with(r#""stream_options":{"include_usage":"yes"}"#),
            bad_field("stream_options.include_usage"),
        ),
        chat_case(
            "max_tokens a string",
            chat_with(r#""max_completion_tokens":"10""#),
            bad_field("max_completion_tokens"),
        ),
        chat_case(
            "max_tokens zero",
            chat_with(r#""max_completion_tokens":0"#),
            bad_field("max_completion_tokens"),
        ),
        chat_case(
            "max_tokens negative",
            chat_with(r#""max_completion_tokens":-1"#),
            bad_field("max_completion_tokens"),
        ),
        chat_case(
            "max_tokens fractional",
            chat_with(r#""max_completion_tokens":1.5"#),
            bad_field("max_completion_tokens"),
        ),
        chat_case(
            "max_tokens a boolean",
            chat_with(r#""max_completion_tokens":true"#),
            bad_field("max_completion_tokens"),
        ),
        chat_case(
            "seed a string",
            chat_with(r#""seed":"x""#),
            bad_field("seed"),
        ),
        chat_case(
            "seed fractional",
            chat_with(r#""seed":1.5"#),
            bad_field("seed"),
        ),
        chat_case(
            "temperature 7",
            chat_with(r#""temperature":7"#),
            bad_field("temperature"),
        ),
        chat_case(
            "temperature negative",
            chat_with(r#""temperature":-1"#),
            bad_field("temperature"),
        ),
        chat_case(
            "temperature a string",
            chat_with(r#""temperature":"hot""#),
            bad_field("temperature"),
        ),
        chat_case("n of 2", chat_with(r#""n":2"#), bad_field("n")),
        chat_case("n a string", chat_with(r#""n":"one""#), bad_field("n")),
        chat_case(
            "service_tier unknown",
            chat_with(r#""service_tier":"gold""#),
            bad_field("service_tier"),
        ),
        chat_case(
            "service_tier a number",
            chat_with(r#""service_tier":3"#),
            bad_field("service_tier"),
        ),
        // The last of two duplicate keys wins, as serde_json reads objects.
        chat_case(
            "a duplicated model key, the last one valid (accepted)",
            format!(
                r#"{{"model":"nope","model":"{MODEL}","messages":[{{"role":"user","content":"x"}}]}}"#
            ),
            Expect::Completion,
        ),
    ]
}

/// Embeddings.
fn embeddings() -> Vec<Case> {
    vec![
        embeddings_case("embeddings: not JSON", "nope", error(400)),
        embeddings_case(
            "embeddings: model missing",
            r#"{"input":"x"}"#,
            bad_field("model"),
        ),
        embeddings_case(
            "embeddings: model unknown",
            r#"{"model":"gpt-9","input":"x"}"#,
            error_code(404, "model_not_found"),
        ),
        embeddings_case(
            "embeddings: input missing",
            &format!(r#"{{"model":"{MODEL}"}}"#),
            bad_field("input"),
        ),
        embeddings_case(
            "embeddings: input empty",
            &format!(r#"{{"model":"{MODEL}","input":[]}}"#),
            bad_field("input"),
        ),
        embeddings_case(
            "embeddings: input a number",
            &format!(r#"{{"model":"{MODEL}","input":5}}"#),
            bad_field("input"),
        ),
        embeddings_case(
            "embeddings: an input item that is a number",
            &format!(r#"{{"model":"{MODEL}","input":[1]}}"#),
            bad_field("input[0]"),
        ),
        embeddings_case(
            "embeddings: an input item that is null",
            &format!(r#"{{"model":"{MODEL}","input":["a",null]}}"#),
            bad_field("input[1]"),
        ),
        embeddings_case(
            "embeddings: dimensions zero",
            &format!(r#"{{"model":"{MODEL}","input":"x","dimensions":0}}"#),
            bad_field("dimensions"),
        ),
        embeddings_case(
            "embeddings: dimensions 5,000",
            &format!(r#"{{"model":"{MODEL}","input":"x","dimensions":5000}}"#),
            bad_field("dimensions"),
        ),
        embeddings_case(
            "embeddings: dimensions a string",
            &format!(r#"{{"model":"{MODEL}","input":"x","dimensions":"x"}}"#),
            bad_field("dimensions"),
        ),
        // Token-id arrays are counted as their JSON text.
        embeddings_case(
            "embeddings: token-id arrays (accepted)",
            &format!(r#"{{"model":"{MODEL}","input":[[1,2,3]]}}"#),
            Expect::Embeddings,
        ),
    ]
}

/// Authorization.
fn authorization() -> Vec<Case> {
    let valid = chat_with("");
    vec![
        headers_case("no Authorization", "", error_code(401, "invalid_api_key")),
        headers_case(
            "an unknown key",
            "Authorization: Bearer nope\r\n",
            error_code(401, "invalid_api_key"),
        ),
        headers_case(
            "Basic instead of Bearer",
            "Authorization: Basic azE6\r\n",
            error_code(401, "invalid_api_key"),
        ),
        headers_case(
            "Bearer with no token",
            "Authorization: Bearer\r\n",
            error_code(401, "invalid_api_key"),
        ),
        headers_case(
            "Bearer and only spaces",
            "Authorization: Bearer    \r\n",
            error_code(401, "invalid_api_key"),
        ),
        headers_case(
            "BEARER in capitals",
            "Authorization: BEARER k1\r\n",
            error_code(401, "invalid_api_key"),
        ),
        headers_case(
            "the key followed by more words",
            "Authorization: Bearer k1 k2\r\n",
            error_code(401, "invalid_api_key"),
        ),
        Case::new(
            "a key with bytes that are not text",
            [
                format!("POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer ").as_bytes(),
                b"k1\xff",
                format!("\r\nContent-Length: {}\r\n\r\n{valid}", valid.len()).as_bytes(),
            ]
            .concat(),
            error_code(401, "invalid_api_key"),
        ),
        // The token is trimmed; `bearer` is accepted in lower case; `x-api-key` works too.
        headers_case(
            "extra spaces around the key (accepted)",
            "Authorization: Bearer   k1  \r\n",
            Expect::Completion,
        ),
        headers_case(
            "bearer in lower case (accepted)",
            "Authorization: bearer k1\r\n",
            Expect::Completion,
        ),
        headers_case(
            "x-api-key instead (accepted)",
            "x-api-key: k1\r\n",
            Expect::Completion,
        ),
        // With two Authorization headers the first counts.
        headers_case(
            "two Authorization headers, the first wrong",
            "Authorization: Bearer nope\r\nAuthorization: Bearer k1\r\n",
            error_code(401, "invalid_api_key"),
        ),
        headers_case(
            "two Authorization headers, the first right (accepted)",
            "Authorization: Bearer k1\r\nAuthorization: Bearer nope\r\n",
            Expect::Completion,
        ),
    ]
}

/// Content types and encodings the mock does not interpret.
fn uninterpreted_headers() -> Vec<Case> {
    vec![
        // The body is read as JSON whatever its declared type.
        headers_case(
            "content-type text/plain (accepted)",
            "Authorization: Bearer k1\r\nContent-Type: text/plain\r\n",
            Expect::Completion,
        ),
        headers_case(
            "no content-type (accepted)",
            "Authorization: Bearer k1\r\n",
            Expect::Completion,
        ),
        // A body is never decompressed: gzip bytes are not JSON.
        Case::new(
            "a gzip-encoded body",
            [
                format!(
                    "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                     Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\n"
                )
                .as_bytes(),
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            ]
            .concat(),
            error(400),
        ),
    ]
}

/// Header framing hyper refuses.
fn header_framing() -> Vec<Case> {
    let valid = chat_with("");
    vec![
        Case::new(
            "a header line without a colon",
            format!("POST {CHAT} HTTP/1.1\r\nHost: mock\r\nNot a header\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a space in a header name",
            format!("POST {CHAT} HTTP/1.1\r\nHost: mock\r\nBad Name: x\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a folded (obs-fold) header",
            format!("POST {CHAT} HTTP/1.1\r\nHost: mock\r\nX-A: a\r\n  b\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "two different content-lengths",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: {}\r\nContent-Length: 3\r\n\r\n{valid}",
                valid.len()
            ),
            Expect::Bare(400),
        ),
        // Repeated with the same value, the length is unambiguous.
        Case::new(
            "the same content-length twice (accepted)",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: {0}\r\nContent-Length: {0}\r\n\r\n{valid}",
                valid.len()
            ),
            Expect::Completion,
        ),
        Case::new(
            "a content-length that is not a number",
            format!("POST {CHAT} HTTP/1.1\r\nHost: mock\r\nContent-Length: abc\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a negative content-length",
            format!("POST {CHAT} HTTP/1.1\r\nHost: mock\r\nContent-Length: -1\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a content-length beyond u64",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nContent-Length: 99999999999999999999999\r\n\r\n"
            ),
            Expect::Bare(400),
        ),
        Case::new(
            "101 headers",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\n{}\r\n",
                (0..101)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            ),
            Expect::Bare(431),
        ),
        Case::new(
            // Well past hyper's head buffer (about 400 KB): a head just past it is sometimes
            // read whole in one large read and parsed.
            "a 2 MB header",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nX-Big: {}\r\n\r\n",
                "a".repeat(2_000_000)
            ),
            Expect::Bare(431),
        ),
    ]
}

/// Request lines.
fn request_lines() -> Vec<Case> {
    let valid = chat_with("");
    vec![
        method_case(
            "GET on chat",
            "GET",
            CHAT,
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "PUT on chat",
            "PUT",
            CHAT,
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "DELETE on chat",
            "DELETE",
            CHAT,
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "PATCH on chat",
            "PATCH",
            CHAT,
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "OPTIONS on chat",
            "OPTIONS",
            CHAT,
            error_code(405, "method_not_allowed"),
        ),
        method_case("HEAD on chat", "HEAD", CHAT, Expect::Head(405)),
        method_case(
            "an unknown method",
            "FROB",
            CHAT,
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "post in lower case",
            "post",
            CHAT,
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "GET on embeddings",
            "GET",
            EMBEDDINGS,
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "POST on models",
            "POST",
            "/openai/v1/models",
            error_code(405, "method_not_allowed"),
        ),
        method_case(
            "a method that is not a token",
            "G@T",
            CHAT,
            Expect::Bare(400),
        ),
        method_case(
            "an unknown path",
            "POST",
            "/openai/v1/completions",
            error_code(404, "unknown_url"),
        ),
        method_case(
            "a trailing slash",
            "POST",
            "/openai/v1/chat/completions/",
            error_code(404, "unknown_url"),
        ),
        method_case(
            "a dot-dot segment",
            "POST",
            "/openai/v1/../v1/chat/completions",
            error_code(404, "unknown_url"),
        ),
        method_case(
            "a doubled slash",
            "POST",
            "//openai/v1/chat/completions",
            error_code(404, "unknown_url"),
        ),
        method_case(
            "an encoded slash",
            "POST",
            "/openai/v1/chat%2Fcompletions",
            error_code(404, "unknown_url"),
        ),
        // The path is what counts: a query string or an absolute-form target changes nothing.
        method_case(
            "a query string (accepted)",
            "POST",
            "/openai/v1/chat/completions?x=1",
            Expect::Completion,
        ),
        method_case(
            "an absolute-form target (accepted)",
            "POST",
            "http://mock/openai/v1/chat/completions",
            Expect::Completion,
        ),
        method_case(
            "a 70,000-character path",
            "POST",
            &format!("/{}", "a".repeat(70_000)),
            Expect::Bare(414),
        ),
        Case::new(
            "HTTP/1.0 (accepted)",
            format!(
                "POST {CHAT} HTTP/1.0\r\nAuthorization: Bearer k1\r\nContent-Length: {}\r\n\r\n{valid}",
                valid.len()
            ),
            Expect::Completion,
        ),
        Case::new(
            "HTTP/2.0 in the request line",
            format!("POST {CHAT} HTTP/2.0\r\nHost: mock\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "no HTTP version",
            format!("POST {CHAT}\r\nHost: mock\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new("a garbage request line", "hello\r\n\r\n", Expect::Bare(400)),
        // Empty lines before a request line are skipped (RFC 9112 section 2.2).
        Case::new(
            "empty lines before the request (accepted)",
            [
                b"\r\n\r\n".as_slice(),
                &raw::post(CHAT, "", valid.as_bytes()),
            ]
            .concat(),
            Expect::Completion,
        ),
        Case::new(
            "headers that end with LF only (accepted, as hyper reads them)",
            format!(
                "POST {CHAT} HTTP/1.1\nHost: mock\nAuthorization: Bearer k1\nContent-Length: {}\n\n{valid}",
                valid.len()
            ),
            Expect::Completion,
        ),
    ]
}

/// Chunked bodies.
fn chunked_bodies() -> Vec<Case> {
    let valid = chat_with("");
    vec![
        chunked_case(
            "a chunked body (accepted)",
            &one_chunk(&valid),
            Expect::Completion,
        ),
        chunked_case(
            "chunks with extensions (accepted)",
            &format!("{:x};name=value\r\n{valid}\r\n0;last\r\n\r\n", valid.len()),
            Expect::Completion,
        ),
        chunked_case(
            "chunked with trailers (accepted)",
            &format!("{:x}\r\n{valid}\r\n0\r\nX-Trailer: t\r\n\r\n", valid.len()),
            Expect::Completion,
        ),
        chunked_case(
            "a chunk size that is not hex",
            &format!("zz\r\n{valid}\r\n0\r\n\r\n"),
            error(400),
        ),
        chunked_case(
            "a chunk size that overflows",
            &format!("ffffffffffffffffffff\r\n{valid}\r\n0\r\n\r\n"),
            error(400),
        ),
        chunked_case(
            "chunk data longer than its size",
            &format!("2\r\n{valid}\r\n0\r\n\r\n"),
            error(400),
        ),
        chunked_case(
            "a chunk size larger than the data, then nothing",
            &format!("ffff\r\n{valid}"),
            error_code(408, "request_timeout"),
        ),
        chunked_case(
            "no last chunk, then nothing",
            &format!("{:x}\r\n{valid}\r\n", valid.len()),
            error_code(408, "request_timeout"),
        ),
        chunked_case(
            "no last chunk, then the client hangs up",
            &format!("{:x}\r\n{valid}\r\n", valid.len()),
            error(400),
        )
        .sending(Sending::ThenEof),
        chunked_case(
            "chunks adding up to more than the limit",
            &format!("{:x}\r\n{}\r\n", LIMIT, " ".repeat(LIMIT)).repeat(2),
            error_code(413, "request_too_large"),
        ),
        // Transfer-encoding wins over content-length (RFC 9112 section 6.3), so a smuggled
        // length cannot cut the body short.
        Case::new(
            "transfer-encoding and content-length together (accepted, chunked)",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                one_chunk(&valid)
            ),
            Expect::Completion,
        ),
        Case::new(
            "transfer-encoding gzip without chunked",
            format!("POST {CHAT} HTTP/1.1\r\nHost: mock\r\nTransfer-Encoding: gzip\r\n\r\n{valid}"),
            Expect::Bare(400),
        ),
        Case::new(
            "chunked not the last transfer-encoding",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nTransfer-Encoding: chunked, gzip\r\n\r\n{valid}"
            ),
            Expect::Bare(400),
        ),
        Case::new(
            "transfer-encoding in HTTP/1.0",
            format!(
                "POST {CHAT} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                one_chunk(&valid)
            ),
            Expect::Bare(400),
        ),
    ]
}

/// Sizes and lengths.
fn sizes() -> Vec<Case> {
    let valid = chat_with("");
    vec![
        Case::new(
            "a content-length over the limit (refused before reading)",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: {}\r\n\r\n",
                LIMIT + 1
            ),
            error_code(413, "request_too_large"),
        ),
        chat_case(
            "a body exactly at the limit (accepted)",
            format!("{valid}{}", " ".repeat(LIMIT - valid.len())),
            Expect::Completion,
        ),
        chat_case(
            "a body one byte over the limit",
            format!("{valid}{}", " ".repeat(LIMIT + 1 - valid.len())),
            error_code(413, "request_too_large"),
        ),
        chat_case(
            "1,000 messages (accepted)",
            chat_messages(&vec![r#"{"role":"user","content":"x"}"#; 1000].join(",")),
            Expect::Completion,
        ),
        chat_case(
            "10,000 messages, over the limit",
            chat_messages(&vec![r#"{"role":"user","content":"x"}"#; 10_000].join(",")),
            error_code(413, "request_too_large"),
        ),
        Case::new(
            "a content-length shorter than the body",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: 10\r\n\r\n{valid}"
            ),
            error(400),
        ),
        Case::new(
            "a content-length longer than the body, then nothing",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: {}\r\n\r\n{valid}",
                valid.len() + 10
            ),
            error_code(408, "request_timeout"),
        ),
        Case::new(
            "a content-length longer than the body, then the client hangs up",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: {}\r\n\r\n{valid}",
                valid.len() + 10
            ),
            error(400),
        )
        .sending(Sending::ThenEof),
        // The body is only read once asked for (100 Continue); a client that never sends it
        // is timed out like any other.
        Case::new(
            "expect 100-continue with the body (accepted)",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Expect: 100-continue\r\nContent-Length: {}\r\n\r\n{valid}",
                valid.len()
            ),
            Expect::Completion,
        ),
        Case::new(
            "expect 100-continue and no body",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                valid.len()
            ),
            error_code(408, "request_timeout"),
        ),
    ]
}

/// Slow clients (read timeout).
fn slow_clients() -> Vec<Case> {
    vec![
        Case::new(
            "a connection that sends nothing",
            "",
            Expect::ClosedUnanswered,
        ),
        Case::new(
            "half a request line, then nothing",
            "POST /openai/v1/chat/compl",
            Expect::ClosedUnanswered,
        ),
        Case::new(
            "headers sent a byte at a time (slowloris)",
            format!("POST {CHAT} HTTP/1.1\r\n"),
            Expect::ClosedUnanswered,
        )
        .sending(Sending::ThenTrickle(b"X-Slow: aaaa\r\n")),
        Case::new(
            "headers, then no body",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: 100\r\n\r\n"
            ),
            error_code(408, "request_timeout"),
        ),
        Case::new(
            "a body sent a byte at a time",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
                 Content-Length: 60000\r\n\r\n"
            ),
            error_code(408, "request_timeout"),
        )
        .sending(Sending::ThenTrickle(b"{\"model\": \"")),
        chunked_case(
            "a chunked body sent a byte at a time",
            "",
            error_code(408, "request_timeout"),
        )
        .sending(Sending::ThenTrickle(b"1\r\na\r\n")),
    ]
}

/// The control plane.
fn control_plane() -> Vec<Case> {
    vec![
        control_case("faults: not JSON", "PUT", "faults", "nope", error(400)),
        control_case(
            "faults: an unknown fault",
            "PUT",
            "faults",
            r#"{"rules":[{"fault":"explode","probability":1.0}]}"#,
            error(400),
        ),
        control_case(
            "faults: an unknown field",
            "PUT",
            "faults",
            r#"{"latencyy":"1s"}"#,
            error(400),
        ),
        control_case(
            "faults: a probability over 1",
            "PUT",
            "faults",
            r#"{"rules":[{"fault":"reset","probability":2.0}]}"#,
            error(400),
        ),
        control_case(
            "faults: a rule for a model not served",
            "PUT",
            "faults",
            r#"{"rules":[{"fault":"reset","probability":1.0,"model":"nope"}]}"#,
            error(400),
        ),
        control_case(
            "faults: a latency that is not a duration",
            "PUT",
            "faults",
            r#"{"latency":"soon"}"#,
            error(400),
        ),
        control_case(
            "journal: since not a number",
            "GET",
            "journal?since=abc",
            "",
            error(400),
        ),
        control_case(
            "stats: keys=full without an admin token",
            "GET",
            "stats?keys=full",
            "",
            error_code(403, "permission_denied"),
        ),
        control_case(
            "stats: POST",
            "POST",
            "stats",
            "",
            error_code(405, "method_not_allowed"),
        ),
        control_case(
            "an unknown control path",
            "GET",
            "nothing",
            "",
            error_code(404, "unknown_url"),
        ),
    ]
}
