//! The control plane under `/_mock` (not part of Groq's API): stats, journal, reset, faults.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::spec::Faults;
use crate::state::MockState;

/// The control routes, to be nested under `/_mock`.
pub fn control_routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/journal", get(journal))
        .route("/reset", post(reset))
        .route("/faults", get(get_faults).put(put_faults))
}

async fn stats(State(st): State<Arc<MockState>>) -> Response {
    Json(st.stats()).into_response()
}

#[derive(Deserialize)]
struct JournalQuery {
    #[serde(default)]
    since: u64,
}

async fn journal(State(st): State<Arc<MockState>>, Query(q): Query<JournalQuery>) -> Response {
    Json(json!({
        "entries": st.journal.since(q.since),
        "dropped": st.journal.dropped(),
    }))
    .into_response()
}

async fn reset(State(st): State<Arc<MockState>>) -> StatusCode {
    st.reset();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(st): State<Arc<MockState>>) -> Response {
    Json(&**st.faults.load()).into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

async fn put_faults(State(st): State<Arc<MockState>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid faults: {e}")),
    };
    let mut check = st.spec.clone();
    check.faults = faults.clone();
    if let Err(e) = check.validate() {
        return bad_request(e);
    }
    st.faults.store(Arc::new(faults));
    Json(&**st.faults.load()).into_response()
}
