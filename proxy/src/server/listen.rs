//! Serving the proxy: the shared accept loop ([`spillway_plumbing::accept`]) hands each
//! connection to hyper directly, each request is dispatched through the routing table
//! ([`super::routes`]) to its endpoint, and shutdown lets in-flight requests (streams
//! included) finish.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use spillway_plumbing::accept::{self, Options};

use crate::server::api::{self, Completion};
use crate::server::request::{chat_job, embeddings_job};
use crate::server::routes::{Endpoint, route};
use crate::server::self_wake::PollAgainOnSelfWake;
use crate::state::Live;

/// `POST /v1/chat/completions`.
const CHAT: Completion = Completion {
    operation: "chat",
    parse: chat_job,
};

/// `POST /v1/embeddings`.
const EMBEDDINGS: Completion = Completion {
    operation: "embeddings",
    parse: embeddings_job,
};

/// Answers one request at the endpoint its method and path name.
async fn dispatch(live: Arc<Live>, request: Request<Incoming>) -> Response {
    let state = live.current();
    let (parts, body) = request.into_parts();
    let endpoint = match route(&parts.method, parts.uri.path()) {
        Ok(endpoint) => endpoint,
        Err(e) => return e.into_response(),
    };
    let headers = &parts.headers;
    match endpoint {
        Endpoint::Chat => api::completion(&state, headers, Body::new(body), CHAT).await,
        Endpoint::Embeddings => api::completion(&state, headers, Body::new(body), EMBEDDINGS).await,
        Endpoint::ListModels => api::list_models(&state, headers),
        Endpoint::GetModel(id) => api::get_model(&state, headers, id),
        Endpoint::Healthz => api::healthz(&state),
        Endpoint::Readyz => api::readyz(&state),
        Endpoint::Metrics => api::metrics(&state, headers),
        Endpoint::Status => api::status(&state, headers),
        Endpoint::Reload => api::reload(&live, &state, headers).await,
    }
}

/// Serves the proxy over the state `live` holds on `listener` until `shutdown` resolves; then
/// stops accepting, closes idle connections and waits for in-flight requests to finish (the
/// caller bounds that wait: [`crate::run`]). Each request is answered by the state in force
/// when it arrives, to its end, whatever reload happens meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // A client gets `client_timeout` to send a request's headers (as at start: a reload does
    // not change it). The body's share is timed in the handler, which can answer 408.
    let options = Options::new(live.current().config.server.client_timeout);
    accept::serve(listener, options, shutdown, |stream, http| {
        let live = live.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let response = dispatch(live.clone(), request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        tokio::spawn(PollAgainOnSelfWake::new(
            http.serve_connection(stream, service),
        ));
    })
    .await;
    Ok(())
}
