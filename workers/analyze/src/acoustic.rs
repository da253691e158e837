//! The offline acoustic analyzer (`acoustic:1`): maps measured acoustic features
//! onto the six fields of an analysis result by fixed, documented rules, plus the
//! pre-filter that keeps silent or too-short audio away from a paid model.
//!
//! Pure: bytes or features in, an [`AnalysisOutcome`] out. It needs no network
//! and no API key, so it is the fallback analyzer and the one used in tests and
//! benchmarks.
//!
//! **What it cannot do.** It hears *how* something is said, never *what*: it
//! does not recognise words, so "pronunciation" is judged only from signal
//! clarity, voicing and speaking rate, and "emotion" only from loudness,
//! dynamics, pace and intonation. A fluent wrong answer scores like a fluent
//! right one.
//!
//! # Rules
//!
//! Features come from [`engage_audio::features`]. Let `ramp(x, a, b)` be
//! 0 at or below `a`, 1 at or above `b`, linear between; *speech* means at least
//! 0.1 s of voice activity.
//!
//! | component | definition |
//! |---|---|
//! | activity `A` | `ramp(active_ratio, 0.10, 0.60)` |
//! | loudness `L` | `ramp(active_rms_dbfs, −50, −25)` |
//! | intonation `I` | `ramp(pitch_variability_st, 0.5, 3.0)` (0 with no voiced frames) |
//! | dynamics `D` | `ramp(energy_variability_db, 2, 10)` |
//! | prosody `P` | `0.6·I + 0.4·D` |
//! | pace `R` | 1 for `syllable_rate_hz` in 2.5–7; falls linearly to 0 at 1 and at 10 |
//! | arousal `E` | `0.4·L + 0.3·D + 0.3·ramp(syllable_rate_hz, 3, 7)` |
//!
//! | field | rule (first match wins) |
//! |---|---|
//! | `audio_quality` | `distorted` if `clipping_ratio ≥ 0.01`; `poor` if no speech, `snr_db < 15` or `active_rms_dbfs < −45`; else `good` |
//! | `engagement_score` | `100 · (0.35·A + 0.15·L + 0.40·P + 0.10·R)`, 0 without speech |
//! | `engagement_state` | `disengaged` without speech; `engaged` if score ≥ 65; `neutral` if ≥ 40; else `disengaged` |
//! | `emotional_score` | `100 · (0.35·C + 0.25·S + 0.25·F + 0.15·voiced_ratio)`, 0 without speech, where composure `C = 1 − |E − 0.6| / 0.6`, steadiness `S = 1 − ramp(pitch_variability_st, 4, 8)`, fluency `F = min(R, ramp(active_ratio, 0.2, 0.6))` |
//! | `dominant_emotion` | `neutral` without speech or when `snr_db < 15` (noise masks the cues); `excited` if `E ≥ 0.8` and `I ≥ 0.7`; `happy` if `E ≥ 0.5` and `I ≥ 0.4`; `frustrated` if `E ≥ 0.7` and `I < 0.2` (loud, fast, flat); `confused` if `active_ratio < 0.35` (long hesitations); `bored` if `E < 0.35` and `I < 0.25`; `calm` if `E < 0.5`; else `neutral` |
//! | `pronunciation_quality` | `poor` if speech is under 0.3 s, `snr_db < 10`, `clipping_ratio ≥ 0.05`, `voiced_ratio < 0.3` or `syllable_rate_hz` outside 1–10; `good` if `snr_db ≥ 20`, `clipping_ratio < 0.01`, `voiced_ratio ≥ 0.6`, `syllable_rate_hz` in 2–7 and `active_rms_dbfs ≥ −40`; else `average` |
//!
//! Scores are rounded to one decimal. Silence therefore yields engagement 0,
//! `disengaged`, `neutral` emotion, `poor` pronunciation and `poor` audio.
//!
//! # Pre-filter
//!
//! [`prefilter`] answers whether audio is worth sending to a paid model:
//! `too_short` when shorter than [`PrefilterConfig::min_duration_s`] (0.3 s),
//! else `silent` when it has less than [`PrefilterConfig::min_active_s`] (0.1 s)
//! of voice activity (digital silence, a quiet room, or steady noise without
//! speech). Undecodable audio never reaches it: decoding fails first with a named
//! [`AudioError`].

