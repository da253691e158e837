//! Object URIs: `s3://bucket/key` and `file:///absolute/path`, parsed and normalised.
//!
//! An [`ObjectUri`] can only be built through a validating constructor, so a
//! value of this type is always safe to map onto a local path: its key (or
//! path) has no `..`, `.` or empty segment, no backslash, NUL or control
//! character. The text after the bucket (or after `file://`) is taken
//! verbatim — there is no percent-decoding — and then normalised with
//! [`normalise_key`](crate::audio_ref::normalise_key) semantics.
//!
//! The key may be empty: `s3://bucket` (or `s3://bucket/`) and `file:///`
//! name a *root*, which is valid as a prefix for listing or as the base of
//! [`ObjectUri::join`], but not as an object to read or write.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::audio_ref::normalise_key;

/// Why a string or a path is not a valid object URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The scheme is neither `s3://` nor `file:///` (or `file://` is followed by a host).
    #[error("unsupported URI scheme (expected s3://bucket/key or file:///path)")]
    UnsupportedScheme,
    /// The bucket name breaks the S3 naming rules (3–63 characters of
    /// lowercase letters, digits, `.` and `-`, alphanumeric at both ends).
    #[error("invalid bucket name")]
    InvalidBucket,
    /// The key or path contains `..`, a backslash, NUL or a control character,
    /// or is longer than 1024 bytes.
    #[error("invalid object key (traversal, control character or too long)")]
    InvalidKey,
    /// A local path given to [`ObjectUri::file`] is relative or not UTF-8.
    #[error("local path must be absolute and UTF-8")]
    InvalidPath,
    /// The URI names a bucket or directory root where an object is required.
    #[error("URI names a root, not an object")]
    NoKey,
}

/// A parsed, normalised object location. Cheap to clone; `Display` round-trips
/// through [`ObjectUri::parse`]. Serialises as its URI string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectUri {
    loc: Location,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Location {
    /// `s3://bucket/key`; `key` is normalised and may be empty (bucket root).
    S3 { bucket: String, key: String },
    /// `file:///path`; `path` is normalised, without its leading `/`, and may
    /// be empty (the filesystem root).
    File { path: String },
}

