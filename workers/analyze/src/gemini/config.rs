//! [`GeminiConfig`]: where and how the Gemini client calls the API.
//!
//! A worker builds it from the fleet configuration's typed `[gemini]` section
//! ([`GeminiSection`], loaded and validated by the runtime's one loader:
//! `ENGAGE_GEMINI__MODEL=…`, `GEMINI_API_KEY`); the API key is a [`Secret`]
//! that never prints. Tests and tools build it directly.

use engage_runtime::config::GeminiSection;
use engage_runtime::secret::Secret;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::prompt::PROMPT_VERSION;

/// Gemini client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeminiConfig {
    /// API root, without a trailing slash (`https://generativelanguage.googleapis.com`;
    /// tests point it at the fake).
    pub base_url: String,
    /// Model id, e.g. `gemini-2.5-flash` (a leading `models/` is accepted).
    pub model: String,
    /// API key, sent as the `x-goog-api-key` header. Secret: never logged or printed.
    pub api_key: Secret<String>,
    /// Prompt version; must be one this build knows (currently only `p1`). Part
    /// of the analyzer id, so changing it invalidates cached results.
    pub prompt_version: String,
    /// Largest whole `generateContent` request (base64 audio + prompt) sent
    /// inline; bigger audio goes through the Files API. Gemini's inline limit is
    /// 20 MB, so the default of 15 MB leaves headroom.
    pub inline_max_bytes: usize,
    /// Timeout of one HTTP request, including reading the answer (seconds).
    pub request_timeout_s: u64,
    /// Timeout for establishing a connection (seconds).
    pub connect_timeout_s: u64,
    /// How long an uploaded file may stay `PROCESSING` before the attempt is given up (milliseconds).
    pub file_poll_timeout_ms: u64,
    /// First delay between file state polls (milliseconds); doubles up to 2 s.
    pub file_poll_interval_ms: u64,
    /// `generationConfig.maxOutputTokens`; the answer is about 100 tokens.
    pub max_output_tokens: u32,
    /// `generationConfig.thinkingConfig.thinkingBudget`. `0` (default) turns
    /// thinking off on Flash models: the task does not need it and thinking
    /// tokens would count against `max_output_tokens`. Unset it for models
    /// that cannot turn thinking off (Pro).
    pub thinking_budget: Option<u32>,
    /// `generationConfig.temperature`; unset keeps the model's default.
    pub temperature: Option<f32>,
}

impl Default for GeminiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://generativelanguage.googleapis.com".to_owned(),
            model: "gemini-2.5-flash".to_owned(),
            api_key: Secret::new(String::new()),
            prompt_version: PROMPT_VERSION.to_owned(),
            inline_max_bytes: 15 * 1000 * 1000,
            request_timeout_s: 120,
            connect_timeout_s: 10,
            file_poll_timeout_ms: 120_000,
            file_poll_interval_ms: 500,
            max_output_tokens: 1024,
            thinking_budget: Some(0),
            temperature: None,
        }
    }
}

impl From<&GeminiSection> for GeminiConfig {
    fn from(s: &GeminiSection) -> Self {
        Self {
            base_url: s.base_url.clone(),
            model: s.model.clone(),
            api_key: s.api_key.clone(),
            prompt_version: s.prompt_version.clone(),
            inline_max_bytes: s.inline_max_bytes,
            request_timeout_s: s.request_timeout_s,
            connect_timeout_s: s.connect_timeout_s,
            file_poll_timeout_ms: s.file_poll_timeout_ms,
            file_poll_interval_ms: s.file_poll_interval_ms,
            max_output_tokens: s.max_output_tokens,
            thinking_budget: s.thinking_budget,
            temperature: s.temperature,
        }
    }
}

impl GeminiConfig {
    /// The model id without a `models/` prefix.
    pub fn model_id(&self) -> &str {
        self.model.strip_prefix("models/").unwrap_or(&self.model)
    }

    /// The analyzer id results are recorded and cached under:
    /// `gemini:<model>:<prompt-version>`.
    pub fn analyzer_id(&self) -> String {
        format!("gemini:{}:{}", self.model_id(), self.prompt_version)
    }

    /// [`Self::request_timeout_s`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_s)
    }

    /// [`Self::file_poll_timeout_ms`] as a duration.
    pub fn file_poll_timeout(&self) -> Duration {
        Duration::from_millis(self.file_poll_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserialises_partial_tables_and_rejects_unknown_fields() {
        let c: GeminiConfig = serde_json::from_value(
            serde_json::json!({"model": "models/gemini-2.5-pro", "api_key": "k"}),
        )
        .unwrap();
        assert_eq!(c.model_id(), "gemini-2.5-pro");
        assert_eq!(c.analyzer_id(), "gemini:gemini-2.5-pro:p1");
        assert_eq!(c.api_key.expose(), "k");
        assert_eq!(c.inline_max_bytes, 15_000_000);
        let bad = serde_json::from_value::<GeminiConfig>(serde_json::json!({"modle": "x"}));
        let e = bad.unwrap_err();
        assert!(e.to_string().contains("unknown field `modle`"), "{e}");
    }

    #[test]
    fn fleet_section_defaults_are_the_client_defaults() {
        assert_eq!(
            GeminiConfig::from(&GeminiSection::default()),
            GeminiConfig::default()
        );
        let s = GeminiSection {
            model: "m".into(),
            api_key: Secret::new("k".into()),
            inline_max_bytes: 7,
            temperature: Some(0.5),
            ..GeminiSection::default()
        };
        let c = GeminiConfig::from(&s);
        assert_eq!((c.model.as_str(), c.api_key.expose().as_str()), ("m", "k"));
        assert_eq!((c.inline_max_bytes, c.temperature), (7, Some(0.5)));
    }

    #[test]
    fn key_never_printed() {
        let c = GeminiConfig {
            api_key: Secret::new("AIzaSecretKey".to_owned()),
            ..GeminiConfig::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("AIzaSecretKey"), "{dbg}");
        assert!(dbg.contains("[REDACTED]"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("AIzaSecretKey"));
    }
}
