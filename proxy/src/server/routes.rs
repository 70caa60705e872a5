//! The one routing table: which endpoint a method and path name. The API is served under `/v1`
//! and `/openai/v1` alike, so OpenAI's and Groq's SDKs both work unchanged. Paths are matched
//! as they arrive (no normalisation: `//v1/…`, `/v1/../…` and encoded slashes name nothing);
//! a path the table has with another method is a 405 that names the allowed method.

use http::Method;

use crate::error::ProxyError;

/// An endpoint of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `GET /v1/models`.
    ListModels,
    /// `GET /v1/models/{id}`, with the id as it appears in the path (still percent-encoded).
    GetModel(&'a str),
    /// `GET /healthz`: alive.
    Healthz,
    /// `GET /readyz`: ready for traffic.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /spillway/status`.
    Status,
    /// `POST /spillway/reload`.
    Reload,
}

impl Endpoint<'_> {
    /// The method the endpoint answers (a `GET` endpoint answers `HEAD` too).
    pub const fn method(&self) -> Method {
        match self {
            Endpoint::Chat | Endpoint::Embeddings | Endpoint::Reload => Method::POST,
            _ => Method::GET,
        }
    }
}

/// The endpoint a path names, whatever the method.
fn endpoint_at(path: &str) -> Option<Endpoint<'_>> {
    match path {
        "/healthz" => return Some(Endpoint::Healthz),
        "/readyz" => return Some(Endpoint::Readyz),
        "/metrics" => return Some(Endpoint::Metrics),
        "/spillway/status" => return Some(Endpoint::Status),
        "/spillway/reload" => return Some(Endpoint::Reload),
        _ => {}
    }
    let api = path
        .strip_prefix("/v1")
        .or_else(|| path.strip_prefix("/openai/v1"))?;
    match api {
        "/chat/completions" => Some(Endpoint::Chat),
        "/embeddings" => Some(Endpoint::Embeddings),
        "/models" => Some(Endpoint::ListModels),
        _ => api
            .strip_prefix("/models/")
            .filter(|id| !id.is_empty())
            .map(Endpoint::GetModel),
    }
}

/// The endpoint `method path` names, or the error that says why none does.
pub fn route<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, ProxyError> {
    let Some(endpoint) = endpoint_at(path) else {
        return Err(ProxyError::NotFound {
            method: method.to_string(),
            path: path.to_string(),
        });
    };
    let allowed = endpoint.method();
    if *method == allowed || (allowed == Method::GET && *method == Method::HEAD) {
        Ok(endpoint)
    } else {
        Err(ProxyError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allow: if allowed == Method::GET {
                "GET, HEAD"
            } else {
                "POST"
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(method: Method, path: &str) -> Result<Endpoint<'_>, u16> {
        route(&method, path).map_err(|e| e.status().as_u16())
    }

    #[test]
    fn every_endpoint_under_both_prefixes() {
        for prefix in ["/v1", "/openai/v1"] {
            let p = |rest: &str| format!("{prefix}{rest}");
            assert_eq!(
                at(Method::POST, &p("/chat/completions")),
                Ok(Endpoint::Chat)
            );
            assert_eq!(
                at(Method::POST, &p("/embeddings")),
                Ok(Endpoint::Embeddings)
            );
            assert_eq!(at(Method::GET, &p("/models")), Ok(Endpoint::ListModels));
            let model = p("/models/meta-llama/llama-4");
            assert_eq!(
                at(Method::GET, &model),
                Ok(Endpoint::GetModel("meta-llama/llama-4"))
            );
        }
        assert_eq!(at(Method::GET, "/healthz"), Ok(Endpoint::Healthz));
        assert_eq!(at(Method::GET, "/readyz"), Ok(Endpoint::Readyz));
        assert_eq!(at(Method::HEAD, "/metrics"), Ok(Endpoint::Metrics));
        assert_eq!(at(Method::GET, "/spillway/status"), Ok(Endpoint::Status));
        assert_eq!(at(Method::POST, "/spillway/reload"), Ok(Endpoint::Reload));
        assert!(at(Method::GET, "/spillway/reload").is_err());
        assert_eq!(at(Method::POST, "/spillway/status"), Err(405));
    }

    #[test]
    fn a_known_path_with_another_method_is_405_and_says_what_is_allowed() {
        assert_eq!(at(Method::GET, "/v1/chat/completions"), Err(405));
        assert_eq!(at(Method::HEAD, "/v1/chat/completions"), Err(405));
        assert_eq!(at(Method::POST, "/v1/models/x"), Err(405));
        match route(&Method::DELETE, "/healthz") {
            Err(ProxyError::MethodNotAllowed { allow, .. }) => assert_eq!(allow, "GET, HEAD"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_are_matched_as_they_arrive() {
        for path in [
            "/v1/chat/completions/",
            "//v1/chat/completions",
            "/v1//chat/completions",
            "/v1/../v1/chat/completions",
            "/v1/chat%2Fcompletions",
            "/v2/chat/completions",
            "/v1/models/",
            "/openai/v1/",
            "/",
        ] {
            assert_eq!(at(Method::POST, path), Err(404), "{path}");
        }
    }
}
