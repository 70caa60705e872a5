//! Provider keys scrubbed from what providers send back: a provider that echoes a request's key
//! in an error body, a header or even an answer must not pass it to a client, a log, a
//! recording or the cache (ARCHITECTURE.md, invariant 7). Every configured key value is
//! replaced by `***` wherever it appears in a body, a header value or a stream event, as the
//! bytes arrive from the provider.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use memchr::memmem::Finder;

/// What a key is replaced with.
const MASK: &[u8] = b"***";

/// Shorter values are not treated as keys: they would match ordinary text.
const MIN_KEY_LEN: usize = 8;

/// Finds and masks every configured key value.
#[derive(Clone)]
pub struct Scrubber {
    keys: Vec<Finder<'static>>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber for these key values (duplicates and values under 8 bytes left out).
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut values: Vec<&str> = keys
            .into_iter()
            .filter(|k| k.len() >= MIN_KEY_LEN)
            .collect();
        // Longest first, so a key that contains another is masked whole.
        values.sort_by_key(|k| std::cmp::Reverse(k.len()));
        values.dedup();
        Scrubber {
            keys: values
                .into_iter()
                .map(|k| Finder::new(k.as_bytes()).into_owned())
                .collect(),
        }
    }

    /// `bytes` with every key masked (borrowed when there was none: the common case costs one
    /// search per key).
    pub fn bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Cow<'a, [u8]> = Cow::Borrowed(bytes);
        for finder in &self.keys {
            if finder.find(&out).is_none() {
                continue;
            }
            let needle = finder.needle().len();
            let mut masked = Vec::with_capacity(out.len());
            let mut at = 0;
            for hit in finder.find_iter(&out) {
                masked.extend_from_slice(&out[at..hit]);
                masked.extend_from_slice(MASK);
                at = hit + needle;
            }
            masked.extend_from_slice(&out[at..]);
            out = Cow::Owned(masked);
        }
        out
    }

    /// A body with every key masked (the same buffer when there was none).
    pub fn body(&self, body: Bytes) -> Bytes {
        match self.bytes(&body) {
            Cow::Borrowed(_) => body,
            Cow::Owned(masked) => Bytes::from(masked),
        }
    }

    /// A text with every key masked.
    pub fn text(&self, text: String) -> String {
        match self.bytes(text.as_bytes()) {
            Cow::Borrowed(_) => text,
            Cow::Owned(masked) => String::from_utf8(masked)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// Masks every key in the headers' values, in place.
    pub fn headers(&self, headers: &mut HeaderMap) {
        if self.keys.is_empty() {
            return;
        }
        for value in headers.values_mut() {
            if let Cow::Owned(masked) = self.bytes(value.as_bytes()) {
                // The mask is plain ASCII: a value that was valid stays valid.
                if let Ok(v) = HeaderValue::from_bytes(&masked) {
                    *value = v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_masked_wherever_it_appears_and_clean_text_is_not_copied() {
        let s = Scrubber::new(["gsk_secret_one", "gsk_secret_one_longer", "short"]);
        let text = b"key gsk_secret_one_longer and gsk_secret_one, twice: gsk_secret_one.";
        assert_eq!(&*s.bytes(text), b"key *** and ***, twice: ***.".as_slice());
        assert!(matches!(s.bytes(b"nothing here, short"), Cow::Borrowed(_)));
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("Bearer gsk_secret_one"));
        s.headers(&mut h);
        assert_eq!(h["x-echo"], "Bearer ***");
        assert_eq!(
            s.text(r#"{"error":{"message":"bad key gsk_secret_one"}}"#.into()),
            r#"{"error":{"message":"bad key ***"}}"#
        );
    }
}
