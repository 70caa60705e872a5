//! Bad input gets a clear error in OpenAI's format and the right status; nothing reaches a
//! provider. A few cases checked body for body, then a table of malformed requests of every kind
//! (bodies, fields, headers, methods and paths, framing, sizes, slow clients), sent as raw bytes
//! to a real proxy in front of a real mock, each bounded in time and followed by a valid request
//! the proxy must still serve.

use std::time::Duration;

use serde_json::Value;
use spillway_clock::Clock;
use spillway_mock::MockProvider;
use spillway_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

async fn setup() -> (MockProvider, Proxy) {
    let mock = MockProvider::builder().key("k1").start().await;
    setup_with(mock, "max_body_bytes = 4096").await
}

/// A proxy in front of `mock` that wants the client key `client-secret`, with `server` added
/// to its `[server]` table.
async fn setup_with(mock: MockProvider, server: &str) -> (MockProvider, Proxy) {
    let config = groq_chat_config(
        &mock.url(),
        &format!("[server]\nclient_keys = [\"env:CLIENT\"]\n{server}"),
    );
    let proxy = Proxy::start(
        &config,
        &[("K1", "k1"), ("CLIENT", "client-secret")],
        Clock::real(),
    )
    .await;
    (mock, proxy)
}

async fn send(proxy: &Proxy, path: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", proxy.base()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = auth {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("OpenAI-format JSON"))
}

fn assert_openai_error(body: &Value) {
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
}

