//! One entry, both shapes: a streamed answer served as one JSON body, and a plain answer served
//! as a valid SSE stream ending in `data: [DONE]`, whichever way it was first produced.

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// True for a usage-only chunk (no choices, a top-level `usage`): sent only when a request asks
/// for `stream_options.include_usage`.
fn is_usage_chunk(v: &Value) -> bool {
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty())
        && v.get("usage").is_some_and(|u| u.is_object())
}

/// A `chat.completion` being assembled from a stream's chunks.
#[derive(Default)]
struct Assembly {
    id: Value,
    created: Value,
    model: Value,
    fingerprint: Value,
    usage: Value,
    /// Per choice: its index, role and finish reason as they arrive.
    choices: Vec<Map<String, Value>>,
    /// Per choice: the text so far.
    contents: Vec<String>,
    /// Per choice: its tool calls so far.
    tool_calls: Vec<Vec<Map<String, Value>>>,
}

impl Assembly {
    /// Takes one chunk: the answer's identity from the first chunk that names it, usage from
    /// the last that reports it, and each choice's delta.
    fn add(&mut self, chunk: &Value) {
        for (slot, field) in [
            (&mut self.id, "id"),
            (&mut self.created, "created"),
            (&mut self.model, "model"),
            (&mut self.fingerprint, "system_fingerprint"),
        ] {
            if slot.is_null()
                && let Some(v) = chunk.get(field)
            {
                *slot = v.clone();
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = u.clone();
        } else if let Some(u) = chunk.get("x_groq").and_then(|x| x.get("usage")) {
            self.usage = u.clone();
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.add_choice(choice);
        }
    }

    /// Takes one choice's delta: role, text, tool calls, finish reason.
    fn add_choice(&mut self, choice: &Value) {
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        while self.choices.len() <= index {
            let mut c = Map::new();
            c.insert("index".into(), json!(self.choices.len()));
            self.choices.push(c);
            self.contents.push(String::new());
            self.tool_calls.push(Vec::new());
        }
        let delta = choice.get("delta").cloned().unwrap_or(Value::Null);
        if let Some(role) = delta.get("role") {
            self.choices[index].insert("role".into(), role.clone());
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str) {
            self.contents[index].push_str(text);
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add_tool_call(&mut self.tool_calls[index], call);
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.choices[index].insert("finish_reason".into(), reason.clone());
        }
    }

    /// The assembled body.
    fn finish(mut self) -> Value {
        let choices: Vec<Value> = std::mem::take(&mut self.choices)
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = json!({
                    "role": c.get("role").cloned().unwrap_or(json!("assistant")),
                    "content": self.contents[i],
                });
                if !self.tool_calls[i].is_empty() {
                    message["tool_calls"] =
                        Value::Array(self.tool_calls[i].drain(..).map(Value::Object).collect());
                }
                json!({
                    "index": i,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": c.get("finish_reason").cloned().unwrap_or(json!("stop")),
                })
            })
            .collect();
        let mut body = json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if !self.usage.is_null() {
            body["usage"] = self.usage;
        }
        if !self.fingerprint.is_null() {
            body["system_fingerprint"] = self.fingerprint;
        }
        body
    }
}

/// Adds a tool call's delta to the calls so far: its id and type, and the pieces of its
/// function's name and arguments, which arrive split across chunks.
fn add_tool_call(calls: &mut Vec<Map<String, Value>>, call: &Value) {
    let i = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
    while calls.len() <= i {
        calls.push(Map::new());
    }
    let slot = &mut calls[i];
    for field in ["id", "type"] {
        if let Some(v) = call.get(field) {
            slot.insert(field.into(), v.clone());
        }
    }
    if let Some(f) = call.get("function") {
        let func = slot
            .entry("function")
            .or_insert_with(|| json!({"name": "", "arguments": ""}));
        for part in ["name", "arguments"] {
            if let Some(piece) = f.get(part).and_then(Value::as_str) {
                func[part] = json!(format!("{}{piece}", func[part].as_str().unwrap_or("")));
            }
        }
    }
}

/// Assembles a `chat.completion` body from a stream's chunk payloads.
pub fn completion_from_chunks(chunks: &[Box<RawValue>]) -> Option<Vec<u8>> {
    let mut assembly = Assembly::default();
    for raw in chunks {
        let chunk: Value = serde_json::from_str(raw.get()).ok()?;
        assembly.add(&chunk);
    }
    serde_json::to_vec(&assembly.finish()).ok()
}

/// Splits text into stream-sized pieces (a word and its trailing space each).
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ')
}

