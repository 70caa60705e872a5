//! Secrets: provider and client keys. They print as `***` everywhere, and are read from the
//! environment through [`Env`] (shared with the mock) so tests can pass a map (ARCHITECTURE.md,
//! invariant 7).

use std::fmt;

/// A provider or client key. `Debug` and `Display` print `***`; only [`ApiKey::expose`] gives
/// the value, for the one place that writes it on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        ApiKey(value.into())
    }

    /// The secret itself. Call only to put it in an `Authorization` header or to compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where `env:NAME` references are looked up, and the process environment: shared with the
/// mock, which reads its admin token the same way.
pub use spillway_plumbing::env::{Env, ProcessEnv};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let key = ApiKey::new("gsk_secret");
        assert_eq!(format!("{key} {key:?}"), "*** ***");
        assert_eq!(key.expose(), "gsk_secret");
    }
}
