//! Watching an OpenAI-style SSE stream as it passes through: where the usage is, whether it
//! finished with `data: [DONE]`, and whether the provider reported an error in it.

use serde_json::Value;

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
    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.feed_collecting(bytes, None);
    }

    /// Feeds the next bytes and appends every complete `data:` payload (other than `[DONE]`)
    /// to `events`.
    pub fn feed_events(&mut self, bytes: &[u8], events: &mut Vec<String>) {
        self.feed_collecting(bytes, Some(events));
    }

    fn feed_collecting(&mut self, bytes: &[u8], mut events: Option<&mut Vec<String>>) {
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let line = &self.partial[start..start + end];
            start += end + 1;
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
            if let Some(events) = events.as_deref_mut() {
                events.push(String::from_utf8_lossy(data).into_owned());
            }
            let mentions = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
            if !(mentions(b"\"usage\"") || mentions(b"\"error\"")) {
                continue;
            }
            if let Ok(v) = serde_json::from_slice::<Value>(data) {
                if let Some(u) = usage_of(&v) {
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
        self.partial.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_done_and_errors_are_found_across_chunk_boundaries() {
        let mut w = SseWatch::default();
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"x_groq\":{\"id\":\"r\",\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}}\n\ndata: [DONE]\n\n";
        for piece in stream.as_bytes().chunks(7) {
            w.feed(piece);
        }
        assert_eq!(w.usage, Some((7, 3)));
        assert!(w.done);
        assert!(w.error.is_none());

        let mut w = SseWatch::default();
        w.feed(b"data: {\"choices\":[],\"x_groq\":{\"id\":\"r\",\"error\":\"stream interrupted\"}}\n\n");
        assert_eq!(w.error.as_deref(), Some("stream interrupted"));
        assert!(!w.done);
    }
}
