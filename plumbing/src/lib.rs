//! # spillway-plumbing
//!
//! The plumbing the mock provider (`spillway-mock`) and the proxy (`spillway`) both need, kept
//! once so the two cannot drift apart where they must agree:
//! - [`dialect`]: which provider's rate-limit headers and error bodies are spoken, by name;
//! - [`shutdown`]: the SIGINT/SIGTERM future both binaries stop on;
//! - [`env`](mod@env): secrets named by environment variable (`env:NAME`), read through
//!   [`env::Env`];
//! - [`tokens`]: how a chat request's tokens add up, and the real tokenizer;
//! - [`accept`]: the HTTP/1.1 accept loop, with what each server does per connection left to
//!   it.
//!
//! What it deliberately does not hold: anything that decides what a provider answers or how a
//! limit is read. The mock's limiter, its rate-limit header writing (Go-style durations among
//! them) and its rule for counting a text's tokens stay in the mock, and the proxy's header
//! reading stays in the proxy, because the mock is the oracle the proxy is tested against:
//! were the writer and the reader of a wire format one piece of code, a mistake in it would
//! pass every test.

pub mod accept;
pub mod dialect;
pub mod env;
pub mod shutdown;
pub mod tokens;

pub use dialect::{Dialect, UnknownDialect};
