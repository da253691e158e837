//! Gemini REST wire types used by the client: the `generateContent` request
//! and response, the Files API `File` resource, the `Model` resource and the
//! `google.rpc.Status` error envelope with the detail types the client reads.
//!
//! Requests are written in lowerCamelCase (the API's JSON spelling). Responses
//! are read leniently: unknown fields are ignored and missing ones default,
//! because Google adds fields over time.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// `POST /v1beta/models/{model}:generateContent` body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    /// One user turn: the prompt and the audio.
    pub contents: Vec<Content<'a>>,
    /// Structured output and token budget.
    pub generation_config: GenerationConfig,
}

/// One turn.
#[derive(Debug, Serialize)]
pub struct Content<'a> {
    /// Always `user` here.
    pub role: &'static str,
    /// Prompt text and audio.
    pub parts: Vec<Part<'a>>,
}

/// One part of a turn (a protobuf `oneof`, so exactly one key per object).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Part<'a> {
    /// `{"text": ...}`
    Text(&'a str),
    /// `{"inlineData": {"mimeType", "data"}}`
    InlineData(Blob<'a>),
    /// `{"fileData": {"mimeType", "fileUri"}}`
    FileData(FileData<'a>),
}

/// Inline bytes, base64 encoded.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    /// Media type of the audio.
    pub mime_type: &'a str,
    /// Standard base64 of the audio.
    pub data: String,
}

/// A reference to an uploaded file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData<'a> {
    /// Media type of the file.
    pub mime_type: &'a str,
    /// The file's `uri`.
    pub file_uri: &'a str,
}

/// `generationConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    /// `application/json`: the answer is a bare JSON document.
    pub response_mime_type: &'static str,
    /// The answer's schema (see [`super::prompt::response_schema`]).
    pub response_schema: Value,
    /// Output token budget.
    pub max_output_tokens: u32,
    /// Sampling temperature, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Thinking budget, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
}

/// `generationConfig.thinkingConfig`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    /// Tokens the model may spend thinking (0 = off on Flash models).
    pub thinking_budget: u32,
}

/// `generateContent` response.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GenerateContentResponse {
    /// Answers; empty when the prompt was blocked.
    pub candidates: Vec<Candidate>,
    /// Why the prompt was blocked, if it was.
    pub prompt_feedback: Option<PromptFeedback>,
    /// Token accounting.
    pub usage_metadata: Option<UsageMetadata>,
    /// Model version that answered.
    pub model_version: Option<String>,
}

/// One answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Candidate {
    /// The answer's content; absent when generation was stopped before any output.
    pub content: Option<CandidateContent>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, ...
    pub finish_reason: Option<String>,
}

/// Content of an answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CandidateContent {
    /// Output parts.
    pub parts: Vec<ResponsePart>,
}

/// One output part.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResponsePart {
    /// Text, if this is a text part.
    pub text: Option<String>,
    /// True for a thought summary (not the answer).
    pub thought: bool,
}

/// `promptFeedback`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PromptFeedback {
    /// E.g. `SAFETY`, `PROHIBITED_CONTENT`, `OTHER`.
    pub block_reason: Option<String>,
}

/// `usageMetadata`: the tokens of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageMetadata {
    /// Input tokens (prompt and audio).
    pub prompt_token_count: u64,
    /// Output tokens of the answer.
    pub candidates_token_count: u64,
    /// Thinking tokens, when the model thought.
    pub thoughts_token_count: u64,
    /// Everything billed for the call.
    pub total_token_count: u64,
}

/// The Files API `File` resource (the fields the client reads).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct File {
    /// Resource name, `files/{id}`.
    pub name: String,
    /// URI to reference the file in `fileData`.
    pub uri: String,
    /// Media type.
    pub mime_type: Option<String>,
    /// `PROCESSING`, `ACTIVE` or `FAILED`.
    pub state: Option<String>,
    /// Why processing failed, when `state` is `FAILED`.
    pub error: Option<Value>,
}

/// The `Model` resource of `GET /v1beta/models/{model}` (the fields the
/// start-up check reads and logs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Model {
    /// Resource name, `models/{id}`.
    pub name: String,
    /// The model's version, e.g. `001`.
    pub version: String,
    /// Human-readable name.
    pub display_name: String,
    /// Largest input, in tokens.
    pub input_token_limit: Option<u64>,
    /// Largest output, in tokens.
    pub output_token_limit: Option<u64>,
    /// API methods the model serves (`generateContent`, `countTokens`, ...).
    pub supported_generation_methods: Vec<String>,
}

/// The finalize answer of a resumable upload: `{"file": File}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UploadResponse {
    /// The created file.
    pub file: Option<File>,
}

/// `{"error": Status}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorEnvelope {
    /// The status.
    pub error: RpcStatus,
}

/// `google.rpc.Status` as JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RpcStatus {
    /// HTTP status code.
    pub code: u16,
    /// Developer-facing message.
    pub message: String,
    /// Canonical code name (`RESOURCE_EXHAUSTED`, ...).
    pub status: String,
    /// Typed details (`@type` tells which).
    pub details: Vec<Value>,
}

