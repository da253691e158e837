//! [`GeminiError`]: every way one Gemini call can fail, with a stable
//! [`GeminiError::class`] label and a [`Disposition`] telling the worker what
//! to do (retry, pause the fleet, stop, or record the item as failed).
//!
//! The client makes a single attempt; the worker owns the retry budget. The
//! mapping from HTTP answers follows Google's error documentation:
//!
//! | answer | error | disposition |
//! |---|---|---|
//! | 429 with a `QuotaFailure` whose `quotaId` contains `PerDay` | [`GeminiError::DailyQuotaExhausted`] | pause the fleet until midnight Pacific |
//! | other 429 with `RetryInfo.retryDelay` | [`GeminiError::RateLimited`] | pause the fleet for the delay |
//! | other 429 | [`GeminiError::RateLimited`] | retry with backoff |
//! | 500, 502, 503, 504, network error, timeout | [`GeminiError::Server`], [`GeminiError::Transport`] | retry with backoff |
//! | 400 with `ErrorInfo.reason = API_KEY_INVALID`, 401, 403 | [`GeminiError::InvalidApiKey`], [`GeminiError::PermissionDenied`] | fatal |
//! | 404 | [`GeminiError::ModelNotFound`] | fatal |
//! | 400 `FAILED_PRECONDITION` (billing, region) | [`GeminiError::Precondition`] | fatal |
//! | other 400, 413 | [`GeminiError::InvalidRequest`] | fail the item |
//! | 200 blocked, stopped without text, invalid answer | [`GeminiError::Blocked`], [`GeminiError::SafetyStop`], [`GeminiError::MaxTokens`], [`GeminiError::InvalidAnswer`] | retry (bounded), then fail the item |
//!
//! The start-up check of the model has its own outcome, [`ModelCheckError`]:
//! the model is unavailable, the key is refused (both fatal), or the check
//! could not be made (retried).

use super::reset::until_daily_reset;
use super::wire::ErrorEnvelope;
use crate::ratelimit::QuotaKind;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What the worker should do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try the item again later. `after` is a server-given minimum delay;
    /// `None` means the caller's own backoff with jitter. Counts against the
    /// item's retry budget; when that is spent the item is recorded as failed.
    Retry {
        /// Minimum delay the server asked for.
        after: Option<Duration>,
    },
    /// The shared quota is exhausted: pause every worker using the key for
    /// `pause` (fleet-wide, through the rate limiter) and requeue the item
    /// without counting an attempt.
    PauseFleet {
        /// How long to pause.
        pause: Duration,
    },
    /// Every call will fail the same way (bad key, no permission, unknown
    /// model): stop consuming and report; do not burn the queue.
    Fatal,
    /// The item itself cannot be analyzed: record it as failed now.
    FailItem,
}

