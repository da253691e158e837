//! Object storage behind URIs: `s3://bucket/key` (aws-sdk-s3) and `file:///dir` (local).
//!
//! [`Storage`] is the one handle every stage uses to read its inputs and write
//! its outputs. It routes each [`ObjectUri`]:
//!
//! - `file:///abs/path` → the local filesystem (the embedded default store);
//! - `s3://bucket/key` → S3 through aws-sdk-s3 (any S3-compatible endpoint,
//!   path-style when configured, credentials from the standard AWS chain), or,
//!   when [`StorageConfig::s3_root`] is set, the local file
//!   `s3_root/bucket/key` (the layout of s3s-fs; used by `engage run --s3-root`).
//!
//! Semantics are the same on every backend: `put` replaces an object
//! atomically (readers see the old or the new bytes, never a mix), `delete`
//! of a missing object succeeds, `list` is recursive below a directory-like
//! prefix and sorted, `size` of a missing object is `None`. Errors say whether
//! a retry may help ([`StorageError::is_transient`]); transient S3 failures
//! have already been retried by the SDK (see [`StorageConfig::s3_max_attempts`]).
//!
//! One difference remains: S3 allows both `a` and `a/b` as keys, a directory
//! cannot; the pipeline never writes such pairs.

mod config;
mod error;
mod local;
mod s3;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

pub use config::{
    DEFAULT_INLINE_READ_BYTES, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_OBJECT_BYTES,
    DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, MIN_PART_SIZE, S3Credentials, StorageConfig,
};
pub use engage_model::uri::{ObjectUri, Redacted, UriError};
pub use error::StorageError;
pub use local::{TEMP_PREFIX, read_local};
pub use s3::Uploaded;

/// A streaming object reader.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// The storage handle: cheap to clone (an `Arc` inside), safe to share
/// between tasks.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The S3 client; `None` for a local-only store or with `s3_root`.
    s3: Option<s3::S3Store>,
    /// Local directory standing in for S3.
    s3_root: Option<PathBuf>,
    /// Limit of [`Storage::get`].
    max_object_bytes: u64,
    /// Local files up to this size are read without a thread hand-off.
    inline_read_bytes: u64,
}

/// Where one URI is served from.
enum Route<'a> {
    Local(PathBuf),
    S3(&'a s3::S3Store, &'a str),
}

