//! A finished span as data: what [`super::otlp`] encodes.

use std::time::SystemTime;

/// Who a span speaks for (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Spillway answering a client.
    Server,
    /// Spillway calling a provider.
    Client,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
    /// True or false.
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_string())
    }
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(v)
    }
}

impl From<u64> for AttrValue {
    fn from(v: u64) -> Self {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    /// The trace it belongs to.
    pub trace_id: [u8; 16],
    /// Its own id.
    pub span_id: [u8; 8],
    /// Its parent's id (`None`: a root span).
    pub parent: Option<[u8; 8]>,
    /// Its name.
    pub name: String,
    /// Server or client.
    pub kind: SpanKind,
    /// When it began.
    pub began: SystemTime,
    /// When it ended.
    pub ended: SystemTime,
    /// Its attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// `Some(message)` when it failed.
    pub error: Option<String>,
}
