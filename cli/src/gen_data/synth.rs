//! Speech-like audio synthesis for generated data: a glottal pulse train with a
//! moving pitch, shaped by three formant resonators per vowel, cut into
//! syllables by an amplitude envelope, with consonant-like noise bursts, phrase
//! pauses and a faint background noise floor.
//!
//! Not intelligible speech, but it has what the acoustic analyzer measures:
//! voicing and a pitch in the human range, intonation, loudness dynamics, a
//! syllable rate and pauses. [`Voice`] parameters vary these per learner so
//! that scores differ. Pure: samples in memory, randomness from the caller's RNG.

#![forbid(unsafe_code)]

use std::f64::consts::PI;

use rand::Rng;

/// Sample rate of every generated clip (Hz).
pub(crate) const SAMPLE_RATE: u32 = 16_000;
const SR: f64 = SAMPLE_RATE as f64;

/// Vowel formants (F1, F2, F3) in Hz: a, e, i, o, u, ə.
const VOWELS: [[f64; 3]; 6] = [
    [730.0, 1090.0, 2440.0],
    [530.0, 1840.0, 2480.0],
    [270.0, 2290.0, 3010.0],
    [570.0, 840.0, 2410.0],
    [300.0, 870.0, 2240.0],
    [500.0, 1500.0, 2500.0],
];
/// Formant bandwidths in Hz.
const BANDWIDTHS: [f64; 3] = [80.0, 100.0, 150.0];

/// How a (synthetic) learner speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Voice {
    /// Base pitch in Hz (≈ 90–140 for lower voices, 170–260 for higher ones).
    pub f0_hz: f64,
    /// 0–1: pitch-accent range and loudness variation (monotone … lively).
    pub liveliness: f64,
    /// RMS level of the voiced parts, dBFS.
    pub level_dbfs: f64,
    /// Syllables per second while speaking.
    pub rate_syll_s: f64,
    /// Probability of a phrase pause after each syllable.
    pub pause_prob: f64,
}

/// Why a clip could not be encoded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SynthError {
    /// The WAV encoder failed.
    #[error(transparent)]
    Wav(#[from] engage_audio::wav::WavError),
}

/// Synthesises `duration_s` seconds of speech-like audio.
pub(crate) fn speech(voice: &Voice, duration_s: f64, rng: &mut impl Rng) -> Vec<f32> {
    let n = (duration_s.max(0.0) * SR) as usize;
    let mut out = vec![0.0f64; n];
    let mut voiced_mask = vec![false; n];
    let lead = rng.random_range(0.08..0.25);
    let tail = rng.random_range(0.10..0.20);
    let end = (duration_s - tail).max(0.0);
    let live = voice.liveliness.clamp(0.0, 1.0);
    let mut t = lead;
    let mut phrase_pos = 0.0f64;
    while t + 0.12 < end {
        let syll = (1.0 / voice.rate_syll_s.max(0.5)) * rng.random_range(0.7..1.25);
        let nucleus = (syll * 0.65).min(end - t);
        // Pitch: accent per syllable, declination over the phrase, a glide inside.
        let accent_st = live * 4.0 * rng.random_range(-1.0..1.0);
        let declination_st = -2.0 * phrase_pos.min(1.0);
        let f_start = voice.f0_hz * 2f64.powf((accent_st + declination_st) / 12.0);
        let glide_st = live * rng.random_range(-1.5..1.5);
        let f_end = f_start * 2f64.powf(glide_st / 12.0);
        let stress = (1.0 + live * 0.6 * rng.random_range(-1.0..1.0)).clamp(0.25, 1.8);
        let vowel = VOWELS[rng.random_range(0..VOWELS.len())];
        let seg = vowel_segment(nucleus, f_start, f_end, vowel, stress);
        let start = (t * SR) as usize;
        for (i, v) in seg.iter().enumerate() {
            if let Some(slot) = out.get_mut(start + i) {
                *slot += v;
                voiced_mask[start + i] = true;
            }
        }
        // A consonant-like noise burst in the gap, sometimes.
        let gap = syll - nucleus;
        if rng.random_bool(0.4) {
            let burst_len = ((gap * 0.6) * SR) as usize;
            let b0 = start + seg.len();
            for i in 0..burst_len {
                let env = (PI * i as f64 / burst_len.max(1) as f64).sin();
                if let Some(slot) = out.get_mut(b0 + i) {
                    *slot += 0.08 * stress * env * rng.random_range(-1.0..1.0);
                }
            }
        }
        t += syll;
        phrase_pos += syll / 1.5;
        if rng.random_bool(voice.pause_prob.clamp(0.0, 1.0)) {
            t += rng.random_range(0.25..0.6);
            phrase_pos = 0.0;
        }
    }
    // Scale the voiced parts to the requested level.
    let (sum, count) = out
        .iter()
        .zip(&voiced_mask)
        .filter(|(_, m)| **m)
        .fold((0.0, 0usize), |(s, c), (v, _)| (s + v * v, c + 1));
    let rms = if count > 0 {
        (sum / count as f64).sqrt()
    } else {
        0.0
    };
    let gain = if rms > 0.0 {
        10f64.powf(voice.level_dbfs / 20.0) / rms
    } else {
        0.0
    };
    let floor = 10f64.powf(-68.0 / 20.0) * 3f64.sqrt();
    out.iter()
        .map(|v| (v * gain + floor * rng.random_range(-1.0..1.0)) as f32)
        .collect()
}

