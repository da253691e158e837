//! The worker runtime of the engagement fleet: everything a stage needs around
//! its pure domain code, and nothing a stage decides.
//!
//! - the contract a stage implements: [`stage`] ([`Stage`], [`JobCtx`],
//!   [`Emit`]) and [`job_error`] ([`JobError`]); nothing imports the loop;
//! - the loop: [`worker`] (consume → dedupe → run → route → publish → ack),
//!   [`acks`], [`broker`], [`app`] (a worker's `main`), [`batch_control`]
//!   (an operator's pause or cancel of a batch, obeyed by the loop);
//! - exactly-once effects: [`idempotency`], [`ledger`] (the batch's
//!   progress), [`fan_in`] (a stage says "done" and gets the follow-ups the
//!   ledger claimed for it), [`item_log`], [`items`], [`recovery`],
//!   [`pieces`] (a batch's pieces with the segments its pre-passes cut);
//! - the durable store: [`storage`], [`store_io`];
//! - running it: [`config`], [`secret`], [`metrics`], [`events`] (each
//!   internal event logs its line and counts itself), [`health`],
//!   [`telemetry`], [`redis_conn`], [`services`], [`presence`] (the
//!   heartbeat that shows workers and throughput on the dashboard).
//!
//! The data types it moves come from `engage-model`; stages call the runtime,
//! never the reverse.
#![forbid(unsafe_code)]

pub mod acks;
pub mod allocator;
pub mod app;
pub mod audio_budget;
pub mod audio_fetch;
pub mod batch_control;
pub mod broker;
pub mod config;
pub mod events;
pub mod fan_in;
pub mod health;
pub mod idempotency;
pub mod item_log;
pub mod items;
pub mod job_error;
pub mod ledger;
pub mod metrics;
pub mod metrics_contract;
pub mod pieces;
pub mod presence;
pub mod reconciler;
pub mod recovery;
pub mod redact;
pub mod redis_conn;
pub mod reopen;
pub mod secret;
pub mod services;
pub mod stage;
pub mod storage;
pub mod store_io;
pub mod telemetry;
pub mod worker;

pub use job_error::{DelayReason, ErrorClass, JobError};
pub use stage::{Emit, JobCtx, Stage};
