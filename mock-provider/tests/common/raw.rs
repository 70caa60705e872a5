//! A raw HTTP/1.1 client over a `TcpStream`, for what well-behaved clients never send: broken
//! framing, duplicated headers, bytes sent slowly or not at all.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

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

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What came back on a connection.
#[derive(Debug)]
pub enum Reply {
    /// A complete response (interim `1xx` responses skipped).
    Answer(Answer),
    /// The connection was closed (FIN or RST) before a complete response.
    Closed { partial: Vec<u8> },
    /// Neither within the time allowed.
    TimedOut { partial: Vec<u8> },
}

impl Reply {
    /// The answer, or a panic naming `what` and what came instead.
    pub fn answer(self, what: &str) -> Answer {
        match self {
            Reply::Answer(a) => a,
            other => panic!("{what}: expected an answer, got {other:?}"),
        }
    }
}

/// Connects to `addr` and writes `bytes` (the write side stays open).
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("the mock accepts");
    stream.write_all(bytes).await.expect("the request is sent");
    stream
}

/// Writes `bytes` over and over, one byte every `every`, until the peer stops reading.
pub fn trickle(mut write: OwnedWriteHalf, bytes: &'static [u8], every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes.iter().cycle() {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body of a chunked message, once its last chunk has arrived.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return find(data, b"\r\n").map(|_| body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

enum Parsed {
    Complete(Answer),
    /// Headers read; the body runs to the end of the connection.
    UntilClose(Answer),
    Incomplete,
}

/// Tries to parse one response from `buf`, skipping interim responses.
fn parse(buf: &[u8], head_request: bool) -> Parsed {
    let mut start = 0;
    loop {
        let Some(end) = find(&buf[start..], b"\r\n\r\n") else {
            return Parsed::Incomplete;
        };
        let head = String::from_utf8_lossy(&buf[start..start + end]).into_owned();
        let body = &buf[start + end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {head:?}"));
        if (100..200).contains(&status) {
            start += end + 4;
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
            return Parsed::Complete(answer);
        }
        if answer
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            return match dechunk(body) {
                Some(b) => {
                    answer.body = b;
                    Parsed::Complete(answer)
                }
                None => Parsed::Incomplete,
            };
        }
        if let Some(len) = answer.header("content-length") {
            let len: usize = len.parse().expect("a numeric content-length");
            if body.len() < len {
                return Parsed::Incomplete;
            }
            answer.body = body[..len].to_vec();
            return Parsed::Complete(answer);
        }
        answer.body = body.to_vec();
        return Parsed::UntilClose(answer);
    }
}

/// Reads one response within `within`. `head_request`: it answers a HEAD (no body).
pub async fn read_reply(
    stream: &mut (impl AsyncRead + Unpin),
    head_request: bool,
    within: Duration,
) -> Reply {
    let mut buf = Vec::new();
    let outcome = tokio::time::timeout(within, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Parsed::Complete(answer) = parse(&buf, head_request) {
                return Some(answer);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    return match parse(&buf, head_request) {
                        Parsed::Complete(a) | Parsed::UntilClose(a) => Some(a),
                        Parsed::Incomplete => None,
                    };
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    match outcome {
        Ok(Some(answer)) => Reply::Answer(answer),
        Ok(None) => Reply::Closed { partial: buf },
        Err(_) => Reply::TimedOut { partial: buf },
    }
}

/// Waits for the peer to close the connection, within `within`: true when it did (FIN or RST),
/// false when it stayed open. Any bytes that arrive first are discarded.
pub async fn closes_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> bool {
    tokio::time::timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A `POST` with these extra header lines and body, a `content-length` and key `k1`.
pub fn post(path: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: mock\r\nAuthorization: Bearer k1\r\n\
         Content-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
