//! The Gemini REST wire as the fake reads and writes it.
//!
//! Requests are parsed the way Google's proto-JSON front end does: every field
//! is accepted in lowerCamelCase *and* in its original snake_case spelling,
//! and an unknown field name is rejected (`400 INVALID_ARGUMENT`, "Unknown
//! name"), so a client that misspells a field fails against the fake as it
//! would against the real service. Responses are always lowerCamelCase.
//!
//! The error envelopes are the `google.rpc.Status` JSON shapes Google returns
//! (`{"error":{"code","message","status","details":[...]}}`), with the detail
//! types the Gemini API really sends (`ErrorInfo`, `LocalizedMessage`,
//! `QuotaFailure`, `Help`, `RetryInfo`).

use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;

/// `POST /v1beta/models/{model}:generateContent` request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateContentRequest {
    /// The conversation; the fake reads the parts of every content.
    pub contents: Vec<Content>,
    /// Generation parameters (structured output, token budget, ...).
    #[serde(default, rename = "generationConfig", alias = "generation_config")]
    pub generation_config: Option<GenerationConfig>,
    /// Accepted and ignored.
    #[serde(default, rename = "systemInstruction", alias = "system_instruction")]
    pub system_instruction: Option<Content>,
    /// Accepted and ignored.
    #[serde(default, rename = "safetySettings", alias = "safety_settings")]
    pub safety_settings: Option<Value>,
    /// Accepted and ignored.
    #[serde(default)]
    pub tools: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, rename = "toolConfig", alias = "tool_config")]
    pub tool_config: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, rename = "cachedContent", alias = "cached_content")]
    pub cached_content: Option<String>,
}

/// One turn of the conversation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// `user` or `model`; optional for single-turn requests.
    #[serde(default)]
    pub role: Option<String>,
    /// The parts of the turn.
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// One part: text, inline bytes or a reference to an uploaded file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Text part.
    #[serde(default)]
    pub text: Option<String>,
    /// Inline bytes (base64 in JSON).
    #[serde(default, rename = "inlineData", alias = "inline_data")]
    pub inline_data: Option<Blob>,
    /// A Files API reference.
    #[serde(default, rename = "fileData", alias = "file_data")]
    pub file_data: Option<FileData>,
}

/// Inline media.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    /// IANA media type, e.g. `audio/wav`.
    #[serde(rename = "mimeType", alias = "mime_type")]
    pub mime_type: String,
    /// Standard base64 of the bytes.
    pub data: String,
}

/// A reference to an uploaded file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileData {
    /// Media type of the file.
    #[serde(default, rename = "mimeType", alias = "mime_type")]
    pub mime_type: Option<String>,
    /// The file's `uri` as returned by the Files API.
    #[serde(rename = "fileUri", alias = "file_uri")]
    pub file_uri: String,
}

/// `generationConfig`: the fields of the real API the fake knows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationConfig {
    /// `application/json` asks for a bare JSON answer.
    #[serde(default, rename = "responseMimeType", alias = "response_mime_type")]
    pub response_mime_type: Option<String>,
    /// OpenAPI-subset schema of the answer.
    #[serde(default, rename = "responseSchema", alias = "response_schema")]
    pub response_schema: Option<Value>,
    /// JSON Schema of the answer (alternative to `responseSchema`).
    #[serde(default, rename = "responseJsonSchema", alias = "response_json_schema")]
    pub response_json_schema: Option<Value>,
    /// Output token budget; an answer longer than this is cut (`MAX_TOKENS`).
    #[serde(default, rename = "maxOutputTokens", alias = "max_output_tokens")]
    pub max_output_tokens: Option<u32>,
    /// Accepted and ignored.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Accepted and ignored.
    #[serde(default, rename = "topP", alias = "top_p")]
    pub top_p: Option<f64>,
    /// Accepted and ignored.
    #[serde(default, rename = "topK", alias = "top_k")]
    pub top_k: Option<u32>,
    /// Accepted and ignored.
    #[serde(default, rename = "candidateCount", alias = "candidate_count")]
    pub candidate_count: Option<u32>,
    /// Accepted and ignored.
    #[serde(default, rename = "stopSequences", alias = "stop_sequences")]
    pub stop_sequences: Option<Vec<String>>,
    /// Accepted and ignored.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Accepted and ignored.
    #[serde(default, rename = "thinkingConfig", alias = "thinking_config")]
    pub thinking_config: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, rename = "responseModalities", alias = "response_modalities")]
    pub response_modalities: Option<Value>,
}

/// The JSON body of the resumable-upload start request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFileRequest {
    /// The file's metadata.
    #[serde(default)]
    pub file: Option<FileMetadata>,
}

/// Client-supplied metadata of a new file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetadata {
    /// Human-readable name.
    #[serde(default, rename = "displayName", alias = "display_name")]
    pub display_name: Option<String>,
    /// Optional resource name requested by the client.
    #[serde(default)]
    pub name: Option<String>,
    /// Optional media type.
    #[serde(default, rename = "mimeType", alias = "mime_type")]
    pub mime_type: Option<String>,
}

/// Which per-model quota a 429 reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaKind {
    /// Requests per minute.
    Rpm,
    /// Input tokens per minute.
    Tpm,
    /// Requests per day.
    Rpd,
}

