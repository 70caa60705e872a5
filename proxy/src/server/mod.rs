//! The HTTP server: the accept loop ([`listen`]), routes ([`api`]), client authentication
//! ([`auth`]), the names of spillway's own headers ([`names`]), stream relaying ([`relay`]),
//! connection wake-ups ([`self_wake`]) and the one error type ([`error`]). The API is served under `/v1` and `/openai/v1` alike, so OpenAI's and
//! Groq's SDKs both work unchanged.

pub mod api;
pub mod auth;
pub mod error;
pub mod listen;
pub mod names;
pub mod relay;
pub mod self_wake;

use std::sync::Arc;

use axum::Router;
use axum::extract::OriginalUri;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;
use error::ProxyError;

async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    ProxyError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

async fn wrong_method(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    ProxyError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

fn api_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/chat/completions", post(api::chat).fallback(wrong_method))
        .route("/embeddings", post(api::embeddings).fallback(wrong_method))
        .route("/models", get(api::list_models).fallback(wrong_method))
        .route("/models/{*id}", get(api::get_model).fallback(wrong_method))
}

/// The proxy's HTTP application.
pub fn build_app(state: Arc<AppState>) -> Router {
    Router::new()
        .nest("/v1", api_routes())
        .nest("/openai/v1", api_routes())
        .route("/healthz", get(api::healthz).fallback(wrong_method))
        .route("/metrics", get(api::metrics).fallback(wrong_method))
        .fallback(not_found)
        .with_state(state)
}