impl ObjectUri {
    /// Parses `s3://bucket[/key]` or `file:///absolute/path`. The text is
    /// taken as is (no trimming): surrounding whitespace belongs to the key.
    pub fn parse(s: &str) -> Result<Self, UriError> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            return Self::s3(bucket, key);
        }
        if let Some(rest) = s.strip_prefix("file://") {
            // Only the empty authority is accepted: `file:///path`.
            let path = rest.strip_prefix('/').ok_or(UriError::UnsupportedScheme)?;
            return Ok(Self {
                loc: Location::File {
                    path: normalise(path)?,
                },
            });
        }
        Err(UriError::UnsupportedScheme)
    }

    /// Builds `s3://bucket/key`, validating the bucket and normalising the key
    /// (an empty key names the bucket root).
    pub fn s3(bucket: &str, key: &str) -> Result<Self, UriError> {
        validate_bucket(bucket)?;
        Ok(Self {
            loc: Location::S3 {
                bucket: bucket.to_string(),
                key: normalise(key)?,
            },
        })
    }

    /// Builds `file:///…` from an absolute, UTF-8 local path. `..` components
    /// are rejected, not resolved: resolving them lexically would be wrong
    /// across symlinks.
    pub fn file(path: impl AsRef<Path>) -> Result<Self, UriError> {
        let path = path.as_ref();
        if !path.is_absolute() {
            return Err(UriError::InvalidPath);
        }
        let text = path.to_str().ok_or(UriError::InvalidPath)?;
        Ok(Self {
            loc: Location::File {
                path: normalise(text)?,
            },
        })
    }

    /// The child location `self/rel`. `rel` is normalised like a key, so it
    /// can never climb out of `self` (`..` is rejected; a leading `/` is
    /// dropped, not treated as absolute).
    pub fn join(&self, rel: &str) -> Result<Self, UriError> {
        let rel = normalise(rel)?;
        let joined = |base: &str| -> Result<String, UriError> {
            match (base.is_empty(), rel.is_empty()) {
                (_, true) => Ok(base.to_string()),
                (true, false) => Ok(rel.clone()),
                (false, false) => normalise(&format!("{base}/{rel}")),
            }
        };
        let loc = match &self.loc {
            Location::S3 { bucket, key } => Location::S3 {
                bucket: bucket.clone(),
                key: joined(key)?,
            },
            Location::File { path } => Location::File {
                path: joined(path)?,
            },
        };
        Ok(Self { loc })
    }

    /// `"s3"` or `"file"`.
    pub fn scheme(&self) -> &'static str {
        match self.loc {
            Location::S3 { .. } => "s3",
            Location::File { .. } => "file",
        }
    }

    /// The bucket of an `s3://` URI.
    pub fn bucket(&self) -> Option<&str> {
        match &self.loc {
            Location::S3 { bucket, .. } => Some(bucket),
            Location::File { .. } => None,
        }
    }

    /// The normalised key (`s3://`) or the path without its leading `/`
    /// (`file://`); empty for a root.
    pub fn key(&self) -> &str {
        match &self.loc {
            Location::S3 { key, .. } => key,
            Location::File { path } => path,
        }
    }

    /// True when the URI names a bucket or filesystem root (empty key).
    pub fn is_root(&self) -> bool {
        self.key().is_empty()
    }

    /// The last segment of the key, if any.
    pub fn file_name(&self) -> Option<&str> {
        self.key().rsplit('/').next().filter(|s| !s.is_empty())
    }

    /// The key of `self` relative to `base` when `self` lies strictly under
    /// it (same scheme and bucket, and the key continues after a `/`).
    pub fn relative_to(&self, base: &ObjectUri) -> Option<&str> {
        if self.scheme() != base.scheme() || self.bucket() != base.bucket() {
            return None;
        }
        if base.is_root() {
            return Some(self.key()).filter(|k| !k.is_empty());
        }
        self.key()
            .strip_prefix(base.key())
            .and_then(|rest| rest.strip_prefix('/'))
    }

    /// The local path of a `file://` URI.
    pub fn local_path(&self) -> Option<PathBuf> {
        match &self.loc {
            Location::File { path } => Some(Path::new("/").join(path)),
            Location::S3 { .. } => None,
        }
    }

    /// Fails with [`UriError::NoKey`] when the URI is a root.
    pub fn require_key(&self) -> Result<(), UriError> {
        if self.is_root() {
            Err(UriError::NoKey)
        } else {
            Ok(())
        }
    }

    /// A form safe for logs at any level: the scheme and bucket only. Keys
    /// can embed learner ids (per-learner partitions), so they are left out.
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self)
    }
}

/// Display adapter returned by [`ObjectUri::redacted`]: `s3://bucket/…` or `file:///…`.
pub struct Redacted<'a>(&'a ObjectUri);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.loc {
            Location::S3 { bucket, .. } => write!(f, "s3://{bucket}/…"),
            Location::File { .. } => f.write_str("file:///…"),
        }
    }
}

impl fmt::Display for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Location::File { path } => write!(f, "file:///{path}"),
        }
    }
}

impl fmt::Debug for ObjectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectUri({self})")
    }
}

impl FromStr for ObjectUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ObjectUri {
    type Error = UriError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ObjectUri> for String {
    fn from(u: ObjectUri) -> Self {
        u.to_string()
    }
}

/// Normalises a key or path; unlike `normalise_key`, an empty result (a root)
/// is allowed.
fn normalise(key: &str) -> Result<String, UriError> {
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return Err(UriError::InvalidKey);
    }
    if key.split('/').all(|seg| seg.is_empty() || seg == ".") {
        return Ok(String::new());
    }
    normalise_key(key).map_err(|_| UriError::InvalidKey)
}

