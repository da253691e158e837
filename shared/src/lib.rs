//! The shared library of the engagement fleet.
//!
//! - [`model`]: the pure data model (records, sessions, analysis results, audio
//!   references, timestamps). No I/O.
//! - [`audio`]: decoding and acoustic features (pure CPU work, no network).
//! - [`storage`]: object references as URIs over S3 or a local directory.
//! - [`ratelimit`]: the fleet-wide Gemini quota in Redis.
//! - The runtime (broker, idempotency, metrics, config and the worker loop)
//!   sits beside them; stages call it, never the reverse.
#![forbid(unsafe_code)]

pub mod audio;
pub mod model;
pub mod ratelimit;
pub mod storage;
