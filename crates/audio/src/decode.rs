//! Decoding audio bytes (WAV, FLAC, MP3, Ogg Vorbis, AAC/M4A, …) into mono `f32`
//! samples with symphonia, with memory guards and named failures.
//!
//! # How damaged input is treated
//!
//! - **Zero bytes** → [`AudioError::Empty`]; bytes no demuxer recognises →
//!   [`AudioError::Unrecognised`].
//! - **Truncated** (the stream ends before the length its container declares, by
//!   more than [`DecodeOptions::truncation_tolerance`]) → [`AudioError::Truncated`].
//!   A partial answer is *not* analysed: scoring the first half of a spoken answer
//!   as if it were the whole answer would be silently wrong. Formats that declare
//!   no length (raw MP3 without a Xing/LAME header, ADTS) cannot be told apart from
//!   a shorter recording and are decoded as far as they go.
//! - **Isolated bad packets** are skipped (MP3 and AAC decoders resynchronise on
//!   the next frame) as long as at most [`DecodeOptions::max_bad_packet_ratio`] of
//!   the packets fail; beyond that, or when nothing at all decodes, or when the
//!   demuxer itself fails mid-stream → [`AudioError::Corrupt`].
//! - **Too long** (declared or decoded duration above
//!   [`DecodeOptions::max_duration_s`]) → [`AudioError::TooLong`], checked before
//!   decoding when the container declares its length and while decoding otherwise,
//!   so a hostile file cannot make the decoder allocate without bound.
//! - **Hostile headers**: the stream parameters a container declares are
//!   checked before anything is sized from them: sample rate within
//!   [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`], 1..=[`MAX_CHANNELS`] channels,
//!   1..=64 bits per sample, at most [`MAX_FRAMES_PER_PACKET`] frames per packet;
//!   anything else → [`AudioError::BadHeader`]. The declared frame count is
//!   never trusted for memory: the up-front reservation is
//!   [`initial_reservation`], capped by the object's byte length (a PCM frame
//!   takes at least one byte, so the bytes cannot hold more frames than that) and
//!   by the decode cap. A 300-byte WAV declaring 4 Gi frames at 7 MHz once made
//!   the worker reserve 16 GiB and abort; it is now a `BadHeader`.
//! - **Too many samples** (declared or decoded mono samples above
//!   [`DecodeOptions::max_samples`], default [`DEFAULT_MAX_SAMPLES`] = 600 s at
//!   48 kHz, about 110 MiB of `f32`) → [`AudioError::TooLarge`], so a high sample
//!   rate cannot buy more memory than the duration limit intends; nor may a
//!   stream decode to more than [`MAX_SAMPLES_PER_BYTE`] samples per input
//!   byte (a decompression bomb), so [`decode_memory_bound`] bounds a decode's
//!   memory by the object's size and the workers' audio budget can reserve it
//!   before fetching.
//! - A panic inside a third-party decoder on hostile input is caught and reported as
//!   [`AudioError::Corrupt`] (defence in depth; symphonia is fuzzed, but the
//!   worker must never crash on a learner's upload).

#![forbid(unsafe_code)]

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use super::AudioError;

/// Lowest sample rate accepted from a header, in Hz (telephone speech is 8 kHz).
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest sample rate accepted from a header, in Hz (the highest common studio rate).
pub const MAX_SAMPLE_RATE: u32 = 384_000;
/// Most channels accepted from a header (decoders size per-channel buffers from it).
pub const MAX_CHANNELS: usize = 16;
/// Most frames per packet accepted from a header (decoders size packet buffers
/// from it; real containers use at most tens of thousands).
pub const MAX_FRAMES_PER_PACKET: u64 = 1 << 20;
/// Default decode cap in mono samples: 600 s at 48 kHz (28 800 000 samples,
/// about 110 MiB of `f32`).
pub const DEFAULT_MAX_SAMPLES: u64 = 48_000 * 600;

/// Most decoded mono samples per byte of input. Real speech codecs stay far
/// below it (16-bit PCM: 0.5; 8-bit PCM: 1; MP3 at 8 kbps and 8 kHz: 8; AAC or
/// Vorbis at low bitrates: under 30); a stream that decodes to more is a
/// decompression bomb and is refused with [`AudioError::TooLarge`]. It is what
/// lets [`decode_memory_bound`] bound a decode's memory by the object's size.
pub const MAX_SAMPLES_PER_BYTE: u64 = 64;