/// One failed Gemini call.
#[derive(Debug, thiserror::Error)]
pub enum GeminiError {
    /// The client configuration is unusable (empty key, bad base URL, unknown prompt version).
    #[error("invalid Gemini configuration: {0}")]
    Config(String),
    /// The audio's media type is not one Gemini accepts as audio.
    #[error("unsupported audio media type {0:?}")]
    UnsupportedMime(String),
    /// There are no audio bytes to analyze.
    #[error("empty audio")]
    EmptyAudio,
    /// Connecting, sending or reading failed, or the request timed out.
    #[error("network error talking to Gemini ({}): {source}", if *.timeout { "timeout" } else { "transport" })]
    Transport {
        /// Whether it was a timeout.
        timeout: bool,
        /// The underlying error (its text never contains the key, which travels in a header).
        #[source]
        source: reqwest::Error,
    },
    /// `429 RESOURCE_EXHAUSTED` for a per-minute (or unnamed) quota.
    #[error("rate limited by Gemini ({}), retry after {retry_after:?}", quota.as_str())]
    RateLimited {
        /// The quota named in `QuotaFailure`, if any.
        quota: QuotaKind,
        /// `RetryInfo.retryDelay`, if present.
        retry_after: Option<Duration>,
        /// Google's message.
        message: String,
    },
    /// `429 RESOURCE_EXHAUSTED` for a per-day quota: nothing succeeds before the daily reset.
    #[error("Gemini per-day quota {quota_id} exhausted; resets in {reset_in:?}")]
    DailyQuotaExhausted {
        /// The violated `quotaId`.
        quota_id: String,
        /// Time until midnight Pacific, when Google resets per-day quotas.
        reset_in: Duration,
    },
    /// A 5xx answer (or 408): the service failed or was overloaded.
    #[error("Gemini server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Google's message.
        message: String,
        /// `RetryInfo.retryDelay`, if present.
        retry_after: Option<Duration>,
    },
    /// `400 API_KEY_INVALID` or `401`: the key is wrong.
    #[error("Gemini rejected the API key ({status}): {message}")]
    InvalidApiKey {
        /// HTTP status.
        status: u16,
        /// Google's message.
        message: String,
    },
    /// `403 PERMISSION_DENIED`: the key may not use this API, model or file.
    #[error("Gemini permission denied: {message}")]
    PermissionDenied {
        /// Google's message.
        message: String,
    },
    /// `404 NOT_FOUND`: the model (or method) does not exist.
    #[error("Gemini model or method not found: {message}")]
    ModelNotFound {
        /// Google's message.
        message: String,
    },
    /// `400 FAILED_PRECONDITION`: e.g. billing not enabled or region not supported.
    #[error("Gemini precondition failed: {message}")]
    Precondition {
        /// Google's message.
        message: String,
    },
    /// Another 4xx: the request for this item is not acceptable (bad media type, too large, ...).
    #[error("Gemini rejected the request ({status} {rpc_status}): {message}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// Canonical status name (`INVALID_ARGUMENT`, ...), empty if none.
        rpc_status: String,
        /// Google's message.
        message: String,
    },
    /// HTTP 200 with `promptFeedback.blockReason` and no candidates.
    #[error("Gemini blocked the prompt: {reason}")]
    Blocked {
        /// The block reason.
        reason: String,
    },
    /// The answer was stopped by a safety filter (`SAFETY`, `PROHIBITED_CONTENT`, ...) without text.
    #[error("Gemini stopped the answer: {finish_reason}")]
    SafetyStop {
        /// The finish reason.
        finish_reason: String,
    },
    /// The answer hit `maxOutputTokens` before a complete JSON document.
    #[error("Gemini answer cut at maxOutputTokens")]
    MaxTokens,
    /// A candidate without text for another finish reason.
    #[error("Gemini answered without text (finish reason {finish_reason})")]
    NoAnswer {
        /// The finish reason, or `NONE`.
        finish_reason: String,
    },
    /// The answer text is not valid JSON of the schema, or a value is out of range or not allowed.
    #[error("invalid answer from Gemini: {0}")]
    InvalidAnswer(String),
    /// A 200 (or upload) response whose body is not the documented shape.
    #[error("malformed Gemini response: {0}")]
    MalformedResponse(String),
    /// The uploaded file ended in state `FAILED`.
    #[error("Gemini could not process the uploaded file {name}")]
    FileProcessingFailed {
        /// The file's resource name.
        name: String,
    },
    /// The uploaded file stayed `PROCESSING` past the configured timeout.
    #[error("uploaded file {name} still processing after {waited:?}")]
    FileProcessingTimeout {
        /// The file's resource name.
        name: String,
        /// How long the client polled.
        waited: Duration,
    },
    /// The upload URL returned by the server is not on the configured API host
    /// (the key would be sent elsewhere), or is missing.
    #[error("refusing upload URL: {0}")]
    UploadUrl(String),
}

