//! The shared library of the engagement fleet.
//!
//! - [`model`]: the pure data model (records, sessions, analysis results, audio
//!   references, timestamps). No I/O.
//! - The runtime (broker, idempotency, rate limiting, storage, metrics, config
//!   and the worker loop) is added beside it; stages call it, never the reverse.
#![forbid(unsafe_code)]

pub mod model;
