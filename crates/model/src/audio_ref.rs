//! Audio references: the accepted forms of `audio_url`, normalised to (bucket, key).
//!
//! Accepted: `s3://bucket/key`, `https://bucket.s3.REGION.amazonaws.com/key`
//! (also `bucket.s3.amazonaws.com`), `https://s3.REGION.amazonaws.com/bucket/key`,
//! and `http://` spellings of those hosts. `store://…` parses (it names the
//! pipeline's own store) but [`AudioRef::parse_allowed`] refuses it as a
//! learner's audio. Anything else is rejected before any network or disk access. Keys are normalised so
//! that no `..`, empty or absolute segment can escape a directory when a key is
//! mapped onto a local path.

use std::fmt;

/// A parsed, normalised audio location.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AudioRef {
    /// An object in an S3 bucket (source audio).
    S3 {
        /// The bucket.
        bucket: String,
        /// The normalised key.
        key: String,
    },
    /// An object already in the pipeline's own store, by its store key.
    Store {
        /// The normalised key under the store root.
        key: String,
    },
}

/// Why an `audio_url` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioRefError {
    /// The URL's scheme or host is not one of the accepted S3 forms.
    #[error("unsupported audio link (not s3:// or an S3 https URL)")]
    Unsupported,
    /// The bucket name is empty or not a valid S3 bucket name.
    #[error("invalid bucket name")]
    InvalidBucket,
    /// The key is empty, or contains `..`, NUL or control characters.
    #[error("invalid object key")]
    InvalidKey,
    /// The bucket is valid but not on the allow-list.
    #[error("bucket is not on the allow-list")]
    NotAllowed,
}

impl AudioRefError {
    /// A short stable name for metrics and the failed-item reason.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unsupported => "unsupported_link",
            Self::InvalidBucket => "invalid_bucket",
            Self::InvalidKey => "invalid_key",
            Self::NotAllowed => "bucket_not_allowed",
        }
    }
}

impl AudioRef {
    /// Parses an `audio_url` as written in the activity log.
    pub fn parse(url: &str) -> Result<Self, AudioRefError> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').ok_or(AudioRefError::InvalidKey)?;
            return Self::s3(bucket, key);
        }
        if let Some(rest) = url.strip_prefix("store://") {
            return Ok(Self::Store {
                key: normalise_key(rest)?,
            });
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or(AudioRefError::Unsupported)?;
        let (host, path) = rest.split_once('/').ok_or(AudioRefError::InvalidKey)?;
        let host = host.to_ascii_lowercase();
        // Drop a query string or fragment: presigned parameters are not part of the key.
        let path = path.split(['?', '#']).next().unwrap_or("");
        if !host.ends_with(".amazonaws.com") {
            return Err(AudioRefError::Unsupported);
        }
        let labels: Vec<&str> = host.trim_end_matches(".amazonaws.com").split('.').collect();
        let is_s3_label = |l: &str| l == "s3" || l.starts_with("s3-");
        if labels.first().is_some_and(|l| is_s3_label(l)) {
            // Path style: s3.REGION.amazonaws.com/bucket/key, s3.amazonaws.com/bucket/key
            let (bucket, key) = path.split_once('/').ok_or(AudioRefError::InvalidKey)?;
            return Self::s3(bucket, &percent_decode(key)?);
        }
        // Virtual-hosted style: BUCKET.s3.REGION.amazonaws.com/key or BUCKET.s3-REGION…
        let pos = labels
            .iter()
            .position(|l| is_s3_label(l))
            .ok_or(AudioRefError::Unsupported)?;
        Self::s3(&labels[..pos].join("."), &percent_decode(path)?)
    }

    fn s3(bucket: &str, key: &str) -> Result<Self, AudioRefError> {
        validate_bucket(bucket)?;
        Ok(Self::S3 {
            bucket: bucket.to_string(),
            key: normalise_key(key)?,
        })
    }

    /// Parses a link from an activity log and checks it against the audio
    /// allow-list: an S3 link's bucket must be allowed, and a `store://` link
    /// is refused as `unsupported_link`. The pipeline's own store holds
    /// outputs, other batches' files and the item log, never a learner's
    /// source audio, so a producer cannot point analysis at it; this is the
    /// one rule of `engage run` and the fleet.
    pub fn parse_allowed(url: &str, allowed_buckets: &[String]) -> Result<Self, AudioRefError> {
        let r = Self::parse(url)?;
        match &r {
            Self::S3 { bucket, .. } if !allowed_buckets.iter().any(|b| b == bucket) => {
                Err(AudioRefError::NotAllowed)
            }
            Self::Store { .. } => Err(AudioRefError::Unsupported),
            Self::S3 { .. } => Ok(r),
        }
    }

    /// The bucket, for S3 references.
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Self::S3 { bucket, .. } => Some(bucket),
            Self::Store { .. } => None,
        }
    }

    /// The normalised key.
    pub fn key(&self) -> &str {
        match self {
            Self::S3 { key, .. } | Self::Store { key } => key,
        }
    }
}