impl GeminiError {
    /// A stable, bounded label for metrics and failure records.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::UnsupportedMime(_) => "unsupported_mime",
            Self::EmptyAudio => "empty_audio",
            Self::Transport { timeout: true, .. } => "timeout",
            Self::Transport { timeout: false, .. } => "network",
            Self::RateLimited { .. } => "rate_limited",
            Self::DailyQuotaExhausted { .. } => "daily_quota",
            Self::Server { .. } => "server_error",
            Self::InvalidApiKey { .. } => "invalid_api_key",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::Precondition { .. } => "precondition",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Blocked { .. } => "blocked",
            Self::SafetyStop { .. } => "finish_safety",
            Self::MaxTokens => "finish_max_tokens",
            Self::NoAnswer { .. } => "no_answer",
            Self::InvalidAnswer(_) => "invalid_answer",
            Self::MalformedResponse(_) => "malformed_response",
            Self::FileProcessingFailed { .. } => "file_failed",
            Self::FileProcessingTimeout { .. } => "file_timeout",
            Self::UploadUrl(_) => "upload_url",
        }
    }

    /// What the worker should do (see the module table).
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Transport { .. }
            | Self::MalformedResponse(_)
            | Self::FileProcessingTimeout { .. }
            | Self::Blocked { .. }
            | Self::SafetyStop { .. }
            | Self::MaxTokens
            | Self::NoAnswer { .. }
            | Self::InvalidAnswer(_) => Disposition::Retry { after: None },
            Self::Server { retry_after, .. } => Disposition::Retry {
                after: *retry_after,
            },
            Self::RateLimited {
                retry_after: Some(d),
                ..
            } => Disposition::PauseFleet { pause: *d },
            Self::RateLimited {
                retry_after: None, ..
            } => Disposition::Retry { after: None },
            Self::DailyQuotaExhausted { reset_in, .. } => {
                Disposition::PauseFleet { pause: *reset_in }
            }
            Self::Config(_)
            | Self::InvalidApiKey { .. }
            | Self::PermissionDenied { .. }
            | Self::ModelNotFound { .. }
            | Self::Precondition { .. }
            | Self::UploadUrl(_) => Disposition::Fatal,
            Self::UnsupportedMime(_)
            | Self::EmptyAudio
            | Self::InvalidRequest { .. }
            | Self::FileProcessingFailed { .. } => Disposition::FailItem,
        }
    }

    /// For a 429, which quota it was about (for the limiter's 429 counter).
    pub fn quota_kind(&self) -> Option<QuotaKind> {
        match self {
            Self::RateLimited { quota, .. } => Some(*quota),
            Self::DailyQuotaExhausted { .. } => Some(QuotaKind::Rpd),
            _ => None,
        }
    }

    /// Wraps a reqwest error, dropping its URL (upload URLs are capabilities).
    pub(crate) fn transport(source: reqwest::Error) -> Self {
        let source = source.without_url();
        Self::Transport {
            timeout: source.is_timeout(),
            source,
        }
    }
}

/// Why the start-up check of the configured model (`GET /v1beta/models/{model}`)
/// failed. [`ModelCheckError::is_fatal`] tells a state no retry changes (the
/// model is unavailable, the key is refused) from a failure to ask (network,
/// 5xx, 429), which is retried.
///
/// | answer | error |
/// |---|---|
/// | 404; 400 or 403 whose message names the model (Google answers some retired models so); 200 for a model that does not serve `generateContent` | [`ModelCheckError::ModelUnavailable`] (fatal) |
/// | bad key, permission denied, failed precondition, other 4xx | [`ModelCheckError::Refused`] (fatal) |
/// | network error, timeout, 408, 5xx, 429, unreadable 200 | [`ModelCheckError::Transient`] (retried) |
#[derive(Debug, thiserror::Error)]
pub enum ModelCheckError {
    /// The model does not exist, is retired, or cannot generate content.
    #[error("Gemini model {model:?} is not available to this key: {message}")]
    ModelUnavailable {
        /// The configured model id.
        model: String,
        /// Google's message (or why the model is unusable).
        message: String,
    },
    /// Google refuses every call with this key or configuration.
    #[error("Gemini refuses every call ({class}): {0}", class = .0.class())]
    Refused(GeminiError),
    /// The check could not be made; it is tried again.
    #[error("could not check Gemini model {model:?}: {source}")]
    Transient {
        /// The configured model id.
        model: String,
        /// What failed.
        #[source]
        source: GeminiError,
    },
}

impl ModelCheckError {
    /// Classifies a failed `GET /v1beta/models/{model}` (see the type's table).
    pub fn from_call(model: &str, error: GeminiError) -> Self {
        let names_model = |message: &str| message.contains(model);
        match error {
            GeminiError::ModelNotFound { message } => Self::ModelUnavailable {
                model: model.to_owned(),
                message,
            },
            GeminiError::PermissionDenied { message }
            | GeminiError::Precondition { message }
            | GeminiError::InvalidRequest {
                status: 400,
                message,
                ..
            } if names_model(&message) => Self::ModelUnavailable {
                model: model.to_owned(),
                message,
            },
            e if matches!(
                e.disposition(),
                Disposition::Retry { .. } | Disposition::PauseFleet { .. }
            ) =>
            {
                Self::Transient {
                    model: model.to_owned(),
                    source: e,
                }
            }
            e => Self::Refused(e),
        }
    }

    /// True when retrying cannot help: the worker must not take work.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Self::Transient { .. })
    }

    /// A stable, bounded label for logs and `/readyz`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::ModelUnavailable { .. } => "model_unavailable",
            Self::Refused(e) | Self::Transient { source: e, .. } => e.class(),
        }
    }

    /// The server's minimum delay before asking again, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { source, .. } => match source.disposition() {
                Disposition::Retry { after } => after,
                Disposition::PauseFleet { pause } => Some(pause),
                Disposition::Fatal | Disposition::FailItem => None,
            },
            Self::ModelUnavailable { .. } | Self::Refused(_) => None,
        }
    }
}

