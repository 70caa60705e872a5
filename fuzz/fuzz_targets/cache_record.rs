//! Cache records. The first byte chooses what the rest is:
//! - `0`: a record as read from disk: `entry::decode` and `decode_full` return an error or an
//!   answer, never panic;
//! - `1`: the same, with the checksum made to hold first (CRC-32 for format 3, blake3 for format
//!   2), so the decompressor and the JSON reader behind it are reached; and an answer
//!   `decode_full` reads is the one `decode` reads;
//! - `2`: `[which u8][at u32][xor u8]`: one byte of a real record (made by `entry::encode`)
//!   changed: it decodes to an error or to the original answer, never to another.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use spillway::cache::entry::{self, Stored};

type View = (
    u64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    u16,
    BTreeMap<String, String>,
    Option<String>,
    Option<Vec<String>>,
);

fn view(s: &Stored) -> View {
    (
        s.created,
        s.namespace.clone(),
        s.route.clone(),
        s.endpoint.clone(),
        s.provider.clone(),
        s.model.clone(),
        s.status,
        s.headers.clone(),
        s.body.as_ref().map(|b| b.get().to_string()),
        s.chunks
            .as_ref()
            .map(|c| c.iter().map(|c| c.get().to_string()).collect()),
    )
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string()).expect("JSON")
}

/// Real records: a plain answer, a streamed one, one without a body.
fn records() -> &'static [Vec<u8>] {
    static RECORDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let plain = Stored {
            created: 1_750_000_000,
            namespace: String::new(),
            route: "llama-3.1-8b".into(),
            endpoint: "chat".into(),
            provider: Some("groq".into()),
            model: Some("llama-3.1-8b-instant".into()),
            status: 200,
            headers: BTreeMap::from([
                ("content-type".into(), "application/json".into()),
                ("x-ratelimit-remaining-tokens".into(), "17997".into()),
            ]),
            body: Some(raw(r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#)),
            chunks: None,
        };
        let streamed = Stored {
            body: None,
            chunks: Some(vec![
                raw(r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#),
                raw(r#"{"id":"c","choices":[],"x_groq":{"usage":{"prompt_tokens":9,"completion_tokens":1}}}"#),
            ]),
            ..plain.clone()
        };
        let empty = Stored { body: None, chunks: None, namespace: "team".into(), ..plain.clone() };
        let request = br#"{"messages":[{"content":"hi","role":"user"}],"model":"llama-3.1-8b","temperature":0}"#;
        [plain, streamed, empty].iter().map(|s| entry::encode(s, request)).collect()
    })
}

fn with_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
    match bytes.first() {
        Some(3) if bytes.len() >= 9 => {
            let crc = crc32fast::hash(&bytes[5..]);
            bytes[1..5].copy_from_slice(&crc.to_le_bytes());
        }
        Some(2) if bytes.len() >= 37 => {
            let hash = blake3::hash(&bytes[33..]);
            bytes[1..33].copy_from_slice(hash.as_bytes());
        }
        _ => {}
    }
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            let _ = entry::decode(rest);
            let _ = entry::decode_full(rest);
        }
        1 => {
            let record = with_checksum(rest.to_vec());
            let answer = entry::decode(&record);
            if let Ok((full, _)) = entry::decode_full(&record) {
                let answer = answer.expect("decode reads what decode_full reads");
                assert_eq!(view(&answer), view(&full));
            }
        }
        2 if rest.len() >= 6 => {
            let records = records();
            let record = &records[usize::from(rest[0]) % records.len()];
            let at =
                u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize % record.len();
            let xor = rest[5];
            if xor == 0 {
                return;
            }
            let (original, request) = entry::decode_full(record).expect("a real record reads");
            let mut damaged = record.clone();
            damaged[at] ^= xor;
            if let Ok(answer) = entry::decode(&damaged) {
                assert_eq!(view(&answer), view(&original), "byte {at} changed");
            }
            if let Ok((answer, r)) = entry::decode_full(&damaged) {
                assert_eq!(view(&answer), view(&original), "byte {at} changed");
                assert_eq!(r, request, "byte {at} changed");
            }
        }
        _ => {}
    }
});
