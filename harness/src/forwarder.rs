//! The bare forwarder: the floor a gateway is measured against. It accepts a request, forwards
//! it unchanged to the upstream over a pooled keep-alive connection, and streams the answer
//! back: nothing else (no parsing, no limits, no cache). A benchmark subject, not a product
//! feature.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Serves the forwarder on `listener`, forwarding to `upstream` (`http://host:port`).
pub async fn serve(listener: tokio::net::TcpListener, upstream: &str) -> Result<(), String> {
    let upstream: Uri = upstream.parse().map_err(|e| format!("upstream: {e}"))?;
    let authority = upstream
        .authority()
        .ok_or("upstream needs host:port")?
        .clone();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    loop {
        let (stream, _): (_, SocketAddr) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let authority = authority.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let client = client.clone();
                let authority = authority.clone();
                async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| "/".into());
                    let uri = Uri::builder()
                        .scheme("http")
                        .authority(authority)
                        .path_and_query(path)
                        .build();
                    let response = match uri {
                        Ok(uri) => {
                            *req.uri_mut() = uri;
                            match client.request(req).await {
                                Ok(resp) => resp.map(axum::body::Body::new),
                                Err(_) => bad_gateway(),
                            }
                        }
                        Err(_) => bad_gateway(),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn bad_gateway() -> hyper::Response<axum::body::Body> {
    let mut r = hyper::Response::new(axum::body::Body::from("bad gateway"));
    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
    r
}
