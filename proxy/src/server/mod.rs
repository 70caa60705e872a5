//! The HTTP server: it speaks HTTP to clients and nothing else. The accept loop ([`listen`])
//! dispatches through the one routing table ([`routes`]) to the endpoints ([`api`]), which
//! authenticate ([`auth`]), read and check a request ([`request`]), hand it to the pipeline,
//! render its outcome ([`render`], errors by [`error`]) and log and record it ([`observe`]).
//! [`names`] are spillway's own headers; [`self_wake`] keeps a connection's wake-ups in its task;
//! `trace` (the `otel` feature) makes a request's spans.

pub mod api;
pub mod auth;
pub mod error;
pub mod listen;
pub mod names;
pub mod observe;
pub mod render;
pub mod request;
pub mod routes;
pub mod self_wake;
pub mod status;
#[cfg(feature = "otel")]
pub mod trace;
