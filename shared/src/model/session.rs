//! Sessions: one row of the sessions CSV, and the session fields a matched response carries.

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// One lesson session of a learner (a sessions CSV row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user_id: String,
    pub session_id: String,
    /// When the session was created (ns since epoch, UTC).
    pub created_at: Timestamp,
    pub milestone: String,
    pub lesson: String,
    pub progress: String,
    /// The `phase` column if present and non-empty, else `lesson`.
    pub phase: String,
    /// 0-based position of the row in the sessions file (data rows only);
    /// decides the tie rule "same created_at: the last in the file wins".
    pub row: u64,
}

/// The session fields attached to a matched response (the `matched.csv` columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMatch {
    pub session_id: String,
    pub created_at: Timestamp,
    pub milestone: String,
    pub lesson: String,
    pub phase: String,
    pub progress: String,
}

impl From<&Session> for SessionMatch {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.session_id.clone(),
            created_at: s.created_at,
            milestone: s.milestone.clone(),
            lesson: s.lesson.clone(),
            phase: s.phase.clone(),
            progress: s.progress.clone(),
        }
    }
}
