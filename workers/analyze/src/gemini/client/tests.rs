//! The client against the fake Gemini server: every outcome the worker must
//! tell apart, over real HTTP on loopback.

use super::*;
use crate::gemini::{Disposition, GeminiError};
use crate::ratelimit::QuotaKind;
use engage_model::{AudioQuality, DominantEmotion, EngagementState, PronunciationQuality};
use engage_runtime::secret::Secret;
use fake_gemini::{
    Behaviour, FakeConfig, FakeGemini, Fault, FileProcessing, QuotaKind as FakeQuota, audio_hash,
    expected_answer,
};

/// A mono 16-bit 8 kHz WAV of `secs` seconds whose samples depend on `seed`.
fn wav(secs: u32, seed: u8) -> Vec<u8> {
    let samples: Vec<i16> = (0..8_000 * secs)
        .map(|i| (i as i16).wrapping_mul(31).wrapping_add(i16::from(seed)))
        .collect();
    engage_audio::wav::encode_pcm16_mono(8_000, &samples).expect("a short clip encodes")
}

async fn fake(behaviour: Behaviour) -> FakeGemini {
    FakeGemini::start(FakeConfig {
        behaviour,
        ..FakeConfig::default()
    })
    .await
    .unwrap()
}

fn config_for(fake: &FakeGemini) -> GeminiConfig {
    GeminiConfig {
        base_url: fake.base_url().to_owned(),
        api_key: Secret::new(fake.api_key().to_owned()),
        file_poll_interval_ms: 10,
        ..GeminiConfig::default()
    }
}

fn client(fake: &FakeGemini) -> GeminiClient {
    GeminiClient::new(config_for(fake)).unwrap()
}

/// One call with `fault` queued; returns the error.
async fn error_with(fault: Fault) -> GeminiError {
    let fake = fake(Behaviour::default()).await;
    fake.push_faults([fault]);
    client(&fake)
        .analyze(&wav(1, 9), "audio/wav")
        .await
        .unwrap_err()
}

fn assert_matches_fake(result: &AnalysisResult, audio: &[u8]) {
    let want = expected_answer(audio);
    assert_eq!(
        result.emotional_score,
        want["emotional_score"].as_f64().unwrap()
    );
    assert_eq!(
        result.engagement_score,
        want["engagement_score"].as_f64().unwrap()
    );
    let s = |k: &str| want[k].as_str().unwrap().to_owned();
    assert_eq!(
        Some(result.dominant_emotion),
        DominantEmotion::parse(&s("dominant_emotion"))
    );
    assert_eq!(
        Some(result.engagement_state),
        EngagementState::parse(&s("engagement_state"))
    );
    assert_eq!(
        Some(result.pronunciation_quality),
        PronunciationQuality::parse(&s("pronunciation_quality"))
    );
    assert_eq!(
        Some(result.audio_quality),
        AudioQuality::parse(&s("audio_quality"))
    );
}

#[tokio::test]
async fn success_inline_records_usage_and_one_paid_call() {
    let fake = fake(Behaviour::default()).await;
    let audio = wav(3, 1);
    let answer = client(&fake).analyze(&audio, "audio/wav").await.unwrap();
    assert_eq!(answer.transport, AudioTransport::Inline);
    assert_eq!(answer.result.analyzer, "gemini:gemini-3.8-flash:p1");
    assert_matches_fake(&answer.result, &audio);
    // 3 s of audio at 32 tokens/s plus the prompt.
    assert!(answer.usage.prompt_token_count >= 96, "{:?}", answer.usage);
    assert!(answer.usage.candidates_token_count > 0);
    assert_eq!(
        answer.usage.total_token_count,
        answer.usage.prompt_token_count + answer.usage.candidates_token_count
    );
    // The estimate charged up front is not below what the fake counted.
    assert!(GeminiClient::estimate_tokens(3.0) >= answer.usage.prompt_token_count);
    let stats = fake.stats();
    assert_eq!(stats.calls_by_hash.get(&audio_hash(&audio)), Some(&1));
    assert_eq!(stats.uploads_started, 0);
}