#![forbid(unsafe_code)]

use engage_audio::{self as audio, AcousticFeatures, AudioError};
use engage_model::{
    AnalysisOutcome, AnalysisResult, AudioQuality, DominantEmotion, EngagementState,
    PronunciationQuality,
};

/// The analyzer id written into every result (bump on any rule change: results
/// are cached by analyzer version).
pub const ACOUSTIC_VERSION: &str = "acoustic:1";

/// Pre-filter reason: less than `min_active_s` of voice activity.
pub const REASON_SILENT: &str = "silent";
/// Pre-filter reason: shorter than `min_duration_s`.
pub const REASON_TOO_SHORT: &str = "too_short";

/// Seconds of voice activity below which a clip counts as having no speech.
const MIN_SPEECH_S: f64 = 0.1;

/// Thresholds of the pre-filter.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefilterConfig {
    /// Clips shorter than this (seconds) are `too_short` (default 0.3).
    pub min_duration_s: f64,
    /// Clips with less voice activity than this (seconds) are `silent` (default 0.1).
    pub min_active_s: f64,
}

impl Default for PrefilterConfig {
    fn default() -> Self {
        Self {
            min_duration_s: 0.3,
            min_active_s: MIN_SPEECH_S,
        }
    }
}

/// Whether audio with these features should skip a paid model: `Some((reason,
/// detail))` with reason [`REASON_TOO_SHORT`] or [`REASON_SILENT`], `None` when it
/// is worth analysing.
pub fn prefilter(f: &AcousticFeatures, cfg: &PrefilterConfig) -> Option<(&'static str, String)> {
    if f.duration_s < cfg.min_duration_s {
        return Some((
            REASON_TOO_SHORT,
            format!(
                "{:.2} s is shorter than the {:.2} s minimum",
                f.duration_s, cfg.min_duration_s
            ),
        ));
    }
    if f.active_s() < cfg.min_active_s {
        return Some((
            REASON_SILENT,
            format!(
                "{:.2} s of voice activity in {:.2} s (level {:.1} dBFS, noise floor {:.1} dBFS)",
                f.active_s(),
                f.duration_s,
                f.rms_dbfs,
                f.noise_floor_dbfs
            ),
        ));
    }
    None
}

/// Decodes audio bytes and analyzes them; a decoding failure becomes
/// [`AnalysisOutcome::Failed`] with the [`AudioError::name`] as reason.
pub fn analyze_bytes(bytes: &[u8], hint: Option<&str>) -> AnalysisOutcome {
    match audio::decode(bytes, hint) {
        Ok(decoded) => analyze_features(&audio::features(&decoded)),
        Err(e) => failed(&e),
    }
}

/// Bytes of memory [`analyze_bytes`] can hold at its peak on `bytes`: the
/// bytes plus the decode's bound (what an analyze job reserves in the
/// worker's audio budget).
pub fn acoustic_memory_need(bytes: &[u8]) -> u64 {
    bytes.len() as u64 + audio::decode_memory_bound(bytes, &audio::DecodeOptions::default())
}

/// The failed outcome for an audio error.
pub fn failed(e: &AudioError) -> AnalysisOutcome {
    AnalysisOutcome::Failed {
        reason: e.name().to_string(),
        detail: e.to_string(),
    }
}

/// Applies the rules of the module documentation. Always `Ok`: every feature set
/// (including silence) has a defined answer.
pub fn analyze_features(f: &AcousticFeatures) -> AnalysisOutcome {
    AnalysisOutcome::Ok(score(f))
}

/// Linear ramp: 0 at or below `lo`, 1 at or above `hi`.
fn ramp(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        return 0.0;
    }
    ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
}

/// The intermediate components of the rules, each in 0–1.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Components {
    speech: bool,
    activity: f64,
    loudness: f64,
    intonation: f64,
    dynamics: f64,
    prosody: f64,
    pace: f64,
    arousal: f64,
}

