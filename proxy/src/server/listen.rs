//! The accept loop: HTTP/1.1 connections served by hyper directly, the two completion
//! endpoints dispatched straight to their handlers and everything else through the axum
//! router, and a graceful shutdown that lets in-flight requests (streams included) finish.
//!
//! A request to `POST …/chat/completions` or `POST …/embeddings` goes to its handler without
//! the router's path matching, nesting and extractors: on a proxy whose own work is a few tens
//! of microseconds per request, that per-request layer showed in the latency at concurrency 1.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower::ServiceExt;

use crate::server::api;
use crate::server::self_wake::PollAgainOnSelfWake;
use crate::state::AppState;

/// The handler a request goes to without the router, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// `POST /v1/chat/completions` (or under `/openai/v1`).
    Chat,
    /// `POST /v1/embeddings` (or under `/openai/v1`).
    Embeddings,
}

/// Which handler serves `method path` directly; `None` sends the request through the router.
pub fn direct(method: &Method, path: &str) -> Option<Direct> {
    if method != Method::POST {
        return None;
    }
    let rest = path
        .strip_prefix("/v1")
        .or_else(|| path.strip_prefix("/openai/v1"))?;
    match rest {
        "/chat/completions" => Some(Direct::Chat),
        "/embeddings" => Some(Direct::Embeddings),
        _ => None,
    }
}

async fn dispatch(app: Router, state: Arc<AppState>, request: Request<Incoming>) -> Response {
    match direct(request.method(), request.uri().path()) {
        Some(which) => {
            let (parts, body) = request.into_parts();
            let body = Body::new(body);
            match which {
                Direct::Chat => api::chat(State(state), parts.headers, body).await,
                Direct::Embeddings => api::embeddings(State(state), parts.headers, body).await,
            }
        }
        None => match app.oneshot(request.map(Body::new)).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
    }
}

/// Serves `app` (built over `state`) on `listener` until `shutdown` resolves; then stops
/// accepting, closes idle connections and waits for in-flight requests to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // A client gets `client_timeout` to send a request's headers; hyper starts that clock
    // when the connection waits for a request, so an idle keep-alive connection closes then
    // too. (The body's share is timed in the handler, which can answer 408.)
    http.keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.server.client_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let state = state.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = dispatch(app.clone(), state.clone(), request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(PollAgainOnSelfWake::new(async move {
            let _ = connection.await;
        }));
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_posts_go_direct_and_the_rest_through_the_router() {
        assert_eq!(
            direct(&Method::POST, "/v1/chat/completions"),
            Some(Direct::Chat)
        );
        assert_eq!(
            direct(&Method::POST, "/openai/v1/chat/completions"),
            Some(Direct::Chat)
        );
        assert_eq!(
            direct(&Method::POST, "/openai/v1/embeddings"),
            Some(Direct::Embeddings)
        );
        assert_eq!(direct(&Method::GET, "/v1/chat/completions"), None);
        assert_eq!(direct(&Method::POST, "/v1/chat/completions/"), None);
        assert_eq!(direct(&Method::POST, "/v2/chat/completions"), None);
        assert_eq!(direct(&Method::POST, "/v1/models"), None);
        assert_eq!(direct(&Method::POST, "/openai/v1/"), None);
    }
}
