//! The prompt and the structured-output schema sent with every request, and
//! the token estimate the rate limiter charges before a call.
//!
//! The prompt is versioned: [`PROMPT_VERSION`] is part of the analyzer id
//! (`gemini:<model>:<prompt-version>`) under which results are cached, so any
//! change to [`PROMPT`] or to the schema must come with a new version.

use engage_model::{AudioQuality, DominantEmotion, EngagementState, PronunciationQuality};
use serde_json::{Value, json};

/// Version of [`PROMPT`] and [`response_schema`].
pub const PROMPT_VERSION: &str = "p1";

/// Prompt versions this build can send.
pub const KNOWN_PROMPT_VERSIONS: &[&str] = &[PROMPT_VERSION];

/// The instruction sent with the audio (version [`PROMPT_VERSION`]).
///
/// It describes the recording (a language learner's spoken answer), defines
/// each of the six fields with the scale or the allowed values, and asks the
/// model to judge the voice rather than the content, so that a short or wrong
/// answer is not mistaken for disengagement.
pub const PROMPT: &str = "\
You are assessing a recording of a language learner answering a prompt in a speaking \
exercise of an English-learning app. Listen to the learner's voice and delivery (tone, \
energy, pace, hesitation, fluency), not only to the words, and judge the recording as a \
whole. Do not penalise a wrong or short answer as such; judge how the learner sounds.

Return one JSON object with exactly these fields:
- emotional_score: number from 0 to 100, how well the learner manages their emotions \
while speaking (100 = composed and confident, 0 = overwhelmed, panicked or very upset).
- engagement_score: number from 0 to 100, how engaged the learner sounds (100 = fully \
attentive and making a real effort, 0 = absent, mumbling or clearly not trying).
- dominant_emotion: the emotion most present in the voice, one of happy, sad, calm, \
angry, fearful, surprised, frustrated, confused, bored, excited, neutral.
- engagement_state: engaged, neutral or disengaged.
- pronunciation_quality: good, average or poor, for the learner's level of English.
- audio_quality: good, poor (noisy, quiet, clipped or cut) or distorted.

If the recording is silent or contains no speech, use engagement_state disengaged, \
a low engagement_score, dominant_emotion neutral, and rate audio_quality honestly.";

/// Audio tokens per second of audio (Google's published rate for Gemini).
pub const AUDIO_TOKENS_PER_SECOND: f64 = 32.0;

/// Input tokens of everything but the audio: the prompt (~4 characters a
/// token) plus an allowance for the schema and the request framing.
pub const PROMPT_TOKENS: u64 = (PROMPT.len() as u64).div_ceil(4) + 128;

/// Estimated input tokens of one request for `duration_s` seconds of audio:
/// 32 tokens a second plus [`PROMPT_TOKENS`]. Charged to the TPM quota before
/// the call; negative or non-finite durations count as zero.
pub fn estimate_tokens(duration_s: f64) -> u64 {
    let secs = if duration_s.is_finite() && duration_s > 0.0 {
        duration_s
    } else {
        0.0
    };
    (secs * AUDIO_TOKENS_PER_SECOND).ceil() as u64 + PROMPT_TOKENS
}

fn string_enum(values: impl Iterator<Item = &'static str>, description: &str) -> Value {
    json!({
        "type": "STRING",
        "format": "enum",
        "enum": values.collect::<Vec<_>>(),
        "description": description,
    })
}

/// `generationConfig.responseSchema`: the OpenAPI-subset schema Gemini's
/// structured output takes, built from the model enums so they cannot drift.
pub fn response_schema() -> Value {
    let score = |description: &str| json!({"type": "NUMBER", "minimum": 0, "maximum": 100, "description": description});
    json!({
        "type": "OBJECT",
        "properties": {
            "emotional_score": score("0-100: how well the learner manages emotions"),
            "engagement_score": score("0-100: how engaged the learner sounds"),
            "dominant_emotion": string_enum(
                DominantEmotion::ALL.iter().map(|v| v.as_str()),
                "the emotion most present in the voice"),
            "engagement_state": string_enum(
                EngagementState::ALL.iter().map(|v| v.as_str()),
                "overall engagement"),
            "pronunciation_quality": string_enum(
                PronunciationQuality::ALL.iter().map(|v| v.as_str()),
                "pronunciation for the learner's level"),
            "audio_quality": string_enum(
                AudioQuality::ALL.iter().map(|v| v.as_str()),
                "technical quality of the recording"),
        },
        "required": FIELDS,
        "propertyOrdering": FIELDS,
    })
}

/// The six answer fields, in the order the model is asked to produce them.
pub(super) use engage_model::ANSWER_FIELDS as FIELDS;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schema_lists_every_field_and_enum_value() {
        let s = response_schema();
        for f in FIELDS {
            assert!(s["properties"][f].is_object(), "{f}");
        }
        assert_eq!(s["required"].as_array().unwrap().len(), 6);
        assert_eq!(
            s["properties"]["dominant_emotion"]["enum"]
                .as_array()
                .unwrap()
                .len(),
            DominantEmotion::ALL.len()
        );
        assert_eq!(s["properties"]["audio_quality"]["enum"][2], "distorted");
    }

    #[test]
    fn estimate_is_32_per_second_plus_prompt() {
        assert_eq!(estimate_tokens(0.0), PROMPT_TOKENS);
        assert_eq!(estimate_tokens(10.0), 320 + PROMPT_TOKENS);
        assert_eq!(estimate_tokens(f64::NAN), PROMPT_TOKENS);
        assert_eq!(estimate_tokens(-3.0), PROMPT_TOKENS);
    }

    proptest! {
        #[test]
        fn estimate_is_monotonic(a in 0.0f64..10_000.0, b in 0.0f64..10_000.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(estimate_tokens(lo) <= estimate_tokens(hi));
            prop_assert!(estimate_tokens(hi) >= (hi * 32.0) as u64);
        }
    }
}