/// Peak bytes of memory per decoded mono sample while decoding and measuring
/// features: 12 for the `f32` sample buffer while it grows (old and new
/// capacity side by side), then at most 4 (the samples) + 8 (the `f64` copy
/// the pitch tracker filters) + 16 (its downsampled copy and prefix sums, at
/// 8 kHz where nothing is downsampled) = 28, rounded up.
pub const PEAK_BYTES_PER_SAMPLE: u64 = 32;

/// Fixed allowance for a decoder's own buffers (packets, interleaved frames).
const DECODER_STATE: u64 = 4 << 20;

/// Samples one decoded packet may add past a cap before the check after it
/// fires (the largest real packets: FLAC blocks of 65 535 frames).
const PACKET_MARGIN: u64 = 65_536;

/// Most bytes of working memory that decoding `bytes` and measuring its
/// features can take (besides the input bytes themselves): the most samples
/// the decode may hold times [`PEAK_BYTES_PER_SAMPLE`], plus a fixed
/// allowance for the decoder's own buffers. The most samples is the decode
/// cap ([`DecodeOptions::max_samples`]), or less when the bytes prove it: a
/// PCM WAV holds at most the frames its `data` chunk (and the object) has
/// room for and at most [`DecodeOptions::max_duration_s`] of them (and none
/// when its header declares more than either limit: it is refused before
/// decoding); any other stream at most
/// [`DecodeOptions::max_samples_per_byte`] per byte. The decode enforces the
/// same caps after every packet, so the bound holds whatever the header
/// claims.
pub fn decode_memory_bound(bytes: &[u8], opts: &DecodeOptions) -> u64 {
    let cap = sample_cap(bytes, opts);
    let mut samples = if cap == 0 { 0 } else { cap + PACKET_MARGIN };
    if let Some(fmt) = wav_pcm_format(bytes) {
        // Past this the decode stops as too long.
        let by_duration = (opts.max_duration_s.max(0.0) * f64::from(fmt.sample_rate)) as u64;
        samples = samples.min(by_duration + PACKET_MARGIN);
    }
    samples
        .saturating_mul(PEAK_BYTES_PER_SAMPLE)
        .saturating_add(DECODER_STATE)
}

/// [`decode_memory_bound`] for an object known only by its size (before it is
/// fetched): the most any `len` bytes could need.
pub fn decode_memory_bound_of_len(len: u64, opts: &DecodeOptions) -> u64 {
    (opts
        .max_samples
        .min(len.saturating_mul(opts.max_samples_per_byte))
        + PACKET_MARGIN)
        .saturating_mul(PEAK_BYTES_PER_SAMPLE)
        .saturating_add(DECODER_STATE)
}

/// The most mono samples `bytes` may decode to: 0 for a PCM WAV whose header
/// declares more than the limits (refused before decoding).
fn sample_cap(bytes: &[u8], opts: &DecodeOptions) -> u64 {
    let len = bytes.len() as u64;
    let by_content = match wav_pcm_format(bytes) {
        Some(fmt) => {
            if let Some(declared) = fmt.data_frames
                && (declared > opts.max_samples
                    || declared as f64 / f64::from(fmt.sample_rate) > opts.max_duration_s)
            {
                return 0;
            }
            let frames = len / u64::from(fmt.block_align) + 1;
            fmt.data_frames.map_or(frames, |d| frames.min(d + 1))
        }
        None => len.saturating_mul(opts.max_samples_per_byte),
    };
    opts.max_samples.min(by_content)
}

/// The facts of a PCM WAV's `fmt ` chunk that bound its frames.
struct WavPcm {
    block_align: u16,
    sample_rate: u32,
    /// Frames the `data` chunk declares, when it declares a real length
    /// (streaming writers leave 0 or 0xFFFFFFFF: unknown).
    data_frames: Option<u64>,
}