/// S3 bucket naming rules (the subset every S3-compatible server accepts).
fn validate_bucket(b: &str) -> Result<(), UriError> {
    let bytes = b.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && bytes
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && !b.contains("..");
    if ok {
        Ok(())
    } else {
        Err(UriError::InvalidBucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;

    #[test]
    fn parses_and_displays_s3_and_file() {
        let u = ObjectUri::parse("s3://engage-store/fleet//b1/./x.json").unwrap();
        assert_eq!(u.to_string(), "s3://engage-store/fleet/b1/x.json");
        assert_eq!(u.bucket(), Some("engage-store"));
        assert_eq!(u.key(), "fleet/b1/x.json");
        assert_eq!(u.file_name(), Some("x.json"));

        let f = ObjectUri::parse("file:///tmp/store/a").unwrap();
        assert_eq!(f.to_string(), "file:///tmp/store/a");
        assert_eq!(f.local_path(), Some(PathBuf::from("/tmp/store/a")));
        assert_eq!(ObjectUri::file("/tmp/store/a").unwrap(), f);
    }

    #[test]
    fn roots_are_valid_prefixes_but_not_objects() {
        let b = ObjectUri::parse("s3://bkt").unwrap();
        assert!(b.is_root());
        assert_eq!(b, ObjectUri::parse("s3://bkt/").unwrap());
        assert_eq!(b.require_key(), Err(UriError::NoKey));
        assert_eq!(b.join("a/b").unwrap().to_string(), "s3://bkt/a/b");
        assert!(ObjectUri::parse("file:///").unwrap().is_root());
    }

    #[test]
    fn rejects_traversal_bad_schemes_and_buckets() {
        for bad in [
            "s3://bkt/../etc/passwd",
            "s3://bkt/a/../../b",
            "file:///tmp/../etc/passwd",
            "s3://bkt/a\\b",
            "s3://bkt/a\0b",
        ] {
            assert_eq!(ObjectUri::parse(bad), Err(UriError::InvalidKey), "{bad}");
        }
        assert_eq!(
            ObjectUri::parse("https://x/y"),
            Err(UriError::UnsupportedScheme)
        );
        assert_eq!(
            ObjectUri::parse("file://host/etc"),
            Err(UriError::UnsupportedScheme)
        );
        assert_eq!(
            ObjectUri::parse("s3://B_ad/k"),
            Err(UriError::InvalidBucket)
        );
        assert_eq!(ObjectUri::parse("s3:///k"), Err(UriError::InvalidBucket));
        assert_eq!(ObjectUri::file("rel/path"), Err(UriError::InvalidPath));
        let base = ObjectUri::parse("s3://bkt/base").unwrap();
        assert_eq!(base.join("../x"), Err(UriError::InvalidKey));
        assert_eq!(base.join("/abs").unwrap().to_string(), "s3://bkt/base/abs");
    }

    #[test]
    fn relative_to_requires_a_segment_boundary() {
        let base = ObjectUri::parse("s3://bkt/a/b").unwrap();
        let child = ObjectUri::parse("s3://bkt/a/b/c/d").unwrap();
        let sibling = ObjectUri::parse("s3://bkt/a/bc").unwrap();
        assert_eq!(child.relative_to(&base), Some("c/d"));
        assert_eq!(sibling.relative_to(&base), None);
        assert_eq!(base.relative_to(&base), None);
        let other = ObjectUri::parse("s3://other/a/b/c").unwrap();
        assert_eq!(other.relative_to(&base), None);
    }

    #[test]
    fn redacted_form_hides_the_key() {
        let u = ObjectUri::parse("s3://bkt/learner=42/x").unwrap();
        assert_eq!(u.redacted().to_string(), "s3://bkt/…");
        assert!(
            !format!("{}", ObjectUri::parse("file:///l/42").unwrap().redacted()).contains("42")
        );
    }

    #[test]
    fn serde_is_the_uri_string() {
        let u = ObjectUri::parse("s3://bkt/a/b").unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(json, "\"s3://bkt/a/b\"");
        assert_eq!(serde_json::from_str::<ObjectUri>(&json).unwrap(), u);
        let e = serde_json::from_str::<ObjectUri>("\"s3://bkt/../x\"").unwrap_err();
        assert!(
            e.to_string().contains(&UriError::InvalidKey.to_string()),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn display_round_trips(key in "[a-z0-9./ _-]{0,40}") {
            if let Ok(u) = ObjectUri::s3("bkt-1", &key) {
                prop_assert_eq!(ObjectUri::parse(&u.to_string()).unwrap(), u.clone());
                // Normalisation is idempotent.
                prop_assert_eq!(ObjectUri::s3("bkt-1", u.key()).unwrap(), u);
            }
        }

        #[test]
        fn joined_keys_never_escape_the_base(rel in "[a-z./\\\\]{0,30}") {
            let base = ObjectUri::file("/srv/store").unwrap();
            if let Ok(child) = base.join(&rel) {
                let path = child.local_path().unwrap();
                prop_assert!(path.starts_with("/srv/store"));
                prop_assert!(path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
            }
        }
    }
}
