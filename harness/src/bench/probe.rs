//! Before measuring, one request through each subject, fully parsed and compared with the mock's
//! own answer to the same prompt: a subject that answers fast but wrongly is not benchmarked as
//! if it were right.

use serde::Serialize;
use serde_json::{Value, json};

/// The prompt every probe sends.
const PROBE_PROMPT: &str = "spillway bench probe: say something deterministic";

/// One subject's probe.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// The subject.
    pub subject: String,
    /// `chat` or `stream`.
    pub kind: String,
    /// Whether it answered the mock's text, in the right shape.
    pub ok: bool,
    /// What was wrong, or what it answered.
    pub detail: String,
}

fn body(model: &str, stream: bool) -> Value {
    let mut b = json!({
        "model": model,
        "messages": [{"role": "user", "content": PROBE_PROMPT}],
        "max_tokens": 64,
        "temperature": 0,
    });
    if stream {
        b["stream"] = Value::Bool(true);
    }
    b
}

async fn post(url: &str, key: &str, body: &Value) -> Result<(u16, String), String> {
    let client = reqwest::Client::new();
    let resp = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .timeout(std::time::Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| format!("body: {e}"))?;
    Ok((status, text))
}

/// The text of a chat completion.
fn chat_text(text: &str) -> Result<String, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "no choices[0].message.content".into())
}

/// The text of an SSE chat-completion stream, which must end with `data: [DONE]`.
fn stream_text(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            done = true;
            continue;
        }
        if done {
            return Err("data after [DONE]".into());
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| format!("a chunk is not JSON ({e})"))?;
        if v.get("object").and_then(Value::as_str) != Some("chat.completion.chunk") {
            return Err(format!("a chunk is not a chat.completion.chunk: {data}"));
        }
        if let Some(piece) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            out.push_str(piece);
        }
    }
    if !done {
        return Err("the stream did not end with data: [DONE]".into());
    }
    Ok(out)
}

/// The mock's own answer to the probe prompt.
pub async fn reference(direct_url: &str, key: &str, model: &str) -> Result<String, String> {
    let (status, text) = post(direct_url, key, &body(model, false)).await?;
    if status != 200 {
        return Err(format!("the mock answered the probe with {status}: {text}"));
    }
    chat_text(&text).map_err(|e| format!("the mock's probe answer: {e}"))
}

/// Sends the probe to `url` and compares the answer with `expected`.
pub async fn probe(
    subject: &str,
    kind: &str,
    url: &str,
    key: &str,
    model: &str,
    stream: bool,
    expected: &str,
) -> Probe {
    let outcome = match post(url, key, &body(model, stream)).await {
        Err(e) => Err(e),
        Ok((status, text)) if status != 200 => Err(format!(
            "status {status}: {}",
            text.chars().take(300).collect::<String>()
        )),
        Ok((_, text)) => {
            if stream {
                stream_text(&text)
            } else {
                chat_text(&text)
            }
        }
    };
    let (ok, detail) = match outcome {
        Ok(got) if got == expected => (
            true,
            format!("answered the mock's text ({} bytes)", got.len()),
        ),
        Ok(got) => (
            false,
            format!("answered {got:?}, the mock says {expected:?}"),
        ),
        Err(e) => (false, e),
    };
    Probe {
        subject: subject.into(),
        kind: kind.into(),
        ok,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_read_to_their_text_and_must_end_with_done() {
        let chunk = |t: &str| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "choices": [{"delta": {"content": t}}]})
            )
        };
        let good = format!("{}{}data: [DONE]\n\n", chunk("Hel"), chunk("lo"));
        assert_eq!(stream_text(&good).as_deref(), Ok("Hello"));
        let cut = format!("{}{}", chunk("Hel"), chunk("lo"));
        assert!(stream_text(&cut).is_err());
        let wrong = "data: {\"object\":\"chat.completion\"}\n\ndata: [DONE]\n\n";
        assert!(stream_text(wrong).is_err());
    }

    #[test]
    fn chat_answers_need_a_message() {
        assert_eq!(
            chat_text(r#"{"choices":[{"message":{"content":"hi"}}]}"#).as_deref(),
            Ok("hi")
        );
        assert!(chat_text(r#"{"error":{"message":"no"}}"#).is_err());
        assert!(chat_text("<html>").is_err());
    }
}
