//! The pipeline's data model: pure types and parsers shared by every stage.
//!
//! Nothing in this module does I/O or depends on an async runtime, a broker or
//! a network crate; it is the vocabulary of DESIGN.md's data contracts.

pub mod analysis;
pub mod audio_ref;
pub mod record;
pub mod selection;
pub mod session;
pub mod time;

pub use analysis::{
    ANSWER_FIELDS, AnalysisOutcome, AnalysisResult, AudioQuality, DominantEmotion, EngagementState,
    PronunciationQuality,
};
pub use audio_ref::{AudioRef, AudioRefError};
pub use record::{ActivityRecord, MatchedRecord, RejectReason, response_id};
pub use selection::{SelectedLearners, Selection, SelectionError};
pub use session::{
    ParsedSessions, Session, SessionMatch, SessionReject, SessionRow, SessionRows, SessionsError,
    parse_sessions, read_sessions,
};
pub use time::{Timestamp, TimestampError, format_rfc3339, parse_timestamp_str};
