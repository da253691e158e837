//! The local backend: objects are files under a directory.
//!
//! Used for `file:///…` URIs and, with an `s3_root`, for `s3://bucket/key`
//! (stored at `s3_root/bucket/key`, the layout of s3s-fs). Paths come only
//! from normalised [`ObjectUri`] keys, so they cannot leave their root.
//! Writes go to a temporary file in the destination directory, are fsynced
//! and renamed into place (then the directory is fsynced), so readers never
//! see a partial object and a completed write survives a crash. Symlinks
//! are not followed when listing.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::fs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::error::StorageError;
use super::uri::ObjectUri;

/// Prefix of in-progress temporary files; such files are never listed.
pub const TEMP_PREFIX: &str = ".engage-tmp-";

/// Reads a whole file, refusing files larger than `limit`.
pub(crate) async fn get(path: &Path, uri: &ObjectUri, limit: u64) -> Result<Bytes, StorageError> {
    const OP: &str = "get";
    let file = open_file(path, uri, OP).await?;
    let len = file
        .metadata()
        .await
        .map_err(|e| StorageError::from_io(OP, uri, e))?
        .len();
    if len > limit {
        return Err(too_large(uri, len, limit));
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // Read at most limit + 1 bytes: the file may grow after the size check.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .await
        .map_err(|e| StorageError::from_io(OP, uri, e))?;
    let read = buf.len() as u64;
    if read > limit {
        return Err(too_large(uri, read, limit));
    }
    Ok(Bytes::from(buf))
}

/// Opens a streaming reader over `range` (clamped to the file).
pub(crate) async fn reader(
    path: &Path,
    uri: &ObjectUri,
    range: Option<Range<u64>>,
) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError> {
    const OP: &str = "read";
    let mut file = open_file(path, uri, OP).await?;
    match range {
        None => Ok(Box::new(file)),
        Some(r) => {
            file.seek(SeekFrom::Start(r.start))
                .await
                .map_err(|e| StorageError::from_io(OP, uri, e))?;
            Ok(Box::new(file.take(r.end.saturating_sub(r.start))))
        }
    }
}

/// The size of a regular file; `None` when it does not exist or is a directory.
pub(crate) async fn size(path: &Path, uri: &ObjectUri) -> Result<Option<u64>, StorageError> {
    match fs::metadata(path).await {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Ok(None),
        Err(e) => match StorageError::from_io("size", uri, e) {
            StorageError::NotFound { .. } => Ok(None),
            other => Err(other),
        },
    }
}

/// Writes `bytes` atomically (temp file in the same directory, fsync, rename).
pub(crate) async fn put(path: &Path, uri: &ObjectUri, bytes: &[u8]) -> Result<(), StorageError> {
    const OP: &str = "put";
    let tmp = temp_path(path, uri, OP).await?;
    let result = async {
        let mut f = fs::File::create(&tmp).await?;
        f.write_all(bytes).await?;
        f.sync_all().await?;
        fs::rename(&tmp, path).await?;
        sync_parent(path).await
    }
    .await;
    finish(result, &tmp, OP, uri).await
}

/// Copies `src` into place atomically; returns the bytes written.
pub(crate) async fn put_file(
    path: &Path,
    uri: &ObjectUri,
    src: &Path,
) -> Result<u64, StorageError> {
    const OP: &str = "put_file";
    // A missing source is the caller's problem, not a missing object: report it as I/O.
    let src_len = fs::metadata(src)
        .await
        .map_err(|source| StorageError::Io {
            op: OP,
            uri: uri.clone(),
            source,
        })?
        .len();
    let tmp = temp_path(path, uri, OP).await?;
    let result = async {
        fs::copy(src, &tmp).await?;
        fs::File::open(&tmp).await?.sync_all().await?;
        fs::rename(&tmp, path).await?;
        sync_parent(path).await
    }
    .await;
    finish(result, &tmp, OP, uri).await.map(|()| src_len)
}

/// Lists every regular file under `dir`, as `/`-separated paths relative to
/// it, sorted. A missing directory lists as empty.
pub(crate) async fn list(dir: &Path, uri: &ObjectUri) -> Result<Vec<String>, StorageError> {
    const OP: &str = "list";
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let mut entries = match fs::read_dir(&path).await {
            Ok(e) => e,
            Err(e) if rel.is_empty() => {
                return match StorageError::from_io(OP, uri, e) {
                    StorageError::NotFound { .. } => Ok(Vec::new()),
                    other => Err(other),
                };
            }
            // A directory removed while walking: nothing left to list in it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::from_io(OP, uri, e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| StorageError::from_io(OP, uri, e))?
        {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue; // not UTF-8: cannot be named by an ObjectUri
            };
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry
                .file_type()
                .await
                .map_err(|e| StorageError::from_io(OP, uri, e))?;
            if kind.is_dir() {
                stack.push((entry.path(), child));
            } else if kind.is_file() {
                out.push(child);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Removes a file; a missing file is not an error (deletes are idempotent, as on S3).
pub(crate) async fn delete(path: &Path, uri: &ObjectUri) -> Result<(), StorageError> {
    match fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) => match StorageError::from_io("delete", uri, e) {
            StorageError::NotFound { .. } => Ok(()),
            other => Err(other),
        },
    }
}

/// Creates a directory and its parents.
pub(crate) async fn ensure_dir(path: &Path, uri: &ObjectUri) -> Result<(), StorageError> {
    fs::create_dir_all(path)
        .await
        .map_err(|e| StorageError::from_write_io("ensure_bucket", uri, e))
}

/// Succeeds when `path` is an existing directory.
pub(crate) async fn ping(path: &Path, uri: &ObjectUri) -> Result<(), StorageError> {
    match fs::metadata(path).await {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StorageError::NotFound {
            op: "ping",
            uri: uri.clone(),
        }),
        Err(e) => Err(StorageError::from_io("ping", uri, e)),
    }
}

async fn open_file(
    path: &Path,
    uri: &ObjectUri,
    op: &'static str,
) -> Result<fs::File, StorageError> {
    let file = fs::File::open(path)
        .await
        .map_err(|e| StorageError::from_io(op, uri, e))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| StorageError::from_io(op, uri, e))?;
    if meta.is_file() {
        Ok(file)
    } else {
        Err(StorageError::NotFound {
            op,
            uri: uri.clone(),
        })
    }
}

/// Creates the destination directory and returns a unique temp path in it
/// (same directory, so the final rename is atomic).
async fn temp_path(
    path: &Path,
    uri: &ObjectUri,
    op: &'static str,
) -> Result<PathBuf, StorageError> {
    let Some(dir) = path.parent() else {
        return Err(super::uri::UriError::NoKey.into());
    };
    fs::create_dir_all(dir)
        .await
        .map_err(|e| StorageError::from_write_io(op, uri, e))?;
    Ok(dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple())))
}

/// Fsyncs the directory holding `path`, so a completed rename survives a crash.
async fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir).await?.sync_all().await,
        None => Ok(()),
    }
}

/// Maps the result of a temp-file write, removing the temp file on failure.
async fn finish(
    result: std::io::Result<()>,
    tmp: &Path,
    op: &'static str,
    uri: &ObjectUri,
) -> Result<(), StorageError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            // Best effort: the temp file is invisible to `list` anyway.
            let _ = fs::remove_file(tmp).await;
            Err(StorageError::from_write_io(op, uri, e))
        }
    }
}

fn too_large(uri: &ObjectUri, size: u64, limit: u64) -> StorageError {
    StorageError::TooLarge {
        uri: uri.clone(),
        size,
        limit,
    }
}
