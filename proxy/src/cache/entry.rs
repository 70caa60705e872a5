//! A stored answer and its on-disk form: a format version, a CRC-32 checksum of everything
//! after it, the answer's length, then the answer (read on every hit) and the canonical request
//! (read only by tools and replay diagnostics), lz4-compressed together in one block (JSON
//! shrinks three- to fourfold, and so do the value log's writes and page-cache footprint). A
//! record that fails any check is corrupt: never served (ARCHITECTURE.md, invariant 6). The checksum is
//! verified before anything is decompressed. Records of the previous format (a blake3 checksum,
//! the two parts compressed apart) still read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The record format this build writes.
pub const ENTRY_FORMAT: u8 = 3;

/// The previous format, still read: a blake3 checksum, and the two parts compressed apart.
const FORMAT_2: u8 = 2;

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

/// Format, checksum, length of the answer before compression.
const HEADER: usize = 1 + 4 + 4;
/// Format 2: format, blake3 checksum, length of the compressed answer.
const HEADER_2: usize = 1 + 32 + 4;

/// An answer's fields other than its body, borrowed: what a record holds besides the body.
/// They serialize as a [`Stored`] does.
#[derive(Debug, Serialize)]
pub struct Fields<'a> {
    /// Unix seconds when stored.
    pub created: u64,
    /// Cache namespace.
    pub namespace: &'a str,
    /// Route (client-facing model name).
    pub route: &'a str,
    /// `chat` or `embeddings`.
    pub endpoint: &'a str,
    /// Provider that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    /// Upstream model id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    /// HTTP status.
    pub status: u16,
    /// Allowlisted response headers (a repeated name: the last one counts, as when read).
    #[serde(serialize_with = "pairs_as_map")]
    pub headers: Vec<(&'a str, &'a str)>,
}

fn pairs_as_map<S: serde::Serializer>(pairs: &[(&str, &str)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().copied())
}