/// One voiced nucleus: Rosenberg glottal pulses (differentiated: lip radiation)
/// through a cascade of formant resonators, under a raised-cosine envelope.
fn vowel_segment(dur_s: f64, f_start: f64, f_end: f64, formants: [f64; 3], amp: f64) -> Vec<f64> {
    let n = (dur_s * SR) as usize;
    let mut res: Vec<Resonator> = formants
        .iter()
        .zip(BANDWIDTHS)
        .map(|(&f, bw)| Resonator::new(f, bw))
        .collect();
    let attack = (0.025 * SR) as usize;
    let release = (0.04 * SR) as usize;
    let mut phase = 0.0f64;
    let mut prev = 0.0f64;
    let mut seg = Vec::with_capacity(n);
    for i in 0..n {
        let frac = i as f64 / n.max(1) as f64;
        let f0 = f_start + (f_end - f_start) * frac;
        phase = (phase + f0 / SR).fract();
        let g = rosenberg(phase);
        let mut x = g - prev;
        prev = g;
        for r in &mut res {
            x = r.step(x);
        }
        let env = if i < attack {
            0.5 * (1.0 - (PI * i as f64 / attack as f64).cos())
        } else if i + release > n {
            0.5 * (1.0 - (PI * (n - i) as f64 / release as f64).cos())
        } else {
            1.0
        };
        seg.push(x * env * amp);
    }
    seg
}

/// Rosenberg glottal flow over one period (`phase` in 0–1): opening for 40 %,
/// closing for 16 %, closed for the rest.
fn rosenberg(phase: f64) -> f64 {
    const OPEN: f64 = 0.40;
    const CLOSE: f64 = 0.16;
    if phase < OPEN {
        0.5 * (1.0 - (PI * phase / OPEN).cos())
    } else if phase < OPEN + CLOSE {
        (PI * (phase - OPEN) / (2.0 * CLOSE)).cos()
    } else {
        0.0
    }
}

/// Klatt's two-pole resonator (unity gain at DC).
struct Resonator {
    a: f64,
    b: f64,
    c: f64,
    y1: f64,
    y2: f64,
}

impl Resonator {
    fn new(freq: f64, bw: f64) -> Self {
        let c = -(-2.0 * PI * bw / SR).exp();
        let b = 2.0 * (-PI * bw / SR).exp() * (2.0 * PI * freq / SR).cos();
        Self {
            a: 1.0 - b - c,
            b,
            c,
            y1: 0.0,
            y2: 0.0,
        }
    }

