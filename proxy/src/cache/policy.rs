//! What the cache does for one request: whether the configured policy lets it be cached
//! ([`cacheable`]), and what the request's own controls ask for ([`RequestControls`]).

use serde_json::{Map, Value};

use crate::config::cache::CacheWhen;
use crate::upstream::Endpoint;

/// What a request's `x-spillway-cache` header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    /// The configured behaviour.
    Normal,
    /// Neither read nor write the cache for this request.
    Bypass,
    /// Skip the lookup, fetch a fresh answer, store it.
    Refresh,
    /// Answer from the cache or not at all (504 `cache_miss`).
    OnlyIfCached,
}

/// A request's cache controls: its directive, and whether it forbids storing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestControls {
    /// `x-spillway-cache`.
    pub directive: Directive,
    /// `Cache-Control: no-store`.
    pub no_store: bool,
}

impl RequestControls {
    /// Reads the `x-spillway-cache` value (`None` when absent; a value that is not text is
    /// `Some("")`) and the `Cache-Control` values; an unknown directive is an error naming it.
    pub fn parse<'a>(
        directive: Option<&str>,
        cache_control: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, String> {
        let directive = match directive.map(|v| v.trim().to_ascii_lowercase()) {
            None => Directive::Normal,
            Some(v) => match v.as_str() {
                "bypass" => Directive::Bypass,
                "refresh" => Directive::Refresh,
                "only-if-cached" => Directive::OnlyIfCached,
                other => {
                    return Err(format!(
                        "x-spillway-cache: expected bypass, refresh or only-if-cached (got {other:?})"
                    ));
                }
            },
        };
        let (mut no_store, mut no_cache) = (false, false);
        for d in cache_control.into_iter().flat_map(|v| v.split(',')) {
            match d.trim().to_ascii_lowercase().as_str() {
                "no-store" => no_store = true,
                "no-cache" => no_cache = true,
                _ => {}
            }
        }
        let directive = if directive == Directive::Normal && no_cache {
            Directive::Refresh
        } else {
            directive
        };
        Ok(RequestControls {
            directive,
            no_store,
        })
    }
}

/// Whether `when` lets a request be cached. Embeddings are deterministic by nature: they are
/// cached unless the policy is `never`.
pub fn cacheable(when: CacheWhen, endpoint: Endpoint, body: &Map<String, Value>) -> bool {
    match when {
        CacheWhen::Always => true,
        CacheWhen::Never => false,
        CacheWhen::Deterministic if endpoint == Endpoint::Embeddings => true,
        CacheWhen::Deterministic => {
            let zero_temperature = body
                .get("temperature")
                .and_then(Value::as_f64)
                .is_some_and(|t| t == 0.0);
            let seeded = body.get("seed").is_some_and(|s| !s.is_null());
            zero_temperature || seeded
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn deterministic_means_temperature_zero_or_a_seed_or_an_embedding() {
        use crate::upstream::Endpoint::{Chat, Embeddings};
        let d = CacheWhen::Deterministic;
        assert!(cacheable(d, Chat, &body(json!({"temperature": 0}))));
        assert!(cacheable(d, Chat, &body(json!({"temperature": 0.0}))));
        assert!(cacheable(
            d,
            Chat,
            &body(json!({"temperature": 0.7, "seed": 3}))
        ));
        assert!(!cacheable(d, Chat, &body(json!({"temperature": 0.7}))));
        assert!(
            !cacheable(d, Chat, &body(json!({}))),
            "an omitted temperature means 1.0"
        );
        assert!(cacheable(d, Embeddings, &body(json!({"input": "x"}))));
        assert!(cacheable(
            CacheWhen::Always,
            Chat,
            &body(json!({"temperature": 0.7}))
        ));
        assert!(!cacheable(
            CacheWhen::Never,
            Chat,
            &body(json!({"temperature": 0}))
        ));
        assert!(!cacheable(CacheWhen::Never, Embeddings, &body(json!({}))));
    }

    #[test]
    fn controls_read_the_directive_and_cache_control() {
        let parse = |d: Option<&str>, cc: &[&str]| RequestControls::parse(d, cc.iter().copied());
        assert_eq!(parse(None, &[]).unwrap().directive, Directive::Normal);
        assert_eq!(
            parse(Some(" Only-If-Cached "), &[]).unwrap().directive,
            Directive::OnlyIfCached
        );
        assert!(parse(Some("sometimes"), &[]).is_err());
        assert!(parse(None, &["max-age=0", "no-store"]).unwrap().no_store);
        assert!(parse(None, &["no-store, max-age=0"]).unwrap().no_store);
        assert_eq!(
            parse(None, &["no-cache"]).unwrap().directive,
            Directive::Refresh
        );
        assert_eq!(
            parse(Some("bypass"), &["no-cache"]).unwrap().directive,
            Directive::Bypass,
            "the explicit directive wins"
        );
    }
}
