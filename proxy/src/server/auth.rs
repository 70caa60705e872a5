//! Authentication: a bearer token compared, as a blake3 digest, in constant time with each
//! configured key. Client keys (`[server] client_keys` and `[[clients]]`) open the API; with none
//! configured, every request is accepted (and the proxy only listens on loopback). Admin keys
//! (`[server] admin_keys`) open the admin endpoints, and nothing else: an admin key is not a
//! client key, and a client key is not an admin key.

use axum::http::HeaderMap;

use crate::error::ProxyError;
use crate::state::AppState;

/// Who sent a request: the index of its `[[clients]]` entry, or `None` (a `[server]
/// client_keys` key, or no authentication configured).
pub type Caller = Option<usize>;

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The entry of `keys` whose digest is the token's; every entry is compared (blake3's `Hash`
/// compares in constant time), so the timing says nothing of which matched.
fn matching<T: Copy>(keys: &[(blake3::Hash, T)], token: &str) -> Option<T> {
    let digest = blake3::hash(token.as_bytes());
    keys.iter().fold(None, |found, (key, value)| {
        let hit = *key == digest;
        if hit { Some(*value) } else { found }
    })
}

/// Accepts or refuses a request's credentials for the API; says which client sent it.
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Caller, ProxyError> {
    if state.client_keys.is_empty() {
        return Ok(None);
    }
    let token = bearer(headers).ok_or(ProxyError::Unauthorized)?;
    matching(&state.client_keys, token).ok_or(ProxyError::Unauthorized)
}

/// Accepts or refuses a request's credentials for an admin endpoint: 401 without a bearer
/// token, 403 with one that is not an admin key (a client key included), 403 for everyone
/// when no admin key is configured.
pub fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ProxyError> {
    if state.admin_keys.is_empty() {
        return Err(ProxyError::Forbidden {
            message: "The admin endpoints are off: no admin key is configured (set [server] admin_keys = [\"env:SPILLWAY_ADMIN_KEY\"])".into(),
        });
    }
    let token = bearer(headers).ok_or(ProxyError::AdminUnauthorized)?;
    let keys: Vec<(blake3::Hash, ())> = state.admin_keys.iter().map(|k| (*k, ())).collect();
    match matching(&keys, token) {
        Some(()) => Ok(()),
        None => Err(ProxyError::Forbidden {
            message: "This key is not an admin key: the admin endpoints take a key of [server] admin_keys".into(),
        }),
    }
}