/// Reads the `fmt ` chunk of a RIFF/WAVE object when its codec stores every
/// frame in `block_align` bytes (integer or float PCM, A-law, µ-law,
/// extensible); `None` for anything else (ADPCM and other compressed WAV
/// payloads, other containers, malformed headers), which gets the generic
/// per-byte bound instead.
fn wav_pcm_format(bytes: &[u8]) -> Option<WavPcm> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 12usize;
    let mut fmt: Option<WavPcm> = None;
    // A handful of chunks precede `fmt ` and `data` in real files; stop
    // looking after 16.
    for _ in 0..16 {
        let Some(id) = bytes.get(at..at + 4) else {
            break;
        };
        let Some(size) = u32_at(at + 4) else {
            break;
        };
        let body = at + 8;
        if id == b"fmt " {
            let tag = u16_at(body)?;
            let sample_rate = u32_at(body + 4)?;
            let block_align = u16_at(body + 12)?;
            let pcm = matches!(tag, 1 | 3 | 6 | 7 | 0xFFFE);
            if !(pcm && block_align > 0 && sample_rate > 0) {
                return None;
            }
            fmt = Some(WavPcm {
                block_align,
                sample_rate,
                data_frames: None,
            });
        } else if id == b"data" {
            if let Some(f) = fmt.as_mut()
                && size != 0
                && size != u32::MAX
            {
                f.data_frames = Some(u64::from(size) / u64::from(f.block_align));
            }
            break;
        }
        let Some(next) = body
            .checked_add(size as usize)
            .and_then(|n| n.checked_add(size as usize & 1))
        else {
            break;
        };
        at = next;
    }
    fmt
}

/// Limits and tolerances applied while decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Audio longer than this many seconds is refused with [`AudioError::TooLong`]
    /// (default 600 s = 10 min: a spoken answer is seconds to a minute long).
    pub max_duration_s: f64,
    /// Largest fraction of packets that may fail to decode and be skipped before the
    /// whole stream counts as [`AudioError::Corrupt`] (default 0.1).
    pub max_bad_packet_ratio: f64,
    /// Fraction of the declared length that may be missing at the end before the
    /// stream counts as [`AudioError::Truncated`] (default 0.05; codec delay and
    /// padding make decoded lengths differ slightly from declared ones).
    pub truncation_tolerance: f64,
    /// Most mono samples a decode may produce (declared or decoded) before it is
    /// refused with [`AudioError::TooLarge`] (default [`DEFAULT_MAX_SAMPLES`]).
    pub max_samples: u64,
    /// Most mono samples per input byte before the stream is refused with
    /// [`AudioError::TooLarge`] (default [`MAX_SAMPLES_PER_BYTE`]).
    pub max_samples_per_byte: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_duration_s: 600.0,
            max_bad_packet_ratio: 0.1,
            truncation_tolerance: 0.05,
            max_samples: DEFAULT_MAX_SAMPLES,
            max_samples_per_byte: MAX_SAMPLES_PER_BYTE,
        }
    }
}

/// Decoded audio, mixed down to one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Sample rate in Hz of `samples`.
    pub sample_rate: u32,
    /// Number of channels in the source (before the mono mix-down).
    pub channels: u16,
    /// Mono samples, nominally in −1.0..=1.0 (the mean of the source channels;
    /// non-finite decoder output is replaced by 0.0).
    pub samples: Vec<f32>,
    /// Container format: `wav`, `flac`, `mp3`, `ogg`, `mp4` (M4A), `aac` (ADTS),
    /// `aiff`, `caf`, `mkv`, …
    pub format: String,
    /// Codec short name as symphonia reports it, e.g. `pcm_s16le`, `mp3`, `vorbis`, `aac`.
    pub codec: String,
    /// `samples.len() / sample_rate`, in seconds.
    pub duration_s: f64,
}

/// Decodes `bytes` with the default [`DecodeOptions`].
///
/// `hint_ext` is the file extension if known (`"wav"`, `".MP3"`, …); it only speeds
/// up format detection, a wrong hint is harmless.
pub fn decode(bytes: &[u8], hint_ext: Option<&str>) -> Result<DecodedAudio, AudioError> {
    decode_with(bytes, hint_ext, &DecodeOptions::default())
}

/// Decodes `bytes` with explicit limits. Never panics.
pub fn decode_with(
    bytes: &[u8],
    hint_ext: Option<&str>,
    opts: &DecodeOptions,
) -> Result<DecodedAudio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, hint_ext, opts))) {
        Ok(result) => result,
        Err(_) => Err(AudioError::Corrupt {
            detail: "the decoder panicked on this input".into(),
        }),
    }
}

fn decode_inner(
    bytes: &[u8],
    hint_ext: Option<&str>,
    opts: &DecodeOptions,
) -> Result<DecodedAudio, AudioError> {
    let mss = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let mut hint = Hint::new();
    if let Some(ext) = hint_ext.map(|e| e.trim_start_matches('.').to_ascii_lowercase())
        && !ext.is_empty()
        && ext.len() <= 8
        && ext.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        hint.with_extension(&ext);
    }
    let mut reader = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(probe_error)?;
    let format = format_name(reader.format_info().short_name);
    decode_track(
        reader.as_mut(),
        format,
        bytes.len(),
        sample_cap(bytes, opts),
        opts,
    )
}

