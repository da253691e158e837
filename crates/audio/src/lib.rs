//! Audio decoding (symphonia) and acoustic features, shared by download (probe) and analyze.
//!
//! Pure CPU work: bytes in, samples and numbers out; no network, no async runtime.
//!
//! - [`decode`] turns WAV, FLAC, MP3, Ogg Vorbis or AAC/M4A bytes into mono `f32`
//!   samples ([`DecodedAudio`]), refusing empty, unrecognised, truncated, corrupt,
//!   track-less, unsupported, over-long, over-large or hostile-header input with
//!   a named [`AudioError`]; no buffer is ever sized from an unchecked header.
//! - [`features`] measures the recording ([`AcousticFeatures`]): levels, noise
//!   floor and SNR, clipping, voice activity, loudness dynamics, pitch and
//!   intonation, zero-crossing rate and a speech-rate proxy.
//! - [`probe`] does both and adds the facts the download stage stores as JSON
//!   beside the audio ([`AudioProbe`]).
//! - [`wav`] encodes mono 16-bit PCM samples as WAV bytes (gen-data's clips
//!   and the tests' audio).

#![forbid(unsafe_code)]

mod decode;
mod features;
pub mod wav;

use serde::{Deserialize, Serialize};

pub use decode::{
    DEFAULT_MAX_SAMPLES, DecodeOptions, DecodedAudio, MAX_CHANNELS, MAX_FRAMES_PER_PACKET,
    MAX_SAMPLE_RATE, MAX_SAMPLES_PER_BYTE, MIN_SAMPLE_RATE, PEAK_BYTES_PER_SAMPLE, decode,
    decode_memory_bound, decode_memory_bound_of_len, decode_with, initial_reservation,
};
pub use features::{
    ACTIVE_MARGIN_DB, ACTIVE_MIN_DBFS, AcousticFeatures, CLIP_LEVEL, FRAME_S, HOP_S,
    LEVEL_FLOOR_DBFS, PITCH_MAX_HZ, PITCH_MIN_HZ, VOICING_THRESHOLD, features, features_of,
};

/// A recording with less voice activity than this many seconds is silent
/// (see [`AudioProbe::is_silent`]).
pub const SILENT_MAX_ACTIVE_S: f64 = 0.1;

/// Why audio bytes could not be turned into samples. Every variant is permanent
/// for the item (retrying the same bytes gives the same answer).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    /// The object has zero bytes.
    #[error("the audio object is empty (0 bytes)")]
    Empty,
    /// No supported container format was recognised in the bytes (not audio, or
    /// a format outside WAV/AIFF/CAF/FLAC/MP3/Ogg/MP4/ADTS/MKV).
    #[error("not a recognised audio format: {detail}")]
    Unrecognised {
        /// What the probe reported.
        detail: String,
    },
    /// The stream ends before the length its container declares (cut-off upload
    /// or download). Partial audio is not analysed.
    #[error("audio is truncated: decoded {decoded_s:.2} s{}", declared(*.expected_s))]
    Truncated {
        /// Seconds that did decode.
        decoded_s: f64,
        /// Seconds the container declares, when it declares a length.
        expected_s: Option<f64>,
    },
    /// The container or too many of its packets are malformed.
    #[error("audio is corrupt: {detail}")]
    Corrupt {
        /// What failed.
        detail: String,
    },
    /// The container holds no audio track.
    #[error("the container has no audio track")]
    NoAudioTrack,
    /// The audio track uses a codec no enabled decoder supports.
    #[error("unsupported audio codec: {detail}")]
    UnsupportedCodec {
        /// The decoder registry's message.
        detail: String,
    },
    /// The container header declares impossible or hostile stream parameters
    /// (sample rate outside [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`], no or more
    /// than [`MAX_CHANNELS`] channels, zero or more than 64 bits per sample, more
    /// than [`MAX_FRAMES_PER_PACKET`] frames per packet). Refused before any
    /// buffer is sized from the header.
    #[error("bad audio header: {detail}")]
    BadHeader {
        /// Which field is out of range, with its value and the accepted range.
        detail: String,
    },
    /// The decoded (or declared) stream holds more samples than the decode cap
    /// ([`DecodeOptions::max_samples`], default [`DEFAULT_MAX_SAMPLES`]: 600 s at
    /// 48 kHz, or [`MAX_SAMPLES_PER_BYTE`] per input byte when that is smaller),
    /// whatever its duration: a high sample rate or a decompression bomb must
    /// not buy more memory. The workers' audio memory budget refuses an object
    /// too big to fit it with the same name.
    #[error(
        "audio is too large: {samples} samples exceed the decode cap of {max_samples} samples \
         ({:.1} MiB of decoded audio)",
        *.max_samples as f64 * 4.0 / 1_048_576.0
    )]
    TooLarge {
        /// The declared frame count, or how far decoding got before stopping.
        samples: u64,
        /// The cap.
        max_samples: u64,
    },
    /// The audio is longer than the configured maximum ([`DecodeOptions::max_duration_s`]).
    #[error("audio is too long: {duration_s:.1} s exceeds the {max_s:.0} s limit")]
    TooLong {
        /// The declared duration, or how far decoding got before stopping.
        duration_s: f64,
        /// The limit.
        max_s: f64,
    },
}

