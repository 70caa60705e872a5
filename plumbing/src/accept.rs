//! The accept loop both servers run: accept TCP connections (backing off when accepting fails,
//! as it does out of file descriptors), set TCP_NODELAY, serve each one with HTTP/1.1 (keep-alive,
//! a read timeout on request headers), and on shutdown stop accepting and let the connections
//! finish what they are doing.
//!
//! What a server does with a connection stays its own: [`serve`] hands each accepted stream to
//! the caller with an [`Http1`], and the caller wraps the stream as it likes, builds its own
//! service and spawns the connection's future however it likes (inside a future of its own, for
//! one). The service's type reaches hyper as it is, so a request costs no allocation here.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// How long the loop waits after a failed accept, so that running out of file descriptors
/// does not spin a core while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How [`serve`] serves its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// How long (wall-clock time) a client gets to send each request's headers. Hyper starts
    /// that clock when the connection waits for a request, so a connection that sends nothing,
    /// a slowloris trickling header bytes and an idle keep-alive connection are all closed
    /// after it, without an answer. (The body's share is timed where the body is read.)
    pub header_read_timeout: Duration,
    /// How long shutdown waits for the connections to finish before [`serve`] returns anyway;
    /// `None` waits as long as they take, for a caller that bounds shutdown itself.
    pub grace: Option<Duration>,
}

impl Options {
    /// Headers within `header_read_timeout`; shutdown waits for every connection.
    pub const fn new(header_read_timeout: Duration) -> Self {
        Options {
            header_read_timeout,
            grace: None,
        }
    }

    /// Shutdown waits at most `grace` for the connections.
    pub const fn with_grace(self, grace: Duration) -> Self {
        Options {
            grace: Some(grace),
            ..self
        }
    }
}

/// Serves one accepted connection with HTTP/1.1, watched by the shutdown of the [`serve`] that
/// accepted it.
#[derive(Clone, Copy, Debug)]
pub struct Http1<'a> {
    builder: &'a http1::Builder,
    graceful: &'a GracefulShutdown,
}

impl Http1<'_> {
    /// The future that serves `service` on `io`, for the caller to spawn. It ends when the
    /// client closes the connection, when the connection fails or times out, or, once shutdown
    /// has begun, when the request in progress has been answered. A failed connection concerns
    /// that connection alone (a client going away mid-request is routine), so its error is not
    /// returned.
    pub fn serve_connection<I, S, B>(
        self,
        io: I,
        service: S,
    ) -> impl Future<Output = ()> + use<I, S, B>
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
        S: HttpService<Incoming, ResBody = B>,
        S::Error: Into<Box<dyn StdError + Send + Sync>>,
        B: Body + 'static,
        B::Error: Into<Box<dyn StdError + Send + Sync>>,
    {
        let connection = self
            .graceful
            .watch(self.builder.serve_connection(TokioIo::new(io), service));
        async move {
            let _ = connection.await;
        }
    }
}

/// The largest read buffer of a connection, so the largest request head it takes.
const MAX_HEAD_BUFFER: usize = 128 * 1024;

