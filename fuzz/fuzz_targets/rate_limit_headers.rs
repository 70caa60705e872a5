//! Rate-limit headers, Go durations and 429 messages. The input is read as lines of
//! `name: value` (a first line `@SECONDS` sets the calendar time "now"); the headers are read
//! in every dialect, every value as a Go duration, and the whole input as a 429 message. None
//! of it panics; every duration read is finite and not negative; every reading reports
//! something; a limit found in a message is written in it after `Limit `.

#![no_main]

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use spillway::limits::headers::{self, Dialect, parse_go_duration, parse_limit_message};

const DIALECTS: [Dialect; 4] = [
    Dialect::Groq,
    Dialect::OpenAi,
    Dialect::Cerebras,
    Dialect::Anthropic,
];

fn check_duration(d: Duration) {
    let secs = d.as_secs_f64();
    assert!(secs.is_finite() && secs >= 0.0, "{d:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut now = Duration::from_secs(1_700_000_000);
    let mut headers = HeaderMap::new();
    let mut values = Vec::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if i == 0
            && let Some(secs) = line.strip_prefix(b"@")
        {
            if let Some(secs) = std::str::from_utf8(secs).ok().and_then(|s| s.parse().ok()) {
                now = Duration::from_secs(secs);
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let Ok(text) = std::str::from_utf8(value) {
            values.push(text);
        }
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    for dialect in DIALECTS {
        let snapshot = headers::parse(dialect, &headers, now);
        for reading in &snapshot.readings {
            assert!(
                reading.limit.is_some() || reading.remaining.is_some() || reading.reset.is_some()
            );
            reading.reset.map(check_duration);
        }
        snapshot.retry_after.map(check_duration);
    }
    for value in values {
        if let Some(d) = parse_go_duration(value) {
            check_duration(d);
        }
    }
    let message = String::from_utf8_lossy(data);
    if let Some((_, limit)) = parse_limit_message(&message) {
        assert!(message.contains("Limit "), "{message:?}");
        assert!(
            message.contains(&limit.to_string()),
            "{limit} is not in {message:?}"
        );
    }
});