impl fmt::Display for AudioRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::Store { key } => write!(f, "store://{key}"),
        }
    }
}

/// S3 bucket naming rules (3–63 chars, lowercase letters, digits, `.`, `-`).
fn validate_bucket(b: &str) -> Result<(), AudioRefError> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..");
    if ok {
        Ok(())
    } else {
        Err(AudioRefError::InvalidBucket)
    }
}

/// Normalises an object key so it is safe as a relative path: collapses
/// repeated and leading slashes, drops `.` segments, rejects `..`, NUL,
/// backslashes and control characters, and empty keys.
pub fn normalise_key(key: &str) -> Result<String, AudioRefError> {
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return Err(AudioRefError::InvalidKey);
    }
    let mut parts = Vec::new();
    for seg in key.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(AudioRefError::InvalidKey),
            s => parts.push(s),
        }
    }
    if parts.is_empty() || key.len() > 1024 {
        return Err(AudioRefError::InvalidKey);
    }
    Ok(parts.join("/"))
}

fn percent_decode(s: &str) -> Result<String, AudioRefError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(AudioRefError::InvalidKey)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| AudioRefError::InvalidKey)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| AudioRefError::InvalidKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(b: &str, k: &str) -> AudioRef {
        AudioRef::S3 {
            bucket: b.into(),
            key: k.into(),
        }
    }

    #[test]
    fn accepts_the_three_s3_forms() {
        assert_eq!(
            AudioRef::parse("s3://audio-bkt/a/b.wav").unwrap(),
            s3("audio-bkt", "a/b.wav")
        );
        assert_eq!(
            AudioRef::parse("https://audio-bkt.s3.ap-south-1.amazonaws.com/a/b%20c.wav").unwrap(),
            s3("audio-bkt", "a/b c.wav")
        );
        assert_eq!(
            AudioRef::parse("https://s3.ap-south-1.amazonaws.com/audio-bkt/a/b.wav?X-Amz-Sig=1")
                .unwrap(),
            s3("audio-bkt", "a/b.wav")
        );
        assert_eq!(
            AudioRef::parse("https://my.bkt.s3.amazonaws.com/k.mp3").unwrap(),
            s3("my.bkt", "k.mp3")
        );
    }

    #[test]
    fn rejects_other_hosts_and_traversal() {
        assert_eq!(
            AudioRef::parse("https://evil.example.com/a.wav"),
            Err(AudioRefError::Unsupported)
        );
        assert_eq!(
            AudioRef::parse("https://amazonaws.com.evil.io/a.wav"),
            Err(AudioRefError::Unsupported)
        );
        assert_eq!(
            AudioRef::parse("ftp://x/y"),
            Err(AudioRefError::Unsupported)
        );
        assert_eq!(
            AudioRef::parse("s3://bkt-a/../../etc/passwd"),
            Err(AudioRefError::InvalidKey)
        );
        assert_eq!(
            AudioRef::parse("s3://bkt-a/"),
            Err(AudioRefError::InvalidKey)
        );
        assert_eq!(
            AudioRef::parse("s3://Bad_Bucket/k"),
            Err(AudioRefError::InvalidBucket)
        );
        assert_eq!(
            AudioRef::parse("https://s3.amazonaws.com/bkt-a/%2e%2e/x"),
            Err(AudioRefError::InvalidKey)
        );
    }

    #[test]
    fn keys_are_normalised() {
        assert_eq!(
            AudioRef::parse("s3://bkt-a//x/./y.wav").unwrap(),
            s3("bkt-a", "x/y.wav")
        );
    }

    #[test]
    fn allow_list() {
        let allowed = vec!["bkt-a".to_string()];
        assert!(AudioRef::parse_allowed("s3://bkt-a/k", &allowed).is_ok());
        assert_eq!(
            AudioRef::parse_allowed("s3://bkt-b/k", &allowed),
            Err(AudioRefError::NotAllowed)
        );
        // The pipeline's own store is never a source of learner audio.
        for link in ["store://batches/b/spec.json", "store://audio/ab/cd"] {
            assert_eq!(
                AudioRef::parse_allowed(link, &allowed),
                Err(AudioRefError::Unsupported),
                "{link}"
            );
        }
    }
}
