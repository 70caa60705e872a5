//! A stored answer and its on-disk form: a format version, a blake3 checksum of everything
//! after it, then the answer (read on every hit) and the canonical request (read only by tools
//! and replay diagnostics), each lz4-compressed (JSON shrinks three- to fourfold, and so do
//! the value log's writes and page-cache footprint). A record that fails any check is corrupt: never served
//! (DESIGN.md invariant 6). The checksum is verified before anything is decompressed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The record format this build writes and reads.
pub const ENTRY_FORMAT: u8 = 2;

/// Response headers kept with an entry (by allowlist: nothing that can carry a credential).
pub fn keep_header(name: &str) -> bool {
    name == "content-type"
        || name == "x-request-id"
        || name.starts_with("retry-after")
        || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-")
}

/// The answer part of an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// Unix seconds when stored.
    pub created: u64,
    /// Cache namespace.
    pub namespace: String,
    /// Route (client-facing model name).
    pub route: String,
    /// `chat` or `embeddings`.
    pub endpoint: String,
    /// Provider that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Upstream model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// HTTP status (always 200: only successes are stored).
    pub status: u16,
    /// Allowlisted response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The complete JSON body, exactly as received (plain answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<RawValue>>,
    /// The SSE `data:` payloads in order, exactly as received, without `[DONE]` (streamed
    /// answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<Box<RawValue>>>,
}

/// Why a record cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    /// Shorter than its header.
    #[error("truncated record ({0} bytes)")]
    Truncated(usize),
    /// Written by another format.
    #[error("unknown record format {0}")]
    Format(u8),
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// The content does not parse.
    #[error("unreadable content: {0}")]
    Content(String),
}

const HEADER: usize = 1 + 32 + 4;

/// Encodes an entry: answer plus canonical request.
pub fn encode(stored: &Stored, request: &[u8]) -> Vec<u8> {
    let answer = lz4_flex::compress_prepend_size(
        &serde_json::to_vec(stored).expect("an entry always serializes"),
    );
    let request = lz4_flex::compress_prepend_size(request);
    let mut out = Vec::with_capacity(HEADER + answer.len() + request.len());
    out.push(ENTRY_FORMAT);
    out.extend_from_slice(&[0u8; 32]);
    out.extend_from_slice(&(answer.len() as u32).to_le_bytes());
    out.extend_from_slice(&answer);
    out.extend_from_slice(&request);
    let checksum = blake3::hash(&out[33..]);
    out[1..33].copy_from_slice(checksum.as_bytes());
    out
}

fn check(record: &[u8]) -> Result<(usize, &[u8]), Corrupt> {
    if record.len() < HEADER {
        return Err(Corrupt::Truncated(record.len()));
    }
    if record[0] != ENTRY_FORMAT {
        return Err(Corrupt::Format(record[0]));
    }
    let expected = blake3::Hash::from_bytes(record[1..33].try_into().expect("32 bytes"));
    if blake3::hash(&record[33..]) != expected {
        return Err(Corrupt::Checksum);
    }
    let len = u32::from_le_bytes(record[33..37].try_into().expect("4 bytes")) as usize;
    if HEADER + len > record.len() {
        return Err(Corrupt::Truncated(record.len()));
    }
    Ok((len, &record[HEADER..]))
}

fn inflate(part: &[u8]) -> Result<Vec<u8>, Corrupt> {
    lz4_flex::decompress_size_prepended(part).map_err(|e| Corrupt::Content(e.to_string()))
}

/// Verifies a record and reads its answer.
pub fn decode(record: &[u8]) -> Result<Stored, Corrupt> {
    let (len, rest) = check(record)?;
    serde_json::from_slice(&inflate(&rest[..len])?).map_err(|e| Corrupt::Content(e.to_string()))
}

/// Verifies a record and reads its answer and canonical request.
pub fn decode_full(record: &[u8]) -> Result<(Stored, serde_json::Value), Corrupt> {
    let (len, rest) = check(record)?;
    let stored = serde_json::from_slice(&inflate(&rest[..len])?)
        .map_err(|e| Corrupt::Content(e.to_string()))?;
    let request = serde_json::from_slice(&inflate(&rest[len..])?)
        .map_err(|e| Corrupt::Content(e.to_string()))?;
    Ok((stored, request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stored {
        Stored {
            created: 1,
            namespace: String::new(),
            route: "r".into(),
            endpoint: "chat".into(),
            provider: Some("groq".into()),
            model: Some("m".into()),
            status: 200,
            headers: BTreeMap::new(),
            body: Some(RawValue::from_string(r#"{"id":"x",  "choices":[]}"#.into()).unwrap()),
            chunks: None,
        }
    }

    #[test]
    fn a_record_round_trips_and_keeps_the_body_byte_for_byte() {
        let record = encode(&sample(), br#"{"model":"r"}"#);
        let (stored, request) = decode_full(&record).expect("valid");
        assert_eq!(stored.body.unwrap().get(), r#"{"id":"x",  "choices":[]}"#);
        assert_eq!(request["model"], "r");
    }

    #[test]
    fn any_damage_is_detected() {
        let record = encode(&sample(), b"{}");
        for i in [0, 5, 40, record.len() - 1] {
            let mut bad = record.clone();
            bad[i] ^= 0x55;
            assert!(decode(&bad).is_err(), "byte {i} flipped went unnoticed");
        }
        assert_eq!(decode(&record[..10]).unwrap_err(), Corrupt::Truncated(10));
        assert!(decode(&record[..record.len() - 3]).is_err());
    }

    #[test]
    fn only_allowlisted_headers_are_kept() {
        for kept in [
            "content-type",
            "retry-after",
            "retry-after-ms",
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-requests-limit",
            "x-request-id",
        ] {
            assert!(keep_header(kept), "{kept}");
        }
        for dropped in [
            "set-cookie",
            "openai-organization",
            "openai-project",
            "authorization",
            "x-spillway-key",
        ] {
            assert!(!keep_header(dropped), "{dropped}");
        }
    }
}
