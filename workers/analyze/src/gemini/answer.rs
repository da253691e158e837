//! Reading a `generateContent` answer: from the response body to a validated
//! [`AnalysisResult`] plus the call's token usage, or the precise reason why
//! not (blocked, stopped, cut, invalid). Pure: no I/O.

use super::error::GeminiError;
use super::wire::{GenerateContentResponse, UsageMetadata};
use engage_model::{
    AnalysisResult, AudioQuality, DominantEmotion, EngagementState, PronunciationQuality,
};
use serde::Deserialize;

/// The answer object the schema asks for, before validation.
#[derive(Debug, Deserialize)]
struct RawAnswer {
    emotional_score: f64,
    engagement_score: f64,
    dominant_emotion: String,
    engagement_state: String,
    pronunciation_quality: String,
    audio_quality: String,
}

/// Strips a Markdown code fence (```` ```json … ``` ````) some models add
/// around JSON when not in JSON mode.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

fn enum_value<T>(
    field: &str,
    value: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, GeminiError> {
    parse(value).ok_or_else(|| {
        GeminiError::InvalidAnswer(format!("{field} {value:?} is not an allowed value"))
    })
}

/// Parses and validates the answer text (a JSON object with the six fields).
pub fn parse_answer(text: &str, analyzer: &str) -> Result<AnalysisResult, GeminiError> {
    let raw: RawAnswer = serde_json::from_str(strip_fence(text))
        .map_err(|e| GeminiError::InvalidAnswer(format!("answer is not the expected JSON: {e}")))?;
    let result = AnalysisResult {
        emotional_score: raw.emotional_score,
        engagement_score: raw.engagement_score,
        dominant_emotion: enum_value(
            "dominant_emotion",
            &raw.dominant_emotion,
            DominantEmotion::parse,
        )?,
        engagement_state: enum_value(
            "engagement_state",
            &raw.engagement_state,
            EngagementState::parse,
        )?,
        pronunciation_quality: enum_value(
            "pronunciation_quality",
            &raw.pronunciation_quality,
            PronunciationQuality::parse,
        )?,
        audio_quality: enum_value("audio_quality", &raw.audio_quality, AudioQuality::parse)?,
        analyzer: analyzer.to_owned(),
    };
    result.validate().map_err(GeminiError::InvalidAnswer)?;
    Ok(result)
}

/// Finish reasons that mean a safety or policy filter stopped the answer.
const SAFETY_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

/// Reads a successful (HTTP 200) `generateContent` body.
pub fn parse_generate_response(
    body: &[u8],
    analyzer: &str,
) -> Result<(AnalysisResult, UsageMetadata), GeminiError> {
    let resp: GenerateContentResponse = serde_json::from_slice(body)
        .map_err(|e| GeminiError::MalformedResponse(format!("generateContent body: {e}")))?;
    let usage = resp.usage_metadata.unwrap_or_default();
    let Some(candidate) = resp.candidates.into_iter().next() else {
        return Err(match resp.prompt_feedback.and_then(|f| f.block_reason) {
            Some(reason) => GeminiError::Blocked { reason },
            None => GeminiError::MalformedResponse("no candidates and no block reason".to_owned()),
        });
    };
    let finish = candidate.finish_reason.unwrap_or_else(|| "NONE".to_owned());
    let text: String = candidate
        .content
        .map(|c| {
            c.parts
                .into_iter()
                .filter(|p| !p.thought)
                .filter_map(|p| p.text)
                .collect()
        })
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Err(if SAFETY_REASONS.contains(&finish.as_str()) {
            GeminiError::SafetyStop {
                finish_reason: finish,
            }
        } else if finish == "MAX_TOKENS" {
            GeminiError::MaxTokens
        } else {
            GeminiError::NoAnswer {
                finish_reason: finish,
            }
        });
    }
    match parse_answer(&text, analyzer) {
        Ok(result) => Ok((result, usage)),
        Err(GeminiError::InvalidAnswer(_)) if finish == "MAX_TOKENS" => Err(GeminiError::MaxTokens),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const GOOD: &str = r#"{"emotional_score": 71.5, "engagement_score": 90, "dominant_emotion": "Calm",
        "engagement_state": "engaged", "pronunciation_quality": "average", "audio_quality": "good"}"#;

    fn response(text: &str, finish: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish}],
            "usageMetadata": {"promptTokenCount": 400, "candidatesTokenCount": 40, "totalTokenCount": 440}
        }))
        .unwrap()
    }

    #[test]
    fn good_answer_parses_with_usage() {
        let (r, u) = parse_generate_response(&response(GOOD, "STOP"), "gemini:m:p1").unwrap();
        assert_eq!(r.emotional_score, 71.5);
        assert_eq!(r.dominant_emotion, DominantEmotion::Calm);
        assert_eq!(r.analyzer, "gemini:m:p1");
        assert_eq!(u.prompt_token_count, 400);
        assert_eq!(u.total_token_count, 440);
    }

    #[test]
    fn fenced_answer_parses() {
        let fenced = format!("```json\n{GOOD}\n```");
        assert!(parse_answer(&fenced, "a").is_ok());
    }

    #[test]
    fn invalid_answers_are_named() {
        let cut = &GOOD[..GOOD.len() / 2];
        assert!(matches!(
            parse_generate_response(&response(cut, "STOP"), "a"),
            Err(GeminiError::InvalidAnswer(_))
        ));
        assert!(matches!(
            parse_generate_response(&response(cut, "MAX_TOKENS"), "a"),
            Err(GeminiError::MaxTokens)
        ));
        let high = GOOD.replace("71.5", "171.5");
        assert!(
            matches!(parse_answer(&high, "a"), Err(GeminiError::InvalidAnswer(m)) if m.contains("emotional_score"))
        );
        let unknown = GOOD.replace("Calm", "ecstatic");
        assert!(
            matches!(parse_answer(&unknown, "a"), Err(GeminiError::InvalidAnswer(m)) if m.contains("ecstatic"))
        );
        let missing = r#"{"emotional_score": 1}"#;
        assert!(matches!(
            parse_answer(missing, "a"),
            Err(GeminiError::InvalidAnswer(_))
        ));
    }

    #[test]
    fn blocked_and_stopped_answers_are_named() {
        let blocked =
            serde_json::to_vec(&json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}))
                .unwrap();
        assert!(matches!(
            parse_generate_response(&blocked, "a"),
            Err(GeminiError::Blocked { reason }) if reason == "PROHIBITED_CONTENT"
        ));
        let safety =
            serde_json::to_vec(&json!({"candidates": [{"finishReason": "SAFETY"}]})).unwrap();
        assert!(matches!(
            parse_generate_response(&safety, "a"),
            Err(GeminiError::SafetyStop { .. })
        ));
        let max = serde_json::to_vec(
            &json!({"candidates": [{"content": {"role": "model"}, "finishReason": "MAX_TOKENS"}]}),
        )
        .unwrap();
        assert!(matches!(
            parse_generate_response(&max, "a"),
            Err(GeminiError::MaxTokens)
        ));
        assert!(matches!(
            parse_generate_response(b"{}", "a"),
            Err(GeminiError::MalformedResponse(_))
        ));
        assert!(matches!(
            parse_generate_response(b"not json", "a"),
            Err(GeminiError::MalformedResponse(_))
        ));
    }

    #[test]
    fn thought_parts_are_not_the_answer() {
        let body = serde_json::to_vec(&json!({"candidates": [{"content": {"parts": [
            {"text": "thinking...", "thought": true}, {"text": GOOD}]}, "finishReason": "STOP"}]}))
        .unwrap();
        assert!(parse_generate_response(&body, "a").is_ok());
    }

    proptest! {
        #[test]
        fn scores_accepted_iff_in_range(e in -50.0f64..150.0, g in -50.0f64..150.0) {
            let text = json!({"emotional_score": e, "engagement_score": g, "dominant_emotion": "happy",
                "engagement_state": "neutral", "pronunciation_quality": "good", "audio_quality": "poor"}).to_string();
            let ok = (0.0..=100.0).contains(&e) && (0.0..=100.0).contains(&g);
            prop_assert_eq!(parse_answer(&text, "a").is_ok(), ok);
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,200}") {
            let _ = parse_answer(&s, "a");
            let _ = parse_generate_response(s.as_bytes(), "a");
        }
    }
}
