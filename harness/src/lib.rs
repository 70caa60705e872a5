//! # spillway-harness
