//! The control plane under `/_mock` (not part of Groq's API): stats, journal, reset, faults.
//! Every route, and any other path or method under `/_mock`, goes through the [`Admin`] gate;
//! errors come in Groq's shape whatever the API's dialect. Stats and journal show keys masked
//! unless `?keys=full` is asked for, and allowed (see [`key_view`]); the Rust handle's
//! `stats()` and `journal()` show them whole.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::admin::{Admin, CONTROL_DIALECT, KeyView, key_view};
use crate::error::MockError;
use crate::mask::{mask_journal, mask_stats};
use crate::request::read_body;
use crate::spec::Faults;
use crate::state::MockState;

/// The control routes, to be nested under `/_mock`.
pub fn control_routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/stats", get(stats).fallback(method_not_allowed))
        .route("/journal", get(journal).fallback(method_not_allowed))
        .route("/reset", post(reset).fallback(method_not_allowed))
        .route(
            "/faults",
            get(get_faults).put(put_faults).fallback(method_not_allowed),
        )
        .fallback(unknown_path)
}

fn render(err: MockError) -> Response {
    err.into_response_in(CONTROL_DIALECT)
}

/// The query string as `T`, or a 400 saying what is wrong with it.
fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, MockError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| MockError::InvalidRequest {
            message: format!("Invalid query string: {}", e.body_text()),
            param: None,
        })
}

#[derive(Deserialize)]
struct StatsQuery {
    keys: Option<String>,
}

async fn stats(admin: Admin, State(st): State<Arc<MockState>>, uri: Uri) -> Response {
    let view = match query::<StatsQuery>(&uri).and_then(|q| key_view(q.keys.as_deref(), admin)) {
        Ok(v) => v,
        Err(e) => return render(e),
    };
    let stats = match view {
        KeyView::Full => st.stats(),
        KeyView::Masked => mask_stats(st.stats()),
    };
    Json(stats).into_response()
}

#[derive(Deserialize)]
struct JournalQuery {
    #[serde(default)]
    since: u64,
    keys: Option<String>,
}

async fn journal(admin: Admin, State(st): State<Arc<MockState>>, uri: Uri) -> Response {
    let (q, view) = match query::<JournalQuery>(&uri)
        .and_then(|q| key_view(q.keys.as_deref(), admin).map(|view| (q, view)))
    {
        Ok(qv) => qv,
        Err(e) => return render(e),
    };
    let entries = match view {
        KeyView::Full => st.journal.since(q.since),
        KeyView::Masked => mask_journal(st.journal.since(q.since)),
    };
    Json(json!({
        "entries": entries,
        "dropped": st.journal.dropped(),
    }))
    .into_response()
}

async fn reset(_: Admin, State(st): State<Arc<MockState>>) -> StatusCode {
    st.reset();
    StatusCode::NO_CONTENT
}

async fn get_faults(_: Admin, State(st): State<Arc<MockState>>) -> Response {
    Json(&**st.faults.load()).into_response()
}

async fn put_faults(
    _: Admin,
    State(st): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body, &headers, st.spec.max_body_bytes, st.spec.read_timeout).await {
        Ok(b) => b,
        Err(e) => return render(e),
    };
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return render(MockError::InvalidRequest {
                message: format!("invalid faults: {e}"),
                param: None,
            });
        }
    };
    let mut check = st.spec.clone();
    check.faults = faults.clone();
    if let Err(message) = check.validate() {
        return render(MockError::InvalidRequest {
            message,
            param: None,
        });
    }
    st.faults.store(Arc::new(faults));
    Json(&**st.faults.load()).into_response()
}

async fn method_not_allowed(_: Admin, method: Method, OriginalUri(uri): OriginalUri) -> Response {
    render(MockError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    })
}

async fn unknown_path(_: Admin, method: Method, OriginalUri(uri): OriginalUri) -> Response {
    render(MockError::UnknownUrl {
        method: method.to_string(),
        path: uri.path().to_string(),
    })
}
