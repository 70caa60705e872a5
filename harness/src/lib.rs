//! # spillway-harness
//!
//! Runs spillway's scenarios and benchmarks against spillway-mock.
//!
//! # Layout
//! - [`load`]: a closed-loop HTTP/1.1 load generator with HDR latency histograms;
//! - [`subjects`]: the processes a benchmark measures (mock, proxy), started as children;
//! - [`forwarder`]: the bare forwarder, the floor a gateway is measured against;
//! - [`bench`]: `spillway-harness bench`: subjects in turn, medians, a table.

pub mod bench;
pub mod forwarder;
pub mod load;
pub mod subjects;
