//! Acoustic features of a mono recording, computed from its samples by
//! frame-based analysis (25 ms frames every 10 ms).
//!
//! Levels are in dBFS relative to a full-scale *square* wave (a sample RMS of
//! 1.0 is 0 dBFS, a full-scale sine is −3 dBFS); digital silence is reported as
//! [`LEVEL_FLOOR_DBFS`]. Every value is finite and rounded to 6 decimals, so the
//! struct always serialises to valid JSON and reads back bit-for-bit.
//!
//! The features describe the *sound*, not the words: nothing here recognises
//! speech content.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::decode::DecodedAudio;

/// Analysis frame length in seconds.
pub const FRAME_S: f64 = 0.025;
/// Hop between analysis frames in seconds.
pub const HOP_S: f64 = 0.010;
/// The lowest level reported (digital silence), in dBFS.
pub const LEVEL_FLOOR_DBFS: f64 = -100.0;
/// A sample with `|x|` at or above this is at full scale (clipped).
pub const CLIP_LEVEL: f32 = 0.999;
/// A frame is *active* (voice activity) when its level is at least this many dB
/// above the noise floor …
pub const ACTIVE_MARGIN_DB: f64 = 6.0;
/// … and at least this loud in absolute terms (dBFS).
pub const ACTIVE_MIN_DBFS: f64 = -55.0;
/// Lowest pitch searched, in Hz.
pub const PITCH_MIN_HZ: f64 = 75.0;
/// Highest pitch searched, in Hz.
pub const PITCH_MAX_HZ: f64 = 400.0;
/// Minimum normalised autocorrelation for a frame to count as voiced.
pub const VOICING_THRESHOLD: f64 = 0.6;
/// A syllable nucleus is a rise of at least this many dB in the smoothed level
/// envelope (and a fall of as much before the next one counts).
pub(crate) const SYLLABLE_PROMINENCE_DB: f64 = 4.0;

/// The acoustic description of one recording. All levels in dBFS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcousticFeatures {
    /// Length of the recording in seconds.
    pub duration_s: f64,
    /// Overall RMS level of all samples, dBFS (≥ [`LEVEL_FLOOR_DBFS`]).
    pub rms_dbfs: f64,
    /// RMS level over the active (voice) frames only, dBFS; the floor when no frame is active.
    pub active_rms_dbfs: f64,
    /// Largest absolute sample value (1.0 = full scale; decoded floats may exceed it).
    pub peak: f64,
    /// Fraction of samples that are clipped: `|x| ≥` [`CLIP_LEVEL`], or part of a
    /// run of three or more identical samples with `|x| ≥ 0.5` (a flat top left by
    /// clipping that was later scaled down).
    pub clipping_ratio: f64,
    /// Noise floor: the 10th percentile of frame levels, dBFS.
    pub noise_floor_dbfs: f64,
    /// Speech level: the 90th percentile of frame levels, dBFS.
    pub speech_level_dbfs: f64,
    /// Signal-to-noise estimate: speech level minus noise floor, clamped to 0–100 dB.
    pub snr_db: f64,
    /// Voice activity: fraction of frames at least [`ACTIVE_MARGIN_DB`] above the
    /// noise floor and louder than [`ACTIVE_MIN_DBFS`].
    pub active_ratio: f64,
    /// Standard deviation of the level of active frames, dB (loudness dynamics;
    /// 0 when fewer than two frames are active).
    pub energy_variability_db: f64,
    /// Fraction of active frames that are voiced (periodic, normalised
    /// autocorrelation ≥ [`VOICING_THRESHOLD`] in the 75–400 Hz pitch range).
    pub voiced_ratio: f64,
    /// Median fundamental frequency over voiced frames, Hz; `None` with fewer than
    /// three voiced frames.
    pub pitch_hz: Option<f64>,
    /// Intonation: standard deviation of the voiced frames' pitch in semitones
    /// around the median (frames more than an octave off are treated as octave
    /// errors and ignored); `None` with fewer than three voiced frames.
    pub pitch_variability_st: Option<f64>,
    /// Mean zero-crossing rate (sign changes per sample pair, 0–1) over the active
    /// frames, or over all frames when none is active. Voiced speech is low
    /// (≈0.02–0.15), hiss and fricatives high (≈0.3–0.5).
    pub zero_crossing_rate: f64,
    /// Speech-rate proxy: syllable nuclei (rises of [`SYLLABLE_PROMINENCE_DB`] in
    /// the 50 ms-smoothed level envelope within active frames) per second of
    /// active speech; 0 with less than 0.1 s of activity.
    pub syllable_rate_hz: f64,
}

