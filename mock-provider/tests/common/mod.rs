//! Helpers shared by the mock's integration tests.
#![allow(dead_code)]

pub mod raw;

use std::time::Duration;

use serde_json::{Value, json};

pub const MODEL: &str = "llama-3.1-8b-instant";

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}

/// A chat body with `content` as the user message.
pub fn chat_body(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 20})
}

/// POSTs a chat request with `key` and returns the response.
pub async fn chat(base: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("the mock answers")
}

/// A header as text ("" when absent).
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Parses a Go-style duration (`2m59.56s`, `850ms`) into seconds.
pub fn go_seconds(s: &str) -> f64 {
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let value: f64 = num.parse().expect("a number before a unit");
        num.clear();
        total += match c {
            'h' => value * 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                value / 1000.0
            }
            'm' => value * 60.0,
            's' => value,
            other => panic!("unexpected unit {other} in {s}"),
        };
    }
    total
}