impl Storage {
    /// Builds the store from its configuration. With `s3_root` no S3 client
    /// is built; otherwise the AWS configuration is loaded now (credentials
    /// themselves are resolved lazily, on the first request).
    pub async fn new(cfg: &StorageConfig) -> Result<Self, StorageError> {
        cfg.validate().map_err(StorageError::Config)?;
        let s3 = match cfg.s3_root {
            Some(_) => None,
            None => Some(s3::S3Store::new(cfg).await),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                s3,
                s3_root: cfg.s3_root.clone(),
                max_object_bytes: cfg.max_object_bytes,
                inline_read_bytes: cfg.inline_read_bytes,
            }),
        })
    }

    /// A store without any S3 client: `file://` URIs, plus `s3://` URIs under
    /// `s3_root` when given (otherwise `s3://` URIs fail with
    /// [`StorageError::Config`]).
    pub fn local(s3_root: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                s3: None,
                s3_root,
                max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
                inline_read_bytes: DEFAULT_INLINE_READ_BYTES,
            }),
        }
    }

    /// Reads a whole object into memory. Objects larger than
    /// [`StorageConfig::max_object_bytes`] fail with [`StorageError::TooLarge`]
    /// without being read; use [`Storage::reader`] for those.
    pub async fn get(&self, uri: &ObjectUri) -> Result<Bytes, StorageError> {
        uri.require_key()?;
        let limit = self.inner.max_object_bytes;
        match self.route(uri)? {
            Route::Local(path) => {
                let root = self.local_root(uri);
                local::get(&path, root, uri, limit, self.inner.inline_read_bytes).await
            }
            Route::S3(s3, bucket) => s3.get(bucket, uri, limit).await,
        }
    }

    /// Streams an object, or the half-open byte range `range` of it. The range
    /// is clamped to the object: a range past its end yields no bytes, an
    /// empty range yields no bytes. Errors that occur while reading the
    /// stream surface as `std::io::Error`s from the reader.
    pub async fn reader(
        &self,
        uri: &ObjectUri,
        range: Option<Range<u64>>,
    ) -> Result<ObjectReader, StorageError> {
        uri.require_key()?;
        match self.route(uri)? {
            Route::Local(path) => local::reader(&path, self.local_root(uri), uri, range).await,
            Route::S3(s3, bucket) => s3.reader(bucket, uri, range).await,
        }
    }

    /// The object's size in bytes, or `None` when it does not exist.
    pub async fn size(&self, uri: &ObjectUri) -> Result<Option<u64>, StorageError> {
        uri.require_key()?;
        match self.route(uri)? {
            Route::Local(path) => local::size(&path, self.local_root(uri), uri).await,
            Route::S3(s3, bucket) => s3.size(bucket, uri).await,
        }
    }

    /// Opens an object for one whole read and tells its size before any of
    /// its bytes are read, so that a caller can reserve memory for it first
    /// (the audio budget): `Ok(None)` when it does not exist (or is a
    /// directory), refusals as by [`Storage::get`]. Locally this is *one*
    /// open and `fstat` (on the calling thread when inline reads are on), and
    /// [`Opened::read`] reads that same file: a separate [`Storage::size`]
    /// then [`Storage::get`] cost a blocking-pool hand-off and the path's
    /// metadata lookups twice per object, which was most of the download
    /// stage's per-job cost added since 2026-11-25 in the pipeline benchmark.
    /// On S3 it is a `HEAD`, and the read a `GET`.
    pub async fn open(&self, uri: &ObjectUri) -> Result<Option<Opened>, StorageError> {
        uri.require_key()?;
        let body = match self.route(uri)? {
            Route::Local(path) => {
                let root = self.local_root(uri);
                match local::open(&path, root, uri, self.inner.inline_read_bytes).await {
                    Ok(file) => OpenedBody::Local(file),
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Route::S3(s3, bucket) => match s3.size(bucket, uri).await? {
                Some(size) => OpenedBody::Remote(size),
                None => return Ok(None),
            },
        };
        Ok(Some(Opened {
            store: self.clone(),
            uri: uri.clone(),
            body,
        }))
    }

    /// Writes (or replaces) an object. Locally the bytes go to a temporary
    /// file in the same directory, are fsynced, and renamed into place.
    pub async fn put(&self, uri: &ObjectUri, bytes: Bytes) -> Result<(), StorageError> {
        uri.require_key()?;
        match self.route(uri)? {
            Route::Local(path) => local::put(&path, uri, bytes).await,
            Route::S3(s3, bucket) => s3.put(bucket, uri, bytes).await,
        }
    }

    /// Uploads a local file without reading it into memory: one request up
    /// to [`StorageConfig::multipart_threshold`], a multipart upload above it;
    /// locally an atomic copy. A missing or unreadable *source* file is
    /// [`StorageError::Io`].
    pub async fn put_file(&self, uri: &ObjectUri, path: &Path) -> Result<Uploaded, StorageError> {
        uri.require_key()?;
        match self.route(uri)? {
            Route::Local(dest) => local::put_file(&dest, uri, path)
                .await
                .map(|bytes| Uploaded { bytes, parts: None }),
            Route::S3(s3, bucket) => s3.put_file(bucket, uri, path).await,
        }
    }

    /// Every object strictly below `prefix`, treated as a directory (`a/b`
    /// lists `a/b/…`, not `a/bc`), recursively, sorted by key. A prefix that
    /// does not exist lists as empty. Keys that no `ObjectUri` names exactly
    /// (`..` or empty segments, a trailing `/` "folder marker", non-UTF-8
    /// file names) are skipped.
    pub async fn list(&self, prefix: &ObjectUri) -> Result<Vec<ObjectUri>, StorageError> {
        let mut out: Vec<ObjectUri> = match self.route(prefix)? {
            Route::Local(dir) => local::list(&dir, prefix)
                .await?
                .iter()
                .filter_map(|rel| prefix.join(rel).ok())
                .collect(),
            Route::S3(s3, bucket) => s3
                .list(bucket, prefix)
                .await?
                .iter()
                .filter(|key| !key.ends_with('/'))
                // Only keys an ObjectUri names exactly: a key such as `a//b`
                // would normalise to `a/b`, a different object.
                .filter_map(|key| ObjectUri::s3(bucket, key).ok().filter(|u| u.key() == key))
                .filter(|u| u.relative_to(prefix).is_some())
                .collect(),
        };
        out.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        out.dedup();
        Ok(out)
    }

    /// Deletes an object; deleting a missing object succeeds.
    pub async fn delete(&self, uri: &ObjectUri) -> Result<(), StorageError> {
        uri.require_key()?;
        match self.route(uri)? {
            Route::Local(path) => local::delete(&path, uri).await,
            Route::S3(s3, bucket) => s3.delete(bucket, uri).await,
        }
    }

    /// Makes sure the container of `uri` exists: creates the bucket of an
    /// `s3://` URI if missing (its key is ignored), or the directory of a
    /// `file://` URI (with `s3_root`: the bucket's directory).
    pub async fn ensure_bucket(&self, uri: &ObjectUri) -> Result<(), StorageError> {
        let root = self.container(uri)?;
        match self.route(&root)? {
            Route::Local(path) => local::ensure_dir(&path, &root).await,
            Route::S3(s3, bucket) => s3.ensure_bucket(bucket, &root).await,
        }
    }

    /// Readiness check for `/readyz`: the container of `uri` exists and is
    /// reachable (HEAD bucket on S3, an existing directory locally).
    pub async fn ping(&self, uri: &ObjectUri) -> Result<(), StorageError> {
        let root = self.container(uri)?;
        match self.route(&root)? {
            Route::Local(path) => local::ping(&path, &root).await,
            Route::S3(s3, bucket) => s3.ping(bucket, &root).await,
        }
    }

    /// The directory no symlink may be followed below: `s3_root` for an
    /// `s3://` URI served locally; `None` for `file://` URIs (only their last
    /// component is checked).
    fn local_root(&self, uri: &ObjectUri) -> Option<PathBuf> {
        uri.bucket().and(self.inner.s3_root.clone())
    }

    /// The bucket root of an `s3://` URI; a `file://` URI itself.
    fn container(&self, uri: &ObjectUri) -> Result<ObjectUri, StorageError> {
        match uri.bucket() {
            Some(bucket) => Ok(ObjectUri::s3(bucket, "")?),
            None => Ok(uri.clone()),
        }
    }

    fn route<'a>(&'a self, uri: &'a ObjectUri) -> Result<Route<'a>, StorageError> {
        if let Some(path) = uri.local_path() {
            return Ok(Route::Local(path));
        }
        let bucket = uri.bucket().ok_or(UriError::UnsupportedScheme)?;
        if let Some(root) = &self.inner.s3_root {
            // Bucket names and keys are validated and normalised: no `..`,
            // no absolute segment, so the path stays below `root`.
            let mut path = root.join(bucket);
            if !uri.is_root() {
                path.push(uri.key());
            }
            return Ok(Route::Local(path));
        }
        match &self.inner.s3 {
            Some(s3) => Ok(Route::S3(s3, bucket)),
            None => Err(StorageError::Config(
                "s3:// URI but no S3 client and no s3_root configured".into(),
            )),
        }
    }
}

/// An object opened by [`Storage::open`]: its size is known, its bytes not
/// read yet.
#[derive(Debug)]
pub struct Opened {
    store: Storage,
    uri: ObjectUri,
    body: OpenedBody,
}

#[derive(Debug)]
enum OpenedBody {
    /// The open local file.
    Local(local::OpenFile),
    /// The size an S3 `HEAD` answered.
    Remote(u64),
}

impl Opened {
    /// The object's size in bytes when it was opened.
    pub fn size(&self) -> u64 {
        match &self.body {
            OpenedBody::Local(f) => f.len(),
            OpenedBody::Remote(n) => *n,
        }
    }

    /// Reads the whole object, refusing more than
    /// [`StorageConfig::max_object_bytes`] as [`Storage::get`] does. Locally
    /// the bytes are the opened file's (a file replaced since is read as it
    /// was opened); on S3 this is a `GET`, so the object may have changed
    /// since the `HEAD`.
    pub async fn read(self) -> Result<Bytes, StorageError> {
        let inner = &self.store.inner;
        match self.body {
            OpenedBody::Local(file) => {
                local::read_open(
                    file,
                    &self.uri,
                    inner.max_object_bytes,
                    inner.inline_read_bytes,
                )
                .await
            }
            OpenedBody::Remote(_) => self.store.get(&self.uri).await,
        }
    }
}

/// The content key of a blob: its SHA-256 as lowercase hex (64 characters).
pub fn content_key(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Component;
    use tokio::io::AsyncReadExt;

    #[test]
    fn content_key_is_sha256_hex() {
        assert_eq!(
            content_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn local_round_trip_and_listing_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::local(None);
        let base = ObjectUri::file(dir.path()).unwrap();
        let a = base.join("x/a.json").unwrap();
        let b = base.join("x/sub/b.json").unwrap();
        let sibling = base.join("xy/c.json").unwrap();
        for (u, body) in [(&a, "A"), (&b, "BB"), (&sibling, "C")] {
            store.put(u, Bytes::from(body)).await.unwrap();
        }
        assert_eq!(store.get(&a).await.unwrap(), Bytes::from("A"));
        assert_eq!(store.size(&b).await.unwrap(), Some(2));
        assert_eq!(store.size(&base.join("x").unwrap()).await.unwrap(), None);
        let listed = store.list(&base.join("x").unwrap()).await.unwrap();
        assert_eq!(listed, vec![a.clone(), b.clone()]);
        assert!(
            store
                .list(&base.join("nope").unwrap())
                .await
                .unwrap()
                .is_empty()
        );
        store.delete(&a).await.unwrap();
        store.delete(&a).await.unwrap(); // idempotent
        assert!(store.get(&a).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn open_tells_the_size_then_reads_and_a_missing_object_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::local(Some(dir.path().to_path_buf()));
        let u = ObjectUri::parse("s3://bkt/a/b.wav").unwrap();
        store.put(&u, Bytes::from("12345")).await.unwrap();
        let opened = store.open(&u).await.unwrap().expect("exists");
        assert_eq!(opened.size(), 5);
        assert_eq!(opened.read().await.unwrap(), Bytes::from("12345"));
        let missing = ObjectUri::parse("s3://bkt/a/nope.wav").unwrap();
        assert!(store.open(&missing).await.unwrap().is_none());
        let dir_uri = ObjectUri::parse("s3://bkt/a").unwrap();
        assert!(store.open(&dir_uri).await.unwrap().is_none());
        // The size limit of get applies to the read.
        let mut small = Storage::local(Some(dir.path().to_path_buf()));
        Arc::get_mut(&mut small.inner).unwrap().max_object_bytes = 4;
        let opened = small.open(&u).await.unwrap().expect("exists");
        assert_eq!(opened.size(), 5);
        assert_eq!(opened.read().await.unwrap_err().class(), "too_large");
    }

    #[tokio::test]
    async fn overwrite_is_atomic_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::local(None);
        let u = ObjectUri::file(dir.path().join("o")).unwrap();
        store.put(&u, Bytes::from("old")).await.unwrap();
        store.put(&u, Bytes::from("new!")).await.unwrap();
        assert_eq!(store.get(&u).await.unwrap(), Bytes::from("new!"));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("o")]);
        // A leftover temp file (crash mid-write) is never listed.
        std::fs::write(dir.path().join(format!("{TEMP_PREFIX}x")), "partial").unwrap();
        let listed = store
            .list(&ObjectUri::file(dir.path()).unwrap())
            .await
            .unwrap();
        assert_eq!(listed, vec![u]);
    }

    #[tokio::test]
    async fn ranges_are_half_open_and_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Storage::local(None);
        let u = ObjectUri::file(dir.path().join("r")).unwrap();
        store.put(&u, Bytes::from("0123456789")).await.unwrap();
        for (range, want) in [
            (Some(2..5), "234"),
            (Some(8..100), "89"),
            (Some(20..30), ""),
            (Some(5..5), ""),
            (None, "0123456789"),
        ] {
            let mut s = String::new();
            store
                .reader(&u, range.clone())
                .await
                .unwrap()
                .read_to_string(&mut s)
                .await
                .unwrap();
            assert_eq!(s, want, "{range:?}");
        }
    }

    #[tokio::test]
    async fn size_guard_and_roots() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Storage::local(Some(dir.path().to_path_buf()));
        Arc::get_mut(&mut store.inner).unwrap().max_object_bytes = 4;
        let u = ObjectUri::parse("s3://bkt/big").unwrap();
        store.put(&u, Bytes::from("12345")).await.unwrap();
        assert!(dir.path().join("bkt/big").is_file());
        let err = store.get(&u).await.unwrap_err();
        assert_eq!(err.class(), "too_large");
        let root = ObjectUri::parse("s3://bkt").unwrap();
        assert_eq!(store.get(&root).await.unwrap_err().class(), "invalid_uri");
        store
            .ensure_bucket(&ObjectUri::parse("s3://other/x").unwrap())
            .await
            .unwrap();
        assert!(dir.path().join("other").is_dir());
        store
            .ping(&ObjectUri::parse("s3://other").unwrap())
            .await
            .unwrap();
        assert!(
            store
                .ping(&ObjectUri::parse("s3://missing").unwrap())
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn s3_without_client_or_root_is_a_config_error() {
        let err = Storage::local(None)
            .get(&ObjectUri::parse("s3://bkt/k").unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.class(), "config");
        assert!(!err.is_transient());
    }

    proptest! {
        /// Whatever key a URI carries, its local path stays below `s3_root`.
        #[test]
        fn s3_root_paths_stay_below_the_root(key in "[a-z./\\\\%]{1,40}") {
            let store = Storage::local(Some(PathBuf::from("/srv/s3")));
            if let Ok(uri) = ObjectUri::s3("bkt", &key)
                && let Ok(Route::Local(path)) = store.route(&uri)
            {
                prop_assert!(path.starts_with("/srv/s3/bkt"));
                prop_assert!(path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
            }
        }
    }
}
