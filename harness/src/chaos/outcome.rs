//! What a client of the gateway got, classified: a whole and correct answer, an honest error
//! (OpenAI-format JSON, or a stream that ends with the `stream_interrupted` event after a
//! correct prefix), or one of the failures the gateway must never produce: a hang, a silently
//! truncated answer, a wrong answer, a malformed error, or no answer at all.

use serde::Serialize;
use serde_json::Value;

/// One client outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 200, whole, and the text is exactly the provider's answer to this prompt.
    Ok,
    /// An error in OpenAI's format (429, 502, 503...): the client knows it failed.
    Refused,
    /// A stream that ended with the `stream_interrupted` error event after a correct prefix.
    Interrupted,
    /// No answer within the client's timeout.
    Hung,
    /// 200 with an answer that ends early without saying so (no `[DONE]`, no error event, or a
    /// body that is not whole JSON).
    Truncated,
    /// 200 with text that is not the answer to this prompt.
    Wrong,
    /// An error whose body is not OpenAI-format JSON.
    Malformed,
    /// The connection closed (or failed) without an answer.
    NoAnswer,
}

impl Outcome {
    /// True for the outcomes the gateway must never produce.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Hung
                | Outcome::Truncated
                | Outcome::Wrong
                | Outcome::Malformed
                | Outcome::NoAnswer
        )
    }

    /// Every outcome, in report order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Interrupted,
        Outcome::Hung,
        Outcome::Truncated,
        Outcome::Wrong,
        Outcome::Malformed,
        Outcome::NoAnswer,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Interrupted => "interrupted",
            Outcome::Hung => "hung",
            Outcome::Truncated => "truncated",
            Outcome::Wrong => "wrong",
            Outcome::Malformed => "malformed",
            Outcome::NoAnswer => "no_answer",
        }
    }
}

fn is_openai_error(v: &Value) -> bool {
    v["error"]["message"].is_string() && v["error"]["type"].is_string()
}

/// Classifies a plain (non-streamed) answer: `status` and `body`, against the `expected` text.
pub fn classify_plain(status: u16, body: &[u8], expected: &str) -> Outcome {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        return match parsed {
            Some(v) if is_openai_error(&v) => Outcome::Refused,
            _ => Outcome::Malformed,
        };
    }
    let Some(v) = parsed else {
        return Outcome::Truncated;
    };
    match v["choices"][0]["message"]["content"].as_str() {
        Some(text) if text == expected => Outcome::Ok,
        Some(_) => Outcome::Wrong,
        None => Outcome::Truncated,
    }
}

/// Classifies a streamed answer: `status` and the whole SSE `body`, against the `expected` text.
pub fn classify_stream(status: u16, body: &[u8], expected: &str) -> Outcome {
    if status != 200 {
        return classify_plain(status, body, expected);
    }
    let text = String::from_utf8_lossy(body);
    let mut content = String::new();
    let mut last: Option<&str> = None;
    for event in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
        last = Some(event);
        if event == "[DONE]" {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(event) else {
            return Outcome::Truncated;
        };
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(piece);
        }
    }
    let ended = last.map(|l| l.trim_end());
    match ended {
        Some("[DONE]") if content == expected => Outcome::Ok,
        Some("[DONE]") => Outcome::Wrong,
        Some(event) => match serde_json::from_str::<Value>(event) {
            Ok(v) if v["error"]["code"] == "stream_interrupted" => {
                if expected.starts_with(&content) {
                    Outcome::Interrupted
                } else {
                    Outcome::Wrong
                }
            }
            _ => Outcome::Truncated,
        },
        None => Outcome::Truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_answers_are_ok_wrong_truncated_refused_or_malformed() {
        let ok = br#"{"choices":[{"message":{"content":"one two"}}]}"#;
        assert_eq!(classify_plain(200, ok, "one two"), Outcome::Ok);
        assert_eq!(classify_plain(200, ok, "one three"), Outcome::Wrong);
        assert_eq!(
            classify_plain(200, b"{\"choices\":[", "x"),
            Outcome::Truncated
        );
        let error =
            br#"{"error":{"message":"no","type":"upstream_error","param":null,"code":null}}"#;
        assert_eq!(classify_plain(502, error, "x"), Outcome::Refused);
        assert_eq!(classify_plain(502, b"Bad Gateway", "x"), Outcome::Malformed);
    }

    #[test]
    fn streams_must_end_with_done_or_an_honest_error_after_a_correct_prefix() {
        let chunk =
            |t: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{t}\"}}}}]}}\n\n");
        let done = format!("{}{}data: [DONE]\n\n", chunk("one "), chunk("two"));
        assert_eq!(
            classify_stream(200, done.as_bytes(), "one two"),
            Outcome::Ok
        );
        assert_eq!(
            classify_stream(200, done.as_bytes(), "one six"),
            Outcome::Wrong
        );
        let cut = chunk("one ");
        assert_eq!(
            classify_stream(200, cut.as_bytes(), "one two"),
            Outcome::Truncated
        );
        let interrupted = format!(
            "{}data: {{\"error\":{{\"code\":\"stream_interrupted\",\"message\":\"m\",\"type\":\"t\"}}}}\n\n",
            chunk("one ")
        );
        assert_eq!(
            classify_stream(200, interrupted.as_bytes(), "one two"),
            Outcome::Interrupted
        );
        assert_eq!(
            classify_stream(200, interrupted.as_bytes(), "six two"),
            Outcome::Wrong,
            "an interrupted stream must still have been right so far"
        );
    }
}