impl AcousticFeatures {
    /// Seconds of voice activity (`active_ratio × duration_s`).
    pub fn active_s(&self) -> f64 {
        self.active_ratio * self.duration_s
    }
}

/// Computes the features of decoded audio.
pub fn features(audio: &DecodedAudio) -> AcousticFeatures {
    features_of(&audio.samples, audio.sample_rate)
}

/// Computes the features of mono `samples` at `sample_rate` Hz.
pub fn features_of(samples: &[f32], sample_rate: u32) -> AcousticFeatures {
    let sr = f64::from(sample_rate.max(1));
    let duration_s = samples.len() as f64 / sr;
    let frame_len = ((FRAME_S * sr).round() as usize).max(1);
    let hop = ((HOP_S * sr).round() as usize).max(1);
    let starts = frame_starts(samples.len(), frame_len, hop);

    let frame_ms: Vec<f64> = starts
        .iter()
        .map(|&s| mean_square(&samples[s..(s + frame_len).min(samples.len())]))
        .collect();
    let levels: Vec<f64> = frame_ms.iter().map(|&ms| to_db(ms)).collect();

    let mut sorted = levels.clone();
    sorted.sort_by(f64::total_cmp);
    let noise_floor = percentile(&sorted, 0.10);
    let speech_level = percentile(&sorted, 0.90);
    let threshold = (noise_floor + ACTIVE_MARGIN_DB).max(ACTIVE_MIN_DBFS);
    let active: Vec<bool> = levels.iter().map(|&l| l >= threshold).collect();
    let n_active = active.iter().filter(|&&a| a).count();
    let n_frames = levels.len();

    let active_levels: Vec<f64> = levels
        .iter()
        .zip(&active)
        .filter_map(|(&l, &a)| a.then_some(l))
        .collect();
    let active_ms: Vec<f64> = frame_ms
        .iter()
        .zip(&active)
        .filter_map(|(&m, &a)| a.then_some(m))
        .collect();

    let pitch = pitch_track(samples, sample_rate, &starts, hop, &active);
    let voiced: Vec<f64> = pitch.iter().flatten().copied().collect();
    let (pitch_hz, pitch_variability_st) = pitch_stats(&voiced);

    let zcr_frames: Vec<f64> = starts
        .iter()
        .zip(&active)
        .filter(|(_, a)| n_active == 0 || **a)
        .map(|(&s, _)| zero_crossing_rate(&samples[s..(s + frame_len).min(samples.len())]))
        .collect();

    AcousticFeatures {
        duration_s: round6(duration_s),
        rms_dbfs: round6(to_db(mean_square(samples))),
        active_rms_dbfs: round6(to_db(mean(&active_ms))),
        peak: round6(samples.iter().fold(0.0f32, |m, &x| m.max(x.abs())).into()),
        clipping_ratio: round6(ratio(count_clipped(samples), samples.len())),
        noise_floor_dbfs: round6(noise_floor),
        speech_level_dbfs: round6(speech_level),
        snr_db: round6((speech_level - noise_floor).clamp(0.0, 100.0)),
        active_ratio: round6(ratio(n_active, n_frames)),
        energy_variability_db: round6(std_dev(&active_levels)),
        voiced_ratio: round6(ratio(voiced.len(), n_active)),
        pitch_hz: pitch_hz.map(round6),
        pitch_variability_st: pitch_variability_st.map(round6),
        zero_crossing_rate: round6(mean(&zcr_frames)),
        syllable_rate_hz: round6(syllable_rate(&levels, &active, noise_floor)),
    }
}