fn components(f: &AcousticFeatures) -> Components {
    let intonation = f.pitch_variability_st.map_or(0.0, |v| ramp(v, 0.5, 3.0));
    let dynamics = ramp(f.energy_variability_db, 2.0, 10.0);
    let loudness = ramp(f.active_rms_dbfs, -50.0, -25.0);
    let rate = f.syllable_rate_hz;
    let pace = if rate < 2.5 {
        ramp(rate, 1.0, 2.5)
    } else {
        1.0 - ramp(rate, 7.0, 10.0)
    };
    Components {
        speech: f.active_s() >= MIN_SPEECH_S,
        activity: ramp(f.active_ratio, 0.10, 0.60),
        loudness,
        intonation,
        dynamics,
        prosody: 0.6 * intonation + 0.4 * dynamics,
        pace,
        arousal: 0.4 * loudness + 0.3 * dynamics + 0.3 * ramp(rate, 3.0, 7.0),
    }
}

fn score(f: &AcousticFeatures) -> AnalysisResult {
    let c = components(f);
    AnalysisResult {
        emotional_score: round1(emotional_score(f, &c)),
        engagement_score: round1(engagement_score(&c)),
        dominant_emotion: dominant_emotion(f, &c),
        engagement_state: engagement_state(&c),
        pronunciation_quality: pronunciation(f, &c),
        audio_quality: audio_quality(f, &c),
        analyzer: ACOUSTIC_VERSION.to_string(),
    }
}

fn round1(x: f64) -> f64 {
    ((x * 10.0).round() / 10.0).clamp(0.0, 100.0)
}

fn audio_quality(f: &AcousticFeatures, c: &Components) -> AudioQuality {
    if f.clipping_ratio >= 0.01 {
        AudioQuality::Distorted
    } else if !c.speech || f.snr_db < 15.0 || f.active_rms_dbfs < -45.0 {
        AudioQuality::Poor
    } else {
        AudioQuality::Good
    }
}

fn engagement_score(c: &Components) -> f64 {
    if !c.speech {
        return 0.0;
    }
    100.0 * (0.35 * c.activity + 0.15 * c.loudness + 0.40 * c.prosody + 0.10 * c.pace)
}

fn engagement_state(c: &Components) -> EngagementState {
    let s = round1(engagement_score(c));
    if !c.speech {
        EngagementState::Disengaged
    } else if s >= 65.0 {
        EngagementState::Engaged
    } else if s >= 40.0 {
        EngagementState::Neutral
    } else {
        EngagementState::Disengaged
    }
}

fn emotional_score(f: &AcousticFeatures, c: &Components) -> f64 {
    if !c.speech {
        return 0.0;
    }
    let composure = (1.0 - (c.arousal - 0.6).abs() / 0.6).clamp(0.0, 1.0);
    let steadiness = 1.0 - f.pitch_variability_st.map_or(0.0, |v| ramp(v, 4.0, 8.0));
    let fluency = c.pace.min(ramp(f.active_ratio, 0.2, 0.6));
    100.0 * (0.35 * composure + 0.25 * steadiness + 0.25 * fluency + 0.15 * f.voiced_ratio)
}

fn dominant_emotion(f: &AcousticFeatures, c: &Components) -> DominantEmotion {
    let (e, i) = (c.arousal, c.intonation);
    if !c.speech || f.snr_db < 15.0 {
        DominantEmotion::Neutral
    } else if e >= 0.8 && i >= 0.7 {
        DominantEmotion::Excited
    } else if e >= 0.5 && i >= 0.4 {
        DominantEmotion::Happy
    } else if e >= 0.7 && i < 0.2 {
        DominantEmotion::Frustrated
    } else if f.active_ratio < 0.35 {
        DominantEmotion::Confused
    } else if e < 0.35 && i < 0.25 {
        DominantEmotion::Bored
    } else if e < 0.5 {
        DominantEmotion::Calm
    } else {
        DominantEmotion::Neutral
    }
}

