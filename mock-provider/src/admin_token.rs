//! The admin token that guards `/_mock/*`, kept only as its digest: spec, config and the
//! gate all hold it, so it sits below each of them.

use std::fmt;

/// The admin token, kept only as its blake3 digest. `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    digest: blake3::Hash,
    empty: bool,
}

impl AdminToken {
    /// Wraps a token (surrounding whitespace is not part of it).
    pub fn new(token: &str) -> Self {
        let token = token.trim();
        AdminToken {
            digest: blake3::hash(token.as_bytes()),
            empty: token.is_empty(),
        }
    }

    /// True for an empty token, which the spec refuses.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// True when `presented` is the token. `blake3::Hash` compares in constant time, so the
    /// answer's timing says nothing about how much of the token was right.
    pub fn matches(&self, presented: &str) -> bool {
        blake3::hash(presented.trim().as_bytes()) == self.digest
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}
