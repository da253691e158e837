//! Storage errors, classified for the worker runtime: transient (retry the
//! job later) or permanent (record the item as failed), with a stable label
//! for metrics.
//!
//! Messages name only the scheme and bucket of the object
//! ([`ObjectUri::redacted`]); the full URI, whose key may embed a learner id,
//! is available through [`StorageError::uri`] for debug-level logging.

use std::io;

use engage_model::uri::{ObjectUri, UriError};

/// An error from [`Storage`](super::Storage).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URI is malformed, would escape its directory, or names a root
    /// where an object is required. Nothing was read or written.
    #[error("invalid object URI: {0}")]
    InvalidUri(#[from] UriError),
    /// The configuration cannot serve this request: an `s3://` URI with
    /// neither an S3 client nor an `s3_root`, or an invalid setting.
    #[error("storage configuration: {0}")]
    Config(String),
    /// The object, or its bucket or directory, does not exist.
    #[error("{op} {}: not found", .uri.redacted())]
    NotFound {
        /// The operation (`get`, `put`, …).
        op: &'static str,
        /// The object concerned.
        uri: ObjectUri,
    },
    /// The credentials were refused (403, unknown access key, bad signature)
    /// or the local file is not accessible. Retrying does not help.
    #[error("{op} {}: access denied ({detail})", .uri.redacted())]
    AccessDenied {
        /// The operation.
        op: &'static str,
        /// The object concerned.
        uri: ObjectUri,
        /// The service's error code or the OS error.
        detail: String,
    },
    /// The object is larger than the whole-object read limit; stream it with
    /// [`Storage::reader`](super::Storage::reader) instead.
    #[error("{}: object of {size} bytes exceeds the {limit}-byte read limit", .uri.redacted())]
    TooLarge {
        /// The object concerned.
        uri: ObjectUri,
        /// Its size (or the bytes seen before giving up).
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A network failure, timeout, throttling or 5xx answer that persisted
    /// through the SDK's own retries. Retrying the job later may succeed.
    #[error("{op} {}: transient failure ({detail})", .uri.redacted())]
    Transient {
        /// The operation.
        op: &'static str,
        /// The object concerned.
        uri: ObjectUri,
        /// What failed (error chain without credentials).
        detail: String,
    },
    /// The S3 service rejected the request for a reason that retrying will
    /// not fix (a 4xx other than 403/404/408/429, or a malformed request).
    #[error("{op} {}: rejected by S3 ({detail})", .uri.redacted())]
    Rejected {
        /// The operation.
        op: &'static str,
        /// The object concerned.
        uri: ObjectUri,
        /// HTTP status, error code and message.
        detail: String,
    },
    /// A local object path is, or passes through, a symlink (the last
    /// component, or any directory below `s3_root`). Symlinks are never
    /// followed: one could lead outside the root or to `/dev/zero`.
    #[error("{op} {}: refused: the path is or passes through a symlink", .uri.redacted())]
    SymlinkRefused {
        /// The operation.
        op: &'static str,
        /// The object concerned.
        uri: ObjectUri,
    },
    /// A local object is a FIFO, socket or device rather than a regular file.
    #[error("{op} {}: refused: a {kind}, not a regular file", .uri.redacted())]
    NotRegularFile {
        /// The operation.
        op: &'static str,
        /// The object concerned.
        uri: ObjectUri,
        /// What it is (`fifo`, `character device`, `block device`, `socket`).
        kind: &'static str,
    },
    /// A local filesystem error other than not-found or permission denied.
    #[error("{op} {}: {source}", .uri.redacted())]
    Io {
        /// The operation.
        op: &'static str,
        /// The object concerned.
        uri: ObjectUri,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    /// True when retrying the same operation later may succeed: network
    /// failures, timeouts, throttling and 5xx answers (after the SDK's own
    /// retries), and interrupted local I/O. False for not-found, access
    /// denied, invalid URIs, too-large objects and rejected requests.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transient { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            Self::InvalidUri(_)
            | Self::Config(_)
            | Self::NotFound { .. }
            | Self::AccessDenied { .. }
            | Self::TooLarge { .. }
            | Self::SymlinkRefused { .. }
            | Self::NotRegularFile { .. }
            | Self::Rejected { .. } => false,
        }
    }

    /// A stable, low-cardinality label for metrics and failed-item reasons:
    /// `invalid_uri`, `config`, `not_found`, `access_denied`, `too_large`,
    /// `transient`, `rejected`, `symlink_refused`, `not_regular_file` or `io`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::InvalidUri(_) => "invalid_uri",
            Self::Config(_) => "config",
            Self::NotFound { .. } => "not_found",
            Self::AccessDenied { .. } => "access_denied",
            Self::TooLarge { .. } => "too_large",
            Self::Transient { .. } => "transient",
            Self::Rejected { .. } => "rejected",
            Self::SymlinkRefused { .. } => "symlink_refused",
            Self::NotRegularFile { .. } => "not_regular_file",
            Self::Io { .. } => "io",
        }
    }

    /// True for [`StorageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// The full URI concerned, when there is one. It may contain a learner
    /// id: log it at debug level only.
    pub fn uri(&self) -> Option<&ObjectUri> {
        match self {
            Self::NotFound { uri, .. }
            | Self::AccessDenied { uri, .. }
            | Self::TooLarge { uri, .. }
            | Self::Transient { uri, .. }
            | Self::Rejected { uri, .. }
            | Self::SymlinkRefused { uri, .. }
            | Self::NotRegularFile { uri, .. }
            | Self::Io { uri, .. } => Some(uri),
            Self::InvalidUri(_) | Self::Config(_) => None,
        }
    }

    /// Maps a local I/O error of a read: not-found (also "a parent is not a
    /// directory") and permission errors get their own classes, everything
    /// else is [`StorageError::Io`].
    pub(crate) fn from_io(op: &'static str, uri: &ObjectUri, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Self::NotFound {
                op,
                uri: uri.clone(),
            },
            _ => Self::from_write_io(op, uri, e),
        }
    }

    /// Maps a local I/O error of a write: a missing path is an I/O problem
    /// here (writes create their directories), not a missing object.
    pub(crate) fn from_write_io(op: &'static str, uri: &ObjectUri, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::PermissionDenied => Self::AccessDenied {
                op,
                uri: uri.clone(),
                detail: e.to_string(),
            },
            _ => Self::Io {
                op,
                uri: uri.clone(),
                source: e,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri() -> ObjectUri {
        ObjectUri::parse("s3://bkt/learner-42/a.wav").unwrap()
    }

    #[test]
    fn classes_and_transience() {
        let t = StorageError::Transient {
            op: "get",
            uri: uri(),
            detail: "connection refused".into(),
        };
        assert!(t.is_transient());
        assert_eq!(t.class(), "transient");
        let nf = StorageError::from_io("get", &uri(), io::Error::from(io::ErrorKind::NotFound));
        assert!(nf.is_not_found() && !nf.is_transient());
        assert_eq!(nf.class(), "not_found");
        let denied = StorageError::from_io(
            "put",
            &uri(),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.class(), "access_denied");
        assert!(!denied.is_transient());
        let intr =
            StorageError::from_io("put", &uri(), io::Error::from(io::ErrorKind::Interrupted));
        assert!(intr.is_transient());
        let full =
            StorageError::from_io("put", &uri(), io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.class(), "io");
        assert!(!full.is_transient());
        assert_eq!(
            StorageError::from(UriError::InvalidKey).class(),
            "invalid_uri"
        );
    }

    #[test]
    fn messages_do_not_contain_the_key() {
        let e = StorageError::NotFound {
            op: "get",
            uri: uri(),
        };
        let msg = e.to_string();
        assert!(msg.contains("s3://bkt/"), "{msg}");
        assert!(!msg.contains("learner-42"), "{msg}");
        assert_eq!(e.uri(), Some(&uri()));
    }
}