fn pronunciation(f: &AcousticFeatures, c: &Components) -> PronunciationQuality {
    let rate = f.syllable_rate_hz;
    if f.active_s() < 0.3
        || f.snr_db < 10.0
        || f.clipping_ratio >= 0.05
        || f.voiced_ratio < 0.3
        || !(1.0..=10.0).contains(&rate)
    {
        PronunciationQuality::Poor
    } else if f.snr_db >= 20.0
        && f.clipping_ratio < 0.01
        && f.voiced_ratio >= 0.6
        && (2.0..=7.0).contains(&rate)
        && f.active_rms_dbfs >= -40.0
        && c.speech
    {
        PronunciationQuality::Good
    } else {
        PronunciationQuality::Average
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/audio")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn analyze_fixture(name: &str) -> AnalysisOutcome {
        analyze_bytes(&fixture(name), name.rsplit_once('.').map(|(_, e)| e))
    }

    fn ok(name: &str) -> AnalysisResult {
        match analyze_fixture(name) {
            AnalysisOutcome::Ok(r) => {
                assert_eq!(r.validate(), Ok(()), "{name}");
                r
            }
            AnalysisOutcome::Failed { reason, detail } => panic!("{name}: {reason}: {detail}"),
        }
    }

    /// Clean speech features, as measured on `speech_en_us.wav`.
    fn speech() -> AcousticFeatures {
        AcousticFeatures {
            duration_s: 2.75,
            rms_dbfs: -20.6,
            active_rms_dbfs: -20.0,
            peak: 0.8,
            clipping_ratio: 0.0,
            noise_floor_dbfs: -96.0,
            speech_level_dbfs: -16.2,
            snr_db: 79.9,
            active_ratio: 0.84,
            energy_variability_db: 8.7,
            voiced_ratio: 0.9,
            pitch_hz: Some(102.8),
            pitch_variability_st: Some(2.06),
            zero_crossing_rate: 0.17,
            syllable_rate_hz: 4.35,
        }
    }

    #[test]
    fn clean_speech_in_every_format_is_good_and_engaged() {
        for name in [
            "speech_en_us.wav",
            "speech_en_gb_fast.wav",
            "speech_female.wav",
            "speech_slow.wav",
            "speech_8k.wav",
            "speech_44k.wav",
            "speech_stereo.wav",
            "speech.flac",
            "speech.mp3",
            "speech.ogg",
            "speech.m4a",
        ] {
            let r = ok(name);
            assert_eq!(r.audio_quality, AudioQuality::Good, "{name}: {r:?}");
            assert!(
                matches!(
                    r.engagement_state,
                    EngagementState::Engaged | EngagementState::Neutral
                ),
                "{name}: {r:?}"
            );
            assert!(r.engagement_score >= 40.0, "{name}: {r:?}");
            assert_ne!(
                r.pronunciation_quality,
                PronunciationQuality::Poor,
                "{name}: {r:?}"
            );
            assert_eq!(r.analyzer, ACOUSTIC_VERSION);
        }
    }

    #[test]
    fn the_same_speech_scores_alike_in_every_format() {
        let reference = ok("speech_en_us.wav");
        for name in ["speech.flac", "speech.mp3", "speech.ogg", "speech.m4a"] {
            let r = ok(name);
            assert!(
                (r.engagement_score - reference.engagement_score).abs() < 8.0,
                "{name}: {r:?}"
            );
            assert!(
                (r.emotional_score - reference.emotional_score).abs() < 8.0,
                "{name}: {r:?}"
            );
        }
    }

    #[test]
    fn silence_is_disengaged_and_poor() {
        for name in ["silence.wav", "noise.wav"] {
            let r = ok(name);
            assert_eq!(r.engagement_state, EngagementState::Disengaged, "{name}");
            assert_eq!(r.audio_quality, AudioQuality::Poor, "{name}");
            assert_eq!(r.engagement_score, 0.0, "{name}");
            assert_eq!(r.dominant_emotion, DominantEmotion::Neutral, "{name}");
            assert_eq!(
                r.pronunciation_quality,
                PronunciationQuality::Poor,
                "{name}"
            );
        }
    }

    #[test]
    fn clipped_speech_is_distorted() {
        let r = ok("clipped_speech.wav");
        assert_eq!(r.audio_quality, AudioQuality::Distorted, "{r:?}");
        assert_eq!(r.pronunciation_quality, PronunciationQuality::Poor, "{r:?}");
    }

    #[test]
    fn noisy_and_quiet_speech_are_poor() {
        for name in ["noisy_speech.wav", "quiet_speech.wav"] {
            let r = ok(name);
            assert_eq!(r.audio_quality, AudioQuality::Poor, "{name}: {r:?}");
            assert_eq!(
                r.pronunciation_quality,
                PronunciationQuality::Poor,
                "{name}: {r:?}"
            );
        }
        // Noise masks the emotional cues.
        assert_eq!(
            ok("noisy_speech.wav").dominant_emotion,
            DominantEmotion::Neutral
        );
    }

    #[test]
    fn undecodable_audio_fails_with_named_reasons() {
        for (name, reason) in [
            ("empty.wav", "audio_empty"),
            ("truncated.wav", "audio_truncated"),
            ("truncated.mp3", "audio_truncated"),
            ("not_audio.wav", "audio_unrecognised"),
        ] {
            match analyze_fixture(name) {
                AnalysisOutcome::Failed { reason: r, detail } => {
                    assert_eq!(r, reason, "{name}");
                    assert!(!detail.is_empty());
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // Pseudo-random bytes (fixed seed) are not audio.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect();
        assert!(matches!(
            analyze_bytes(&noise, None),
            AnalysisOutcome::Failed { .. }
        ));
    }

    #[test]
    fn monotone_speech_is_less_engaging_than_lively_speech() {
        let lively = speech();
        let monotone = AcousticFeatures {
            pitch_variability_st: Some(0.3),
            energy_variability_db: 2.5,
            ..speech()
        };
        let (a, b) = (score(&lively), score(&monotone));
        assert!(
            a.engagement_score > b.engagement_score + 20.0,
            "{a:?} vs {b:?}"
        );
        assert_eq!(a.engagement_state, EngagementState::Engaged);
        assert_eq!(b.engagement_state, EngagementState::Neutral);
    }

    #[test]
    fn hesitant_speech_is_less_engaging_and_confused() {
        let hesitant = AcousticFeatures {
            active_ratio: 0.2,
            ..speech()
        };
        let r = score(&hesitant);
        assert!(r.engagement_score < score(&speech()).engagement_score);
        let flat_hesitant = AcousticFeatures {
            pitch_variability_st: Some(0.6),
            energy_variability_db: 3.0,
            syllable_rate_hz: 2.0,
            ..hesitant
        };
        assert_eq!(
            score(&flat_hesitant).dominant_emotion,
            DominantEmotion::Confused
        );
    }

    #[test]
    fn emotion_follows_arousal_and_intonation() {
        let excited = AcousticFeatures {
            pitch_variability_st: Some(4.0),
            energy_variability_db: 12.0,
            syllable_rate_hz: 6.5,
            ..speech()
        };
        assert_eq!(score(&excited).dominant_emotion, DominantEmotion::Excited);
        assert_eq!(score(&speech()).dominant_emotion, DominantEmotion::Happy);
        let flat_loud_fast = AcousticFeatures {
            pitch_variability_st: Some(0.4),
            energy_variability_db: 9.0,
            syllable_rate_hz: 6.5,
            ..speech()
        };
        assert_eq!(
            score(&flat_loud_fast).dominant_emotion,
            DominantEmotion::Frustrated
        );
        let soft_flat_slow = AcousticFeatures {
            active_rms_dbfs: -44.0,
            pitch_variability_st: Some(0.6),
            energy_variability_db: 3.0,
            syllable_rate_hz: 2.5,
            ..speech()
        };
        assert_eq!(
            score(&soft_flat_slow).dominant_emotion,
            DominantEmotion::Bored
        );
        let soft_lilting = AcousticFeatures {
            active_rms_dbfs: -40.0,
            pitch_variability_st: Some(1.2),
            energy_variability_db: 4.0,
            syllable_rate_hz: 3.0,
            ..speech()
        };
        assert_eq!(score(&soft_lilting).dominant_emotion, DominantEmotion::Calm);
    }

    #[test]
    fn composed_speech_manages_emotion_better_than_erratic_speech() {
        let erratic = AcousticFeatures {
            pitch_variability_st: Some(9.0),
            syllable_rate_hz: 11.0,
            ..speech()
        };
        assert!(score(&speech()).emotional_score > score(&erratic).emotional_score + 20.0);
    }

    #[test]
    fn prefilter_skips_short_and_silent_audio_only() {
        let cfg = PrefilterConfig::default();
        let probe = |name: &str| {
            audio::probe(&fixture(name), None).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert_eq!(prefilter(&probe("speech_en_us.wav").features, &cfg), None);
        assert_eq!(prefilter(&probe("noisy_speech.wav").features, &cfg), None);
        for name in ["silence.wav", "noise.wav"] {
            let (reason, detail) = prefilter(&probe(name).features, &cfg).expect(name);
            assert_eq!(reason, REASON_SILENT, "{name}");
            assert!(detail.contains("voice activity"));
        }
        let short = AcousticFeatures {
            duration_s: 0.25,
            ..speech()
        };
        assert_eq!(prefilter(&short, &cfg).map(|p| p.0), Some(REASON_TOO_SHORT));
        let strict = PrefilterConfig {
            min_duration_s: 3.0,
            ..cfg
        };
        assert_eq!(
            prefilter(&speech(), &strict).map(|p| p.0),
            Some(REASON_TOO_SHORT)
        );
    }

    fn any_features() -> impl Strategy<Value = AcousticFeatures> {
        (
            (
                0.0f64..30.0,
                -100.0f64..0.0,
                -100.0f64..0.0,
                0.0f64..2.0,
                0.0f64..1.0,
            ),
            (
                -100.0f64..0.0,
                0.0f64..100.0,
                0.0f64..1.0,
                0.0f64..30.0,
                0.0f64..1.0,
            ),
            (
                proptest::option::of(75.0f64..400.0),
                proptest::option::of(0.0f64..12.0),
                0.0f64..1.0,
                0.0f64..40.0,
            ),
        )
            .prop_map(
                |((d, rms, arms, peak, clip), (nf, snr, act, ev, vr), (p, pv, zcr, syl))| {
                    AcousticFeatures {
                        duration_s: d,
                        rms_dbfs: rms,
                        active_rms_dbfs: arms,
                        peak,
                        clipping_ratio: clip,
                        noise_floor_dbfs: nf,
                        speech_level_dbfs: (nf + snr).min(0.0),
                        snr_db: snr,
                        active_ratio: act,
                        energy_variability_db: ev,
                        voiced_ratio: vr,
                        pitch_hz: p,
                        pitch_variability_st: pv,
                        zero_crossing_rate: zcr,
                        syllable_rate_hz: syl,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn every_feature_set_gets_a_valid_result(f in any_features()) {
            let AnalysisOutcome::Ok(r) = analyze_features(&f) else {
                return Err(TestCaseError::fail("acoustic analysis always succeeds"));
            };
            prop_assert_eq!(r.validate(), Ok(()));
            prop_assert_eq!(r.analyzer.as_str(), ACOUSTIC_VERSION);
            if f.active_s() < MIN_SPEECH_S {
                prop_assert_eq!(r.engagement_state, EngagementState::Disengaged);
                prop_assert_eq!(r.audio_quality == AudioQuality::Good, false);
            }
            if f.clipping_ratio >= 0.01 {
                prop_assert_eq!(r.audio_quality, AudioQuality::Distorted);
            }
        }

        #[test]
        fn more_voice_activity_never_lowers_engagement(f in any_features(), extra in 0.0f64..0.5) {
            let more = AcousticFeatures { active_ratio: (f.active_ratio + extra).min(1.0), ..f.clone() };
            prop_assert!(score(&more).engagement_score >= score(&f).engagement_score);
        }
    }
}