#[tokio::test]
async fn success_via_files_api_polls_until_active_and_deletes() {
    let fake = fake(Behaviour {
        files: FileProcessing {
            polls_before_active: 2,
            fail: false,
        },
        ..Behaviour::default()
    })
    .await;
    let client = GeminiClient::new(GeminiConfig {
        inline_max_bytes: 10_000,
        ..config_for(&fake)
    })
    .unwrap();
    let audio = wav(2, 2);
    let answer = client.analyze(&audio, "audio/wav").await.unwrap();
    assert_eq!(answer.transport, AudioTransport::FilesApi);
    assert_matches_fake(&answer.result, &audio);
    let stats = fake.stats();
    assert_eq!(stats.uploads_finalized, 1);
    assert_eq!(
        stats.file_polls, 3,
        "two polls answer PROCESSING, the third ACTIVE"
    );
    assert_eq!(stats.files_deleted, 1);
    assert_eq!(stats.files_live, 0);
    assert_eq!(stats.calls_by_hash.get(&audio_hash(&audio)), Some(&1));
}

#[tokio::test]
async fn failed_file_processing_fails_the_item_and_still_deletes() {
    let fake = fake(Behaviour {
        files: FileProcessing {
            polls_before_active: 1,
            fail: true,
        },
        ..Behaviour::default()
    })
    .await;
    let client = GeminiClient::new(GeminiConfig {
        inline_max_bytes: 1_000,
        ..config_for(&fake)
    })
    .unwrap();
    let err = client.analyze(&wav(1, 3), "audio/wav").await.unwrap_err();
    assert!(
        matches!(err, GeminiError::FileProcessingFailed { .. }),
        "{err}"
    );
    assert_eq!(err.disposition(), Disposition::FailItem);
    assert_eq!(fake.stats().files_live, 0);
    assert_eq!(fake.stats().generate_calls, 0);
}

