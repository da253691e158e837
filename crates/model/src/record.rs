//! Activity records: one spoken response, after alias normalisation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::session::SessionMatch;
use super::time::Timestamp;

/// One kept (English, selected, well-formed) response from the activity log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// Stable id derived from (user_id, timestamp instant, audio_url as written).
    pub response_id: String,
    /// The learner; integers in the input become their decimal string.
    pub user_id: String,
    /// The response's instant (ns since epoch, UTC).
    pub timestamp: Timestamp,
    /// The audio link as written, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    /// Accuracy 0–100, if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_session_id: Option<String>,
}

/// A response with the session it was matched to (or none: *unmatched*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedRecord {
    pub record: ActivityRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionMatch>,
}

impl MatchedRecord {
    /// The learning phase of the matched session, if matched.
    pub fn phase(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.phase.as_str())
    }
}

/// Derives the response id: the first 16 bytes of SHA-256 over the user id,
/// the instant in nanoseconds and the audio URL as written, hex encoded.
/// The same response in two files, or twice in one file, gets the same id.
pub fn response_id(user_id: &str, timestamp: Timestamp, audio_url: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(user_id.as_bytes());
    h.update([0u8]);
    h.update(timestamp.to_be_bytes());
    h.update([0u8]);
    match audio_url {
        Some(u) => {
            h.update([1u8]);
            h.update(u.as_bytes());
        }
        None => h.update([0u8]),
    }
    hex::encode(&h.finalize()[..16])
}

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
    fn response_id_is_stable_and_distinguishes_fields() {
        let a = response_id("42", 1_000, Some("s3://b/k"));
        assert_eq!(a, response_id("42", 1_000, Some("s3://b/k")));
        assert_eq!(a.len(), 32);
        assert_ne!(a, response_id("42", 1_001, Some("s3://b/k")));
        assert_ne!(a, response_id("4", 1_000, Some("2s3://b/k")));
        assert_ne!(
            response_id("42", 1_000, None),
            response_id("42", 1_000, Some(""))
        );
    }

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }
}
