//! The fake model: deterministic answers derived from the audio bytes, and
//! token accounting.
//!
//! The same audio always gets the same six values (derived from its SHA-256),
//! so tests can predict results and detect an answer attached to the wrong
//! item. Tokens follow Google's published rate for audio (32 tokens per second)
//! plus about one token per four characters of text.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Audio tokens per second of audio, as Google documents for Gemini.
pub const AUDIO_TOKENS_PER_SECOND: f64 = 32.0;

/// Byte rate assumed for audio whose duration cannot be read from a WAV header
/// (16 kHz, 16-bit, mono).
pub(crate) const FALLBACK_BYTES_PER_SECOND: f64 = 32_000.0;

const EMOTIONS: [&str; 11] = [
    "happy",
    "sad",
    "calm",
    "angry",
    "fearful",
    "surprised",
    "frustrated",
    "confused",
    "bored",
    "excited",
    "neutral",
];
const STATES: [&str; 3] = ["engaged", "neutral", "disengaged"];
const PRONUNCIATION: [&str; 3] = ["good", "average", "poor"];
const AUDIO_QUALITY: [&str; 3] = ["good", "poor", "distorted"];

/// Lowercase hex SHA-256 of the audio: the key of the per-audio call counts.
pub fn audio_hash(audio: &[u8]) -> String {
    hex::encode(Sha256::digest(audio))
}

/// The JSON object the fake model answers for this audio.
pub fn expected_answer(audio: &[u8]) -> Value {
    let h = Sha256::digest(audio);
    let score = |b: u8| (f64::from(b) * 1000.0 / 255.0).round() / 10.0;
    json!({
        "emotional_score": score(h[0]),
        "engagement_score": score(h[1]),
        "dominant_emotion": EMOTIONS[usize::from(h[2]) % EMOTIONS.len()],
        "engagement_state": STATES[usize::from(h[3]) % STATES.len()],
        "pronunciation_quality": PRONUNCIATION[usize::from(h[4]) % PRONUNCIATION.len()],
        "audio_quality": AUDIO_QUALITY[usize::from(h[5]) % AUDIO_QUALITY.len()],
    })
}

/// Duration of a RIFF/WAVE file from its `fmt ` byte rate and `data` size.
pub(crate) fn wav_duration_secs(bytes: &[u8]) -> Option<f64> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let mut pos = 12usize;
    let mut byte_rate: Option<u32> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = pos + 8;
        if id == b"fmt " && body + 12 <= bytes.len() {
            byte_rate = Some(u32::from_le_bytes([
                bytes[body + 8],
                bytes[body + 9],
                bytes[body + 10],
                bytes[body + 11],
            ]));
        } else if id == b"data" {
            let rate = byte_rate.filter(|r| *r > 0)?;
            let available = bytes.len().saturating_sub(body).min(size);
            return Some(available as f64 / f64::from(rate));
        }
        pos = body.checked_add(size)?.checked_add(size % 2)?;
    }
    None
}

/// Audio duration: from the WAV header, else from the size at the fallback rate.
pub fn audio_duration_secs(bytes: &[u8]) -> f64 {
    wav_duration_secs(bytes).unwrap_or(bytes.len() as f64 / FALLBACK_BYTES_PER_SECOND)
}

/// Input tokens of a request: text at ~4 characters a token plus audio at 32/s.
pub fn input_tokens(text_chars: usize, audio: &[&[u8]]) -> u64 {
    let text = text_chars.div_ceil(4) as u64;
    let audio: f64 = audio
        .iter()
        .map(|a| (audio_duration_secs(a) * AUDIO_TOKENS_PER_SECOND).ceil())
        .sum();
    text + audio as u64
}

/// Output tokens of an answer text (~4 characters a token).
pub(crate) fn output_tokens(text: &str) -> u64 {
    text.len().div_ceil(4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(seconds: u32) -> Vec<u8> {
        let samples = vec![0i16; 16_000 * seconds as usize];
        engage_audio::wav::encode_pcm16_mono(16_000, &samples).unwrap()
    }

    #[test]
    fn wav_duration_from_header() {
        let w = wav(3);
        assert_eq!(wav_duration_secs(&w), Some(3.0));
        assert_eq!(input_tokens(8, &[&w]), 2 + 96);
        assert_eq!(wav_duration_secs(b"not a wav"), None);
    }

    #[test]
    fn answers_are_deterministic_and_in_range() {
        for seed in 0u8..50 {
            let audio = vec![seed; 100];
            let a = expected_answer(&audio);
            assert_eq!(a, expected_answer(&audio));
            let s = a["emotional_score"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&s));
        }
        assert_ne!(expected_answer(b"a"), expected_answer(b"b"));
    }
}