#[tokio::test]
async fn file_stuck_processing_times_out_within_the_deadline() {
    let fake = fake(Behaviour {
        files: FileProcessing {
            polls_before_active: u32::MAX,
            fail: false,
        },
        ..Behaviour::default()
    })
    .await;
    let client = GeminiClient::new(GeminiConfig {
        inline_max_bytes: 1_000,
        file_poll_timeout_ms: 300,
        ..config_for(&fake)
    })
    .unwrap();
    let started = Instant::now();
    let err = client.analyze(&wav(1, 4), "audio/wav").await.unwrap_err();
    assert!(
        matches!(err, GeminiError::FileProcessingTimeout { .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err.disposition(), Disposition::Retry { .. }));
    assert_eq!(fake.stats().files_live, 0);
}

#[tokio::test]
async fn rate_limited_with_fractional_retry_info_in_either_order_pauses_fleet() {
    for first in [false, true] {
        let err = error_with(Fault::RateLimited {
            quota: FakeQuota::Rpm,
            retry_delay: Some("1.5s".to_owned()),
            retry_info_first: first,
        })
        .await;
        assert_eq!(err.class(), "rate_limited");
        assert_eq!(err.quota_kind(), Some(QuotaKind::Rpm));
        assert_eq!(
            err.disposition(),
            Disposition::PauseFleet {
                pause: Duration::from_millis(1500)
            },
            "retry_info_first={first}"
        );
    }
}

#[tokio::test]
async fn rate_limited_without_retry_info_backs_off() {
    let err = error_with(Fault::RateLimited {
        quota: FakeQuota::Tpm,
        retry_delay: None,
        retry_info_first: false,
    })
    .await;
    assert_eq!(err.quota_kind(), Some(QuotaKind::Tpm));
    assert_eq!(err.disposition(), Disposition::Retry { after: None });
}

#[tokio::test]
async fn per_day_quota_pauses_fleet_until_reset() {
    let err = error_with(Fault::RateLimited {
        quota: FakeQuota::Rpd,
        retry_delay: Some("30s".to_owned()),
        retry_info_first: false,
    })
    .await;
    assert_eq!(err.class(), "daily_quota");
    let Disposition::PauseFleet { pause } = err.disposition() else {
        panic!("expected a fleet pause, got {:?}", err.disposition());
    };
    assert!(pause > Duration::ZERO && pause <= Duration::from_secs(25 * 3600));
}

#[tokio::test]
async fn enforced_rpm_quota_answers_429_with_a_usable_delay() {
    let fake = fake(Behaviour {
        rpm: Some(2),
        ..Behaviour::default()
    })
    .await;
    let client = client(&fake);
    client.analyze(&wav(1, 5), "audio/wav").await.unwrap();
    client.analyze(&wav(1, 6), "audio/wav").await.unwrap();
    let err = client.analyze(&wav(1, 7), "audio/wav").await.unwrap_err();
    let Disposition::PauseFleet { pause } = err.disposition() else {
        panic!("expected a fleet pause, got {err}");
    };
    assert!(
        pause > Duration::from_secs(55) && pause <= Duration::from_secs(60),
        "{pause:?}"
    );
    assert_eq!(fake.stats().rate_limited, 1);
}

#[tokio::test]
async fn server_errors_are_transient() {
    for code in [500u16, 503, 504] {
        let err = error_with(Fault::Status(code)).await;
        assert!(
            matches!(err, GeminiError::Server { status, .. } if status == code),
            "{err}"
        );
        assert_eq!(err.disposition(), Disposition::Retry { after: None });
    }
}

#[tokio::test]
async fn timeouts_are_transient() {
    let fake = fake(Behaviour::default()).await;
    fake.push_faults([Fault::Delay(Duration::from_secs(5))]);
    let client = GeminiClient::new(GeminiConfig {
        request_timeout_s: 1,
        ..config_for(&fake)
    })
    .unwrap();
    let err = client.analyze(&wav(1, 8), "audio/wav").await.unwrap_err();
    assert_eq!(err.class(), "timeout", "{err}");
    assert!(matches!(err.disposition(), Disposition::Retry { .. }));
}

#[tokio::test]
async fn bad_key_is_fatal_and_never_printed() {
    let fake = fake(Behaviour::default()).await;
    let secret = "AIzaWrongKeyThatMustNotLeak";
    let client = GeminiClient::new(GeminiConfig {
        api_key: Secret::new(secret.to_owned()),
        ..config_for(&fake)
    })
    .unwrap();
    let err = client.analyze(&wav(1, 10), "audio/wav").await.unwrap_err();
    assert_eq!(err.class(), "invalid_api_key");
    assert_eq!(err.disposition(), Disposition::Fatal);
    for printed in [
        format!("{client:?}"),
        format!("{:?}", client.config()),
        format!("{err:?}"),
        err.to_string(),
    ] {
        assert!(!printed.contains(secret), "key leaked in {printed}");
    }
    assert_eq!(fake.stats().auth_failures, 1);
}

#[tokio::test]
async fn empty_key_is_a_config_error() {
    let err = GeminiClient::new(GeminiConfig::default()).unwrap_err();
    assert_eq!(err.disposition(), Disposition::Fatal);
}

#[tokio::test]
async fn unknown_model_is_fatal() {
    let fake = fake(Behaviour::default()).await;
    let client = GeminiClient::new(GeminiConfig {
        model: "gemini-0-nonexistent".to_owned(),
        ..config_for(&fake)
    })
    .unwrap();
    let err = client.analyze(&wav(1, 11), "audio/wav").await.unwrap_err();
    assert_eq!(err.class(), "model_not_found");
    assert_eq!(err.disposition(), Disposition::Fatal);
}

#[tokio::test]
async fn bad_mime_and_oversize_fail_the_item() {
    let fake = fake(Behaviour::default()).await;
    let err = client(&fake)
        .analyze(&wav(1, 12), "text/plain")
        .await
        .unwrap_err();
    assert_eq!(err.disposition(), Disposition::FailItem);
    let err = client(&fake).analyze(&[], "audio/wav").await.unwrap_err();
    assert_eq!(
        (err.class(), err.disposition()),
        ("empty_audio", Disposition::FailItem)
    );
    assert_eq!(fake.stats().generate_calls, 0, "rejected before any call");

    let small = FakeGemini::start(FakeConfig {
        max_request_bytes: 8_000,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let err = client(&small)
        .analyze(&wav(1, 13), "audio/wav")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GeminiError::InvalidRequest { status: 400, .. }),
        "{err}"
    );
    assert_eq!(err.disposition(), Disposition::FailItem);
}

#[tokio::test]
async fn blocked_prompt_is_named_and_retried() {
    let err = error_with(Fault::Blocked("PROHIBITED_CONTENT".to_owned())).await;
    assert!(matches!(&err, GeminiError::Blocked { reason } if reason == "PROHIBITED_CONTENT"));
    assert_eq!(err.disposition(), Disposition::Retry { after: None });
}

#[tokio::test]
async fn safety_and_max_tokens_without_parts_are_named() {
    let err = error_with(Fault::FinishSafety).await;
    assert_eq!(err.class(), "finish_safety");
    let err = error_with(Fault::FinishMaxTokens).await;
    assert_eq!(err.class(), "finish_max_tokens");
    assert_eq!(err.disposition(), Disposition::Retry { after: None });
}

#[tokio::test]
async fn tiny_output_budget_is_max_tokens() {
    let fake = fake(Behaviour::default()).await;
    let client = GeminiClient::new(GeminiConfig {
        max_output_tokens: 5,
        ..config_for(&fake)
    })
    .unwrap();
    let err = client.analyze(&wav(1, 14), "audio/wav").await.unwrap_err();
    assert_eq!(err.class(), "finish_max_tokens", "{err}");
}

#[tokio::test]
async fn invalid_answers_are_not_trusted() {
    for fault in [Fault::TruncatedJson, Fault::OutOfRange, Fault::UnknownEnum] {
        let err = error_with(fault.clone()).await;
        assert!(
            matches!(err, GeminiError::InvalidAnswer(_)),
            "{fault:?}: {err}"
        );
        assert_eq!(err.disposition(), Disposition::Retry { after: None });
    }
}

#[tokio::test]
async fn concurrent_calls_run_in_parallel_and_each_audio_is_paid_once() {
    let fake = fake(Behaviour {
        latency: fake_gemini::Latency::Fixed(Duration::from_millis(100)),
        ..Behaviour::default()
    })
    .await;
    let client = client(&fake);
    let audios: Vec<Vec<u8>> = (0..8).map(|i| wav(1, 100 + i)).collect();
    let results =
        futures::future::join_all(audios.iter().map(|a| client.analyze(a, "audio/wav"))).await;
    for (audio, r) in audios.iter().zip(results) {
        assert_matches_fake(&r.unwrap().result, audio);
    }
    let stats = fake.stats();
    assert!(stats.max_concurrent >= 2, "{}", stats.max_concurrent);
    assert_eq!(stats.max_calls_per_audio(), 1);
    assert_eq!(stats.calls_by_hash.len(), 8);
}

#[test]
fn echoed_keys_are_scrubbed_from_error_bodies() {
    let body = br#"{"error":{"code":400,"message":"Invalid API key: AIzaKEY","status":"INVALID_ARGUMENT"}}"#;
    let scrubbed = scrub_secret(body, "AIzaKEY");
    let text = String::from_utf8_lossy(&scrubbed);
    assert!(!text.contains("AIzaKEY"));
    assert!(text.contains("Invalid API key: [REDACTED]"));
    assert!(matches!(
        scrub_secret(b"nothing", "AIzaKEY"),
        std::borrow::Cow::Borrowed(_)
    ));
}

#[test]
fn upload_urls_must_stay_on_the_api_origin() {
    let base = Url::parse("https://generativelanguage.googleapis.com").unwrap();
    let ok =
        Url::parse("https://generativelanguage.googleapis.com/upload/v1beta/files?upload_id=x")
            .unwrap();
    let evil = Url::parse("https://evil.example/upload").unwrap();
    let http = Url::parse("http://generativelanguage.googleapis.com/upload").unwrap();
    assert!(same_origin(&ok, &base));
    assert!(!same_origin(&evil, &base));
    assert!(!same_origin(&http, &base));
    assert!(valid_file_name("files/abc-123"));
    assert!(!valid_file_name("files/../models"));
    assert!(!valid_file_name("files/"));
    assert!(!valid_file_name("operations/x"));
}