/// Builds a stream's chunk payloads from a plain `chat.completion` body.
pub fn chunks_from_completion(body: &RawValue) -> Option<Vec<String>> {
    let v: Value = serde_json::from_str(body.get()).ok()?;
    let base = |choices: Value| {
        let mut c = json!({
            "id": v.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion.chunk",
            "created": v.get("created").cloned().unwrap_or(Value::Null),
            "model": v.get("model").cloned().unwrap_or(Value::Null),
            "choices": choices,
        });
        if let Some(fp) = v.get("system_fingerprint").filter(|f| !f.is_null()) {
            c["system_fingerprint"] = fp.clone();
        }
        c
    };
    let mut out = Vec::new();
    for choice in v.get("choices")?.as_array()? {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let message = choice.get("message")?;
        let role = message.get("role").cloned().unwrap_or(json!("assistant"));
        out.push(base(json!([{"index": index, "delta": {"role": role, "content": ""}, "logprobs": null, "finish_reason": null}])).to_string());
        if let Some(text) = message.get("content").and_then(Value::as_str) {
            for piece in pieces(text) {
                out.push(base(json!([{"index": index, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}])).to_string());
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.clone();
                    c["index"] = json!(i);
                    c
                })
                .collect();
            out.push(base(json!([{"index": index, "delta": {"tool_calls": calls}, "logprobs": null, "finish_reason": null}])).to_string());
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        out.push(
            base(json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}]))
                .to_string(),
        );
    }
    if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
        let mut c = base(json!([]));
        c["usage"] = usage.clone();
        out.push(c.to_string());
    }
    Some(out)
}

/// A usage-only chunk built from the usage a stream reported elsewhere (Groq's `x_groq.usage`),
/// for a request that asks `include_usage` of a stream recorded without it.
fn usage_chunk_for(chunks: &[Value]) -> Option<String> {
    let last = chunks.iter().rev().find_map(|c| {
        c.get("x_groq")
            .and_then(|x| x.get("usage"))
            .filter(|u| u.is_object())
            .map(|u| (c, u))
    })?;
    let (chunk, usage) = last;
    Some(
        json!({
            "id": chunk.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion.chunk",
            "created": chunk.get("created").cloned().unwrap_or(Value::Null),
            "model": chunk.get("model").cloned().unwrap_or(Value::Null),
            "choices": [],
            "usage": usage,
        })
        .to_string(),
    )
}

/// Renders chunk payloads as an SSE body ending in `data: [DONE]`, keeping a usage-only chunk
/// exactly when the request asked for `include_usage`.
pub fn sse_body<S: AsRef<str>>(chunks: &[S], include_usage: bool) -> Bytes {
    let mut out = String::new();
    let mut had_usage = false;
    let mut parsed = Vec::new();
    for chunk in chunks {
        let text = chunk.as_ref();
        let maybe_usage = text.contains("\"choices\":[]");
        if maybe_usage
            && let Ok(v) = serde_json::from_str::<Value>(text)
            && is_usage_chunk(&v)
        {
            had_usage = true;
            if !include_usage {
                continue;
            }
        }
        if include_usage
            && text.contains("x_groq")
            && let Ok(v) = serde_json::from_str::<Value>(text)
        {
            parsed.push(v);
        }
        out.push_str("data: ");
        out.push_str(text);
        out.push_str("\n\n");
    }
    if include_usage
        && !had_usage
        && let Some(u) = usage_chunk_for(&parsed)
    {
        out.push_str("data: ");
        out.push_str(&u);
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    Bytes::from(out)
}

/// Whether a request asks for `stream_options.include_usage`.
pub fn wants_usage(body: &Map<String, Value>) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("valid JSON")
    }

    #[test]
    fn a_stream_assembles_into_a_completion() {
        let chunks = vec![
            raw(
                r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            ),
            raw(
                r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"Hello "},"finish_reason":null}]}"#,
            ),
            raw(
                r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{"content":"world"},"finish_reason":null}]}"#,
            ),
            raw(
                r#"{"id":"c1","object":"chat.completion.chunk","created":5,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"r","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}}"#,
            ),
        ];
        let body: Value =
            serde_json::from_slice(&completion_from_chunks(&chunks).unwrap()).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "Hello world");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["total_tokens"], 5);
    }

    #[test]
    fn a_completion_becomes_a_stream_that_reassembles_to_it() {
        let body = raw(
            r#"{"id":"c1","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"one two three"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6}}"#,
        );
        let chunks = chunks_from_completion(&body).unwrap();
        let raws: Vec<Box<RawValue>> = chunks.iter().map(|c| raw(c)).collect();
        let back: Value = serde_json::from_slice(&completion_from_chunks(&raws).unwrap()).unwrap();
        assert_eq!(back["choices"][0]["message"]["content"], "one two three");
        assert_eq!(back["choices"][0]["finish_reason"], "length");
        let sse = String::from_utf8(sse_body(&chunks, false).to_vec()).unwrap();
        assert!(sse.ends_with("data: [DONE]\n\n"));
        assert!(
            !sse.contains("\"choices\":[]"),
            "no usage chunk unless asked"
        );
        let sse = String::from_utf8(sse_body(&chunks, true).to_vec()).unwrap();
        assert!(sse.contains("\"choices\":[]"));
    }

    #[test]
    fn groq_usage_becomes_a_usage_chunk_when_asked() {
        let chunks = [
            r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"x_groq":{"id":"r","usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}}"#,
        ];
        let sse = String::from_utf8(sse_body(&chunks, true).to_vec()).unwrap();
        assert!(
            sse.contains(r#""choices":[],"created":null"#) || sse.contains("\"usage\":{"),
            "{sse}"
        );
        assert_eq!(sse.matches("data: ").count(), 3);
    }
}
