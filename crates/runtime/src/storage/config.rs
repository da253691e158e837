//! Storage settings: the S3 endpoint and addressing, the local S3 emulation
//! root, retry attempts and size limits.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Default whole-object read limit of [`Storage::get`](super::Storage::get): 256 MiB.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 256 * 1024 * 1024;
/// Default size above which [`Storage::put_file`](super::Storage::put_file) uses a multipart upload: 16 MiB.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// Default multipart part size: 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's smallest allowed part (except the last one): 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Default total attempts per S3 request (the SDK's standard retry mode).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default size up to which local files are read without a thread hand-off: 64 KiB.
pub const DEFAULT_INLINE_READ_BYTES: u64 = 64 * 1024;

/// How [`Storage`](super::Storage) reaches objects. Every field has a default,
/// so an empty config means: S3 through the standard AWS chain (region from
/// the environment or profile, else `us-east-1`), `file://` URIs on local disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Endpoint URL of an S3-compatible server (MinIO, s3s-fs, …); unset means
    /// AWS's regional endpoint.
    pub s3_endpoint: Option<String>,
    /// S3 region; unset means the AWS chain (`AWS_REGION`, profile), else `us-east-1`.
    pub s3_region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most local
    /// S3-compatible servers.
    pub s3_force_path_style: bool,
    /// Local emulation of S3: `s3://bucket/key` is read and written at
    /// `s3_root/bucket/key` (the layout of s3s-fs) and no S3 client is built;
    /// takes precedence over every other `s3_*` setting.
    pub s3_root: Option<PathBuf>,
    /// Total attempts per S3 request, including the first. Retries of
    /// transient failures (network, timeouts, 5xx, throttling) happen inside
    /// the SDK with exponential backoff; there is no second retry loop.
    pub s3_max_attempts: u32,
    /// Explicit S3 credentials, for tests and configurations that must not use
    /// the environment. Prefer the standard AWS chain (`AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY`, profile, web identity, instance role): leave
    /// this unset. Never logged or serialised.
    #[serde(skip_serializing)]
    pub s3_credentials: Option<S3Credentials>,
    /// Largest object [`Storage::get`](super::Storage::get) reads into memory.
    pub max_object_bytes: u64,
    /// Local files of at most this many bytes are opened and read on the
    /// calling task's thread (a page-cache read of a few KiB takes
    /// microseconds, less than handing it to a blocking-pool thread and back);
    /// larger ones, and every write, go to the blocking pool. Set 0 when the
    /// local store is a network filesystem, where even a small read can stall.
    pub inline_read_bytes: u64,
    /// Files larger than this are uploaded with S3 multipart uploads.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (at least 5 MiB).
    pub part_size: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            s3_endpoint: None,
            s3_region: None,
            s3_force_path_style: false,
            s3_root: None,
            s3_max_attempts: DEFAULT_MAX_ATTEMPTS,
            s3_credentials: None,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            inline_read_bytes: DEFAULT_INLINE_READ_BYTES,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
        }
    }
}

impl StorageConfig {
    /// Checks the values that the SDK or S3 would otherwise reject late.
    pub fn validate(&self) -> Result<(), String> {
        if self.s3_max_attempts == 0 {
            return Err("s3_max_attempts must be at least 1".into());
        }
        if self.part_size < MIN_PART_SIZE {
            return Err(format!("part_size must be at least {MIN_PART_SIZE} bytes"));
        }
        if self.multipart_threshold < self.part_size {
            return Err("multipart_threshold must be at least part_size".into());
        }
        Ok(())
    }
}

/// A static access key pair. `Debug` and serialisation never show the secret.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_uses_defaults_and_unknown_fields_fail() {
        let c: StorageConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, StorageConfig::default());
        assert!(c.validate().is_ok());
        let e = serde_json::from_str::<StorageConfig>(r#"{"s3_endpiont":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `s3_endpiont`"), "{e}");
    }

    #[test]
    fn credentials_never_leak() {
        let c: StorageConfig = serde_json::from_str(
            r#"{"s3_credentials":{"access_key_id":"AK","secret_access_key":"hunter2"}}"#,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let dumped = serde_json::to_string(&c).unwrap();
        assert!(!dumped.contains("hunter2") && !dumped.contains("s3_credentials"));
    }

    #[test]
    fn rejects_bad_sizes() {
        let c = StorageConfig {
            part_size: 1024,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(e) if e.starts_with("part_size must be at least")));
        let c = StorageConfig {
            s3_max_attempts: 0,
            ..Default::default()
        };
        assert_eq!(
            c.validate(),
            Err("s3_max_attempts must be at least 1".to_string())
        );
    }
}
