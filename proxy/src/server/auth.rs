//! Client authentication: a bearer token compared, as a blake3 digest, in constant time with
//! each configured client key. With no client keys configured, every request is accepted (and
//! the proxy only listens on loopback).

use axum::http::HeaderMap;

use crate::error::ProxyError;
use crate::state::AppState;

/// Accepts or refuses a request's credentials.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ProxyError> {
    if state.client_keys.is_empty() {
        return Ok(());
    }
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or(ProxyError::Unauthorized)?;
    let digest = blake3::hash(token.as_bytes());
    // blake3::Hash compares in constant time; check every key so timing says nothing either.
    let matched = state
        .client_keys
        .iter()
        .fold(false, |found, key| found | (*key == digest));
    if matched {
        Ok(())
    } else {
        Err(ProxyError::Unauthorized)
    }
}
