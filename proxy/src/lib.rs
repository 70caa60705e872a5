//! # spillway
//!
//! An OpenAI-compatible gateway (work in progress).
