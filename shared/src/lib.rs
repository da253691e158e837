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

pub mod acks;
pub mod app;
pub mod audio;
pub mod broker;
pub mod config;
pub mod envelope;
pub mod health;
pub mod idempotency;
pub mod item_log;
pub mod items;
pub mod jobs;
pub mod layout;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod ratelimit;
pub mod recovery;
pub mod redis_conn;
pub mod secret;
pub mod services;
pub mod storage;
pub mod store_io;
pub mod summary;
pub mod telemetry;
pub mod worker;
