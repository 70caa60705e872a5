//! Graceful shutdown: requests in flight when the proxy is told to stop, plain and streamed,
//! finish with their whole answers; the listener is closed at once.

use std::time::Duration;

use serde_json::json;
use spillway_clock::Clock;
use spillway_mock::{Faults, MockProvider};
use spillway_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let mock = MockProvider::builder()
        .key("k1")
        .faults(Faults {
            latency: Some(Duration::from_millis(2_000)),
            ..Faults::none()
        })
        .start()
        .await;
    // Cache off: nothing but the server itself keeps the proxy up for these requests.
    let config = groq_chat_config(&mock.url(), "[cache]\nmode = \"off\"");
    let mut proxy = Proxy::start(&config, &[("K1", "k1")], Clock::real()).await;
    let base = proxy.url();
    let addr = proxy.addr;
    let plain = tokio::spawn({
        let base = base.clone();
        async move {
            let resp = chat(&base, &chat_body("chat", "plain, in flight", 16)).await;
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>()
                    .await
                    .expect("a JSON answer"),
            )
        }
    });
    let streamed = tokio::spawn(async move {
        let mut body = chat_body("chat", "streamed, in flight", 16);
        body["stream"] = json!(true);
        let resp = chat(&base, &body).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.expect("the whole stream"))
    });
    // Both requests are at the (slow) upstream when the stop comes, with ~2 s to go.
    for _ in 0..1000 {
        if mock.stats().requests >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.stats().requests, 2, "both requests reached the mock");
    let serving = proxy.begin_shutdown().expect("the proxy was serving");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a stopping proxy still accepted a connection"
    );
    assert!(
        !serving.is_finished(),
        "shutdown returned while requests were in flight"
    );
    let (status, answer) = tokio::time::timeout(Duration::from_secs(20), plain)
        .await
        .expect("the plain request finished")
        .expect("task");
    assert_eq!(status, 200);
    assert!(
        answer["choices"][0]["message"]["content"].is_string(),
        "{answer}"
    );
    let (status, stream) = tokio::time::timeout(Duration::from_secs(20), streamed)
        .await
        .expect("the stream finished")
        .expect("task");
    assert_eq!(status, 200);
    let events = data_events(&stream);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{stream}"
    );
    assert!(!text_of(&events).is_empty(), "{stream}");
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("the proxy stopped once its requests were done")
        .expect("task")
        .expect("served without an error");
}