/// Rounds to 6 decimals: far below any meaningful difference, and short decimals
/// survive a JSON round trip bit-for-bit.
pub(crate) fn round6(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1e6).round() / 1e6
    } else {
        0.0
    }
}

/// Frame start offsets; a clip shorter than one frame is one (short) frame.
fn frame_starts(n: usize, frame_len: usize, hop: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    if n <= frame_len {
        return vec![0];
    }
    (0..=(n - frame_len) / hop).map(|i| i * hop).collect()
}

fn mean_square(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64
}

/// Mean square → dBFS, floored at [`LEVEL_FLOOR_DBFS`].
fn to_db(ms: f64) -> f64 {
    if ms > 0.0 && ms.is_finite() {
        (10.0 * ms.log10()).max(LEVEL_FLOOR_DBFS)
    } else {
        LEVEL_FLOOR_DBFS
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Nearest-rank percentile of an ascending slice; the floor level when empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return LEVEL_FLOOR_DBFS;
    }
    let idx = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn count_clipped(x: &[f32]) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < x.len() {
        // Length of the run of identical values starting at i.
        let mut j = i + 1;
        while j < x.len() && x[j] == x[i] {
            j += 1;
        }
        let run = j - i;
        let a = x[i].abs();
        if a >= CLIP_LEVEL || (run >= 3 && a >= 0.5) {
            count += run;
        }
        i = j;
    }
    count
}

fn zero_crossing_rate(x: &[f32]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let crossings = x
        .windows(2)
        .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
        .count();
    crossings as f64 / (x.len() - 1) as f64
}

/// Counts syllable nuclei with hysteresis on the 5-frame smoothed level envelope
/// (starting from the noise floor, so a clip that starts mid-syllable counts it)
/// and divides by the active time.
fn syllable_rate(levels: &[f64], active: &[bool], noise_floor: f64) -> f64 {
    let active_s = active.iter().filter(|&&a| a).count() as f64 * HOP_S;
    if active_s < 0.1 {
        return 0.0;
    }
    let smoothed: Vec<f64> = (0..levels.len())
        .map(|i| {
            let lo = i.saturating_sub(2);
            let hi = (i + 3).min(levels.len());
            mean(&levels[lo..hi])
        })
        .collect();
    let mut count = 0usize;
    let mut seeking_peak = true;
    let mut valley = noise_floor;
    let mut peak = f64::NEG_INFINITY;
    for (&v, &a) in smoothed.iter().zip(active) {
        if seeking_peak {
            valley = valley.min(v);
            if a && v >= valley + SYLLABLE_PROMINENCE_DB {
                count += 1;
                seeking_peak = false;
                peak = v;
            }
        } else {
            peak = peak.max(v);
            if v <= peak - SYLLABLE_PROMINENCE_DB {
                seeking_peak = true;
                valley = v;
            }
        }
    }
    count as f64 / active_s
}

/// Second-order low-pass (RBJ cookbook, Q = 1/√2).
struct Biquad {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

impl Biquad {
    fn low_pass(cutoff_hz: f64, sample_rate: f64) -> Self {
        let w0 = 2.0 * std::f64::consts::PI * (cutoff_hz / sample_rate).min(0.49);
        let alpha = w0.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
        let cos = w0.cos();
        let a0 = 1.0 + alpha;
        Self {
            b0: (1.0 - cos) / 2.0 / a0,
            b1: (1.0 - cos) / a0,
            b2: (1.0 - cos) / 2.0 / a0,
            a1: -2.0 * cos / a0,
            a2: (1.0 - alpha) / a0,
        }
    }

