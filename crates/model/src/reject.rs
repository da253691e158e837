//! Why an input record was rejected: the reason vocabulary shared by the
//! activity-log reader and the sessions parser (the rejects file and the
//! `engage_rejected_records_total` metric label).

use serde::{Deserialize, Serialize};

/// Why an input record (activity line or session row) was rejected.
/// Every reason has a stable name used in the rejects file and as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The line is not valid JSON.
    InvalidJson,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The value is JSON but not an object.
    NotAnObject,
    /// `user_id` (or an alias) is missing, null or empty.
    MissingUserId,
    /// `user_id` is present but not a string or an integer.
    BadUserId,
    /// `timestamp` (or an alias) is missing or null.
    MissingTimestamp,
    /// `timestamp` is present but does not parse.
    BadTimestamp,
    /// The line exceeds the configured size limit.
    LineTooLong,
    /// `accuracy` is present but not a number in 0–100.
    BadAccuracy,
    /// `audio_url` is present but not a string.
    BadAudioUrl,
    /// The head of an activity file is not activity records at all (its
    /// first items were all rejected): the rest of the file is not read and
    /// no excerpt of it is written anywhere.
    NotAnActivityLog,
    /// A sessions CSV row that cannot be parsed (wrong column count, bad encoding).
    BadCsvRow,
    /// A sessions row with no session id.
    MissingSessionId,
    /// A sessions row with no phase (neither `phase` nor `lesson`).
    MissingPhase,
}

impl RejectReason {
    /// All reasons, for zero-initialising counters.
    pub const ALL: [RejectReason; 14] = [
        Self::InvalidJson,
        Self::InvalidUtf8,
        Self::NotAnObject,
        Self::MissingUserId,
        Self::BadUserId,
        Self::MissingTimestamp,
        Self::BadTimestamp,
        Self::LineTooLong,
        Self::BadAccuracy,
        Self::BadAudioUrl,
        Self::NotAnActivityLog,
        Self::BadCsvRow,
        Self::MissingSessionId,
        Self::MissingPhase,
    ];

    /// The stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::NotAnObject => "not_an_object",
            Self::MissingUserId => "missing_user_id",
            Self::BadUserId => "bad_user_id",
            Self::MissingTimestamp => "missing_timestamp",
            Self::BadTimestamp => "bad_timestamp",
            Self::LineTooLong => "line_too_long",
            Self::BadAccuracy => "bad_accuracy",
            Self::BadAudioUrl => "bad_audio_url",
            Self::NotAnActivityLog => "not_an_activity_log",
            Self::BadCsvRow => "bad_csv_row",
            Self::MissingSessionId => "missing_session_id",
            Self::MissingPhase => "missing_phase",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }
}
