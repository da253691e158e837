//! The Gemini analyzer's REST client (our own, no SDK).
//!
//! - [`GeminiClient::analyze`] sends one spoken answer to
//!   `POST {base}/v1beta/models/{model}:generateContent` with the versioned
//!   [`PROMPT`] and a structured-output schema, inline below
//!   [`GeminiConfig::inline_max_bytes`] and through the Files API above it,
//!   and returns a validated [`AnalysisResult`](engage_model::AnalysisResult)
//!   with the call's token usage.
//! - Every failure is a [`GeminiError`] with a stable [`GeminiError::class`] and
//!   a [`Disposition`] (retry, pause the fleet, fatal, fail the item); the
//!   client itself never retries.
//! - [`estimate_tokens`] is what the fleet-wide rate limiter charges before a call.
//! - [`require_model`] is the worker's start-up gate: the configured model
//!   must exist for the key (`GET {base}/v1beta/models/{model}`, no tokens
//!   spent) before any job is taken; an unavailable model is fatal
//!   ([`ModelCheckError`]), a failure to ask is retried.

mod answer;
mod client;
mod config;
mod error;
mod model_check;
mod prompt;
mod reset;
pub mod wire;

pub use answer::{parse_answer, parse_generate_response};
pub use client::{AudioTransport, GeminiAnswer, GeminiClient, Prepared, gemini_memory_need};
pub use config::GeminiConfig;
pub use error::{Disposition, GeminiError, ModelCheckError, classify_http_error, quota_kind_of};
pub use model_check::{CheckBackoff, require_model, wait_for_model};
pub use prompt::{
    AUDIO_TOKENS_PER_SECOND, KNOWN_PROMPT_VERSIONS, PROMPT, PROMPT_TOKENS, PROMPT_VERSION,
    estimate_tokens, response_schema,
};
pub use reset::{next_pacific_midnight, until_daily_reset};
pub use wire::{Model, UsageMetadata};
