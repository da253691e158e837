//! The message envelope every queue carries, and the stage names.
//!
//! Messages carry references (object-store URIs, ids), never payloads. The
//! envelope is small JSON:
//!
//! ```json
//! {"v":1,"batch_id":"b-…","job_id":"clean:plan:b-…","attempt":0,"trace_id":"…","job":{…}}
//! ```
//!
//! `job_id` is stable for the same work and is the idempotency key.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Current envelope schema version. Readers accept this version only.
pub const ENVELOPE_VERSION: u32 = 1;

/// The five stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageName {
    /// Plans a batch and cleans activity pieces.
    Clean,
    /// Matches responses to sessions.
    Match,
    /// Fetches and validates audio.
    Download,
    /// Analyzes audio (acoustic or Gemini).
    Analyze,
    /// Aggregates learners and writes the batch report.
    Aggregate,
}

impl StageName {
    /// All stages in pipeline order.
    pub const ALL: [StageName; 5] = [
        Self::Clean,
        Self::Match,
        Self::Download,
        Self::Analyze,
        Self::Aggregate,
    ];

    /// The lowercase name used in queue names and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::Match => "match",
            Self::Download => "download",
            Self::Analyze => "analyze",
            Self::Aggregate => "aggregate",
        }
    }

    /// Parses a stage name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for StageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope around every job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<J> {
    /// Schema version ([`ENVELOPE_VERSION`]).
    pub v: u32,
    /// The batch this job belongs to.
    pub batch_id: String,
    /// Stable id of this unit of work: the idempotency key.
    pub job_id: String,
    /// 0 on first publication, +1 per retry.
    #[serde(default)]
    pub attempt: u32,
    /// Correlates log lines across stages (one per batch by default).
    pub trace_id: String,
    /// The stage-specific job.
    pub job: J,
}

/// Why a message body could not be decoded (it goes to the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or not an envelope.
    #[error("undecodable envelope: {0}")]
    Undecodable(serde_json::Error),
    /// An envelope of a version this worker does not read.
    #[error("unsupported envelope version {0} (this worker reads {ENVELOPE_VERSION})")]
    Version(u32),
    /// A valid envelope whose job does not fit this stage.
    #[error("job does not match this stage's schema: {0}")]
    Job(serde_json::Error),
}

impl<J> Envelope<J> {
    /// A new first-attempt envelope.
    pub fn new(
        batch_id: impl Into<String>,
        job_id: impl Into<String>,
        trace_id: impl Into<String>,
        job: J,
    ) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            batch_id: batch_id.into(),
            job_id: job_id.into(),
            attempt: 0,
            trace_id: trace_id.into(),
            job,
        }
    }
}

impl Envelope<serde_json::Value> {
    /// Decodes the outer envelope, leaving the job as raw JSON.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Self = serde_json::from_slice(bytes).map_err(EnvelopeError::Undecodable)?;
        if env.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(env.v));
        }
        Ok(env)
    }

    /// Decodes the job into the stage's type.
    pub fn job_as<J: DeserializeOwned>(&self) -> Result<J, EnvelopeError> {
        serde_json::from_value(self.job.clone()).map_err(EnvelopeError::Job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_checks_version_and_shape() {
        let ok = br#"{"v":1,"batch_id":"b","job_id":"j","attempt":2,"trace_id":"t","job":{"x":1}}"#;
        let e = Envelope::decode(ok).unwrap();
        assert_eq!(e.attempt, 2);
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(EnvelopeError::Undecodable(_))
        ));
        let v2 = br#"{"v":2,"batch_id":"b","job_id":"j","trace_id":"t","job":{}}"#;
        assert!(matches!(
            Envelope::decode(v2),
            Err(EnvelopeError::Version(2))
        ));
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Needs {
            y: u32,
        }
        assert!(matches!(e.job_as::<Needs>(), Err(EnvelopeError::Job(_))));
    }

    #[test]
    fn stage_names_round_trip() {
        for s in StageName::ALL {
            assert_eq!(StageName::parse(s.as_str()), Some(s));
        }
    }
}
