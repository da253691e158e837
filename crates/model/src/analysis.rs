//! Analysis results: the six fields of docs/data-contracts.md, with the enums that make a
//! model answer outside the allowed sets unrepresentable.

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        // The variants are the schema's enum values and document themselves.
        #[allow(missing_docs)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every allowed value, in declaration order.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];
            /// The wire / CSV spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
            /// Parses the wire spelling (case-insensitive, surrounding spaces ignored).
            pub fn parse(s: &str) -> Option<Self> {
                let t = s.trim();
                $(if t.eq_ignore_ascii_case($s) { return Some(Self::$variant); })+
                None
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The learner's dominant emotion in one response.
    DominantEmotion {
        Happy => "happy", Sad => "sad", Calm => "calm", Angry => "angry",
        Fearful => "fearful", Surprised => "surprised", Frustrated => "frustrated",
        Confused => "confused", Bored => "bored", Excited => "excited", Neutral => "neutral",
    }
);
string_enum!(
    /// How engaged the learner sounds.
    EngagementState { Engaged => "engaged", Neutral => "neutral", Disengaged => "disengaged" }
);
string_enum!(
    /// Pronunciation quality.
    PronunciationQuality { Good => "good", Average => "average", Poor => "poor" }
);
string_enum!(
    /// Technical quality of the recording.
    AudioQuality { Good => "good", Poor => "poor", Distorted => "distorted" }
);

/// The six fields an analyzer answers, in [`AnalysisResult`]'s order: the
/// Gemini response schema asks for them in this order and `analysis.csv`
/// lists them so.
pub const ANSWER_FIELDS: [&str; 6] = [
    "emotional_score",
    "engagement_score",
    "dominant_emotion",
    "engagement_state",
    "pronunciation_quality",
    "audio_quality",
];

/// One analyzed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisResult {
    /// 0–100: how well the learner manages emotions.
    pub emotional_score: f64,
    /// 0–100: how engaged the learner sounds.
    pub engagement_score: f64,
    /// The emotion that dominates the response.
    pub dominant_emotion: DominantEmotion,
    /// The learner's engagement state in the response.
    pub engagement_state: EngagementState,
    /// How clear the pronunciation is.
    pub pronunciation_quality: PronunciationQuality,
    /// How usable the recording is.
    pub audio_quality: AudioQuality,
    /// Which analyzer and version produced it, e.g. `acoustic:1` or `gemini:<model>:<prompt>`.
    pub analyzer: String,
}

impl AnalysisResult {
    /// Checks the ranges docs/data-contracts.md requires (scores finite and within 0–100).
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("emotional_score", self.emotional_score),
            ("engagement_score", self.engagement_score),
        ] {
            if !v.is_finite() || !(0.0..=100.0).contains(&v) {
                return Err(format!("{name} out of range: {v}"));
            }
        }
        Ok(())
    }
}

/// The final state of one analyzed item: a result, or a failure with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AnalysisOutcome {
    /// The item was analyzed.
    Ok(AnalysisResult),
    /// The item failed, with its reason.
    Failed {
        /// Stable machine-readable reason name, e.g. `audio_missing`, `undecodable`.
        reason: String,
        /// Human-readable detail.
        #[serde(default)]
        detail: String,
    },
}

impl AnalysisOutcome {
    /// The result, if the item was analyzed.
    pub fn result(&self) -> Option<&AnalysisResult> {
        match self {
            Self::Ok(r) => Some(r),
            Self::Failed { .. } => None,
        }
    }

    /// The failure reason, if the item failed.
    pub fn failure_reason(&self) -> Option<&str> {
        match self {
            Self::Ok(_) => None,
            Self::Failed { reason, .. } => Some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_and_reject_unknown() {
        for e in DominantEmotion::ALL {
            assert_eq!(DominantEmotion::parse(e.as_str()), Some(*e));
        }
        assert_eq!(DominantEmotion::ALL.len(), 11);
        assert_eq!(
            EngagementState::parse(" Engaged "),
            Some(EngagementState::Engaged)
        );
        assert_eq!(AudioQuality::parse("excellent"), None);
        let j: Result<PronunciationQuality, _> = serde_json::from_str("\"great\"");
        let e = j.unwrap_err();
        assert!(e.to_string().contains("unknown variant `great`"), "{e}");
    }

    #[test]
    fn answer_fields_are_the_results_fields_in_order() {
        let r = AnalysisResult {
            emotional_score: 1.0,
            engagement_score: 2.0,
            dominant_emotion: DominantEmotion::Calm,
            engagement_state: EngagementState::Engaged,
            pronunciation_quality: PronunciationQuality::Good,
            audio_quality: AudioQuality::Good,
            analyzer: "acoustic:1".into(),
        };
        let json = serde_json::to_string(&r).unwrap();
        let at: Vec<usize> = ANSWER_FIELDS
            .iter()
            .map(|f| json.find(&format!("\"{f}\":")).expect(f))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{json}");
        let keys = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json)
            .unwrap()
            .len();
        assert_eq!(
            keys,
            ANSWER_FIELDS.len() + 1,
            "the answer fields plus analyzer"
        );
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let mut r = AnalysisResult {
            emotional_score: 50.0,
            engagement_score: 100.0,
            dominant_emotion: DominantEmotion::Calm,
            engagement_state: EngagementState::Engaged,
            pronunciation_quality: PronunciationQuality::Good,
            audio_quality: AudioQuality::Good,
            analyzer: "acoustic:1".into(),
        };
        assert!(r.validate().is_ok());
        r.engagement_score = 100.5;
        assert_eq!(
            r.validate(),
            Err("engagement_score out of range: 100.5".to_string())
        );
        r.engagement_score = f64::NAN;
        assert_eq!(
            r.validate(),
            Err("engagement_score out of range: NaN".to_string())
        );
    }
}