    fn run(&self, x: &mut [f64]) {
        let (mut x1, mut x2, mut y1, mut y2) = (0.0, 0.0, 0.0, 0.0);
        for v in x.iter_mut() {
            let y = self.b0 * *v + self.b1 * x1 + self.b2 * x2 - self.a1 * y1 - self.a2 * y2;
            x2 = x1;
            x1 = *v;
            y2 = y1;
            y1 = y;
            *v = y;
        }
    }
}

/// Pitch of each frame (None when inactive or unvoiced), by normalised
/// autocorrelation on a 1 kHz low-passed copy decimated to about 8 kHz.
fn pitch_track(
    samples: &[f32],
    sample_rate: u32,
    starts: &[usize],
    hop: usize,
    active: &[bool],
) -> Vec<Option<f64>> {
    let sr = f64::from(sample_rate.max(1));
    let mut out = vec![None; starts.len()];
    // Too low a rate to represent the pitch range: nothing is voiced.
    if sr < 2.0 * PITCH_MAX_HZ * 2.0 || !active.iter().any(|&a| a) {
        return out;
    }
    let factor = ((sr / 8000.0).floor() as usize).max(1);
    let fs = sr / factor as f64;
    let mut x: Vec<f64> = samples.iter().map(|&v| f64::from(v)).collect();
    let lp = Biquad::low_pass(1000.0, sr);
    lp.run(&mut x);
    lp.run(&mut x);
    let x: Vec<f64> = x.iter().step_by(factor).copied().collect();
    // Prefix sums of squares give every window's energy in O(1).
    let mut energy = Vec::with_capacity(x.len() + 1);
    energy.push(0.0);
    let mut acc = 0.0;
    for v in &x {
        acc += v * v;
        energy.push(acc);
    }
    let win = ((0.02 * fs).round() as usize).max(1);
    let lag_min = ((fs / PITCH_MAX_HZ).floor() as usize).max(2);
    let lag_max = (fs / PITCH_MIN_HZ).ceil() as usize;
    let mut r = vec![0.0f64; lag_max + 2];
    for ((slot, &start), &is_active) in out.iter_mut().zip(starts).zip(active) {
        if !is_active {
            continue;
        }
        // Centre the pitch window on the analysis frame.
        let s = (start + hop / 2) / factor;
        if s + win + lag_max + 1 > x.len() {
            continue;
        }
        let e0 = energy[s + win] - energy[s];
        if e0 <= 1e-12 {
            continue;
        }
        let frame = &x[s..s + win];
        for (lag, rv) in r.iter_mut().enumerate().take(lag_max + 2).skip(lag_min - 1) {
            let shifted = &x[s + lag..s + lag + win];
            let dot: f64 = frame.iter().zip(shifted).map(|(a, b)| a * b).sum();
            let el = energy[s + lag + win] - energy[s + lag];
            *rv = if el > 1e-12 {
                dot / (e0 * el).sqrt()
            } else {
                0.0
            };
        }
        let best = r[lag_min..=lag_max]
            .iter()
            .copied()
            .fold(f64::MIN, f64::max);
        if best < VOICING_THRESHOLD {
            continue;
        }
        // The first local peak close to the best one: prefers the true period over
        // its multiples (sub-harmonic errors).
        let Some(lag) = (lag_min..=lag_max)
            .find(|&l| r[l] >= 0.9 * best && r[l] >= r[l - 1] && r[l] >= r[l + 1])
        else {
            continue;
        };
        let (a, b, c) = (r[lag - 1], r[lag], r[lag + 1]);
        let denom = a - 2.0 * b + c;
        let delta = if denom.abs() > 1e-12 {
            (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        let f0 = fs / (lag as f64 + delta);
        if f0.is_finite() && (PITCH_MIN_HZ * 0.9..=PITCH_MAX_HZ * 1.1).contains(&f0) {
            *slot = Some(f0);
        }
    }
    out
}

/// Median pitch and its semitone standard deviation (octave errors ignored).
fn pitch_stats(voiced: &[f64]) -> (Option<f64>, Option<f64>) {
    if voiced.len() < 3 {
        return (None, None);
    }
    let mut sorted = voiced.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let semitones: Vec<f64> = voiced
        .iter()
        .map(|f| 12.0 * (f / median).log2())
        .filter(|st| st.abs() <= 12.0)
        .collect();
    (Some(median), Some(std_dev(&semitones)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SR: u32 = 16_000;

    fn sine(freq: f64, amp: f64, secs: f64) -> Vec<f32> {
        let n = (secs * f64::from(SR)) as usize;
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(SR)).sin()) as f32
            })
            .collect()
    }

    /// A deterministic pseudo-random noise source (xorshift), amplitude `amp`.
    fn noise(amp: f64, secs: f64, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..(secs * f64::from(SR)) as usize)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s as f64 / u64::MAX as f64) * 2.0 - 1.0) as f32 * amp as f32
            })
            .collect()
    }

    #[test]
    fn silence_has_floor_levels_and_no_activity() {
        let f = features_of(&vec![0.0; 32_000], SR);
        assert_eq!(f.duration_s, 2.0);
        assert_eq!(f.rms_dbfs, LEVEL_FLOOR_DBFS);
        assert_eq!(f.active_ratio, 0.0);
        assert_eq!(f.snr_db, 0.0);
        assert_eq!(f.pitch_hz, None);
        assert_eq!(f.clipping_ratio, 0.0);
        assert_eq!(f.syllable_rate_hz, 0.0);
    }

    #[test]
    fn empty_and_tiny_inputs_are_handled() {
        let f = features_of(&[], SR);
        assert_eq!(f.duration_s, 0.0);
        assert_eq!(f.active_ratio, 0.0);
        let f = features_of(&[0.5, -0.5, 0.5], SR);
        assert!(f.rms_dbfs > -10.0);
        let f = features_of(&[0.1; 10], 0);
        assert!(f.duration_s.is_finite());
    }

    #[test]
    fn sine_levels_and_pitch_are_measured() {
        // Half a second of silence, then a 200 Hz tone at half scale.
        let mut x = vec![0.0; 8_000];
        x.extend(sine(200.0, 0.5, 1.5));
        let f = features_of(&x, SR);
        // RMS of a 0.5 sine = 0.354 → -9.0 dBFS.
        assert!((f.active_rms_dbfs - -9.03).abs() < 0.2, "{f:?}");
        assert!((f.peak - 0.5).abs() < 1e-3);
        assert!((f.active_ratio - 0.75).abs() < 0.03, "{}", f.active_ratio);
        let p = f.pitch_hz.expect("voiced");
        assert!((p - 200.0).abs() < 3.0, "pitch {p}");
        assert!(f.pitch_variability_st.expect("voiced") < 0.2);
        assert!(f.voiced_ratio > 0.9);
        assert!(f.snr_db > 80.0);
        assert_eq!(f.clipping_ratio, 0.0);
        // 200 Hz: 400 crossings per second over 16 000 sample pairs.
        assert!((f.zero_crossing_rate - 0.025).abs() < 0.002);
    }

    #[test]
    fn pitch_follows_low_and_high_voices() {
        for hz in [90.0, 140.0, 310.0] {
            let mut x = vec![0.0; 4_000];
            x.extend(sine(hz, 0.3, 1.0));
            let f = features_of(&x, SR);
            let p = f.pitch_hz.expect("voiced");
            assert!((p - hz).abs() / hz < 0.02, "{hz} → {p}");
        }
    }

    #[test]
    fn gliding_pitch_has_intonation() {
        // A tone gliding from 120 Hz to 240 Hz (one octave) over 2 s.
        let n = 2 * SR as usize;
        let mut phase = 0.0f64;
        let mut x = vec![0.0; 4_000];
        x.extend((0..n).map(|i| {
            let f = 120.0 * 2f64.powf(i as f64 / n as f64);
            phase += 2.0 * std::f64::consts::PI * f / f64::from(SR);
            (0.4 * phase.sin()) as f32
        }));
        let f = features_of(&x, SR);
        // Uniform over 12 semitones: std dev ≈ 12/√12 ≈ 3.46.
        let v = f.pitch_variability_st.expect("voiced");
        assert!((v - 3.46).abs() < 0.4, "{v}");
    }

    #[test]
    fn steady_sounds_are_not_voice_activity() {
        // A constant tone has no level dynamics: it is a hum, not speech.
        let f = features_of(&sine(200.0, 0.3, 1.0), SR);
        assert_eq!(f.active_ratio, 0.0);
    }

    #[test]
    fn white_noise_is_loud_but_not_active_or_voiced() {
        let f = features_of(&noise(0.3, 1.5, 7), SR);
        assert!(f.rms_dbfs > -20.0);
        assert!(f.active_ratio < 0.05, "{}", f.active_ratio);
        assert!(f.snr_db < 5.0, "{}", f.snr_db);
        assert!(f.zero_crossing_rate > 0.4);
        assert_eq!(f.voiced_ratio, 0.0);
    }

    #[test]
    fn clipping_is_detected_at_full_scale_and_as_flat_tops() {
        let clipped: Vec<f32> = sine(200.0, 3.0, 1.0)
            .iter()
            .map(|v| v.clamp(-1.0, 1.0))
            .collect();
        let f = features_of(&clipped, SR);
        assert!(f.clipping_ratio > 0.5, "{}", f.clipping_ratio);
        // The same clipped signal scaled down to 0.7 keeps its flat tops.
        let scaled: Vec<f32> = clipped.iter().map(|v| v * 0.7).collect();
        let g = features_of(&scaled, SR);
        assert!((g.clipping_ratio - f.clipping_ratio).abs() < 1e-9);
        assert_eq!(features_of(&sine(200.0, 0.9, 1.0), SR).clipping_ratio, 0.0);
    }

    #[test]
    fn syllable_rate_counts_bursts() {
        // Four 120 ms tone bursts per second for 2 s, separated by silence.
        let mut x = Vec::new();
        for _ in 0..8 {
            x.extend(sine(150.0, 0.3, 0.12));
            x.extend(vec![0.0; 2_080]);
        }
        let f = features_of(&x, SR);
        let active_s = f.active_s();
        let rate = f.syllable_rate_hz;
        assert!(
            (rate * active_s - 8.0).abs() < 0.5,
            "rate {rate}, active {active_s}"
        );
    }

    proptest! {
        #[test]
        fn features_are_finite_for_any_samples(
            x in proptest::collection::vec(-4.0f32..4.0, 0..4_000),
            sr in prop_oneof![Just(8_000u32), Just(16_000), Just(44_100), 1u32..100],
        ) {
            let f = features_of(&x, sr);
            let json = serde_json::to_string(&f).expect("serialise");
            let back: AcousticFeatures = serde_json::from_str(&json).expect("round trip");
            prop_assert_eq!(&back, &f);
            for v in [f.rms_dbfs, f.active_rms_dbfs, f.peak, f.clipping_ratio, f.noise_floor_dbfs,
                      f.snr_db, f.active_ratio, f.energy_variability_db, f.voiced_ratio,
                      f.zero_crossing_rate, f.syllable_rate_hz] {
                prop_assert!(v.is_finite());
            }
            prop_assert!((0.0..=1.0).contains(&f.active_ratio));
            prop_assert!((0.0..=1.0).contains(&f.clipping_ratio));
            prop_assert!((0.0..=1.0).contains(&f.voiced_ratio));
            prop_assert!(f.rms_dbfs >= LEVEL_FLOOR_DBFS);
        }
    }
}
