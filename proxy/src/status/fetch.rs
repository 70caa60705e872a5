//! Fetching a gateway's status document (`spillway status`): one `GET /spillway/status` with
//! the admin key as a bearer token, over http or https.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::status::StatusDocument;

/// The longest a fetch may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest document read.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// The status document of the gateway at `base` (`http://127.0.0.1:8080`), or what went wrong
/// (the gateway's own error message for a refusal).
pub async fn fetch(base: &str, admin_key: &str) -> Result<StatusDocument, String> {
    let url = format!("{}/spillway/status", base.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let request = http::Request::get(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {admin_key}"))
        .body(Empty::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        })?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{url}: no answer within {}s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("{url}: {status}: {message}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not a status document: {e}"))
}