    fn step(&mut self, x: f64) -> f64 {
        let y = self.a * x + self.b * self.y1 + self.c * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// A silent recording: digital zeros, or a faint microphone hiss at −70 dBFS.
pub(crate) fn silence(duration_s: f64, hiss: bool, rng: &mut impl Rng) -> Vec<f32> {
    let n = (duration_s.max(0.0) * SR) as usize;
    if !hiss {
        return vec![0.0; n];
    }
    let amp = 10f64.powf(-70.0 / 20.0) * 3f64.sqrt();
    (0..n)
        .map(|_| (amp * rng.random_range(-1.0..1.0)) as f32)
        .collect()
}

/// Drives the clip `gain_db` louder and hard-clips it at full scale.
pub(crate) fn clip(samples: &mut [f32], gain_db: f64) {
    let g = 10f64.powf(gain_db / 20.0) as f32;
    for s in samples {
        *s = (*s * g).clamp(-1.0, 1.0);
    }
}

/// Adds white noise whose RMS is `snr_db` below `signal_dbfs`.
pub(crate) fn add_noise(samples: &mut [f32], signal_dbfs: f64, snr_db: f64, rng: &mut impl Rng) {
    let amp = 10f64.powf((signal_dbfs - snr_db) / 20.0) * 3f64.sqrt();
    for s in samples {
        *s += (amp * rng.random_range(-1.0..1.0)) as f32;
    }
}

/// Encodes mono samples as a 16-bit PCM WAV file (values clamped to full scale).
pub(crate) fn to_wav(samples: &[f32]) -> Result<Vec<u8>, SynthError> {
    let pcm: Vec<i16> = samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect();
    Ok(engage_audio::wav::encode_pcm16_mono(SAMPLE_RATE, &pcm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_analyze::acoustic::analyze_bytes;
    use engage_audio as audio;
    use engage_model::{AnalysisOutcome, AudioQuality, EngagementState};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn voice(liveliness: f64) -> Voice {
        Voice {
            f0_hz: 120.0,
            liveliness,
            level_dbfs: -20.0,
            rate_syll_s: 4.0,
            pause_prob: 0.1,
        }
    }

    fn analyze(samples: &[f32]) -> engage_model::AnalysisResult {
        match analyze_bytes(&to_wav(samples).expect("wav"), Some("wav")) {
            AnalysisOutcome::Ok(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wav_round_trips_through_the_decoder() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x = speech(&voice(0.5), 2.0, &mut rng);
        let bytes = to_wav(&x).expect("wav");
        let d = audio::decode(&bytes, Some("wav")).expect("decode");
        assert_eq!(
            (d.sample_rate, d.channels, d.samples.len()),
            (16_000, 1, 32_000)
        );
    }

    #[test]
    fn synthetic_speech_looks_like_speech_to_the_analyzer() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let x = speech(
            &Voice {
                f0_hz: 210.0,
                ..voice(0.6)
            },
            2.5,
            &mut rng,
        );
        let f = audio::features_of(&x, SAMPLE_RATE);
        let pitch = f.pitch_hz.expect("voiced");
        assert!((170.0..250.0).contains(&pitch), "{f:?}");
        assert!(f.voiced_ratio > 0.5 && f.active_ratio > 0.4, "{f:?}");
        assert!((2.0..7.0).contains(&f.syllable_rate_hz), "{f:?}");
        assert!((f.active_rms_dbfs - -20.0).abs() < 4.0, "{f:?}");
        let r = analyze(&x);
        assert_eq!(r.audio_quality, AudioQuality::Good, "{r:?}");
        assert_ne!(r.engagement_state, EngagementState::Disengaged, "{r:?}");
    }

    #[test]
    fn liveliness_and_pauses_move_the_engagement_score() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let lively = analyze(&speech(&voice(0.9), 3.0, &mut rng));
        let flat = analyze(&speech(
            &Voice {
                pause_prob: 0.5,
                level_dbfs: -34.0,
                ..voice(0.05)
            },
            3.0,
            &mut rng,
        ));
        assert!(
            lively.engagement_score > flat.engagement_score + 15.0,
            "{lively:?} vs {flat:?}"
        );
    }

    #[test]
    fn degraded_clips_are_recognised() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for hiss in [false, true] {
            let r = analyze(&silence(1.5, hiss, &mut rng));
            assert_eq!(r.engagement_state, EngagementState::Disengaged);
            assert_eq!(r.audio_quality, AudioQuality::Poor);
        }
        let mut x = speech(&voice(0.5), 2.0, &mut rng);
        clip(&mut x, 18.0);
        assert_eq!(analyze(&x).audio_quality, AudioQuality::Distorted);
        let mut x = speech(&voice(0.5), 2.0, &mut rng);
        add_noise(&mut x, -20.0, 3.0, &mut rng);
        assert_eq!(analyze(&x).audio_quality, AudioQuality::Poor);
    }

    #[test]
    fn synthesis_is_deterministic_for_a_seed() {
        let a = speech(&voice(0.5), 1.0, &mut ChaCha8Rng::seed_from_u64(9));
        let b = speech(&voice(0.5), 1.0, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
    }
}
