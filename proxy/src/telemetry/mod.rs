//! OpenTelemetry traces (the `otel` feature, switched on by `[telemetry]`): a span per request
//! and a child span per upstream attempt, batched and sent to an OTLP/HTTP collector as JSON.
//! Spans are handed over without waiting: when the exporter is behind, a full queue drops
//! spans (counted), never a request. [`span`] is a span as data, [`otlp`] its JSON,
//! [`traceparent`] the W3C header that joins a caller's trace, [`export`] the batching sender.

pub mod export;
pub mod otlp;
pub mod span;
pub mod traceparent;

use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub use export::{Destination, Tracer};
pub use span::{AttrValue, SpanData, SpanKind};

/// A new trace id: 16 bytes, never all zero.
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0; 16];
    id.copy_from_slice(&unique_bytes()[..16]);
    id[0] |= (id == [0; 16]) as u8;
    id
}

/// A new span id: 8 bytes, never all zero.
pub fn new_span_id() -> [u8; 8] {
    let mut id = [0; 8];
    id.copy_from_slice(&unique_bytes()[..8]);
    id[0] |= (id == [0; 8]) as u8;
    id
}

/// 32 bytes no other call of this process returns, unpredictable from outside: a keyed
/// blake3 of a counter, keyed once from the standard library's randomly seeded hashers (the
/// operating system's randomness) and the process id.
fn unique_bytes() -> [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let key = KEY.get_or_init(|| {
        let mut seed = blake3::Hasher::new();
        for i in 0u64..4 {
            let state = std::collections::hash_map::RandomState::new();
            seed.update(&state.hash_one(i).to_le_bytes());
        }
        seed.update(&std::process::id().to_le_bytes());
        *seed.finalize().as_bytes()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    *blake3::keyed_hash(key, &n.to_le_bytes()).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_from_call_to_call_and_are_never_zero() {
        let traces: std::collections::HashSet<_> = (0..1000).map(|_| new_trace_id()).collect();
        let spans: std::collections::HashSet<_> = (0..1000).map(|_| new_span_id()).collect();
        assert_eq!((traces.len(), spans.len()), (1000, 1000));
        assert!(!traces.contains(&[0; 16]) && !spans.contains(&[0; 8]));
    }
}
