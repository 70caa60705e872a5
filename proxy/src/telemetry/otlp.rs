//! Spans as OTLP/HTTP JSON (`ExportTraceServiceRequest`): ids in lowercase hex, 64-bit
//! integers and nanosecond times as decimal strings, enums as numbers, as the OTLP
//! specification's JSON mapping asks.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::span::{AttrValue, SpanData, SpanKind};

/// The body of one export of `spans` from the service `service_name`.
pub fn encode(service_name: &str, spans: &[SpanData]) -> Vec<u8> {
    let body = json!({
        "resourceSpans": [{
            "resource": {
                "attributes": attributes(&[("service.name", AttrValue::from(service_name))]),
            },
            "scopeSpans": [{
                "scope": {"name": "spillway", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }],
        }],
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn span(s: &SpanData) -> Value {
    let mut out = json!({
        "traceId": hex(&s.trace_id),
        "spanId": hex(&s.span_id),
        "name": s.name,
        "kind": match s.kind {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
        "startTimeUnixNano": nanos(s.began),
        "endTimeUnixNano": nanos(s.ended.max(s.began)),
        "attributes": attributes(&s.attributes),
        "status": match &s.error {
            None => json!({"code": 1}),
            Some(message) => json!({"code": 2, "message": message}),
        },
    });
    if let Some(parent) = &s.parent {
        out["parentSpanId"] = hex(parent).into();
    }
    out
}

fn attributes(list: &[(&str, AttrValue)]) -> Vec<Value> {
    list.iter()
        .map(|(key, value)| {
            let value = match value {
                AttrValue::Str(s) => json!({"stringValue": s}),
                AttrValue::Int(i) => json!({"intValue": i.to_string()}),
                AttrValue::Bool(b) => json!({"boolValue": b}),
            };
            json!({"key": key, "value": value})
        })
        .collect()
}

/// Nanoseconds since the Unix epoch, as a decimal string.
fn nanos(t: SystemTime) -> String {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_span_encodes_as_otlp_json() {
        let began = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let spans = [SpanData {
            trace_id: [0xab; 16],
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent: Some([9; 8]),
            name: "chat llama".into(),
            kind: SpanKind::Client,
            began,
            ended: began + Duration::from_millis(2),
            attributes: vec![
                ("gen_ai.request.model", "llama".into()),
                ("http.response.status_code", AttrValue::from(429u64)),
                ("spillway.fallback", AttrValue::Bool(true)),
            ],
            error: Some("429".into()),
        }];
        let body: Value = serde_json::from_slice(&encode("svc", &spans)).expect("JSON");
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "svc"}})
        );
        let s = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "ab".repeat(16));
        assert_eq!(s["spanId"], "0102030405060708");
        assert_eq!(s["parentSpanId"], "0909090909090909");
        assert_eq!(s["kind"], 3);
        assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(s["endTimeUnixNano"], "1700000000125456789");
        assert_eq!(
            s["attributes"][1],
            json!({"key": "http.response.status_code", "value": {"intValue": "429"}})
        );
        assert_eq!(s["attributes"][2]["value"], json!({"boolValue": true}));
        assert_eq!(s["status"], json!({"code": 2, "message": "429"}));
    }
}