/// Accepts connections on `listener` until `shutdown` resolves, handing each one (TCP_NODELAY
/// set) to `connection` with the [`Http1`] that serves it; then stops accepting, closes idle
/// connections, lets the requests in progress finish (within [`Options::grace`], if set) and
/// returns. A failed accept is logged and retried after a short pause.
pub async fn serve<C>(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
    mut connection: C,
) where
    C: FnMut(TcpStream, Http1<'_>),
{
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // Room for any sane request head (a 70,000-character path still gets hyper's 414),
        // and small enough that a head too large for it is a 431 whatever the reads' sizes:
        // hyper checks the limit between reads, and a read may fill the buffer past it.
        .max_buf_size(MAX_HEAD_BUFFER);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole or as stream events meant to leave at once: Nagle's
        // delay would only hold back the last segment of each.
        let _ = stream.set_nodelay(true);
        connection(
            stream,
            Http1 {
                builder: &builder,
                graceful: &graceful,
            },
        );
    }
    drop(listener);
    let finished = graceful.shutdown();
    match options.grace {
        None => finished.await,
        Some(grace) => {
            if tokio::time::timeout(grace, finished).await.is_err() {
                tracing::warn!("connections still open after the grace period; dropping them");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Request, Response};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    /// Long enough for anything that should happen to happen on a busy machine.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A service that answers `hello`, after `delay` when the path is `/slow`.
    async fn hello(
        request: Request<Incoming>,
        delay: Duration,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(delay).await;
        }
        Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
    }

    /// Starts `serve` on a free loopback port with `options` and the `hello` service (each
    /// connection spawned plainly); returns the address, the stop switch and the server task.
    async fn start(
        options: Options,
        delay: Duration,
    ) -> (std::net::SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            options,
            async move {
                let _ = stopped.await;
            },
            move |stream, http| {
                assert!(stream.nodelay().expect("reads TCP_NODELAY"));
                let service = hyper::service::service_fn(move |r| hello(r, delay));
                tokio::spawn(http.serve_connection(stream, service));
            },
        ));
        (addr, stop, server)
    }

    /// Sends `GET path` on `client` and reads the whole answer (headers and a `content-length`
    /// body).
    async fn get(client: &mut TcpStream, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        client.write_all(request.as_bytes()).await.expect("writes");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = client.read(&mut chunk).await.expect("reads");
            assert!(n > 0, "the connection closed before the answer ended");
            answer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return text;
                }
            }
        }
    }

    /// True when the server closes `client` (a read sees the end) within [`PATIENCE`].
    async fn closed(client: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(PATIENCE, client.read(&mut byte)).await,
            Ok(Ok(0))
        )
    }

    #[tokio::test]
    async fn a_connection_keeps_alive_and_shutdown_closes_it_when_idle() {
        let (addr, stop, server) = start(Options::new(PATIENCE), Duration::ZERO).await;
        let mut client = TcpStream::connect(addr).await.expect("connects");
        for _ in 0..2 {
            let answer = get(&mut client, "/").await;
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
            assert!(answer.ends_with("hello"), "{answer}");
        }
        stop.send(()).expect("the server listens for the stop");
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("serve returns")
            .expect("serve does not panic");
        assert!(closed(&mut client).await, "the idle connection is closed");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "nothing listens after shutdown"
        );
    }

    #[tokio::test]
    async fn a_client_that_sends_no_headers_is_closed_after_the_timeout() {
        let (addr, _stop, _server) =
            start(Options::new(Duration::from_millis(200)), Duration::ZERO).await;
        let mut client = TcpStream::connect(addr).await.expect("connects");
        assert!(closed(&mut client).await, "closed without an answer");
    }

    #[tokio::test]
    async fn shutdown_lets_the_request_in_progress_finish() {
        let delay = Duration::from_millis(300);
        let (addr, stop, server) = start(Options::new(PATIENCE), delay).await;
        let mut client = TcpStream::connect(addr).await.expect("connects");
        let answer = tokio::spawn(async move { get(&mut client, "/slow").await });
        tokio::time::sleep(delay / 3).await;
        stop.send(()).expect("the server listens for the stop");
        let answer = answer.await.expect("the client does not panic");
        assert!(answer.ends_with("hello"), "{answer}");
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("serve returns once the request is answered")
            .expect("serve does not panic");
    }

    #[tokio::test]
    async fn the_grace_bounds_the_wait_for_a_request_that_hangs() {
        let options = Options::new(PATIENCE).with_grace(Duration::from_millis(200));
        let (addr, stop, server) = start(options, PATIENCE * 10).await;
        let mut client = TcpStream::connect(addr).await.expect("connects");
        client
            .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).expect("the server listens for the stop");
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("serve returns after the grace, the request still hanging")
            .expect("serve does not panic");
    }

    /// Counts its polls, standing for a future a server wraps its connections in (the proxy's
    /// `PollAgainOnSelfWake`).
    struct Counted<F> {
        inner: Pin<Box<F>>,
        polls: Arc<AtomicUsize>,
    }

    impl<F: Future> Future for Counted<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    /// The proxy's way: requests dispatched by a plain function over shared state, with no
    /// router and nothing boxed per request, and each connection spawned inside a future of
    /// the server's own.
    #[tokio::test]
    async fn a_server_spawns_its_connections_inside_its_own_future() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("has an address");
        let polls = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let (polls, served) = (polls.clone(), served.clone());
            serve(
                listener,
                Options::new(PATIENCE),
                async move {
                    let _ = stopped.await;
                },
                move |stream, http| {
                    let served = served.clone();
                    let service = hyper::service::service_fn(move |request| {
                        served.fetch_add(1, Ordering::Relaxed);
                        hello(request, Duration::ZERO)
                    });
                    tokio::spawn(Counted {
                        inner: Box::pin(http.serve_connection(stream, service)),
                        polls: polls.clone(),
                    });
                },
            )
        });
        let mut client = TcpStream::connect(addr).await.expect("connects");
        assert!(get(&mut client, "/").await.ends_with("hello"));
        assert_eq!(served.load(Ordering::Relaxed), 1);
        assert!(polls.load(Ordering::Relaxed) > 0, "the wrapper polled it");
        drop(client);
        stop.send(()).expect("the server listens for the stop");
        tokio::time::timeout(PATIENCE, server)
            .await
            .expect("serve returns")
            .expect("serve does not panic");
    }
}