impl RpcStatus {
    fn details_of<'a>(&'a self, type_suffix: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.details.iter().filter(move |d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(type_suffix))
        })
    }

    /// `google.rpc.RetryInfo.retryDelay`, wherever it is among the details.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details_of("google.rpc.RetryInfo")
            .filter_map(|d| d.get("retryDelay"))
            .find_map(parse_retry_delay)
    }

    /// `quotaId`s of every `google.rpc.QuotaFailure` violation.
    pub fn quota_ids(&self) -> Vec<&str> {
        self.details_of("google.rpc.QuotaFailure")
            .filter_map(|d| d.get("violations").and_then(Value::as_array))
            .flatten()
            .filter_map(|v| v.get("quotaId").and_then(Value::as_str))
            .collect()
    }

    /// `reason`s of every `google.rpc.ErrorInfo` detail (e.g. `API_KEY_INVALID`).
    pub fn error_reasons(&self) -> Vec<&str> {
        self.details_of("google.rpc.ErrorInfo")
            .filter_map(|d| d.get("reason").and_then(Value::as_str))
            .collect()
    }
}

/// Parses a `RetryInfo.retryDelay`: the proto-JSON `Duration` string
/// (`"26s"`, `"1.5s"`, `"0.000500s"`), or the `{"seconds", "nanos"}` object
/// form. Negative or malformed values give `None`.
pub fn parse_retry_delay(v: &Value) -> Option<Duration> {
    match v {
        Value::String(s) => parse_proto_duration(s),
        Value::Object(o) => {
            let secs = match o.get("seconds") {
                Some(Value::String(s)) => s.parse::<u64>().ok()?,
                Some(Value::Number(n)) => n.as_u64()?,
                None => 0,
                _ => return None,
            };
            let nanos = match o.get("nanos") {
                Some(Value::Number(n)) => u32::try_from(n.as_u64()?).ok()?,
                None => 0,
                _ => return None,
            };
            (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
        }
        _ => None,
    }
}

/// Parses `"<seconds>[.<fraction>]s"` (at most 9 fraction digits).
pub fn parse_proto_duration(s: &str) -> Option<Duration> {
    let body = s.trim().strip_suffix('s')?;
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) || frac.len() > 9 {
        return None;
    }
    let secs = if int.is_empty() {
        0
    } else {
        int.parse::<u64>().ok()?
    };
    let nanos = if frac.is_empty() {
        0
    } else {
        let scaled = format!("{frac:0<9}");
        scaled.parse::<u32>().ok()?
    };
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn request_serialises_in_camel_case_with_one_key_per_part() {
        let req = GenerateContentRequest {
            contents: vec![Content {
                role: "user",
                parts: vec![
                    Part::Text("p"),
                    Part::InlineData(Blob {
                        mime_type: "audio/wav",
                        data: "AAAA".into(),
                    }),
                    Part::FileData(FileData {
                        mime_type: "audio/wav",
                        file_uri: "u",
                    }),
                ],
            }],
            generation_config: GenerationConfig {
                response_mime_type: "application/json",
                response_schema: json!({"type": "OBJECT"}),
                max_output_tokens: 10,
                temperature: None,
                thinking_config: Some(ThinkingConfig { thinking_budget: 0 }),
            },
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["contents"][0]["parts"][0], json!({"text": "p"}));
        assert_eq!(
            v["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}})
        );
        assert_eq!(
            v["contents"][0]["parts"][2],
            json!({"fileData": {"mimeType": "audio/wav", "fileUri": "u"}})
        );
        let gc = &v["generationConfig"];
        assert_eq!(gc["responseMimeType"], "application/json");
        assert_eq!(gc["maxOutputTokens"], 10);
        assert_eq!(gc["thinkingConfig"]["thinkingBudget"], 0);
        assert!(gc.get("temperature").is_none());
    }

    #[test]
    fn retry_delays_parse() {
        assert_eq!(parse_proto_duration("26s"), Some(Duration::from_secs(26)));
        assert_eq!(
            parse_proto_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_proto_duration("0.000500s"),
            Some(Duration::from_micros(500))
        );
        assert_eq!(
            parse_proto_duration(".5s"),
            Some(Duration::from_millis(500))
        );
        for bad in ["", "s", "-1s", "1", "1.5", "abc s", "1.1234567890s", "1e3s"] {
            assert_eq!(parse_proto_duration(bad), None, "{bad}");
        }
        assert_eq!(
            parse_retry_delay(&json!({"seconds": "3", "nanos": 5})),
            Some(Duration::new(3, 5))
        );
    }

    #[test]
    fn status_details_found_in_any_order() {
        let env: ErrorEnvelope = serde_json::from_value(json!({"error": {
        "code": 429, "message": "m", "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.25s"},
            {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaId": "A"}, {"quotaId": "B"}]}
        ]}}))
        .unwrap();
        assert_eq!(env.error.retry_delay(), Some(Duration::from_millis(2250)));
        assert_eq!(env.error.quota_ids(), vec!["A", "B"]);
        assert!(env.error.error_reasons().is_empty());
    }

    proptest! {
        #[test]
        fn proto_durations_round_trip(secs in 0u64..1_000_000, millis in 0u32..1000) {
            let s = format!("{secs}.{millis:03}s");
            prop_assert_eq!(
                parse_proto_duration(&s),
                Some(Duration::new(secs, millis * 1_000_000))
            );
        }

        #[test]
        fn proto_duration_parser_never_panics(s in ".{0,24}") {
            let _ = parse_proto_duration(&s);
        }
    }
}
