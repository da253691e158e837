//! WAV encoding: mono 16-bit PCM samples into WAV bytes, in memory (hound).
//!
//! The one WAV writer of the workspace. `engage gen-data` writes its
//! synthetic clips with it, and tests (the analyze client's, the fake
//! Gemini's, the limiter benchmark's) build their audio with it, so no code
//! hand-writes a RIFF header. It lives here rather than in a test-support
//! crate because gen-data is product code, and here rather than in the CLI
//! because tests cannot depend on a binary crate. Pure like the rest of the
//! crate: bytes in memory, no I/O.

use std::io::Cursor;

/// Why samples could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    /// More samples than a WAV file can count.
    #[error("{0} samples do not fit in one WAV file")]
    TooLong(usize),
    /// The encoder failed.
    #[error("WAV encoding failed: {0}")]
    Encode(#[from] hound::Error),
}

/// Encodes mono 16-bit PCM `samples` at `sample_rate` Hz as a canonical
/// 44-byte-header WAV file.
pub fn encode_pcm16_mono(sample_rate: u32, samples: &[i16]) -> Result<Vec<u8>, WavError> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let len = u32::try_from(samples.len()).map_err(|_| WavError::TooLong(samples.len()))?;
    let mut cursor = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec)?;
        let mut w16 = w.get_i16_writer(len);
        for &s in samples {
            w16.write_sample(s);
        }
        w16.flush()?;
        w.finalize()?;
    }
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_decodable_canonical_wav() {
        let samples: Vec<i16> = (0..8_000)
            .map(|i| ((i % 200) * 100 - 10_000) as i16)
            .collect();
        let bytes = encode_pcm16_mono(8_000, &samples).unwrap();
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(&bytes[8..16], b"WAVEfmt ");
        assert_eq!(bytes.len(), 44 + samples.len() * 2);
        let decoded = crate::decode(&bytes, Some("wav")).unwrap();
        assert_eq!(decoded.samples.len(), samples.len());
        assert_eq!(decoded.sample_rate, 8_000);
    }
}
