//! The pipeline's data model: pure types and parsers shared by every stage.
//!
//! Nothing in this crate does I/O or depends on an async runtime, a broker or
//! a network crate (its `Cargo.toml` has none to depend on); it is the
//! vocabulary of the data contracts in `docs/data-contracts.md`.
//!
//! - records and sessions: [`record`], [`session`], [`reject`] (why an input
//!   record was dropped), [`time`], [`audio_ref`];
//! - what a batch selects: [`selection`];
//! - what flows between stages: [`envelope`] (the message wrapper) and
//!   [`jobs`] (each queue's job body);
//! - where things live in the store: [`layout`] and [`uri`];
//! - what a batch reports: [`analysis`], [`summary`].
#![forbid(unsafe_code)]

pub mod analysis;
pub mod audio_ref;
pub mod csv_safe;
pub mod envelope;
pub mod input_policy;
pub mod job_ids;
pub mod jobs;
pub mod layout;
pub mod record;
pub mod reject;
pub mod selection;
pub mod session;
mod short_sha;
pub mod summary;
pub mod time;
pub mod uri;

pub use analysis::{
    ANSWER_FIELDS, AnalysisOutcome, AnalysisResult, AudioQuality, DominantEmotion, EngagementState,
    PronunciationQuality,
};
pub use audio_ref::{AudioRef, AudioRefError};
pub use record::{ActivityRecord, MatchedRecord, MatchedRef, response_id, response_id_bytes};
pub use reject::RejectReason;
pub use selection::{SelectedLearners, Selection, SelectionError};
pub use session::{
    ParsedSessions, Session, SessionMatch, SessionMatchRef, SessionReject, SessionRow, SessionRows,
    SessionsError, parse_sessions, read_sessions,
};
pub use time::{Timestamp, TimestampError, format_rfc3339, parse_timestamp_str};