/// The " of N s declared" suffix of the truncation message.
fn declared(expected_s: Option<f64>) -> String {
    expected_s.map_or_else(String::new, |e| format!(" of {e:.2} s declared"))
}

impl AudioError {
    /// Every stable name, for zero-initialising counters.
    pub const NAMES: [&'static str; 9] = [
        "audio_empty",
        "audio_unrecognised",
        "audio_truncated",
        "audio_corrupt",
        "no_audio_track",
        "unsupported_codec",
        "audio_too_long",
        "audio_bad_header",
        "audio_too_large",
    ];

    /// A short stable name, used as the failed item's reason and as a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Empty => "audio_empty",
            Self::Unrecognised { .. } => "audio_unrecognised",
            Self::Truncated { .. } => "audio_truncated",
            Self::Corrupt { .. } => "audio_corrupt",
            Self::NoAudioTrack => "no_audio_track",
            Self::UnsupportedCodec { .. } => "unsupported_codec",
            Self::TooLong { .. } => "audio_too_long",
            Self::BadHeader { .. } => "audio_bad_header",
            Self::TooLarge { .. } => "audio_too_large",
        }
    }
}

/// What the download stage records about a validated audio object (stored as
/// JSON beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioProbe {
    /// Container format (`wav`, `flac`, `mp3`, `ogg`, `mp4`, …).
    pub format: String,
    /// Codec short name (`pcm_s16le`, `mp3`, `vorbis`, `aac`, …).
    pub codec: String,
    /// Decoded duration in seconds.
    pub duration_s: f64,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Channels in the source (features are computed on the mono mix).
    pub channels: u16,
    /// No voice activity: less than [`SILENT_MAX_ACTIVE_S`] of frames louder
    /// than [`ACTIVE_MIN_DBFS`] *and* [`ACTIVE_MARGIN_DB`] above the noise floor.
    /// Digital silence, a quiet room and steady noise without speech are all silent.
    pub is_silent: bool,
    /// The acoustic features.
    pub features: AcousticFeatures,
}

impl AudioProbe {
    /// Builds the probe facts of already-decoded audio.
    pub fn from_decoded(audio: &DecodedAudio) -> Self {
        let features = features(audio);
        Self {
            format: audio.format.clone(),
            codec: audio.codec.clone(),
            duration_s: features::round6(audio.duration_s),
            sample_rate: audio.sample_rate,
            channels: audio.channels,
            is_silent: features.active_s() < SILENT_MAX_ACTIVE_S,
            features,
        }
    }
}

/// Decodes `bytes` (default limits) and describes them.
pub fn probe(bytes: &[u8], hint_ext: Option<&str>) -> Result<AudioProbe, AudioError> {
    probe_with(bytes, hint_ext, &DecodeOptions::default())
}

/// Decodes `bytes` with explicit limits and describes them.
pub fn probe_with(
    bytes: &[u8],
    hint_ext: Option<&str>,
    opts: &DecodeOptions,
) -> Result<AudioProbe, AudioError> {
    decode_with(bytes, hint_ext, opts).map(|a| AudioProbe::from_decoded(&a))
}

#[cfg(test)]
mod tests;