/// An answer's body as the record holds it: JSON text, written as it is.
#[derive(Debug)]
pub enum AnswerBody<'a> {
    /// A plain answer's JSON body.
    Plain(&'a str),
    /// A streamed answer's `data:` payloads (each one JSON), in order.
    Chunks(Vec<&'a str>),
}

/// Encodes an entry ([`encode_answer`] of a [`Stored`]).
pub fn encode(stored: &Stored, request: &[u8]) -> Vec<u8> {
    let fields = Fields {
        created: stored.created,
        namespace: &stored.namespace,
        route: &stored.route,
        endpoint: &stored.endpoint,
        provider: stored.provider.as_deref(),
        model: stored.model.as_deref(),
        status: stored.status,
        headers: stored
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    let body = match (&stored.body, &stored.chunks) {
        (Some(body), _) => Some(AnswerBody::Plain(body.get())),
        (None, Some(chunks)) => Some(AnswerBody::Chunks(chunks.iter().map(|c| c.get()).collect())),
        (None, None) => None,
    };
    encode_answer(&fields, body.as_ref(), request)
}

/// Encodes an entry: the answer (its fields and body) plus the canonical request.
///
/// The body's JSON is copied into the record as it is, not parsed again: the caller has
/// checked it (a plain answer is checked when it arrives). A record whose answer does not
/// parse would be found corrupt when read, and never served.
///
/// One compression for both parts: each lz4 call starts from a fresh (zeroed) match table,
/// which costs more than compressing a few hundred bytes. CRC-32 rather than a cryptographic
/// hash: the checksum guards against torn and damaged writes, not against forgery, and it is
/// computed on every store and checked on every read from disk.
pub fn encode_answer(
    fields: &Fields<'_>,
    body: Option<&AnswerBody<'_>>,
    request: &[u8],
) -> Vec<u8> {
    let mut plain = serde_json::to_vec(fields).expect("an entry always serializes");
    // `fields` always serializes to a non-empty object: reopen it for the body.
    plain.pop();
    match body {
        Some(AnswerBody::Plain(json)) => {
            plain.extend_from_slice(b",\"body\":");
            plain.extend_from_slice(json.as_bytes());
        }
        Some(AnswerBody::Chunks(chunks)) => {
            plain.extend_from_slice(b",\"chunks\":[");
            for (i, chunk) in chunks.iter().enumerate() {
                if i > 0 {
                    plain.push(b',');
                }
                plain.extend_from_slice(chunk.as_bytes());
            }
            plain.push(b']');
        }
        None => {}
    }
    plain.push(b'}');
    let answer_len = plain.len();
    plain.extend_from_slice(request);
    let packed = lz4_flex::compress_prepend_size(&plain);
    let mut out = Vec::with_capacity(HEADER + packed.len());
    out.push(ENTRY_FORMAT);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(answer_len as u32).to_le_bytes());
    out.extend_from_slice(&packed);
    let checksum = crc32fast::hash(&out[5..]);
    out[1..5].copy_from_slice(&checksum.to_le_bytes());
    out
}

/// lz4 never expands a block more than this much (255 bytes of output per byte of input, at
/// most); a size claim beyond it is damage, not data.
const LZ4_MAX_RATIO: usize = 255;

fn inflate(part: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let claimed = part
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or(Corrupt::Truncated(part.len()))?;
    if claimed > part.len().saturating_mul(LZ4_MAX_RATIO) + 64 {
        return Err(Corrupt::Content(format!(
            "the record claims {claimed} bytes from {} compressed",
            part.len()
        )));
    }
    lz4_flex::decompress_size_prepended(part).map_err(|e| Corrupt::Content(e.to_string()))
}

fn u32_at(record: &[u8], at: usize) -> usize {
    u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes")) as usize
}

/// Checks a record and returns its answer's JSON and, when `with_request`, its canonical
/// request's.
fn open(record: &[u8], with_request: bool) -> Result<(Vec<u8>, Option<Vec<u8>>), Corrupt> {
    match record.first() {
        Some(&ENTRY_FORMAT) => {
            if record.len() < HEADER {
                return Err(Corrupt::Truncated(record.len()));
            }
            if crc32fast::hash(&record[5..]) != u32_at(record, 1) as u32 {
                return Err(Corrupt::Checksum);
            }
            let mut answer = inflate(&record[HEADER..])?;
            let answer_len = u32_at(record, 5);
            if answer_len > answer.len() {
                return Err(Corrupt::Content(
                    "the answer is longer than the record".into(),
                ));
            }
            let request = with_request.then(|| answer.split_off(answer_len));
            answer.truncate(answer_len);
            Ok((answer, request))
        }
        Some(&FORMAT_2) => {
            if record.len() < HEADER_2 {
                return Err(Corrupt::Truncated(record.len()));
            }
            let expected = blake3::Hash::from_bytes(record[1..33].try_into().expect("32 bytes"));
            if blake3::hash(&record[33..]) != expected {
                return Err(Corrupt::Checksum);
            }
            let len = u32_at(record, 33);
            if HEADER_2 + len > record.len() {
                return Err(Corrupt::Truncated(record.len()));
            }
            let rest = &record[HEADER_2..];
            let request = if with_request {
                Some(inflate(&rest[len..])?)
            } else {
                None
            };
            Ok((inflate(&rest[..len])?, request))
        }
        Some(&other) => Err(Corrupt::Format(other)),
        None => Err(Corrupt::Truncated(0)),
    }
}

/// Verifies a record and reads its answer.
pub fn decode(record: &[u8]) -> Result<Stored, Corrupt> {
    let (answer, _) = open(record, false)?;
    serde_json::from_slice(&answer).map_err(|e| Corrupt::Content(e.to_string()))
}

/// Verifies a record and reads its answer and canonical request.
pub fn decode_full(record: &[u8]) -> Result<(Stored, serde_json::Value), Corrupt> {
    let (answer, request) = open(record, true)?;
    let stored = serde_json::from_slice(&answer).map_err(|e| Corrupt::Content(e.to_string()))?;
    let request = serde_json::from_slice(&request.unwrap_or_default())
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

    /// `record` (of `sample()` and the request `{"model":"r"}`) reads back whole.
    fn assert_reads_back(record: &[u8]) {
        let (stored, request) = decode_full(record).expect("valid");
        assert_eq!(stored.body.unwrap().get(), r#"{"id":"x",  "choices":[]}"#);
        assert_eq!(request["model"], "r");
        assert_eq!(decode(record).expect("valid").route, "r");
    }

    #[test]
    fn a_record_round_trips_and_keeps_the_body_byte_for_byte() {
        assert_reads_back(&encode(&sample(), br#"{"model":"r"}"#));
    }

    #[test]
    fn an_answer_encoded_from_borrowed_parts_reads_back_as_its_stored_form_does() {
        let fields = Fields {
            created: 7,
            namespace: "team",
            route: "r",
            endpoint: "chat",
            provider: Some("groq"),
            model: None,
            status: 200,
            headers: vec![
                ("x-ratelimit-remaining-requests", "9"),
                ("content-type", "application/json"),
                ("x-ratelimit-remaining-requests", "8"),
            ],
        };
        let plain = AnswerBody::Plain(" {\"id\":\"x\", \"n\":[1, 2]}\n");
        let (stored, request) =
            decode_full(&encode_answer(&fields, Some(&plain), br#"{"model":"r"}"#)).expect("valid");
        assert_eq!(
            stored.body.expect("a body").get(),
            r#"{"id":"x", "n":[1, 2]}"#
        );
        assert!(stored.chunks.is_none());
        assert_eq!((stored.created, stored.namespace.as_str()), (7, "team"));
        assert_eq!(
            (stored.provider.as_deref(), stored.model),
            (Some("groq"), None)
        );
        assert_eq!(stored.headers["x-ratelimit-remaining-requests"], "8");
        assert_eq!(stored.headers.len(), 2);
        assert_eq!(request["model"], "r");

        let chunks = AnswerBody::Chunks(vec![r#"{"a":1}"#, r#"{"b":[]}"#]);
        let stored = decode(&encode_answer(&fields, Some(&chunks), b"{}")).expect("valid");
        let chunks: Vec<&str> = stored.chunks.iter().flatten().map(|c| c.get()).collect();
        assert_eq!(chunks, [r#"{"a":1}"#, r#"{"b":[]}"#]);
        assert!(stored.body.is_none());

        let stored = decode(&encode_answer(&fields, None, b"{}")).expect("valid");
        assert!(stored.body.is_none() && stored.chunks.is_none());
    }

    #[test]
    fn a_body_that_is_not_json_makes_a_record_that_is_never_read_as_an_answer() {
        let fields = Fields {
            created: 1,
            namespace: "",
            route: "r",
            endpoint: "chat",
            provider: None,
            model: None,
            status: 200,
            headers: Vec::new(),
        };
        let record = encode_answer(&fields, Some(&AnswerBody::Plain("{\"cut\":")), b"{}");
        assert!(matches!(decode(&record), Err(Corrupt::Content(_))));
    }

    #[test]
    fn any_damage_is_detected() {
        let record = encode(&sample(), b"{}");
        for i in [0, 5, 40, record.len() - 1] {
            let mut bad = record.clone();
            bad[i] ^= 0x55;
            assert!(decode(&bad).is_err(), "byte {i} flipped went unnoticed");
        }
        assert_eq!(decode(&record[..5]).unwrap_err(), Corrupt::Truncated(5));
        assert!(decode(&record[..record.len() - 3]).is_err());
        assert_eq!(decode(&[]).unwrap_err(), Corrupt::Truncated(0));
        let mut other = record.clone();
        other[0] = 9;
        assert_eq!(decode(&other).unwrap_err(), Corrupt::Format(9));
    }

    /// A record as the previous format wrote it.
    fn format_2(stored: &Stored, request: &[u8]) -> Vec<u8> {
        let answer = lz4_flex::compress_prepend_size(&serde_json::to_vec(stored).unwrap());
        let request = lz4_flex::compress_prepend_size(request);
        let mut out = vec![FORMAT_2];
        out.extend_from_slice(&[0u8; 32]);
        out.extend_from_slice(&(answer.len() as u32).to_le_bytes());
        out.extend_from_slice(&answer);
        out.extend_from_slice(&request);
        let checksum = blake3::hash(&out[33..]);
        out[1..33].copy_from_slice(checksum.as_bytes());
        out
    }

    #[test]
    fn records_of_the_previous_format_still_read_and_are_still_checked() {
        let record = format_2(&sample(), br#"{"model":"r"}"#);
        assert_reads_back(&record);
        let mut bad = record.clone();
        bad[50] ^= 0x55;
        assert_eq!(decode(&bad).unwrap_err(), Corrupt::Checksum);
        assert_eq!(decode(&record[..20]).unwrap_err(), Corrupt::Truncated(20));
    }

    #[test]
    fn a_record_whose_answer_length_overruns_it_is_corrupt() {
        let mut record = encode(&sample(), b"{}");
        record[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        let checksum = crc32fast::hash(&record[5..]);
        record[1..5].copy_from_slice(&checksum.to_le_bytes());
        assert!(matches!(decode(&record), Err(Corrupt::Content(_))));
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
