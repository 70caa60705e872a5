//! Reading an OpenAI-style SSE stream as it arrives: its events (each checked to be JSON, keys
//! masked), where the usage is, whether it finished with `data: [DONE]`, and whether the
//! provider reported an error in it.

use serde_json::Value;

use crate::upstream::scrub::Scrubber;

/// What a stream has shown so far.
#[derive(Debug, Default, Clone)]
pub struct SseWatch {
    partial: Vec<u8>,
    /// (prompt, completion) tokens, from `usage` or Groq's `x_groq.usage`.
    pub usage: Option<(u64, u64)>,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// An error the provider put in the stream (`x_groq.error`, `error`, `event: error`).
    pub error: Option<String>,
    /// Why the stream cannot be used past some point: a chunk that is not JSON.
    pub invalid: Option<String>,
}

fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v
        .get("usage")
        .filter(|u| u.is_object())
        .or_else(|| v.get("x_groq").and_then(|x| x.get("usage")))?;
    Some((
        u.get("prompt_tokens")?.as_u64()?,
        u.get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    ))
}

impl SseWatch {
    /// Feeds the next bytes of the stream and appends every complete `data:` payload (other
    /// than `[DONE]`) to `events`, with provider keys masked by `scrub`. Each payload must be
    /// JSON: the first that is not ends the stream's events ([`SseWatch::invalid`]), and
    /// nothing after `[DONE]` or an invalid payload is taken.
    pub fn feed(&mut self, bytes: &[u8], scrub: &Scrubber, events: &mut Vec<String>) {
        let mut partial = std::mem::take(&mut self.partial);
        partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &partial[start..]) {
            let line = &partial[start..start + end];
            start += end + 1;
            if self.done || self.invalid.is_some() {
                continue;
            }
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line == b"event: error" {
                self.error.get_or_insert_with(|| "error event".into());
                continue;
            }
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data == b"[DONE]" {
                self.done = true;
                continue;
            }
            let data = scrub.bytes(data);
            let mentions = |needle: &[u8]| memchr::memmem::find(&data, needle).is_some();
            if mentions(b"\"usage\"") || mentions(b"\"error\"") {
                match serde_json::from_slice::<Value>(&data) {
                    Ok(v) => self.read_extras(&v),
                    Err(e) => {
                        self.invalid = Some(format!("a chunk was not valid JSON ({e})"));
                        continue;
                    }
                }
            } else if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&data) {
                self.invalid = Some(format!("a chunk was not valid JSON ({e})"));
                continue;
            }
            match String::from_utf8(data.into_owned()) {
                Ok(event) => events.push(event),
                Err(_) => self.invalid = Some("a chunk was not UTF-8".into()),
            }
        }
        partial.drain(..start);
        self.partial = partial;
    }

    /// Usage and errors from a chunk that mentions them.
    fn read_extras(&mut self, v: &Value) {
        if let Some(u) = usage_of(v) {
            self.usage = Some(u);
        }
        let error = v
            .get("x_groq")
            .and_then(|x| x.get("error"))
            .or_else(|| v.get("error"))
            .filter(|e| !e.is_null());
        if let Some(e) = error {
            self.error = Some(match e {
                Value::String(s) => s.clone(),
                other => other
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(stream: &str, piece: usize) -> (SseWatch, Vec<String>) {
        let mut w = SseWatch::default();
        let mut events = Vec::new();
        let scrub = Scrubber::new(["gsk_the_secret"]);
        for p in stream.as_bytes().chunks(piece) {
            w.feed(p, &scrub, &mut events);
        }
        (w, events)
    }

    #[test]
    fn usage_done_and_errors_are_found_across_chunk_boundaries() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"x_groq\":{\"id\":\"r\",\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}}\n\ndata: [DONE]\n\n";
        let (w, events) = feed_all(stream, 7);
        assert_eq!(w.usage, Some((7, 3)));
        assert!(w.done);
        assert!(w.error.is_none() && w.invalid.is_none());
        assert_eq!(events.len(), 2);

        let (w, _) = feed_all(
            "data: {\"choices\":[],\"x_groq\":{\"id\":\"r\",\"error\":\"stream interrupted\"}}\n\n",
            5,
        );
        assert_eq!(w.error.as_deref(), Some("stream interrupted"));
        assert!(!w.done);
    }

    #[test]
    fn a_chunk_that_is_not_json_ends_the_events_and_keys_are_masked() {
        let stream = "data: {\"a\":\"gsk_the_secret\"}\n\ndata: {\"cut\":\n\ndata: {\"b\":1}\n\ndata: [DONE]\n\n";
        let (w, events) = feed_all(stream, 3);
        assert_eq!(events, vec![r#"{"a":"***"}"#.to_string()]);
        assert!(w.invalid.is_some());
        assert!(!w.done, "nothing after the invalid chunk is taken");
    }
}