/// Maps an error from format detection. Anything symphonia cannot place is
/// "unrecognised"; a recognised container with a malformed header is "corrupt".
fn probe_error(e: SymError) -> AudioError {
    match e {
        SymError::Unsupported(what) => AudioError::Unrecognised {
            detail: what.to_string(),
        },
        SymError::IoError(io) => AudioError::Unrecognised {
            detail: format!("no audio container found before the end of the data ({io})"),
        },
        other => AudioError::Corrupt {
            detail: format!("malformed container header: {other}"),
        },
    }
}

/// Normalises symphonia's container short names to the usual file-extension style.
fn format_name(short: &str) -> String {
    match short {
        "wave" => "wav",
        "isomp4" => "mp4",
        "matroska" => "mkv",
        other => other,
    }
    .to_string()
}

fn decode_track(
    reader: &mut dyn FormatReader,
    format: String,
    byte_len: usize,
    max_samples: u64,
    opts: &DecodeOptions,
) -> Result<DecodedAudio, AudioError> {
    let track = reader
        .default_track(TrackType::Audio)
        .ok_or(AudioError::NoAudioTrack)?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(AudioError::NoAudioTrack)?
        .clone();
    let declared_frames = track.num_frames;
    check_header(
        params.sample_rate,
        params.channels.as_ref().map(|c| c.count()),
        params.bits_per_sample,
        params.max_frames_per_packet,
    )?;
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.as_ref().map_or(0, |c| c.count());

    if sample_rate > 0
        && let Some(n) = declared_frames
    {
        let declared_s = n as f64 / f64::from(sample_rate);
        if declared_s > opts.max_duration_s {
            return Err(AudioError::TooLong {
                duration_s: declared_s,
                max_s: opts.max_duration_s,
            });
        }
    }
    // The declared length meets the plain cap only: a declared length the
    // bytes cannot hold is a truncated file (found while decoding), not a
    // large one. The byte-aware cap bounds what decoding actually produces.
    if let Some(n) = declared_frames
        && n > opts.max_samples
    {
        return Err(AudioError::TooLarge {
            samples: n,
            max_samples: opts.max_samples,
        });
    }

    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::UnsupportedCodec {
            detail: e.to_string(),
        })?;
    let codec = decoder.codec_info().short_name.to_string();

    let mut samples: Vec<f32> =
        Vec::with_capacity(initial_reservation(declared_frames, byte_len, max_samples));
    let mut interleaved: Vec<f32> = Vec::new();
    let mut packets = 0usize;
    let mut bad_packets = 0usize;
    let mut hit_eof_early = false;

    loop {
        let packet = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A chained Ogg stream: the first logical stream is the answer.
            Err(SymError::ResetRequired) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                hit_eof_early = true;
                break;
            }
            Err(e) => {
                return Err(AudioError::Corrupt {
                    detail: format!("container error after {packets} packets: {e}"),
                });
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        packets += 1;
        match decoder.decode(&packet) {
            Ok(buf) => {
                if buf.frames() == 0 {
                    continue;
                }
                let spec = buf.spec();
                if sample_rate == 0 {
                    sample_rate = spec.rate();
                    check_header(Some(sample_rate), None, None, None)?;
                }
                let n_ch = spec.channels().count().max(1);
                check_header(None, Some(n_ch), None, None)?;
                if channels == 0 {
                    channels = n_ch;
                }
                buf.copy_to_vec_interleaved(&mut interleaved);
                mix_down(&interleaved, n_ch, &mut samples);
                if samples.len() as u64 > max_samples {
                    return Err(AudioError::TooLarge {
                        samples: samples.len() as u64,
                        max_samples,
                    });
                }
                if sample_rate > 0
                    && samples.len() as f64 / f64::from(sample_rate) > opts.max_duration_s
                {
                    return Err(AudioError::TooLong {
                        duration_s: samples.len() as f64 / f64::from(sample_rate),
                        max_s: opts.max_duration_s,
                    });
                }
            }
            Err(SymError::DecodeError(_) | SymError::IoError(_)) => bad_packets += 1,
            Err(SymError::ResetRequired) => {
                bad_packets += 1;
                decoder.reset();
            }
            Err(SymError::Unsupported(what)) => {
                return Err(AudioError::UnsupportedCodec {
                    detail: what.to_string(),
                });
            }
            Err(e) => {
                return Err(AudioError::Corrupt {
                    detail: format!("decoder error: {e}"),
                });
            }
        }
    }

    if sample_rate == 0 {
        return Err(AudioError::Corrupt {
            detail: "no sample rate in the stream".into(),
        });
    }
    if bad_packets > 0
        && (samples.is_empty() || bad_packets as f64 > opts.max_bad_packet_ratio * packets as f64)
    {
        return Err(AudioError::Corrupt {
            detail: format!("{bad_packets} of {packets} packets failed to decode"),
        });
    }
    let duration_s = samples.len() as f64 / f64::from(sample_rate);
    let expected_s = declared_frames.map(|n| n as f64 / f64::from(sample_rate));
    let short_of_declared =
        expected_s.is_some_and(|e| duration_s < e * (1.0 - opts.truncation_tolerance));
    if short_of_declared || (hit_eof_early && expected_s.is_none()) {
        return Err(AudioError::Truncated {
            decoded_s: duration_s,
            expected_s,
        });
    }
    Ok(DecodedAudio {
        sample_rate,
        channels: u16::try_from(channels).unwrap_or(u16::MAX),
        samples,
        format,
        codec,
        duration_s,
    })
}

