//! Pure rules of the download stage: where an audio reference lives, which
//! decoder hint its key gives, and what fetched audio must pass. `engage run`
//! applies the same rules, so both paths fail the same items for the same
//! reasons.

use engage_audio::{AudioError, AudioProbe, DecodeOptions, decode_memory_bound, probe};
use engage_model::AudioRef;
use engage_runtime::storage::{ObjectUri, UriError};

/// The failed-item reason of a link whose object does not exist.
pub const AUDIO_MISSING: &str = "audio_missing";

/// Validates fetched audio (decodable, duration, not silent), with the link's
/// extension as the decoder hint. Nothing is stored or analyzed before it passes.
pub fn validate(bytes: &[u8], key: &str) -> Result<AudioProbe, AudioError> {
    probe(bytes, format_hint(key).as_deref())
}

/// Bytes of memory validating `bytes` can hold at its peak: the bytes
/// themselves plus the decode's bound (what the job reserves in the worker's
/// audio budget).
pub fn memory_need(bytes: &[u8]) -> u64 {
    bytes.len() as u64 + decode_memory_bound(bytes, &DecodeOptions::default())
}

/// The object URI of a parsed audio reference: source buckets are S3 URIs
/// (read through the configured S3 endpoint or the local `s3_root` layout);
/// store references live under the pipeline's store root.
pub fn source_uri(r: &AudioRef, store_root: &ObjectUri) -> Result<ObjectUri, UriError> {
    match r {
        AudioRef::S3 { bucket, key } => ObjectUri::s3(bucket, key),
        AudioRef::Store { key } => store_root.join(key),
    }
}

/// The lowercase file extension of a key, as a decoder hint (`wav`, `mp3`, …).
pub fn format_hint(key: &str) -> Option<String> {
    let name = key.rsplit('/').next()?;
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 5 && ext.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| ext.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert_eq!(format_hint("a/b/c.WAV").as_deref(), Some("wav"));
        assert_eq!(format_hint("a/b/c").as_deref(), None);
        assert_eq!(format_hint("a.b/c").as_deref(), None);
        assert_eq!(format_hint("x.tar.gz").as_deref(), Some("gz"));
        assert_eq!(format_hint("x.").as_deref(), None);
    }

    #[test]
    fn validation_fails_by_name_and_uses_the_key_as_hint() {
        let err = validate(b"not audio at all", "a/b.wav").unwrap_err();
        assert!(!err.name().is_empty());
        assert_eq!(validate(&[], "a/b.mp3").unwrap_err(), AudioError::Empty);
    }

    #[test]
    fn uris() {
        let root = ObjectUri::parse("file:///srv/store").unwrap();
        let s3 = AudioRef::S3 {
            bucket: "learner-audio".into(),
            key: "a/b.wav".into(),
        };
        assert_eq!(
            source_uri(&s3, &root).unwrap().to_string(),
            "s3://learner-audio/a/b.wav"
        );
        let st = AudioRef::Store {
            key: "audio/ab/abcd".into(),
        };
        assert_eq!(
            source_uri(&st, &root).unwrap().to_string(),
            "file:///srv/store/audio/ab/abcd"
        );
    }
}