/// The quota a `quotaId` names: `…PerDay…` → RPD, `…Token…PerMinute…` → TPM,
/// `…Requests…PerMinute…` → RPM.
pub fn quota_kind_of(quota_id: &str) -> QuotaKind {
    if quota_id.contains("PerDay") {
        QuotaKind::Rpd
    } else if quota_id.contains("Token") {
        QuotaKind::Tpm
    } else if quota_id.contains("PerMinute") || quota_id.contains("Requests") {
        QuotaKind::Rpm
    } else {
        QuotaKind::Unknown
    }
}

/// Classifies a non-2xx answer from its status and body (pure; `now` is for
/// the daily reset).
pub fn classify_http_error(status: u16, body: &[u8], now: DateTime<Utc>) -> GeminiError {
    let env: ErrorEnvelope = serde_json::from_slice(body).unwrap_or_default();
    let rpc = env.error;
    let message = if rpc.message.is_empty() {
        String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()
    } else {
        rpc.message.clone()
    };
    match status {
        429 => {
            let ids = rpc.quota_ids();
            if let Some(day) = ids.iter().find(|id| quota_kind_of(id) == QuotaKind::Rpd) {
                return GeminiError::DailyQuotaExhausted {
                    quota_id: (*day).to_owned(),
                    reset_in: until_daily_reset(now),
                };
            }
            let quota = ids
                .iter()
                .map(|id| quota_kind_of(id))
                .find(|k| *k != QuotaKind::Unknown)
                .unwrap_or(QuotaKind::Unknown);
            GeminiError::RateLimited {
                quota,
                retry_after: rpc.retry_delay(),
                message,
            }
        }
        401 => GeminiError::InvalidApiKey { status, message },
        400 if rpc.error_reasons().contains(&"API_KEY_INVALID") => {
            GeminiError::InvalidApiKey { status, message }
        }
        400 if rpc.status == "FAILED_PRECONDITION" => GeminiError::Precondition { message },
        403 => GeminiError::PermissionDenied { message },
        404 => GeminiError::ModelNotFound { message },
        408 | 500..=599 => GeminiError::Server {
            status,
            retry_after: rpc.retry_delay(),
            message,
        },
        _ => GeminiError::InvalidRequest {
            status,
            rpc_status: rpc.status,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-15T20:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn body(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn per_minute_429_with_retry_info_pauses_fleet() {
        let b = body(
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "26s"}]}}),
        );
        let e = classify_http_error(429, &b, now());
        assert_eq!(e.quota_kind(), Some(QuotaKind::Rpm));
        assert_eq!(
            e.disposition(),
            Disposition::PauseFleet {
                pause: Duration::from_secs(26)
            }
        );
        assert_eq!(e.class(), "rate_limited");
    }

    #[test]
    fn token_quota_is_tpm_and_no_retry_info_means_backoff() {
        let b = body(
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaId": "GenerateContentInputTokensPerModelPerMinute-FreeTier"}]}]}}),
        );
        let e = classify_http_error(429, &b, now());
        assert_eq!(e.quota_kind(), Some(QuotaKind::Tpm));
        assert_eq!(e.disposition(), Disposition::Retry { after: None });
    }

    #[test]
    fn per_day_429_pauses_until_pacific_midnight() {
        let b = body(
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "5s"},
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}]}}),
        );
        let e = classify_http_error(429, &b, now());
        // 20:00 UTC in January is 12:00 PST: 12 h to midnight.
        assert_eq!(
            e.disposition(),
            Disposition::PauseFleet {
                pause: Duration::from_secs(12 * 3600)
            }
        );
        assert_eq!(e.class(), "daily_quota");
    }

    #[test]
    fn bad_key_and_not_found_are_fatal_bad_argument_fails_item() {
        let key = body(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "API key not valid. Please pass a valid API key.",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}));
        assert_eq!(
            classify_http_error(400, &key, now()).disposition(),
            Disposition::Fatal
        );
        let mime = body(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "Unsupported MIME type: text/plain"}}));
        let e = classify_http_error(400, &mime, now());
        assert_eq!(e.disposition(), Disposition::FailItem);
        assert_eq!(e.class(), "invalid_request");
        assert_eq!(
            classify_http_error(404, b"{}", now()).disposition(),
            Disposition::Fatal
        );
        assert_eq!(
            classify_http_error(403, b"", now()).class(),
            "permission_denied"
        );
        let pre = body(
            json!({"error": {"code": 400, "status": "FAILED_PRECONDITION",
            "message": "User location is not supported for the API use."}}),
        );
        assert_eq!(
            classify_http_error(400, &pre, now()).disposition(),
            Disposition::Fatal
        );
    }

    #[test]
    fn server_errors_are_transient() {
        for s in [500u16, 502, 503, 504] {
            let e = classify_http_error(s, b"<html>oops</html>", now());
            assert_eq!(e.disposition(), Disposition::Retry { after: None }, "{s}");
            assert!(e.to_string().contains("oops"));
        }
    }

    #[test]
    fn quota_ids_map_to_kinds() {
        assert_eq!(
            quota_kind_of("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
            QuotaKind::Rpd
        );
        assert_eq!(
            quota_kind_of("GenerateContentPaidTierInputTokensPerModelPerMinute"),
            QuotaKind::Tpm
        );
        assert_eq!(
            quota_kind_of("GenerateRequestsPerMinutePerProjectPerModel"),
            QuotaKind::Rpm
        );
        assert_eq!(quota_kind_of("Something"), QuotaKind::Unknown);
    }

    fn check(status: u16, b: &[u8]) -> ModelCheckError {
        ModelCheckError::from_call("gemini-x", classify_http_error(status, b, now()))
    }

    #[test]
    fn model_check_404_is_model_unavailable_and_names_the_model() {
        let b = body(json!({"error": {"code": 404, "status": "NOT_FOUND",
            "message": "models/gemini-x is not found for API version v1beta, or is not supported for getModel."}}));
        let e = check(404, &b);
        assert!(
            matches!(e, ModelCheckError::ModelUnavailable { .. }),
            "{e:?}"
        );
        assert!(e.is_fatal());
        assert_eq!(e.class(), "model_unavailable");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "Gemini model \"gemini-x\" is not available to this key: models/gemini-x"
            ),
            "{text}"
        );
        // A bare 404 (no envelope) too.
        assert!(matches!(
            check(404, b""),
            ModelCheckError::ModelUnavailable { .. }
        ));
    }

    #[test]
    fn model_check_400_or_403_naming_the_model_is_model_unavailable() {
        let retired = body(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "Gemini model gemini-x has been shut down. Please migrate to a newer model."}}));
        assert!(matches!(
            check(400, &retired),
            ModelCheckError::ModelUnavailable { .. }
        ));
        let denied = body(json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Access to model gemini-x is denied for this project."}}));
        assert!(matches!(
            check(403, &denied),
            ModelCheckError::ModelUnavailable { .. }
        ));
    }

    #[test]
    fn model_check_bad_key_and_other_refusals_are_fatal_but_not_model_unavailable() {
        let key = body(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "API key not valid. Please pass a valid API key.",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}));
        let e = check(400, &key);
        assert!(
            matches!(
                e,
                ModelCheckError::Refused(GeminiError::InvalidApiKey { .. })
            ),
            "{e:?}"
        );
        assert!(e.is_fatal());
        assert_eq!(e.class(), "invalid_api_key");
        assert!(e.to_string().contains("(invalid_api_key)"), "{e}");
        let unregistered = body(json!({"error": {"code": 403, "status": "PERMISSION_DENIED",
            "message": "Method doesn't allow unregistered callers."}}));
        let e = check(403, &unregistered);
        assert!(
            matches!(
                e,
                ModelCheckError::Refused(GeminiError::PermissionDenied { .. })
            ),
            "{e:?}"
        );
        assert!(check(401, b"").is_fatal());
    }

    #[test]
    fn model_check_5xx_and_429_are_transient() {
        for s in [500u16, 502, 503, 504, 408] {
            let e = check(s, b"<html>oops</html>");
            assert!(matches!(e, ModelCheckError::Transient { .. }), "{s}: {e:?}");
            assert!(!e.is_fatal(), "{s}");
            assert_eq!(e.retry_after(), None);
        }
        let rate = body(
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "q",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]}}),
        );
        let e = check(429, &rate);
        assert!(!e.is_fatal());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        // A 503 whose message happens to name the model is still transient.
        let busy = body(json!({"error": {"code": 503, "status": "UNAVAILABLE",
            "message": "The model gemini-x is overloaded. Please try again later."}}));
        assert!(!check(503, &busy).is_fatal());
    }

    proptest! {
        #[test]
        fn classification_never_panics(status in 400u16..600, bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let e = classify_http_error(status, &bytes, now());
            let _ = (e.class(), e.disposition());
        }
    }
}