/// Refuses stream parameters outside the accepted ranges (each `None` is a
/// field the container does not declare, checked later if the decoder reports it).
fn check_header(
    sample_rate: Option<u32>,
    channels: Option<usize>,
    bits_per_sample: Option<u32>,
    max_frames_per_packet: Option<u64>,
) -> Result<(), AudioError> {
    let bad = |detail: String| Err(AudioError::BadHeader { detail });
    if let Some(r) = sample_rate
        && !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&r)
    {
        return bad(format!(
            "sample rate {r} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE} Hz"
        ));
    }
    if let Some(c) = channels
        && !(1..=MAX_CHANNELS).contains(&c)
    {
        return bad(format!("{c} channels is outside 1..={MAX_CHANNELS}"));
    }
    if let Some(b) = bits_per_sample
        && !(1..=64).contains(&b)
    {
        return bad(format!("{b} bits per sample is outside 1..=64"));
    }
    if let Some(f) = max_frames_per_packet
        && f > MAX_FRAMES_PER_PACKET
    {
        return bad(format!(
            "{f} frames per packet exceeds {MAX_FRAMES_PER_PACKET}"
        ));
    }
    Ok(())
}

/// How many mono samples to reserve before decoding: the declared frame count,
/// but never more than `byte_len` (every PCM frame takes at least one byte, so
/// the object cannot hold more frames than it has bytes; for compressed formats
/// this is only a starting capacity and the buffer grows as decoding proves the
/// samples exist) nor more than `max_samples`. Nothing is reserved when the
/// container declares no length.
pub fn initial_reservation(
    declared_frames: Option<u64>,
    byte_len: usize,
    max_samples: u64,
) -> usize {
    declared_frames.map_or(0, |n| {
        let n = n.min(byte_len as u64).min(max_samples);
        usize::try_from(n).unwrap_or(0)
    })
}

/// Appends the per-frame mean of `interleaved` (with `n_ch` channels) to `out`,
/// replacing non-finite values by silence.
fn mix_down(interleaved: &[f32], n_ch: usize, out: &mut Vec<f32>) {
    let clean = |x: f32| if x.is_finite() { x } else { 0.0 };
    if n_ch == 1 {
        out.extend(interleaved.iter().map(|&x| clean(x)));
    } else {
        let scale = 1.0 / n_ch as f32;
        out.extend(
            interleaved
                .chunks_exact(n_ch)
                .map(|f| f.iter().map(|&x| clean(x)).sum::<f32>() * scale),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_down_averages_channels_and_drops_non_finite() {
        let mut out = Vec::new();
        mix_down(&[1.0, 0.0, 0.5, 0.5, f32::NAN, 1.0], 2, &mut out);
        assert_eq!(out, vec![0.5, 0.5, 0.5]);
        mix_down(&[f32::INFINITY, -0.25], 1, &mut out);
        assert_eq!(&out[3..], &[0.0, -0.25]);
    }

    #[test]
    fn format_names_follow_file_extensions() {
        assert_eq!(format_name("wave"), "wav");
        assert_eq!(format_name("isomp4"), "mp4");
        assert_eq!(format_name("ogg"), "ogg");
    }
}
