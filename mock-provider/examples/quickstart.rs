//! Starts a mock Groq with a 2-requests-per-minute limit, sends three requests and prints what
//! came back: two answers, then Groq's 429 with its headers and body.
//!
//! `cargo run -p spillway-mock --example quickstart`

use spillway_mock::{Limits, MockProvider};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockProvider::builder()
        .limits(
            "llama-3.1-8b-instant",
            Limits::rpm(2).with_rpd(14_400).with_tpm(6_000),
        )
        .start()
        .await;
    println!("mock Groq listening on {}", mock.url());
    let client = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "llama-3.1-8b-instant",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 16,
    });
    for n in 1..=3 {
        println!(
            "\n$ curl {}/chat/completions -H 'Authorization: Bearer mock-key' -d '{body}'",
            mock.url()
        );
        let resp = client
            .post(format!("{}/chat/completions", mock.url()))
            .bearer_auth("mock-key")
            .json(&body)
            .send()
            .await?;
        println!("request {n}: HTTP {}", resp.status());
        for (name, value) in resp.headers() {
            if name.as_str().starts_with("x-ratelimit") || name == "retry-after" {
                println!("  {name}: {}", value.to_str().unwrap_or("?"));
            }
        }
        println!("  {}", resp.text().await?);
    }
    Ok(())
}
