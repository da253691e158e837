//! `[gemini]`: the Gemini client, its API key and the key's quota.
//!
//! The section is typed here, in the runtime, so that the one loader checks
//! its keys in every worker (an `ENGAGE_GEMINI__MODLE` typo fails everywhere)
//! while only the analyze worker, and only with `analyzer = "gemini"`,
//! validates its values. It is also the Gemini client's settings: the analyze
//! crate's `GeminiConfig` is this type, so the fields are declared once.

use serde::{Deserialize, Serialize};

use super::sections::{Invalid, SectionSpec};
use crate::secret::Secret;

/// `[gemini]`: Gemini client settings and quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeminiSection {
    /// API key, sent only as the `x-goog-api-key` header (`GEMINI_API_KEY`
    /// wins over `ENGAGE_GEMINI__API_KEY` and the file). Required when
    /// `analyze.analyzer` is `gemini`. Secret: never logged or shown.
    pub api_key: Secret<String>,
    /// API root, without a trailing slash (tests point it at the fake).
    pub base_url: String,
    /// Model id (a leading `models/` is accepted). Default `gemini-3.8-flash`,
    /// the newest generally available Flash model as of 2026-12
    /// (`gemini-2.5-flash` was shut down on 2026-12-01); `gemini-3.6-flash`
    /// and `gemini-3.5-flash-lite` are the other GA Flash models. The analyze
    /// worker checks at start-up that the model exists for the key
    /// (`GET /v1beta/models/{model}`, no tokens spent) and takes no job until
    /// it does. Part of the analyzer id, so changing it invalidates cached
    /// results: every audio is paid for once more under the new model.
    pub model: String,
    /// Prompt version; must be one this build knows (currently only `p1`).
    /// Part of the analyzer id, so changing it invalidates cached results.
    pub prompt_version: String,
    /// Largest whole `generateContent` request (base64 audio + prompt) sent
    /// inline; bigger audio goes through the Files API. Gemini's inline limit
    /// is 20 MB, so the default of 15 MB leaves headroom.
    pub inline_max_bytes: usize,
    /// Timeout of one HTTP request, including reading the answer (seconds).
    pub request_timeout_s: u64,
    /// Timeout for establishing a connection (seconds).
    pub connect_timeout_s: u64,
    /// How long an uploaded file may stay `PROCESSING` before the attempt is
    /// given up (milliseconds).
    pub file_poll_timeout_ms: u64,
    /// First delay between file state polls (milliseconds); doubles up to 2 s.
    pub file_poll_interval_ms: u64,
    /// `generationConfig.maxOutputTokens`; the answer is about 100 tokens.
    pub max_output_tokens: u32,
    /// `generationConfig.thinkingConfig.thinkingBudget`. `0` (default) turns
    /// thinking off on Flash models: the task does not need it and thinking
    /// tokens would count against `max_output_tokens`.
    pub thinking_budget: Option<u32>,
    /// `generationConfig.temperature`; unset keeps the model's default.
    pub temperature: Option<f32>,
    /// Quota of the API key, shared by every analyze worker: requests per minute.
    pub rpm: u32,
    /// Quota: input tokens per minute (estimated at 32 tokens per second of
    /// audio plus the prompt).
    pub tpm: u64,
    /// Quota: requests per day (0 = no daily limit).
    pub rpd: u32,
}

impl Default for GeminiSection {
    fn default() -> Self {
        Self {
            api_key: Secret::new(String::new()),
            base_url: "https://generativelanguage.googleapis.com".to_owned(),
            model: "gemini-3.8-flash".to_owned(),
            prompt_version: "p1".to_owned(),
            inline_max_bytes: 15 * 1000 * 1000,
            request_timeout_s: 120,
            connect_timeout_s: 10,
            file_poll_timeout_ms: 120_000,
            file_poll_interval_ms: 500,
            max_output_tokens: 1024,
            thinking_budget: Some(0),
            temperature: None,
            rpm: 1_000,
            tpm: 1_000_000,
            rpd: 10_000,
        }
    }
}

impl GeminiSection {
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
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_s)
    }

    /// [`Self::file_poll_timeout_ms`] as a duration.
    pub fn file_poll_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.file_poll_timeout_ms)
    }
}

impl SectionSpec for GeminiSection {
    const NAME: &'static str = "gemini";
    fn validate(&self) -> Result<(), Invalid> {
        let bad = |f, why: &str| Err((f, why.to_owned()));
        if self.api_key.expose().trim().is_empty() {
            return bad(
                "api_key",
                "is empty: analyzer \"gemini\" needs GEMINI_API_KEY (or gemini.api_key in the file)",
            );
        }
        if self.base_url.is_empty() {
            return bad("base_url", "must not be empty");
        }
        if self
            .model
            .strip_prefix("models/")
            .unwrap_or(&self.model)
            .is_empty()
        {
            return bad("model", "must not be empty");
        }
        if self.rpm == 0 || self.tpm == 0 {
            return bad("rpm", "rpm and tpm must be at least 1");
        }
        if self.request_timeout_s == 0 || self.connect_timeout_s == 0 {
            return bad("request_timeout_s", "timeouts must be at least 1 s");
        }
        if self.temperature.is_some_and(|t| !t.is_finite() || t < 0.0) {
            return bad("temperature", "must be a non-negative number");
        }
        Ok(())
    }
}
