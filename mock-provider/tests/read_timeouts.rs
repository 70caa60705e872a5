//! Clients that send nothing, or too slowly, are cut off after the read timeout (wall-clock
//! time, whatever the mock's clock), instead of holding a connection forever.

mod common;

use std::time::Duration;

use common::raw::{self, Reply};
use common::*;
use spillway_mock::{Clock, MockProvider};

const TIMEOUT: Duration = Duration::from_millis(300);

/// A mock with a short read timeout and a clock that never moves: the timeout must not depend
/// on the mock's clock.
async fn mock() -> MockProvider {
    MockProvider::builder()
        .key("k1")
        .read_timeout(TIMEOUT)
        .clock(Clock::manual())
        .start()
        .await
}

fn valid_chat() -> Vec<u8> {
    raw::post(
        "/openai/v1/chat/completions",
        "",
        chat_body(MODEL, "hi").to_string().as_bytes(),
    )
}

/// Real elapsed time, for checking that a cut came from the timeout and not at once.
fn wall() -> Clock {
    Clock::real()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_read_timeout() {
    let mock = mock().await;
    let clock = wall();
    let started = clock.now();
    let mut stream = raw::send(mock.addr(), b"").await;
    match raw::read_reply(&mut stream, false, Duration::from_secs(5)).await {
        Reply::Closed { partial } => assert!(partial.is_empty(), "no answer is sent"),
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
    let waited = clock.now() - started;
    assert!(
        waited >= TIMEOUT - Duration::from_millis(10) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_read_timeout() {
    let mock = mock().await;
    let mut stream = raw::send(mock.addr(), &valid_chat()).await;
    let answer = raw::read_reply(&mut stream, false, Duration::from_secs(5))
        .await
        .answer("a valid request");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_ne!(answer.header("connection"), Some("close"), "kept alive");
    let clock = wall();
    let idle_since = clock.now();
    assert!(
        raw::closes_within(&mut stream, Duration::from_secs(5)).await,
        "the idle connection is closed"
    );
    let idle = clock.now() - idle_since;
    assert!(
        idle >= TIMEOUT - Duration::from_millis(10),
        "closed after {idle:?} idle"
    );
}

#[tokio::test]
async fn a_slowloris_sending_header_bytes_slowly_is_cut_off() {
    let mock = mock().await;
    let stream = raw::send(
        mock.addr(),
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: mock\r\n",
    )
    .await;
    let (mut read, write) = stream.into_split();
    let clock = wall();
    let started = clock.now();
    // A header line a byte every 20 ms, forever: the headers never end.
    let writer = raw::trickle(write, b"X-Slow: aaaaaaaa\r\n", Duration::from_millis(20));
    match raw::read_reply(&mut read, false, Duration::from_secs(5)).await {
        Reply::Closed { partial } => assert!(partial.is_empty(), "no answer is sent"),
        other => panic!("expected the connection to be cut, got {other:?}"),
    }
    let waited = clock.now() - started;
    assert!(
        waited >= TIMEOUT - Duration::from_millis(10) && waited < Duration::from_secs(3),
        "cut after {waited:?}"
    );
    // Its writes now fail: nothing keeps reading them.
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the slow writer is refused soon after the cut")
        .expect("the writer task ends cleanly");
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_request_timeout() {
    let mock = mock().await;
    let mut stream = raw::send(
        mock.addr(),
        b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: mock\r\n\
          Authorization: Bearer k1\r\nContent-Length: 100\r\n\r\n{\"model\":",
    )
    .await;
    let answer = raw::read_reply(&mut stream, false, Duration::from_secs(5))
        .await
        .answer("a stalled body");
    assert_eq!(answer.status, 408, "{}", answer.text());
    let err = answer.json().expect("a JSON error");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(err["error"]["code"], "request_timeout");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("300ms")),
        "{err}"
    );
    assert!(
        raw::closes_within(&mut stream, Duration::from_secs(5)).await,
        "the connection is closed after the 408"
    );
    let last = mock.journal().pop().expect("journaled");
    assert_eq!((last.status, last.key.as_deref()), (408, Some("k1")));
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_forever_gets_408() {
    let mock = mock().await;
    let stream = raw::send(
        mock.addr(),
        b"POST /openai/v1/embeddings HTTP/1.1\r\nHost: mock\r\n\
          Authorization: Bearer k1\r\nContent-Length: 60000\r\n\r\n",
    )
    .await;
    let (mut read, write) = stream.into_split();
    let _writer = raw::trickle(write, b"{\"input\": \"aaaa", Duration::from_millis(20));
    let answer = raw::read_reply(&mut read, false, Duration::from_secs(5))
        .await
        .answer("a trickled body");
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(
        answer.json().expect("a JSON error")["error"]["code"],
        "request_timeout"
    );
}

#[tokio::test]
async fn prompt_clients_are_unaffected_by_a_short_read_timeout() {
    let mock = mock().await;
    for _ in 0..3 {
        let resp = chat(&mock.url(), "k1", &chat_body(MODEL, "hi")).await;
        assert_eq!(resp.status(), 200);
        // Longer than the timeout between requests: a new connection is opened as needed.
        tokio::time::sleep(TIMEOUT + Duration::from_millis(100)).await;
    }
}