impl QuotaKind {
    /// Stable lowercase label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
            Self::Rpd => "rpd",
        }
    }

    /// `(quotaMetric, quotaId)` as Google names them.
    fn ids(self) -> (&'static str, &'static str) {
        match self {
            Self::Rpm => (
                "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                "GenerateRequestsPerMinutePerProjectPerModel",
            ),
            Self::Tpm => (
                "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
                "GenerateContentPaidTierInputTokensPerModelPerMinute",
            ),
            Self::Rpd => (
                "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
                "GenerateRequestsPerDayPerProjectPerModel",
            ),
        }
    }
}

/// Formats a delay as a proto-JSON `google.protobuf.Duration` (`"26s"`, `"1.5s"`).
pub fn format_proto_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        let s = format!("{}.{:03}", millis / 1000, millis % 1000);
        format!("{}s", s.trim_end_matches('0'))
    }
}

/// `status` string of the canonical code an HTTP status maps to.
pub fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// A plain `google.rpc.Status` envelope without details.
pub fn error_envelope(code: u16, status: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "status": status}})
}

/// The envelope Google sends for a server-side failure of the given status.
pub fn server_error(code: u16) -> Value {
    let message = match code {
        500 => {
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
        }
        503 => "The model is overloaded. Please try again later.",
        504 => "The request timed out. Please try again.",
        400 => "Request contains an invalid argument.",
        403 => "The caller does not have permission",
        _ => "Internal error encountered.",
    };
    error_envelope(code, status_name(code), message)
}

/// `400 INVALID_ARGUMENT` with `ErrorInfo{reason: API_KEY_INVALID}`, as for a wrong key.
pub fn api_key_invalid() -> Value {
    let message = "API key not valid. Please pass a valid API key.";
    json!({"error": {
        "code": 400,
        "message": message,
        "status": "INVALID_ARGUMENT",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message
            }
        ]
    }})
}

/// `403 PERMISSION_DENIED` for a request that carries no key at all.
pub fn unregistered_caller() -> Value {
    error_envelope(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
    )
}

/// `404 NOT_FOUND` for an unknown model.
pub fn model_not_found(model: &str) -> Value {
    error_envelope(
        404,
        "NOT_FOUND",
        &format!(
            "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
        ),
    )
}

/// `429 RESOURCE_EXHAUSTED` with `QuotaFailure`, `Help` and (optionally) `RetryInfo` details.
///
/// `retry_info_first` puts `RetryInfo` before the other details (clients must
/// not depend on the order).
pub fn quota_exceeded(
    kind: QuotaKind,
    model: &str,
    limit: u64,
    retry_delay: Option<&str>,
    retry_info_first: bool,
) -> Value {
    let (metric, id) = kind.ids();
    let mut message = format!(
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/rate-limit. \n* Quota exceeded for metric: {metric}, limit: {limit}, model: {model}"
    );
    if let Some(d) = retry_delay {
        message.push_str(&format!("\nPlease retry in {d}."));
    }
    let quota_failure = json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
            "quotaMetric": metric,
            "quotaId": id,
            "quotaDimensions": {"location": "global", "model": model},
            "quotaValue": limit.to_string()
        }]
    });
    let help = json!({
        "@type": "type.googleapis.com/google.rpc.Help",
        "links": [{
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
        }]
    });
    let mut details = vec![quota_failure, help];
    if let Some(d) = retry_delay {
        let info = json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d});
        if retry_info_first {
            details.insert(0, info);
        } else {
            details.push(info);
        }
    }
    json!({"error": {
        "code": 429,
        "message": message,
        "status": "RESOURCE_EXHAUSTED",
        "details": details
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_accepts_camel_and_snake_case() {
        let camel = r#"{"contents":[{"parts":[{"text":"hi"},{"inlineData":{"mimeType":"audio/wav","data":"AAAA"}}]}],
            "generationConfig":{"responseMimeType":"application/json","maxOutputTokens":10}}"#;
        let snake = r#"{"contents":[{"parts":[{"text":"hi"},{"inline_data":{"mime_type":"audio/wav","data":"AAAA"}}]}],
            "generation_config":{"response_mime_type":"application/json","max_output_tokens":10}}"#;
        for body in [camel, snake] {
            let r: GenerateContentRequest = serde_json::from_str(body).unwrap();
            let cfg = r.generation_config.unwrap();
            assert_eq!(cfg.max_output_tokens, Some(10));
            assert_eq!(cfg.response_mime_type.as_deref(), Some("application/json"));
            let blob = r.contents[0].parts[1].inline_data.as_ref().unwrap();
            assert_eq!(blob.mime_type, "audio/wav");
        }
    }

    #[test]
    fn request_rejects_unknown_fields() {
        let body = r#"{"contents":[],"generationConfig":{"responseMimetype":"application/json"}}"#;
        let e = serde_json::from_str::<GenerateContentRequest>(body).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `responseMimetype`"),
            "{e}"
        );
    }

    #[test]
    fn durations_format_like_proto_json() {
        assert_eq!(format_proto_duration(Duration::from_secs(26)), "26s");
        assert_eq!(format_proto_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_proto_duration(Duration::from_millis(250)), "0.25s");
    }

    #[test]
    fn quota_envelope_orders_details_as_asked() {
        let v = quota_exceeded(QuotaKind::Rpm, "m", 10, Some("26s"), true);
        assert_eq!(
            v["error"]["details"][0]["@type"],
            "type.googleapis.com/google.rpc.RetryInfo"
        );
        let v = quota_exceeded(QuotaKind::Rpd, "m", 10, None, false);
        let details = v["error"]["details"].as_array().unwrap();
        assert_eq!(details.len(), 2);
        assert!(
            details[0]["violations"][0]["quotaId"]
                .as_str()
                .unwrap()
                .contains("PerDay")
        );
    }
}
