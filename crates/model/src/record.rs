//! Activity records: one spoken response, after alias normalisation.

use serde::{Deserialize, Serialize};

use super::session::{SessionMatch, SessionMatchRef};
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
    /// The prompt text, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_text: Option<String>,
    /// The learner's answer text, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_text: Option<String>,
    /// The product's session id, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The product's sub-session id, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_session_id: Option<String>,
}

/// A response with the session it was matched to (or none: *unmatched*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedRecord {
    /// The response.
    pub record: ActivityRecord,
    /// The session it was matched to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionMatch>,
}

impl MatchedRecord {
    /// The learning phase of the matched session, if matched.
    pub fn phase(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.phase.as_str())
    }

    /// The same row, borrowed.
    pub fn borrowed(&self) -> MatchedRef<'_> {
        MatchedRef {
            record: &self.record,
            session: self.session.as_ref().map(SessionMatchRef::from),
        }
    }
}

/// A [`MatchedRecord`] made of borrowed parts: the match stage pairs each
/// response with its session in the shared session index without copying
/// the session's strings. Serializes to exactly the same JSON as the owned
/// row (the stage's output is read back as [`MatchedRecord`]s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MatchedRef<'a> {
    /// The response.
    pub record: &'a ActivityRecord,
    /// The session it was matched to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionMatchRef<'a>>,
}

/// Derives the response id: the first 16 bytes of SHA-256 over the user id,
/// the instant in nanoseconds and the audio URL as written, hex encoded.
/// The same response in two files, or twice in one file, gets the same id.
pub fn response_id(user_id: &str, timestamp: Timestamp, audio_url: Option<&str>) -> String {
    hex::encode(response_id_bytes(user_id, timestamp, audio_url))
}

/// The 16 bytes behind [`response_id`] (its hex encoding), for callers that
/// key or write ids without allocating a string per record.
pub fn response_id_bytes(user_id: &str, timestamp: Timestamp, audio_url: Option<&str>) -> [u8; 16] {
    let ts = timestamp.to_be_bytes();
    let digest = match audio_url {
        Some(u) => {
            crate::short_sha::sha256_parts(&[user_id.as_bytes(), &[0], &ts, &[0, 1], u.as_bytes()])
        }
        None => crate::short_sha::sha256_parts(&[user_id.as_bytes(), &[0], &ts, &[0, 0]]),
    };
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
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
        // Pinned: ids are stored keys, so the derivation must never change
        // (sha256(b"42\0" + 1000 as 8 big-endian bytes + b"\0\x01s3://b/k")[..16]).
        assert_eq!(a, "d1cb16db8e0946bdb0062cb6b8cce5c9");
        assert_eq!(
            hex::encode(response_id_bytes("42", 1_000, Some("s3://b/k"))),
            a
        );
    }

    use proptest::prelude::*;

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(".{0,8}")
    }

    fn matched() -> impl Strategy<Value = MatchedRecord> {
        let record = (
            ("[0-9a-f]{32}", ".{0,6}", any::<i64>(), opt_text()),
            (proptest::option::of(any::<f64>()), opt_text(), opt_text()),
            (opt_text(), opt_text()),
        )
            .prop_map(
                |((response_id, user_id, timestamp, audio_url), (accuracy, o, r), (s, ss))| {
                    ActivityRecord {
                        response_id,
                        user_id,
                        timestamp,
                        audio_url,
                        accuracy: accuracy.filter(|a| a.is_finite()),
                        original_text: o,
                        response_text: r,
                        session_id: s,
                        sub_session_id: ss,
                    }
                },
            );
        let session = proptest::option::of(
            (
                ".{0,6}",
                any::<i64>(),
                ".{0,4}",
                ".{0,4}",
                ".{0,4}",
                ".{0,4}",
            )
                .prop_map(
                    |(session_id, created_at, milestone, lesson, phase, progress)| SessionMatch {
                        session_id,
                        created_at,
                        milestone,
                        lesson,
                        phase,
                        progress,
                    },
                ),
        );
        (record, session).prop_map(|(record, session)| MatchedRecord { record, session })
    }

    proptest! {
        /// The match stage writes borrowed rows; the aggregate stage reads
        /// them back as owned ones: the JSON must be the same bytes.
        #[test]
        fn borrowed_rows_serialize_like_owned_ones(m in matched()) {
            let owned = serde_json::to_vec(&m).unwrap();
            let borrowed = serde_json::to_vec(&m.borrowed()).unwrap();
            prop_assert_eq!(&owned, &borrowed);
            let back: MatchedRecord = serde_json::from_slice(&borrowed).unwrap();
            prop_assert_eq!(back.session, m.session);
        }
    }
}
