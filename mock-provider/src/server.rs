//! The accept loop: HTTP/1.1 with keep-alive, a read timeout on request headers (which also
//! closes idle keep-alive connections) and graceful shutdown, as `spillway_plumbing::accept`
//! runs them for the proxy too; and what only the mock does with a connection: reset it on
//! purpose (the `reset` fault, answered with a TCP RST).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use spillway_plumbing::accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

use crate::routes::ResetConnection;

/// How long shutdown waits for in-flight responses before dropping them.
const GRACE: Duration = Duration::from_secs(5);

/// A TCP stream that, once flagged, is closed with a reset (RST) instead of a FIN.
struct ResettableStream {
    inner: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Acquire) {
            // Linger zero makes close() send RST.
            let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error a service returns to make hyper drop a connection.
#[derive(Debug)]
struct ResetRequested;

impl std::fmt::Display for ResetRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by an injected fault")
    }
}

impl std::error::Error for ResetRequested {}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// responses finish (up to five seconds), and returns.
///
/// A client gets `read_timeout` (wall-clock time) to send each request's headers: hyper starts
/// that clock when the connection waits for a request, so a connection that sends nothing, a
/// slowloris trickling header bytes and an idle keep-alive connection are all closed after it,
/// without an answer. (The body's share is timed where it is read, which answers 408.)
pub async fn serve(
    listener: TcpListener,
    app: Router,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let options = accept::Options::new(read_timeout).with_grace(GRACE);
    accept::serve(listener, options, shutdown, |stream, http| {
        let reset = Arc::new(AtomicBool::new(false));
        let io = ResettableStream {
            inner: stream,
            reset: reset.clone(),
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            let reset = reset.clone();
            async move {
                let response = match app.oneshot(req.map(Body::new)).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                if response.extensions().get::<ResetConnection>().is_some() {
                    reset.store(true, Ordering::Release);
                    return Err(ResetRequested);
                }
                Ok::<_, ResetRequested>(response)
            }
        });
        tokio::spawn(http.serve_connection(io, service));
    })
    .await;
}
