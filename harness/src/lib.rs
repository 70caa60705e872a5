//! # spillway-harness
//!
//! Runs spillway's scenarios and benchmarks against spillway-mock.
//!
//! # Layout
//! - [`load`]: a closed-loop HTTP/1.1 load generator with HDR latency histograms.

pub mod load;