#[tokio::test]
async fn each_bad_input_gets_its_status_and_body() {
    let (mock, proxy) = setup().await;
    let ok = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
    let auth = Some("client-secret");
    // (path, client token, body, status, error code, param named)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        String,
        u16,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "/v1/chat/completions",
            None,
            ok.into(),
            401,
            Some("invalid_api_key"),
            None,
        ),
        (
            "/v1/chat/completions",
            Some("wrong"),
            ok.into(),
            401,
            Some("invalid_api_key"),
            None,
        ),
        (
            "/v1/chat/completions",
            auth,
            format!(
                r#"{{"model":"chat","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(5000)
            ),
            413,
            Some("request_too_large"),
            None,
        ),
        (
            "/v1/chat/completions",
            auth,
            "{not json".into(),
            400,
            None,
            None,
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"messages":[]}"#.into(),
            400,
            None,
            Some("model"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"chat"}"#.into(),
            400,
            None,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"chat","messages":"hi"}"#.into(),
            400,
            None,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"chat","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#.into(),
            400,
            None,
            Some("max_tokens"),
        ),
        (
            "/v1/chat/completions",
            auth,
            r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#.into(),
            404,
            Some("model_not_found"),
            None,
        ),
        (
            "/v1/embeddings",
            auth,
            r#"{"model":"chat"}"#.into(),
            400,
            None,
            Some("input"),
        ),
        (
            "/v1/nothing-here",
            auth,
            ok.into(),
            404,
            Some("unknown_url"),
            None,
        ),
    ];
    for (path, token, body, status, code, param) in cases {
        let (got, json) = send(&proxy, path, token, &body).await;
        assert_eq!(got, status, "{path} {body:.60}: {json}");
        assert_openai_error(&json);
        if let Some(code) = code {
            assert_eq!(json["error"]["code"], code, "{json}");
        }
        if let Some(param) = param {
            assert_eq!(json["error"]["param"], param, "{json}");
            assert!(json["error"]["message"].as_str().unwrap().contains(param));
        }
    }
    let wrong_method = client()
        .get(format!("{}/v1/chat/completions", proxy.base()))
        .bearer_auth("client-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        mock.stats().requests,
        0,
        "no bad request reached the provider"
    );
    let (status, _) = send(&proxy, "/v1/chat/completions", auth, ok).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn models_lists_the_route_names_and_health_answers() {
    let (_mock, proxy) = setup().await;
    let models: Value = client()
        .get(format!("{}/v1/models", proxy.base()))
        .bearer_auth("client-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "chat");
    let health = client()
        .get(format!("{}/healthz", proxy.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// Writes `sent` on a fresh connection to `proxy`, then reads until the proxy closes it or the
/// answer declared by its `content-length` is whole (at most 10 s).
async fn raw_exchange(proxy: &Proxy, sent: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    stream.write_all(sent).await.expect("write");
    let mut got = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&got).to_lowercase();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let declared = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if declared.is_some_and(|n| body.len() >= n) {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
        .await
        .expect("the proxy neither answered nor closed the connection within 10 s");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_timed_out_and_a_slow_upstream_is_not() {
    let mock = MockProvider::builder()
        .key("k1")
        .faults(spillway_mock::Faults {
            latency: Some(std::time::Duration::from_millis(1_200)),
            tokens_per_second: Some(20.0),
            ..spillway_mock::Faults::none()
        })
        .start()
        .await;
    let (mock, proxy) = setup_with(mock, "client_timeout = \"500ms\"").await;

    // Headers that never end: the connection is closed, with nothing sent back.
    let answer = raw_exchange(
        &proxy,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: spillway\r\ncontent-type: applic",
    )
    .await;
    assert_eq!(answer, "", "a half-sent header got an answer");

    // A body that stops short of its declared length: 408 in OpenAI's format.
    let partial = "POST /v1/chat/completions HTTP/1.1\r\nhost: spillway\r\n\
                   authorization: Bearer client-secret\r\ncontent-type: application/json\r\n\
                   content-length: 200\r\n\r\n{\"model\":\"chat\",";
    let answer = raw_exchange(&proxy, partial.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n").expect("a body").1)
        .expect("OpenAI-format JSON");
    assert_openai_error(&body);
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    assert_eq!(
        mock.stats().requests,
        0,
        "a partial request reached the provider"
    );

    // The timeout is the client's to keep, not the upstream's: a plain answer and a stream that
    // each take longer than it arrive whole.
    let resp = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth("client-secret")
        .json(&chat_body("chat", "slow upstream", 8))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let mut streamed = chat_body("chat", "slow stream", 16);
    streamed["stream"] = serde_json::json!(true);
    let resp = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth("client-secret")
        .json(&streamed)
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let events = data_events(&resp.text().await.expect("the whole stream"));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(!text_of(&events).is_empty());
}

// The table: malformed requests of every kind, sent as raw bytes to a real proxy in front of a
// real mock, each with how it is sent and what the proxy must do, each bounded in time and
// followed by a valid request the proxy must still serve. No bad input may reach the provider.

/// The table proxy's body limit: room for a field nested 100,000 arrays deep.
const LIMIT: usize = 256 * 1024;
/// The table proxy's `client_timeout`.
const CLIENT_TIMEOUT: &str = "300ms";
/// No case may take longer than this to settle, nor the valid request after it.
const CASE_BOUND: Duration = Duration::from_secs(5);
/// The client key the table proxy wants.
const TOKEN: &str = "client-secret";

const CHAT: &str = "/v1/chat/completions";
const EMBEDDINGS: &str = "/v1/embeddings";
const OPENAI_CHAT: &str = "/openai/v1/chat/completions";
const OPENAI_EMBEDDINGS: &str = "/openai/v1/embeddings";

/// A raw HTTP/1.1 client over a `TcpStream`, for what well-behaved clients never send: broken
/// framing, duplicated headers, bytes that are not text, bodies sent slowly or not at all.
mod raw {
    use std::time::Duration;

    use serde_json::Value;
    use tokio::io::{AsyncRead, AsyncReadExt};

    /// A complete response.
    #[derive(Debug)]
    pub struct Answer {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Answer {
        /// A header's value (the first, when repeated), by case-insensitive name.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as JSON, if it is.
        pub fn json(&self) -> Option<Value> {
            serde_json::from_slice(&self.body).ok()
        }

        /// The status and body as text, for messages.
        pub fn shown(&self) -> String {
            let text = String::from_utf8_lossy(&self.body);
            format!("{} {:.300}", self.status, text)
        }
    }

    /// What came back on a connection.
    pub enum Reply {
        /// A complete response (interim `1xx` responses skipped).
        Answer(Answer),
        /// The connection was closed (FIN or RST) before a complete response.
        Closed { partial: Vec<u8> },
        /// Neither within the time allowed.
        TimedOut { partial: Vec<u8> },
        /// Bytes that do not start an HTTP response.
        NotHttp { bytes: Vec<u8> },
    }

    impl Reply {
        /// What came back, as text, for messages.
        pub fn shown(&self) -> String {
            let text = |b: &[u8]| format!("{:.300}", String::from_utf8_lossy(b));
            match self {
                Reply::Answer(a) => format!("an answer: {}", a.shown()),
                Reply::Closed { partial } => {
                    format!("the connection closed after {:?}", text(partial))
                }
                Reply::TimedOut { partial } => {
                    format!("nothing complete in time, only {:?}", text(partial))
                }
                Reply::NotHttp { bytes } => format!("bytes that are not HTTP: {:?}", text(bytes)),
            }
        }
    }

    /// The responses on one connection, read in order.
    pub struct Responses<R> {
        read: R,
        buf: Vec<u8>,
        eof: bool,
    }

    enum Parsed {
        /// A response, and how many bytes of the buffer it took.
        Complete(Answer, usize),
        /// Headers read; the body runs to the end of the connection.
        UntilClose(Answer),
        Incomplete,
        NotHttp,
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// The body of a chunked message and the bytes it took, once its last chunk has arrived.
    fn dechunk(mut data: &[u8]) -> Option<(Vec<u8>, usize)> {
        let total = data.len();
        let mut body = Vec::new();
        loop {
            let line_end = find(data, b"\r\n")?;
            let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            data = &data[line_end + 2..];
            if size == 0 {
                // No trailers are expected: the empty line ends the message.
                let end = find(data, b"\r\n")?;
                return Some((body, total - data.len() + end + 2));
            }
            if data.len() < size + 2 {
                return None;
            }
            body.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }

    /// Tries to parse one response from `buf`, skipping interim responses.
    fn parse(buf: &[u8], head_request: bool) -> Parsed {
        let mut start = 0;
        loop {
            if buf.len() - start >= 5 && !buf[start..].starts_with(b"HTTP/") {
                return Parsed::NotHttp;
            }
            let Some(end) = find(&buf[start..], b"\r\n\r\n") else {
                return Parsed::Incomplete;
            };
            let head = String::from_utf8_lossy(&buf[start..start + end]).into_owned();
            let body_start = start + end + 4;
            let body = &buf[body_start..];
            let mut lines = head.split("\r\n");
            let Some(status) = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|s| s.parse::<u16>().ok())
            else {
                return Parsed::NotHttp;
            };
            if (100..200).contains(&status) {
                start = body_start;
                continue;
            }
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .collect();
            let mut answer = Answer {
                status,
                headers,
                body: Vec::new(),
            };
            if head_request || status == 204 || status == 304 {
                return Parsed::Complete(answer, body_start);
            }
            if answer
                .header("transfer-encoding")
                .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
            {
                return match dechunk(body) {
                    Some((b, used)) => {
                        answer.body = b;
                        Parsed::Complete(answer, body_start + used)
                    }
                    None => Parsed::Incomplete,
                };
            }
            if let Some(len) = answer.header("content-length") {
                let Ok(len) = len.parse::<usize>() else {
                    return Parsed::NotHttp;
                };
                if body.len() < len {
                    return Parsed::Incomplete;
                }
                answer.body = body[..len].to_vec();
                return Parsed::Complete(answer, body_start + len);
            }
            answer.body = body.to_vec();
            return Parsed::UntilClose(answer);
        }
    }

    impl<R: AsyncRead + Unpin> Responses<R> {
        /// Responses read from `read`.
        pub fn new(read: R) -> Self {
            Responses {
                read,
                buf: Vec::new(),
                eof: false,
            }
        }

        /// The next response, within `within`. `head_request`: it answers a `HEAD` (no body).
        pub async fn next(&mut self, head_request: bool, within: Duration) -> Reply {
            let read = async {
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    match parse(&self.buf, head_request) {
                        Parsed::Complete(answer, used) => {
                            self.buf.drain(..used);
                            return Reply::Answer(answer);
                        }
                        Parsed::NotHttp => {
                            return Reply::NotHttp {
                                bytes: std::mem::take(&mut self.buf),
                            };
                        }
                        Parsed::UntilClose(answer) if self.eof => {
                            self.buf.clear();
                            return Reply::Answer(answer);
                        }
                        Parsed::UntilClose(_) | Parsed::Incomplete if self.eof => {
                            return Reply::Closed {
                                partial: std::mem::take(&mut self.buf),
                            };
                        }
                        _ => {}
                    }
                    match self.read.read(&mut chunk).await {
                        Ok(0) | Err(_) => self.eof = true,
                        Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            match tokio::time::timeout(within, read).await {
                Ok(reply) => reply,
                Err(_) => Reply::TimedOut {
                    partial: std::mem::take(&mut self.buf),
                },
            }
        }

        /// Waits for the peer to close the connection, within `within`: true when it did (FIN
        /// or RST), false when it stayed open. Bytes that arrive first are discarded.
        pub async fn closes_within(&mut self, within: Duration) -> bool {
            if self.eof {
                return true;
            }
            tokio::time::timeout(within, async {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = self.read.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await
            .is_ok()
        }
    }
}

/// How a case's bytes are sent.
#[derive(Clone, Debug)]
enum Sending {
    /// All at once; the write side stays open (the proxy must not wait for the client's EOF).
    All,
    /// All at once, then the write side is shut: the client has nothing more to say.
    ThenEof,
    /// All at once, then the connection is dropped unread: the client is gone.
    ThenHangUp,
    /// All at once, then these bytes one every 20 ms, over and over (for at most 10 s).
    ThenTrickle(&'static [u8]),
    /// All at once, then each of these pieces after a pause: slow, but within the timeout.
    ThenPieces(Vec<Vec<u8>>, Duration),
}

/// What the proxy must do.
#[derive(Clone, Debug)]
enum Expect {
    /// An error in OpenAI's format, `{"error":{"message","type","param","code"}}` labelled
    /// `application/json`, with this status and, when given, this `code` and `param` (which
    /// the message then names).
    Error {
        status: u16,
        code: Option<&'static str>,
        param: Option<&'static str>,
    },
    /// 200 and the provider's answer (a completion, an embeddings list or a stream that ends
    /// with `[DONE]`): input the proxy accepts, each case says why. It reaches the mock once.
    Served,
    /// The provider's own refusal with this status and a JSON error, passed on unchanged: a
    /// field the proxy does not check itself, each case says why. It reaches the mock once.
    Upstream(u16),
    /// hyper's own answer to a request it cannot frame or parse: this status, no body, and the
    /// connection closed. By design: no handler ever sees such a request, and after a broken
    /// frame nothing else on the connection can be trusted.
    Bare(u16),
    /// No answer and the connection closed. By design: the headers did not arrive within
    /// `client_timeout`, and there is no request to answer.
    ClosedUnanswered,
    /// An answer to `HEAD`: this status and, as for every `HEAD`, no body.
    Head(u16),
    /// Nothing to read: the client hung up. Only what follows is checked (the proxy still
    /// serves; nothing reached the mock).
    Gone,
    /// Pipelined requests: their answers, in order.
    Each(Vec<Expect>),
}

impl Expect {
    /// Requests this case may cause at the provider.
    fn forwards(&self) -> u64 {
        match self {
            Expect::Served | Expect::Upstream(_) => 1,
            Expect::Each(each) => each.iter().map(Expect::forwards).sum(),
            _ => 0,
        }
    }
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

fn unauthorized() -> Expect {
    error_code(401, "invalid_api_key")
}

fn unknown_model() -> Expect {
    error_code(404, "model_not_found")
}

fn wrong_method() -> Expect {
    error_code(405, "method_not_allowed")
}

fn unknown_url() -> Expect {
    error_code(404, "unknown_url")
}

fn too_large() -> Expect {
    error_code(413, "request_too_large")
}

fn timed_out() -> Expect {
    error_code(408, "request_timeout")
}

fn unreadable() -> Expect {
    error_code(400, "body_unreadable")
}

/// One malformed request.
struct Case {
    /// What it is, as a failure names it.
    name: String,
    /// The bytes sent.
    bytes: Vec<u8>,
    /// How they are sent.
    sending: Sending,
    /// What the proxy must do.
    expect: Expect,
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

/// A chat body for the route `chat` with one user message and `extra` fields (`"a":1,"b":2`).
fn chat_with(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{"model":"chat","messages":[{{"role":"user","content":"hi"}}],"max_tokens":5{sep}{extra}}}"#
    )
}

/// A chat body with these messages (a JSON array's inside).
fn chat_messages(messages: &str) -> String {
    format!(r#"{{"model":"chat","messages":[{messages}],"max_tokens":5}}"#)
}

/// A chat body the cache keys (temperature 0), asking `content`: each case that expects an
/// answer asks something of its own, so none is a cache hit that never reaches the mock.
fn keyed_chat(content: &str) -> String {
    format!(
        r#"{{"model":"chat","messages":[{{"role":"user","content":"{content}"}}],"max_tokens":5,"temperature":0}}"#
    )
}

/// A `POST` to `path` with the client key, a JSON content type, these extra header lines
/// (each ending in CRLF), a `content-length` and `body`.
fn post(path: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A chat request with this body and the usual headers.
fn chat_case(name: &str, body: impl AsRef<[u8]>, expect: Expect) -> Case {
    Case::new(name, post(CHAT, "", body.as_ref()), expect)
}

/// A request to `path` (an embeddings or chat endpoint) with this body and the usual headers.
fn post_case(name: &str, path: &str, body: &str, expect: Expect) -> Case {
    Case::new(name, post(path, "", body.as_bytes()), expect)
}

/// A chat request with `body` and these header lines (bytes, each line ending in CRLF) in
/// place of the usual `Authorization` and `Content-Type`; `content-length` is added.
fn headers_case(name: &str, headers: &[u8], body: &str, expect: Expect) -> Case {
    let bytes = [
        format!("POST {CHAT} HTTP/1.1\r\nHost: spillway\r\n").as_bytes(),
        headers,
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    ]
    .concat();
    Case::new(name, bytes, expect)
}

/// A chat request with the client key and these extra header lines (bytes).
fn extra_headers_case(name: &str, headers: &[u8], body: &str, expect: Expect) -> Case {
    let auth = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n");
    headers_case(name, &[auth.as_bytes(), headers].concat(), body, expect)
}

/// A request with the client key and a valid chat body, with this method and path.
fn method_case(name: &str, method: &str, path: &str, expect: Expect) -> Case {
    let body = chat_with("");
    let bytes = format!(
        "{method} {path} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Case::new(name, bytes, expect)
}

/// A chat request whose body is sent chunked, as `chunks` (the framing included).
fn chunked_case(name: &str, chunks: &str, expect: Expect) -> Case {
    let bytes = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}"
    );
    Case::new(name, bytes, expect)
}

/// `body` as one chunk, then the last chunk.
fn one_chunk(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

/// Every case.
fn cases() -> Vec<Case> {
    [
        bodies_not_json(),
        encodings_and_escapes(),
        nesting_numbers_and_duplicates(),
        chat_fields(),
        embeddings_fields(),
        openai_twins(),
        authorization(),
        content_types(),
        cache_headers(),
        methods_and_paths(),
        header_framing(),
        chunked_bodies(),
        sizes(),
        connections(),
        slow_clients(),
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
        chat_case("truncated mid-body", &valid[..valid.len() / 2], error(400)),
        chat_case("plain text", "hello there", error(400)),
        chat_case("a JSON array", "[1, 2]", error(400)),
        chat_case(
            "an array holding a valid body",
            format!("[{valid}]"),
            error(400),
        ),
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
            "{'model': 'chat'}",
            error(400),
        ),
        chat_case("a trailing comma", valid.replace("}]", "},]"), error(400)),
        chat_case("a form body", "model=chat&messages=hi", error(400)),
        // Whitespace around the object is insignificant JSON.
        chat_case(
            "whitespace around the object (accepted)",
            format!("\r\n {valid} \n"),
            Expect::Served,
        ),
    ]
}

/// Invalid UTF-8, NUL bytes, escapes, other encodings.
fn encodings_and_escapes() -> Vec<Case> {
    let valid = chat_with("");
    let utf16: Vec<u8> = valid.encode_utf16().flat_map(u16::to_le_bytes).collect();
    vec![
        chat_case(
            "invalid UTF-8 inside a string",
            [
                br#"{"model":"chat","messages":[{"role":"user","content":""#.as_slice(),
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
            "a model name in Latin-1",
            [
                br#"{"model":"ch"#.as_slice(),
                b"\xe0",
                br#"t","messages":[{"role":"user","content":"x"}]}"#,
            ]
            .concat(),
            error(400),
        ),
        chat_case(
            "a raw NUL byte inside a string",
            chat_messages("{\"role\":\"user\",\"content\":\"a\0b\"}"),
            error(400),
        ),
        chat_case(
            "a raw NUL byte between tokens",
            "{\0\"model\":\"chat\"}",
            error(400),
        ),
        chat_case("the body in UTF-16", utf16, error(400)),
        // An escaped NUL is valid JSON text: the content is a string like any other.
        chat_case(
            "an escaped NUL in the content (accepted)",
            chat_messages(r#"{"role":"user","content":"a\u0000b"}"#),
            Expect::Served,
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

/// Deep nesting, huge numbers, duplicate keys.
fn nesting_numbers_and_duplicates() -> Vec<Case> {
    vec![
        chat_case(
            "100,000 arrays opened and never closed",
            chat_with(&format!("\"x\":{}", "[".repeat(100_000))),
            error(400),
        ),
        chat_case(
            "arrays nested 100,000 deep",
            chat_with(&format!(
                "\"x\":{}{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )),
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
        // Fields the proxy does not read are passed on, at any depth its parser accepts.
        chat_case(
            "an unknown field nested 100 deep (accepted)",
            chat_with(&format!("\"x\":{}{}", "[".repeat(100), "]".repeat(100))),
            Expect::Served,
        ),
        chat_case(
            "a number too large for a double",
            chat_with("\"temperature\":1e400"),
            error(400),
        ),
        chat_case(
            "a number with 10,000 digits",
            chat_with(&format!("\"top_p\":{}", "9".repeat(10_000))),
            error(400),
        ),
        chat_case(
            "max_tokens beyond u64",
            chat_messages(r#"{"role":"user","content":"hi"}"#).replace(
                "\"max_tokens\":5",
                "\"max_tokens\":123456789012345678901234567890",
            ),
            bad_field("max_tokens"),
        ),
        chat_case(
            "max_tokens 4,294,967,295 (accepted: the reply is shorter anyway)",
            chat_messages(r#"{"role":"user","content":"hi"}"#)
                .replace("\"max_tokens\":5", "\"max_tokens\":4294967295"),
            Expect::Served,
        ),
        // Allowances are summed in the limit accounting: one near u64::MAX overflowed it.
        chat_case(
            "max_tokens one over 4,294,967,295",
            chat_messages(r#"{"role":"user","content":"hi"}"#)
                .replace("\"max_tokens\":5", "\"max_tokens\":4294967296"),
            bad_field("max_tokens"),
        ),
        chat_case(
            "max_tokens u64::MAX",
            chat_messages(r#"{"role":"user","content":"hi"}"#)
                .replace("\"max_tokens\":5", "\"max_tokens\":18446744073709551615"),
            bad_field("max_tokens"),
        ),
        chat_case(
            "max_completion_tokens 2^63",
            chat_with("\"max_completion_tokens\":9223372036854775808"),
            bad_field("max_completion_tokens"),
        ),
        // The proxy does not check temperature's range: the provider does.
        chat_case(
            "temperature 1e308 (the provider's to refuse)",
            chat_with("\"temperature\":1e308"),
            Expect::Upstream(400),
        ),
        // The last of two duplicate keys wins, as serde_json reads objects; every top-level
        // `model` is rewritten to the target's model on the way out.
        chat_case(
            "a duplicated model key, the last one valid (accepted)",
            r#"{"model":"nope","model":"chat","messages":[{"role":"user","content":"x"}]}"#,
            Expect::Served,
        ),
        chat_case(
            "a duplicated model key, the last one unknown",
            r#"{"model":"chat","model":"nope","messages":[{"role":"user","content":"x"}]}"#,
            unknown_model(),
        ),
        chat_case(
            "a duplicated messages key, the last one empty",
            r#"{"model":"chat","messages":[{"role":"user","content":"x"}],"messages":[]}"#,
            bad_field("messages"),
        ),
        chat_case(
            "a duplicated messages key, the last one valid (accepted)",
            r#"{"model":"chat","messages":"nonsense","messages":[{"role":"user","content":"x"}]}"#,
            Expect::Served,
        ),
    ]
}

/// Every field the proxy checks in a chat request, with each wrong type.
fn chat_fields() -> Vec<Case> {
    let message = r#"[{"role":"user","content":"x"}]"#;
    let model = |value: &str| format!(r#"{{"model":{value},"messages":{message}}}"#);
    let messages = |value: &str| format!(r#"{{"model":"chat","messages":{value}}}"#);
    let mut cases = vec![
        chat_case(
            "model missing",
            format!(r#"{{"messages":{message}}}"#),
            bad_field("model"),
        ),
        chat_case("model null", model("null"), bad_field("model")),
        chat_case("model a number", model("17"), bad_field("model")),
        chat_case("model a boolean", model("true"), bad_field("model")),
        chat_case("model an array", model(r#"["chat"]"#), bad_field("model")),
        chat_case(
            "model an object",
            model(r#"{"id":"chat"}"#),
            bad_field("model"),
        ),
        chat_case("model empty", model(r#""""#), unknown_model()),
        chat_case("model unknown", model(r#""gpt-9""#), unknown_model()),
        chat_case("model in capitals", model(r#""CHAT""#), unknown_model()),
        chat_case(
            "model with a trailing space",
            model(r#""chat ""#),
            unknown_model(),
        ),
        chat_case(
            "model with an escaped NUL",
            model(r#""chat\u0000""#),
            unknown_model(),
        ),
        // The provider's model id is not a route name: clients name routes.
        chat_case(
            "model the upstream id rather than the route",
            model(&format!("\"{GROQ_MODEL}\"")),
            unknown_model(),
        ),
        chat_case(
            "model 50,000 characters long",
            model(&format!("\"{}\"", "m".repeat(50_000))),
            unknown_model(),
        ),
        chat_case(
            "messages missing",
            r#"{"model":"chat"}"#,
            bad_field("messages"),
        ),
        chat_case("messages null", messages("null"), bad_field("messages")),
        chat_case("messages an object", messages("{}"), bad_field("messages")),
        chat_case(
            "messages a string",
            messages(r#""hi""#),
            bad_field("messages"),
        ),
        chat_case("messages a number", messages("1"), bad_field("messages")),
        chat_case(
            "messages a boolean",
            messages("false"),
            bad_field("messages"),
        ),
        chat_case("messages empty", messages("[]"), bad_field("messages")),
        // What is inside a message is the provider's to check.
        chat_case(
            "a message that is a number (the provider's to refuse)",
            messages("[1]"),
            Expect::Upstream(400),
        ),
    ];
    for field in ["max_tokens", "max_completion_tokens"] {
        for (what, value) in [
            ("a string", r#""10""#),
            ("zero", "0"),
            ("negative", "-1"),
            ("fractional", "1.5"),
            ("a boolean", "true"),
            ("an array", "[5]"),
            ("an object", r#"{"n":5}"#),
        ] {
            let body = format!(r#"{{"model":"chat","messages":{message},"{field}":{value}}}"#);
            cases.push(chat_case(
                &format!("{field} {what}"),
                body,
                bad_field(field),
            ));
        }
    }
    cases.extend([
        // Both fields are checked whichever one the allowance is taken from.
        chat_case(
            "a valid max_completion_tokens beside a max_tokens that is a string",
            format!(
                r#"{{"model":"chat","messages":{message},"max_completion_tokens":5,"max_tokens":"ten"}}"#
            ),
            bad_field("max_tokens"),
        ),
        chat_case(
            "a valid max_tokens beside a max_completion_tokens of zero",
            format!(
                r#"{{"model":"chat","messages":{message},"max_tokens":5,"max_completion_tokens":0}}"#
            ),
            bad_field("max_completion_tokens"),
        ),
        chat_case(
            "max_tokens null (accepted: the default allowance)",
            format!(r#"{{"model":"chat","messages":{message},"max_tokens":null}}"#),
            Expect::Served,
        ),
        chat_case(
            "stream a string",
            chat_with(r#""stream":"yes""#),
            bad_field("stream"),
        ),
        chat_case(
            "stream the string true",
            chat_with(r#""stream":"true""#),
            bad_field("stream"),
        ),
        chat_case(
            "stream a number",
            chat_with(r#""stream":1"#),
            bad_field("stream"),
        ),
        chat_case(
            "stream an object",
            chat_with(r#""stream":{}"#),
            bad_field("stream"),
        ),
        chat_case(
            "stream null (accepted: not streamed)",
            chat_with(r#""stream":null"#),
            Expect::Served,
        ),
        chat_case(
            "stream true (accepted: streamed)",
            chat_with(r#""stream":true"#),
            Expect::Served,
        ),
    ]);
    cases
}

/// Every field the proxy checks in an embeddings request, with each wrong type.
fn embeddings_fields() -> Vec<Case> {
    let input = |value: &str| format!(r#"{{"model":"chat","input":{value}}}"#);
    vec![
        post_case("embeddings: not JSON", EMBEDDINGS, "nope", error(400)),
        post_case(
            "embeddings: a JSON array",
            EMBEDDINGS,
            r#"["x"]"#,
            error(400),
        ),
        post_case("embeddings: an empty body", EMBEDDINGS, "", error(400)),
        post_case(
            "embeddings: model missing",
            EMBEDDINGS,
            r#"{"input":"x"}"#,
            bad_field("model"),
        ),
        post_case(
            "embeddings: model a number",
            EMBEDDINGS,
            r#"{"model":1,"input":"x"}"#,
            bad_field("model"),
        ),
        post_case(
            "embeddings: model unknown",
            EMBEDDINGS,
            r#"{"model":"gpt-9","input":"x"}"#,
            unknown_model(),
        ),
        post_case(
            "embeddings: input missing",
            EMBEDDINGS,
            r#"{"model":"chat"}"#,
            bad_field("input"),
        ),
        post_case(
            "embeddings: input null",
            EMBEDDINGS,
            &input("null"),
            bad_field("input"),
        ),
        post_case(
            "embeddings: input a number",
            EMBEDDINGS,
            &input("5"),
            bad_field("input"),
        ),
        post_case(
            "embeddings: input a boolean",
            EMBEDDINGS,
            &input("true"),
            bad_field("input"),
        ),
        post_case(
            "embeddings: input an object",
            EMBEDDINGS,
            &input(r#"{"text":"x"}"#),
            bad_field("input"),
        ),
        // What is inside the input is the provider's to check.
        post_case(
            "embeddings: input an empty array (the provider's to refuse)",
            EMBEDDINGS,
            &input("[]"),
            Expect::Upstream(400),
        ),
        post_case(
            "embeddings: a valid request (accepted)",
            EMBEDDINGS,
            &input(r#""embed me""#),
            Expect::Served,
        ),
    ]
}

/// The same checks under `/openai/v1`.
fn openai_twins() -> Vec<Case> {
    vec![
        post_case("/openai: chat not JSON", OPENAI_CHAT, "{nope", error(400)),
        post_case(
            "/openai: chat messages empty",
            OPENAI_CHAT,
            r#"{"model":"chat","messages":[]}"#,
            bad_field("messages"),
        ),
        post_case(
            "/openai: chat model unknown",
            OPENAI_CHAT,
            r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
            unknown_model(),
        ),
        post_case(
            "/openai: chat stream a string",
            OPENAI_CHAT,
            &chat_with(r#""stream":"yes""#),
            bad_field("stream"),
        ),
        post_case(
            "/openai: embeddings input missing",
            OPENAI_EMBEDDINGS,
            r#"{"model":"chat"}"#,
            bad_field("input"),
        ),
        post_case(
            "/openai: embeddings input a number",
            OPENAI_EMBEDDINGS,
            r#"{"model":"chat","input":3}"#,
            bad_field("input"),
        ),
        post_case(
            "/openai: a valid chat request (accepted)",
            OPENAI_CHAT,
            &chat_with(""),
            Expect::Served,
        ),
        post_case(
            "/openai: a valid embeddings request (accepted)",
            OPENAI_EMBEDDINGS,
            r#"{"model":"chat","input":["a","b"]}"#,
            Expect::Served,
        ),
    ]
}

/// Missing and odd `Authorization` headers.
fn authorization() -> Vec<Case> {
    let valid = chat_with("");
    let json = "Content-Type: application/json\r\n";
    let auth = |line: &str| format!("{line}\r\n{json}");
    vec![
        headers_case("no Authorization", json.as_bytes(), &valid, unauthorized()),
        headers_case(
            "an unknown token",
            auth("Authorization: Bearer nope").as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "the token with no scheme",
            auth(&format!("Authorization: {TOKEN}")).as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "Basic instead of Bearer",
            auth("Authorization: Basic Y2xpZW50LXNlY3JldA==").as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "BEARER in capitals",
            auth(&format!("Authorization: BEARER {TOKEN}")).as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "Bearer with no token",
            auth("Authorization: Bearer").as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "Bearer and only spaces",
            auth("Authorization: Bearer     ").as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "an empty Authorization",
            auth("Authorization:").as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "a tab between Bearer and the token",
            auth(&format!("Authorization: Bearer\t{TOKEN}")).as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "the token followed by more words",
            auth(&format!("Authorization: Bearer {TOKEN} {TOKEN}")).as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "the token with a byte that is not text",
            [
                format!("Authorization: Bearer {TOKEN}").as_bytes(),
                b"\xff\r\n",
                json.as_bytes(),
            ]
            .concat()
            .as_slice(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "a token of 8,000 characters",
            auth(&format!("Authorization: Bearer {}", "t".repeat(8_000))).as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "x-api-key instead of Authorization",
            auth(&format!("x-api-key: {TOKEN}")).as_bytes(),
            &valid,
            unauthorized(),
        ),
        // The token is trimmed and `bearer` is accepted in lower case, as at the providers.
        headers_case(
            "bearer in lower case (accepted)",
            auth(&format!("Authorization: bearer {TOKEN}")).as_bytes(),
            &valid,
            Expect::Served,
        ),
        headers_case(
            "extra spaces around the token (accepted)",
            auth(&format!("Authorization:    Bearer    {TOKEN}   ")).as_bytes(),
            &valid,
            Expect::Served,
        ),
        // With two Authorization headers the first counts.
        headers_case(
            "two Authorization headers, the first wrong",
            auth(&format!(
                "Authorization: Bearer nope\r\nAuthorization: Bearer {TOKEN}"
            ))
            .as_bytes(),
            &valid,
            unauthorized(),
        ),
        headers_case(
            "two Authorization headers, the first right (accepted)",
            auth(&format!(
                "Authorization: Bearer {TOKEN}\r\nAuthorization: Bearer nope"
            ))
            .as_bytes(),
            &valid,
            Expect::Served,
        ),
        // The key is checked before the body is read: a bad body without a key is a 401.
        headers_case(
            "no Authorization and a body that is not JSON",
            json.as_bytes(),
            "{nope",
            unauthorized(),
        ),
    ]
}

/// Content types and encodings: the body is read as JSON whatever it is labelled.
fn content_types() -> Vec<Case> {
    let valid = chat_with("");
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let with = |line: &str| format!("{auth}{line}\r\n");
    vec![
        headers_case(
            "no content-type (accepted)",
            auth.as_bytes(),
            &valid,
            Expect::Served,
        ),
        headers_case(
            "content-type text/plain (accepted)",
            with("Content-Type: text/plain").as_bytes(),
            &valid,
            Expect::Served,
        ),
        headers_case(
            "content-type multipart/form-data (accepted)",
            with("Content-Type: multipart/form-data; boundary=x").as_bytes(),
            &valid,
            Expect::Served,
        ),
        headers_case(
            "content-type JSON in Latin-1 (accepted)",
            with("Content-Type: application/json; charset=latin1").as_bytes(),
            &valid,
            Expect::Served,
        ),
        headers_case(
            "a content-type that is not text (accepted)",
            [auth.as_bytes(), b"Content-Type: application/\xffjson\r\n"]
                .concat()
                .as_slice(),
            &valid,
            Expect::Served,
        ),
        headers_case(
            "a urlencoded form, labelled so",
            with("Content-Type: application/x-www-form-urlencoded").as_bytes(),
            "model=chat&messages=hi",
            error(400),
        ),
        // A body is never decompressed: gzip bytes are not JSON.
        Case::new(
            "a gzip-encoded body",
            [
                format!(
                    "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\n{auth}\
                     Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\n"
                )
                .as_bytes(),
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
            ]
            .concat(),
            error(400),
        ),
        headers_case(
            "content-encoding gzip on a plain JSON body (accepted: not decompressed)",
            with("Content-Encoding: gzip").as_bytes(),
            &valid,
            Expect::Served,
        ),
    ]
}

/// `x-spillway-cache`, `x-spillway-cache-namespace` and `Cache-Control`.
fn cache_headers() -> Vec<Case> {
    let valid = chat_with("");
    let cache = |value: &str| format!("x-spillway-cache: {value}\r\n");
    let namespace = |value: &str| format!("x-spillway-cache-namespace: {value}\r\n");
    let control = |value: &str| format!("Cache-Control: {value}\r\n");
    let directive = bad_field("x-spillway-cache");
    let bad_namespace = bad_field("x-spillway-cache-namespace");
    vec![
        extra_headers_case(
            "x-spillway-cache unknown",
            cache("sometimes").as_bytes(),
            &valid,
            directive.clone(),
        ),
        extra_headers_case(
            "x-spillway-cache empty",
            cache("").as_bytes(),
            &valid,
            directive.clone(),
        ),
        extra_headers_case(
            "x-spillway-cache with a byte that is not text",
            b"x-spillway-cache: bypass\xff\r\n",
            &valid,
            directive.clone(),
        ),
        extra_headers_case(
            "x-spillway-cache with two directives",
            cache("bypass, refresh").as_bytes(),
            &valid,
            directive.clone(),
        ),
        extra_headers_case(
            "x-spillway-cache unknown on a request the cache keys",
            cache("sometimes").as_bytes(),
            &keyed_chat("cache unknown, keyed"),
            directive.clone(),
        ),
        extra_headers_case(
            "two x-spillway-cache headers, the first unknown",
            format!("{}{}", cache("nope"), cache("bypass")).as_bytes(),
            &valid,
            directive,
        ),
        // Directives are read without regard to case or surrounding spaces.
        extra_headers_case(
            "x-spillway-cache BYPASS in capitals (accepted)",
            cache("BYPASS").as_bytes(),
            &valid,
            Expect::Served,
        ),
        extra_headers_case(
            "x-spillway-cache refresh with spaces (accepted)",
            cache("  refresh  ").as_bytes(),
            &keyed_chat("refresh with spaces"),
            Expect::Served,
        ),
        extra_headers_case(
            "two x-spillway-cache headers, the first valid (accepted)",
            format!("{}{}", cache("bypass"), cache("nope")).as_bytes(),
            &valid,
            Expect::Served,
        ),
        extra_headers_case(
            "only-if-cached for a request never seen",
            cache("only-if-cached").as_bytes(),
            &keyed_chat("only if cached, never seen"),
            error_code(504, "cache_miss"),
        ),
        extra_headers_case(
            "a namespace of 257 bytes",
            namespace(&"n".repeat(257)).as_bytes(),
            &keyed_chat("namespace 257"),
            bad_namespace.clone(),
        ),
        extra_headers_case(
            "a namespace of 10,000 bytes",
            namespace(&"n".repeat(10_000)).as_bytes(),
            &keyed_chat("namespace 10000"),
            bad_namespace.clone(),
        ),
        extra_headers_case(
            "a namespace that is not text",
            b"x-spillway-cache-namespace: eval\xff\xfe\r\n",
            &keyed_chat("namespace not text"),
            bad_namespace,
        ),
        // The namespace header is checked on every request, whether or not the cache keys it.
        extra_headers_case(
            "a namespace of 257 bytes on a request the cache does not key",
            namespace(&"n".repeat(257)).as_bytes(),
            &valid,
            bad_field("x-spillway-cache-namespace"),
        ),
        extra_headers_case(
            "a namespace that is not text on a request the cache does not key",
            b"x-spillway-cache-namespace: eval\xff\xfe\r\n",
            &valid,
            bad_field("x-spillway-cache-namespace"),
        ),
        extra_headers_case(
            "a namespace of exactly 256 bytes (accepted)",
            namespace(&"n".repeat(256)).as_bytes(),
            &keyed_chat("namespace 256"),
            Expect::Served,
        ),
        extra_headers_case(
            "an empty namespace (accepted: none)",
            namespace("").as_bytes(),
            &keyed_chat("namespace empty"),
            Expect::Served,
        ),
        // Cache-Control directives other than no-store and no-cache are ignored.
        extra_headers_case(
            "Cache-Control no-store, no-cache (accepted)",
            control("no-store, no-cache").as_bytes(),
            &keyed_chat("no-store no-cache"),
            Expect::Served,
        ),
        extra_headers_case(
            "Cache-Control max-age not a number (accepted)",
            control("max-age=abc").as_bytes(),
            &valid,
            Expect::Served,
        ),
        extra_headers_case(
            "Cache-Control only-if-cached (accepted: not read)",
            control("only-if-cached").as_bytes(),
            &keyed_chat("cache-control only-if-cached"),
            Expect::Served,
        ),
        extra_headers_case(
            "Cache-Control only commas (accepted)",
            control(&",".repeat(4_000)).as_bytes(),
            &valid,
            Expect::Served,
        ),
        extra_headers_case(
            "Cache-Control that is not text (accepted)",
            b"Cache-Control: no-\xffstore\r\n",
            &valid,
            Expect::Served,
        ),
    ]
}

/// Methods and paths.
fn methods_and_paths() -> Vec<Case> {
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
    };
    vec![
        method_case("GET on chat", "GET", CHAT, wrong_method()),
        method_case("PUT on chat", "PUT", CHAT, wrong_method()),
        method_case("DELETE on chat", "DELETE", CHAT, wrong_method()),
        method_case("PATCH on chat", "PATCH", CHAT, wrong_method()),
        method_case("OPTIONS on chat", "OPTIONS", CHAT, wrong_method()),
        method_case("HEAD on chat", "HEAD", CHAT, Expect::Head(405)),
        method_case("an unknown method on chat", "FROB", CHAT, wrong_method()),
        method_case("post in lower case", "post", CHAT, wrong_method()),
        method_case("GET on embeddings", "GET", EMBEDDINGS, wrong_method()),
        method_case(
            "PUT on /openai embeddings",
            "PUT",
            OPENAI_EMBEDDINGS,
            wrong_method(),
        ),
        method_case(
            "DELETE on /openai chat",
            "DELETE",
            OPENAI_CHAT,
            wrong_method(),
        ),
        method_case("POST on models", "POST", "/v1/models", wrong_method()),
        method_case("POST on a model", "POST", "/v1/models/chat", wrong_method()),
        method_case("POST on healthz", "POST", "/healthz", wrong_method()),
        method_case("DELETE on metrics", "DELETE", "/metrics", wrong_method()),
        method_case(
            "a method that is not a token",
            "G@T",
            CHAT,
            Expect::Bare(400),
        ),
        method_case("an unknown path", "POST", "/v1/completions", unknown_url()),
        method_case("the root", "POST", "/", unknown_url()),
        method_case(
            "another version",
            "POST",
            "/v2/chat/completions",
            unknown_url(),
        ),
        method_case(
            "a trailing slash",
            "POST",
            "/v1/chat/completions/",
            unknown_url(),
        ),
        method_case(
            "a doubled leading slash",
            "POST",
            "//v1/chat/completions",
            unknown_url(),
        ),
        method_case(
            "a doubled inner slash",
            "POST",
            "/v1//chat/completions",
            unknown_url(),
        ),
        method_case(
            "a dot-dot segment",
            "POST",
            "/v1/../v1/chat/completions",
            unknown_url(),
        ),
        method_case(
            "an encoded slash",
            "POST",
            "/v1/chat%2Fcompletions",
            unknown_url(),
        ),
        method_case(
            "percent-encoded garbage",
            "POST",
            "/v1/%ff%fe%00",
            unknown_url(),
        ),
        method_case(
            "an 8,000-character path",
            "POST",
            &format!("/v1/{}", "a".repeat(8_000)),
            unknown_url(),
        ),
        method_case(
            "a 70,000-character path",
            "POST",
            &format!("/{}", "a".repeat(70_000)),
            Expect::Bare(414),
        ),
        // The path is what counts: a query string or an absolute-form target changes nothing.
        method_case(
            "a query string (accepted)",
            "POST",
            "/v1/chat/completions?x=%ff&y",
            Expect::Served,
        ),
        method_case(
            "an absolute-form target (accepted)",
            "POST",
            "http://spillway/v1/chat/completions",
            Expect::Served,
        ),
        Case::new(
            "a model id that is not UTF-8 once decoded",
            get("/v1/models/%ff%fe"),
            bad_field("model"),
        ),
        Case::new(
            "a model id with a malformed escape",
            get("/v1/models/%zz"),
            bad_field("model"),
        ),
        Case::new(
            "a model id ending in a lone percent sign",
            get("/v1/models/chat%"),
            bad_field("model"),
        ),
        Case::new(
            "a model id that is unknown",
            get("/v1/models/gpt-9"),
            unknown_model(),
        ),
        Case::new(
            "a model id with an encoded NUL",
            get("/v1/models/chat%00"),
            unknown_model(),
        ),
        Case::new(
            "models without a key",
            "GET /v1/models HTTP/1.1\r\nHost: spillway\r\n\r\n",
            unauthorized(),
        ),
    ]
}

/// Header framing hyper refuses itself.
fn header_framing() -> Vec<Case> {
    let valid = chat_with("");
    let start = format!("POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}");
    vec![
        Case::new(
            "a header line without a colon",
            format!("{start}\r\nNot a header\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a space in a header name",
            format!("{start}\r\nBad Name: x\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a folded (obs-fold) header",
            format!("{start}\r\nX-A: a\r\n  b\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a NUL byte in a header value",
            format!("{start}\r\nX-A: a\0b\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "two different content-lengths",
            format!(
                "{start}\r\nContent-Length: {}\r\nContent-Length: 3\r\n\r\n{valid}",
                valid.len()
            ),
            Expect::Bare(400),
        ),
        // Repeated with the same value, the length is unambiguous.
        Case::new(
            "the same content-length twice (accepted)",
            format!(
                "{start}\r\nContent-Length: {0}\r\nContent-Length: {0}\r\n\r\n{valid}",
                valid.len()
            ),
            Expect::Served,
        ),
        Case::new(
            "a content-length that is not a number",
            format!("{start}\r\nContent-Length: abc\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a negative content-length",
            format!("{start}\r\nContent-Length: -1\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "a content-length beyond u64",
            format!("{start}\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "101 headers",
            format!(
                "{start}\r\n{}\r\n",
                (0..101)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            ),
            Expect::Bare(431),
        ),
        Case::new(
            "a 500 KB header",
            format!("{start}\r\nX-Big: {}\r\n\r\n", "a".repeat(500_000)),
            Expect::Bare(431),
        ),
        Case::new(
            "HTTP/2.0 in the request line",
            format!("POST {CHAT} HTTP/2.0\r\nHost: spillway\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "HTTP/1.2 in the request line",
            format!("POST {CHAT} HTTP/1.2\r\nHost: spillway\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new(
            "no HTTP version",
            format!("POST {CHAT}\r\nHost: spillway\r\n\r\n"),
            Expect::Bare(400),
        ),
        Case::new("a garbage request line", "hello\r\n\r\n", Expect::Bare(400)),
        Case::new(
            "binary garbage (a TLS client hello)",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".as_slice(),
            Expect::Bare(400),
        ),
        // An HTTP/1-only server has nothing to say to an HTTP/2 client: hyper closes.
        Case::new(
            "the HTTP/2 connection preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            Expect::ClosedUnanswered,
        ),
        // Empty lines before a request line are skipped (RFC 9112 section 2.2).
        Case::new(
            "empty lines before the request (accepted)",
            [b"\r\n\r\n".as_slice(), &post(CHAT, "", valid.as_bytes())].concat(),
            Expect::Served,
        ),
        Case::new(
            "header lines that end with LF only (accepted, as hyper reads them)",
            format!(
                "POST {CHAT} HTTP/1.1\nHost: spillway\nAuthorization: Bearer {TOKEN}\n\
                 Content-Length: {}\n\n{valid}",
                valid.len()
            ),
            Expect::Served,
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
            Expect::Served,
        ),
        chunked_case(
            "a body in one-byte chunks (accepted)",
            &format!(
                "{}0\r\n\r\n",
                valid
                    .chars()
                    .map(|c| format!("1\r\n{c}\r\n"))
                    .collect::<String>()
            ),
            Expect::Served,
        ),
        chunked_case(
            "chunks with extensions (accepted)",
            &format!("{:x};name=value\r\n{valid}\r\n0;last\r\n\r\n", valid.len()),
            Expect::Served,
        ),
        chunked_case(
            "chunked with trailers (accepted)",
            &format!("{:x}\r\n{valid}\r\n0\r\nX-Trailer: t\r\n\r\n", valid.len()),
            Expect::Served,
        ),
        chunked_case(
            "a chunked body that is not JSON",
            &one_chunk("{nope"),
            error(400),
        ),
        chunked_case(
            "a chunk size that is not hex",
            &format!("zz\r\n{valid}\r\n0\r\n\r\n"),
            unreadable(),
        ),
        chunked_case(
            "a chunk size that overflows",
            &format!("ffffffffffffffffffff\r\n{valid}\r\n0\r\n\r\n"),
            unreadable(),
        ),
        chunked_case(
            "chunk data longer than its size",
            &format!("2\r\n{valid}\r\n0\r\n\r\n"),
            unreadable(),
        ),
        chunked_case(
            "a chunk size larger than the data, then nothing",
            &format!("ffff\r\n{valid}"),
            timed_out(),
        ),
        chunked_case(
            "no last chunk, then nothing",
            &format!("{:x}\r\n{valid}\r\n", valid.len()),
            timed_out(),
        ),
        chunked_case(
            "no last chunk, then the client shuts its side",
            &format!("{:x}\r\n{valid}\r\n", valid.len()),
            unreadable(),
        )
        .sending(Sending::ThenEof),
        chunked_case(
            "half a chunk, then the client hangs up",
            &format!("{:x}\r\n{}", valid.len(), &valid[..10]),
            Expect::Gone,
        )
        .sending(Sending::ThenHangUp),
        chunked_case(
            "chunks adding up to more than the limit",
            &format!("{:x}\r\n{}\r\n", LIMIT / 2 + 1, " ".repeat(LIMIT / 2 + 1)).repeat(2),
            too_large(),
        ),
        // Transfer-encoding wins over content-length (RFC 9112 section 6.3), so a smuggled
        // length cannot cut the body short.
        Case::new(
            "transfer-encoding and content-length together (accepted, chunked)",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{}",
                one_chunk(&valid)
            ),
            Expect::Served,
        ),
        Case::new(
            "transfer-encoding gzip without chunked",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nTransfer-Encoding: gzip\r\n\r\n{valid}"
            ),
            Expect::Bare(400),
        ),
        Case::new(
            "chunked not the last transfer-encoding",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\n\
                 Transfer-Encoding: chunked, gzip\r\n\r\n{valid}"
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

/// Sizes, and declared lengths that differ from what is sent.
fn sizes() -> Vec<Case> {
    let valid = chat_with("");
    let declaring = |length: usize| {
        format!(
            "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };
    vec![
        Case::new(
            "a content-length over the limit (refused before reading)",
            declaring(LIMIT + 1),
            too_large(),
        ),
        Case::new("a content-length of 1 TB", declaring(1 << 40), too_large()),
        chat_case(
            "a body exactly at the limit (accepted)",
            format!("{valid}{}", " ".repeat(LIMIT - valid.len())),
            Expect::Served,
        ),
        chat_case(
            "a body one byte over the limit",
            format!("{valid}{}", " ".repeat(LIMIT + 1 - valid.len())),
            too_large(),
        ),
        chat_case(
            "a content of twice the limit",
            chat_messages(&format!(
                r#"{{"role":"user","content":"{}"}}"#,
                "x".repeat(2 * LIMIT)
            )),
            too_large(),
        ),
        chat_case(
            "5,000 messages (accepted)",
            chat_messages(&vec![r#"{"role":"user","content":"x"}"#; 5_000].join(",")),
            Expect::Served,
        ),
        Case::new("a content-length of 0", declaring(0), error(400)),
        Case::new(
            "no content-length and no body",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            ),
            error(400),
        ),
        Case::new(
            "a content-length shorter than the body",
            format!("{}{valid}", declaring(10)),
            error(400),
        ),
        Case::new(
            "a content-length longer than the body, then nothing",
            format!("{}{valid}", declaring(valid.len() + 10)),
            timed_out(),
        ),
        Case::new(
            "a content-length longer than the body, then the client shuts its side",
            format!("{}{valid}", declaring(valid.len() + 10)),
            unreadable(),
        )
        .sending(Sending::ThenEof),
        Case::new(
            "half the body, then the client hangs up",
            format!("{}{}", declaring(valid.len()), &valid[..valid.len() / 2]),
            Expect::Gone,
        )
        .sending(Sending::ThenHangUp),
        Case::new(
            "no key and a content-length over the limit",
            format!("POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nContent-Length: {LIMIT}0\r\n\r\n"),
            unauthorized(),
        ),
        // The body is only read once asked for (100 Continue); a client that never sends it
        // is timed out like any other.
        Case::new(
            "expect 100-continue with the body (accepted)",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Expect: 100-continue\r\nContent-Length: {}\r\n\r\n{valid}",
                valid.len()
            ),
            Expect::Served,
        ),
        Case::new(
            "expect 100-continue and no body",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                valid.len()
            ),
            timed_out(),
        ),
    ]
}

/// HTTP/1.0, pipelining, connections that end early.
fn connections() -> Vec<Case> {
    let valid = chat_with("");
    let http10 = |body: &str| {
        format!(
            "POST {CHAT} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let request = |body: &str| post(CHAT, "", body.as_bytes());
    let no_key = |body: &str| {
        format!(
            "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    vec![
        Case::new("HTTP/1.0 (accepted)", http10(&valid), Expect::Served),
        Case::new(
            "HTTP/1.0 and a body that is not JSON",
            http10("{nope"),
            error(400),
        ),
        Case::new(
            "HTTP/1.0 and no key",
            "GET /v1/models HTTP/1.0\r\n\r\n",
            unauthorized(),
        ),
        Case::new(
            "a request that asks to close the connection (accepted)",
            post(CHAT, "Connection: close\r\n", valid.as_bytes()),
            Expect::Served,
        ),
        Case::new(
            "pipelined: a body that is not JSON, then a valid request",
            [request("{nope"), request(&valid)].concat(),
            Expect::Each(vec![error(400), Expect::Served]),
        ),
        Case::new(
            "pipelined: a request without a key, then a valid one",
            [no_key(&valid), request(&valid)].concat(),
            Expect::Each(vec![unauthorized(), Expect::Served]),
        ),
        Case::new(
            "pipelined: two valid requests (accepted)",
            [request(&valid), request(&valid)].concat(),
            Expect::Each(vec![Expect::Served, Expect::Served]),
        ),
        Case::new(
            "pipelined: wrong method, unknown path, unknown model",
            [
                format!("DELETE {CHAT} HTTP/1.1\r\nHost: spillway\r\n\r\n").into_bytes(),
                b"GET /v1/nothing HTTP/1.1\r\nHost: spillway\r\n\r\n".to_vec(),
                request(r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#),
            ]
            .concat(),
            Expect::Each(vec![wrong_method(), unknown_url(), unknown_model()]),
        ),
        Case::new(
            "pipelined: a valid request, then garbage",
            [request(&valid), b"hello\r\n\r\n".to_vec()].concat(),
            Expect::Each(vec![Expect::Served, Expect::Bare(400)]),
        ),
        Case::new(
            "a whole request that is not JSON, then the client hangs up without reading",
            request("{nope"),
            Expect::Gone,
        )
        .sending(Sending::ThenHangUp),
        Case::new(
            "headers only, then the client hangs up",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 100\r\n\r\n"
            ),
            Expect::Gone,
        )
        .sending(Sending::ThenHangUp),
    ]
}

/// Slow clients: `client_timeout` is 300 ms.
fn slow_clients() -> Vec<Case> {
    let valid = chat_with("");
    let (first, rest) = valid.split_at(20);
    let (second, third) = rest.split_at(20);
    vec![
        Case::new(
            "a connection that sends nothing",
            "",
            Expect::ClosedUnanswered,
        ),
        Case::new(
            "half a request line, then nothing",
            "POST /v1/chat/compl",
            Expect::ClosedUnanswered,
        ),
        Case::new(
            "headers without their final empty line, then nothing",
            format!("POST {CHAT} HTTP/1.1\r\nHost: spillway\r\n"),
            Expect::ClosedUnanswered,
        ),
        Case::new(
            "headers sent a byte every 20 ms (slowloris)",
            format!("POST {CHAT} HTTP/1.1\r\n"),
            Expect::ClosedUnanswered,
        )
        .sending(Sending::ThenTrickle(b"X-Slow: aaaa\r\n")),
        Case::new(
            "headers, then no body",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 100\r\n\r\n"
            ),
            timed_out(),
        ),
        Case::new(
            "a body sent a byte every 20 ms",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 60000\r\n\r\n"
            ),
            timed_out(),
        )
        .sending(Sending::ThenTrickle(b"{\"model\": \"")),
        chunked_case("a chunked body sent a byte every 20 ms", "", timed_out())
            .sending(Sending::ThenTrickle(b"1\r\na\r\n")),
        Case::new(
            "a body in three pieces 50 ms apart, within the timeout (accepted)",
            format!(
                "POST {CHAT} HTTP/1.1\r\nHost: spillway\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: {}\r\n\r\n{first}",
                valid.len()
            ),
            Expect::Served,
        )
        .sending(Sending::ThenPieces(
            vec![second.as_bytes().to_vec(), third.as_bytes().to_vec()],
            Duration::from_millis(50),
        )),
    ]
}

/// Checks one answer against what was expected of it.
async fn check_one(
    expect: &Expect,
    reply: raw::Reply,
    responses: &mut raw::Responses<OwnedReadHalf>,
) -> Result<(), String> {
    use raw::Reply;
    match (expect, reply) {
        (Expect::ClosedUnanswered, Reply::Closed { partial }) if partial.is_empty() => Ok(()),
        (Expect::Bare(status), Reply::Answer(a)) => {
            if a.status != *status || !a.body.is_empty() {
                return Err(format!("expected a bare {status}, got {}", a.shown()));
            }
            if !responses.closes_within(CASE_BOUND).await {
                return Err("the connection stayed open after a framing error".into());
            }
            Ok(())
        }
        (Expect::Head(status), Reply::Answer(a)) if a.status == *status => Ok(()),
        (Expect::Served, Reply::Answer(a)) => {
            let served = a.status == 200
                && match a.json() {
                    Some(v) => v["object"] == "chat.completion" || v["object"] == "list",
                    None => {
                        a.header("content-type") == Some("text/event-stream")
                            && a.body.ends_with(b"data: [DONE]\n\n")
                    }
                };
            if served {
                Ok(())
            } else {
                Err(format!("expected an answer, got {}", a.shown()))
            }
        }
        (Expect::Upstream(status), Reply::Answer(a)) => {
            let refused = a.json().is_some_and(|v| v["error"]["message"].is_string());
            if a.status == *status && refused {
                Ok(())
            } else {
                Err(format!(
                    "expected the provider's {status} passed on, got {}",
                    a.shown()
                ))
            }
        }
        (
            Expect::Error {
                status,
                code,
                param,
            },
            Reply::Answer(a),
        ) => {
            let shown = a.shown();
            if a.status != *status {
                return Err(format!("expected {status}, got {shown}"));
            }
            if a.header("content-type") != Some("application/json") {
                return Err(format!("not labelled JSON: {:?}", a.headers));
            }
            let Some(body) = a.json() else {
                return Err(format!("not JSON: {shown}"));
            };
            let Some(err) = body["error"].as_object() else {
                return Err(format!("no error object: {shown}"));
            };
            let message = err.get("message").and_then(Value::as_str).unwrap_or("");
            if message.is_empty()
                || !err.get("type").is_some_and(Value::is_string)
                || !err.contains_key("param")
                || !err.contains_key("code")
            {
                return Err(format!("not OpenAI's message, type, param, code: {shown}"));
            }
            if let Some(code) = code
                && err["code"] != *code
            {
                return Err(format!("expected code {code}: {shown}"));
            }
            if let Some(param) = param
                && (err["param"] != *param || !message.contains(param))
            {
                return Err(format!(
                    "expected param {param}, named in the message: {shown}"
                ));
            }
            Ok(())
        }
        (expect, reply) => Err(format!("expected {expect:?}, got {}", reply.shown())),
    }
}

/// Sends one case on a fresh connection and checks what came back; `Err` says what was wrong.
async fn run_case(addr: std::net::SocketAddr, case: &Case) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (read, mut write) = stream.into_split();
    let bytes = case.bytes.clone();
    let sending = case.sending.clone();
    // Written beside the reading: a proxy may answer (and close) before it reads it all.
    let writer = tokio::spawn(async move {
        if write.write_all(&bytes).await.is_err() {
            return None;
        }
        match sending {
            Sending::All => Some(write),
            Sending::ThenEof => {
                let _ = write.shutdown().await;
                Some(write)
            }
            Sending::ThenHangUp => None,
            Sending::ThenTrickle(tail) => {
                for byte in tail.iter().cycle().take(500) {
                    if write.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some(write)
            }
            Sending::ThenPieces(pieces, pause) => {
                for piece in pieces {
                    tokio::time::sleep(pause).await;
                    if write.write_all(&piece).await.is_err() {
                        break;
                    }
                }
                Some(write)
            }
        }
    });
    if let Expect::Gone = case.expect {
        let _ = tokio::time::timeout(CASE_BOUND, writer).await;
        drop(read);
        return Ok(());
    }
    let head = case.bytes.starts_with(b"HEAD ");
    let mut responses = raw::Responses::new(read);
    let result = match &case.expect {
        Expect::Each(each) => {
            let mut result = Ok(());
            for (i, expect) in each.iter().enumerate() {
                let reply = responses.next(head, CASE_BOUND).await;
                if let Err(why) = check_one(expect, reply, &mut responses).await {
                    result = Err(format!("answer {}: {why}", i + 1));
                    break;
                }
            }
            result
        }
        expect => {
            let reply = responses.next(head, CASE_BOUND).await;
            check_one(expect, reply, &mut responses).await
        }
    };
    writer.abort();
    result
}

/// A valid chat request through the proxy, its status or what went wrong.
async fn probe(proxy: &Proxy, n: usize) -> Result<u16, String> {
    let body = chat_body("chat", &format!("still serving after case {n}?"), 5);
    let resp = client()
        .post(format!("{}/chat/completions", proxy.url()))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

/// Panics raised outside the tests' own code (in the proxy, hyper, the mock), as text.
static FOREIGN_PANICS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Starts counting panics raised outside the tests' own code, however they are caught.
fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .location()
                .is_some_and(|l| l.file().starts_with("tests/"));
            if !ours {
                FOREIGN_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_its_status_and_error_and_never_reaches_the_provider() {
    watch_panics();
    let cases = cases();
    assert!(cases.len() >= 90, "only {} cases", cases.len());
    let mock = MockProvider::builder().key("k1").start().await;
    let (mock, proxy) = setup_with(
        mock,
        &format!("max_body_bytes = {LIMIT}\nclient_timeout = \"{CLIENT_TIMEOUT}\""),
    )
    .await;
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let before = mock.stats().requests;
        let outcome = tokio::time::timeout(2 * CASE_BOUND, run_case(proxy.addr, case))
            .await
            .unwrap_or_else(|_| Err("the case did not settle in time".into()));
        if let Err(why) = outcome {
            failures.push(format!("{}: {why}", case.name));
        }
        // Whatever the case did, the proxy still serves a valid request.
        match tokio::time::timeout(CASE_BOUND, probe(&proxy, n)).await {
            Ok(Ok(200)) => {}
            other => failures.push(format!(
                "{}: the next valid request was not served: {other:?}",
                case.name
            )),
        }
        let reached = mock.stats().requests - before;
        let expected = case.expect.forwards() + 1;
        if reached != expected {
            failures.push(format!(
                "{}: {reached} requests reached the provider, expected {expected} \
                 (the case's own {} and the valid one after it)",
                case.name,
                expected - 1
            ));
        }
    }
    let panics = FOREIGN_PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(panics.is_empty(), "panics outside the tests: {panics:#?}");
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
