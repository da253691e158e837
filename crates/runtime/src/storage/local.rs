//! The local backend: objects are files under a directory.
//!
//! Used for `file:///…` URIs and, with an `s3_root`, for `s3://bucket/key`
//! (stored at `s3_root/bucket/key`, the layout of s3s-fs). Paths come only
//! from normalised [`ObjectUri`] keys, so they cannot leave their root.
//! Writes go to a temporary file in the destination directory, are fsynced
//! and renamed into place (then the directory is fsynced), so readers never
//! see a partial object and a completed write survives a crash. Symlinks
//! are not followed when listing.
//!
//! # Only regular files are read
//!
//! Keys come from learner data, and the directory may hold anything an
//! operator or another process put there. Reads ([`get`], [`reader`],
//! [`size`], [`read_local`]) therefore open with `O_NOFOLLOW | O_NONBLOCK`
//! and `fstat` the opened handle: a symlink as the last component is
//! [`StorageError::SymlinkRefused`], and a FIFO, socket or device is
//! [`StorageError::NotRegularFile`], refused without blocking (a FIFO opened
//! without `O_NONBLOCK` would hang the opening thread, which may be an async
//! worker thread; `/dev/zero` would be read until the size limit). Below an
//! `s3_root`, every component between the root and the object is also
//! checked with `symlink_metadata`, so a symlinked bucket or key directory
//! cannot lead outside the root. The root itself may be a symlink (it is the
//! operator's choice). Both errors are permanent.
//!
//! Every whole-object operation runs as *one* blocking task over `std::fs`
//! ([`blocking`]): with `tokio::fs` each file-system call would be its own
//! round trip to the blocking pool (a `put` was seven). Only the streaming
//! [`reader`] stays on `tokio::fs`. A blocking task runs to completion even
//! if its caller is dropped, so a started write still finishes or cleans up.

use std::fs;
use std::io::{self, Read, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use std::os::unix::fs::OpenOptionsExt;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::error::StorageError;
use engage_model::uri::ObjectUri;

/// Prefix of in-progress temporary files; such files are never listed.
pub const TEMP_PREFIX: &str = ".engage-tmp-";

/// Reads a whole file, refusing files larger than `limit`. With `inline_max`
/// above 0 the file is opened and sized on this thread (metadata lookups) and,
/// if it has at most `inline_max` bytes, read here too: for a small file in
/// the page cache that costs microseconds, less than the blocking-pool round
/// trip (two thread wake-ups), which was the largest per-job cost of the
/// download and analyze stages in the pipeline benchmark. Larger files are
/// read on the blocking pool; `inline_max` 0 sends the whole read there.
pub(crate) async fn get(
    path: &Path,
    root: Option<PathBuf>,
    uri: &ObjectUri,
    limit: u64,
    inline_max: u64,
) -> Result<Bytes, StorageError> {
    if inline_max == 0 {
        return blocking("get", path, uri, move |path, uri| {
            get_sync(path, root.as_deref(), uri, limit)
        })
        .await;
    }
    let (file, meta) = open_regular(path, root.as_deref(), uri, "get")?;
    let len = meta.len();
    if len <= inline_max {
        return read_whole(file, len, uri, limit);
    }
    blocking("get", path, uri, move |_, uri| {
        read_whole(file, len, uri, limit)
    })
    .await
}

/// A regular file opened for one whole read, with its size when opened
/// (see [`open`]).
#[derive(Debug)]
pub(crate) struct OpenFile {
    file: fs::File,
    len: u64,
    path: PathBuf,
}

impl OpenFile {
    /// The file's size when it was opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// Opens a regular file for one whole read, with the refusals of [`get`]
/// (symlinks, special files; a directory is not found). With `inline_max`
/// above 0 this runs on the calling thread (a few metadata lookups), as
/// [`get`] does; 0 sends it to the blocking pool.
pub(crate) async fn open(
    path: &Path,
    root: Option<PathBuf>,
    uri: &ObjectUri,
    inline_max: u64,
) -> Result<OpenFile, StorageError> {
    const OP: &str = "get";
    let (file, meta) = if inline_max == 0 {
        blocking(OP, path, uri, move |path, uri| {
            open_regular(path, root.as_deref(), uri, OP)
        })
        .await?
    } else {
        open_regular(path, root.as_deref(), uri, OP)?
    };
    Ok(OpenFile {
        file,
        len: meta.len(),
        path: path.to_path_buf(),
    })
}

/// Reads a file opened by [`open`], refusing more than `limit` bytes: on this
/// thread when it has at most `inline_max` bytes (and `inline_max` is above
/// 0), otherwise on the blocking pool.
pub(crate) async fn read_open(
    opened: OpenFile,
    uri: &ObjectUri,
    limit: u64,
    inline_max: u64,
) -> Result<Bytes, StorageError> {
    let OpenFile { file, len, path } = opened;
    if inline_max > 0 && len <= inline_max {
        return read_whole(file, len, uri, limit);
    }
    blocking("get", &path, uri, move |_, uri| {
        read_whole(file, len, uri, limit)
    })
    .await
}

fn get_sync(
    path: &Path,
    root: Option<&Path>,
    uri: &ObjectUri,
    limit: u64,
) -> Result<Bytes, StorageError> {
    let (file, meta) = open_regular(path, root, uri, "get")?;
    read_whole(file, meta.len(), uri, limit)
}

/// Reads the `s3://bucket/key` object `uri` from `root/bucket/key` on the
/// calling thread, with the same refusals as the store's `get` (regular files
/// only, no symlink below `root`, at most `limit` bytes). This is how
/// `engage run --s3-root` reads audio, so it refuses exactly what the fleet does.
pub fn read_local(root: &Path, uri: &ObjectUri, limit: u64) -> Result<Bytes, StorageError> {
    uri.require_key()?;
    let Some(bucket) = uri.bucket() else {
        return Err(engage_model::uri::UriError::UnsupportedScheme.into());
    };
    // Bucket and key are validated and normalised: the path stays below `root`.
    let path = root.join(bucket).join(uri.key());
    get_sync(&path, Some(root), uri, limit)
}

/// Reads an open file of `len` bytes (its size when opened), refusing more
/// than `limit`.
fn read_whole(
    file: fs::File,
    len: u64,
    uri: &ObjectUri,
    limit: u64,
) -> Result<Bytes, StorageError> {
    const OP: &str = "get";
    if len > limit {
        return Err(too_large(uri, len, limit));
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // Read at most limit + 1 bytes: the file may grow after the size check.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
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
    root: Option<PathBuf>,
    uri: &ObjectUri,
    range: Option<Range<u64>>,
) -> Result<Box<dyn AsyncRead + Send + Unpin>, StorageError> {
    const OP: &str = "read";
    let (file, _) = blocking(OP, path, uri, move |path, uri| {
        open_regular(path, root.as_deref(), uri, OP)
    })
    .await?;
    let mut file = tokio::fs::File::from_std(file);
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

/// The size of a regular file; `None` when it does not exist or is a
/// directory. A symlink or special file is refused as by [`get`].
pub(crate) async fn size(
    path: &Path,
    root: Option<PathBuf>,
    uri: &ObjectUri,
) -> Result<Option<u64>, StorageError> {
    const OP: &str = "size";
    blocking(OP, path, uri, move |path, uri| {
        let checked = match &root {
            Some(root) => refuse_symlinks_below(root, path, uri, OP),
            None => Ok(()),
        };
        match checked.and_then(|()| {
            fs::symlink_metadata(path).map_err(|e| StorageError::from_io(OP, uri, e))
        }) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(m) if m.is_dir() => Ok(None),
            Ok(m) => Err(refusal(&m.file_type(), OP, uri)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    })
    .await
}

/// Writes `bytes` atomically (temp file in the same directory, fsync, rename).
pub(crate) async fn put(path: &Path, uri: &ObjectUri, bytes: Bytes) -> Result<(), StorageError> {
    blocking("put", path, uri, move |path, uri| {
        put_sync(path, uri, &bytes)
    })
    .await
}

fn put_sync(path: &Path, uri: &ObjectUri, bytes: &[u8]) -> Result<(), StorageError> {
    const OP: &str = "put";
    let tmp = temp_path(path, uri, OP)?;
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    finish(result, &tmp, OP, uri)
}

/// Copies `src` into place atomically; returns the bytes written.
pub(crate) async fn put_file(
    path: &Path,
    uri: &ObjectUri,
    src: &Path,
) -> Result<u64, StorageError> {
    let src = src.to_path_buf();
    blocking("put_file", path, uri, move |path, uri| {
        put_file_sync(path, uri, &src)
    })
    .await
}

fn put_file_sync(path: &Path, uri: &ObjectUri, src: &Path) -> Result<u64, StorageError> {
    const OP: &str = "put_file";
    // A missing source is the caller's problem, not a missing object: report it as I/O.
    let src_len = fs::metadata(src)
        .map_err(|source| StorageError::Io {
            op: OP,
            uri: uri.clone(),
            source,
        })?
        .len();
    let tmp = temp_path(path, uri, OP)?;
    let result = (|| {
        fs::copy(src, &tmp)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_parent(path)
    })();
    finish(result, &tmp, OP, uri).map(|()| src_len)
}

/// Lists every regular file under `dir`, as `/`-separated paths relative to
/// it, sorted. A missing directory lists as empty.
pub(crate) async fn list(dir: &Path, uri: &ObjectUri) -> Result<Vec<String>, StorageError> {
    blocking("list", dir, uri, |dir, uri| {
        list_sync(dir.to_path_buf(), uri)
    })
    .await
}

fn list_sync(dir: PathBuf, uri: &ObjectUri) -> Result<Vec<String>, StorageError> {
    const OP: &str = "list";
    let mut out = Vec::new();
    let mut stack = vec![(dir, String::new())];
    while let Some((path, rel)) = stack.pop() {
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if rel.is_empty() => {
                return match StorageError::from_io(OP, uri, e) {
                    StorageError::NotFound { .. } => Ok(Vec::new()),
                    other => Err(other),
                };
            }
            // A directory removed while walking: nothing left to list in it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::from_io(OP, uri, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::from_io(OP, uri, e))?;
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
    blocking("delete", path, uri, |path, uri| {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) => match StorageError::from_io("delete", uri, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    })
    .await
}

/// Creates a directory and its parents.
pub(crate) async fn ensure_dir(path: &Path, uri: &ObjectUri) -> Result<(), StorageError> {
    const OP: &str = "ensure_bucket";
    blocking(OP, path, uri, |path, uri| {
        fs::create_dir_all(path).map_err(|e| StorageError::from_write_io(OP, uri, e))
    })
    .await
}

/// Succeeds when `path` is an existing directory.
pub(crate) async fn ping(path: &Path, uri: &ObjectUri) -> Result<(), StorageError> {
    const OP: &str = "ping";
    blocking(OP, path, uri, |path, uri| match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StorageError::NotFound {
            op: OP,
            uri: uri.clone(),
        }),
        Err(e) => Err(StorageError::from_io(OP, uri, e)),
    })
    .await
}

/// Runs one whole operation on `path` on the blocking pool (with owned copies
/// of `path` and `uri`): a single hand-off however many file-system calls it
/// makes. A panic (or a cancelled task at runtime shutdown) becomes
/// [`StorageError::Io`].
async fn blocking<T, F>(
    op: &'static str,
    path: &Path,
    uri: &ObjectUri,
    f: F,
) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&Path, &ObjectUri) -> Result<T, StorageError> + Send + 'static,
{
    let (owned_path, owned_uri) = (path.to_path_buf(), uri.clone());
    let task = tokio::task::spawn_blocking(move || f(&owned_path, &owned_uri));
    task.await.unwrap_or_else(|e| {
        Err(StorageError::Io {
            op,
            uri: uri.clone(),
            source: io::Error::other(e),
        })
    })
}

/// Opens a regular file and returns it with its metadata (read once from the
/// opened handle); a directory is not found. Never follows a symlink as the
/// last component, nor (with `root`) anywhere below `root`; never blocks on
/// a FIFO; refuses anything that is not a regular file.
fn open_regular(
    path: &Path,
    root: Option<&Path>,
    uri: &ObjectUri,
    op: &'static str,
) -> Result<(fs::File, fs::Metadata), StorageError> {
    if let Some(root) = root {
        refuse_symlinks_below(root, path, uri, op)?;
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                StorageError::SymlinkRefused {
                    op,
                    uri: uri.clone(),
                }
            } else {
                StorageError::from_io(op, uri, e)
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|e| StorageError::from_io(op, uri, e))?;
    if meta.is_file() {
        Ok((file, meta))
    } else if meta.is_dir() {
        Err(StorageError::NotFound {
            op,
            uri: uri.clone(),
        })
    } else {
        Err(refusal(&meta.file_type(), op, uri))
    }
}

/// Refuses `path` when any component after `root` is a symlink (checked with
/// `symlink_metadata`, one component at a time). A missing component is
/// not-found; a path outside `root` is refused as a symlink escape.
fn refuse_symlinks_below(
    root: &Path,
    path: &Path,
    uri: &ObjectUri,
    op: &'static str,
) -> Result<(), StorageError> {
    let symlink = || StorageError::SymlinkRefused {
        op,
        uri: uri.clone(),
    };
    let rel = path.strip_prefix(root).map_err(|_| symlink())?;
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        let meta = fs::symlink_metadata(&at).map_err(|e| StorageError::from_io(op, uri, e))?;
        if meta.file_type().is_symlink() {
            return Err(symlink());
        }
    }
    Ok(())
}

/// The error for a file that is neither regular nor a directory.
fn refusal(ft: &fs::FileType, op: &'static str, uri: &ObjectUri) -> StorageError {
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_symlink() {
        return StorageError::SymlinkRefused {
            op,
            uri: uri.clone(),
        };
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    };
    StorageError::NotRegularFile {
        op,
        uri: uri.clone(),
        kind,
    }
}

/// Creates the destination directory and returns a unique temp path in it
/// (same directory, so the final rename is atomic).
fn temp_path(path: &Path, uri: &ObjectUri, op: &'static str) -> Result<PathBuf, StorageError> {
    let Some(dir) = path.parent() else {
        return Err(engage_model::uri::UriError::NoKey.into());
    };
    fs::create_dir_all(dir).map_err(|e| StorageError::from_write_io(op, uri, e))?;
    Ok(dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple())))
}

/// Fsyncs the directory holding `path`, so a completed rename survives a crash.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Maps the result of a temp-file write, removing the temp file on failure.
fn finish(
    result: io::Result<()>,
    tmp: &Path,
    op: &'static str,
    uri: &ObjectUri,
) -> Result<(), StorageError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            // Best effort: the temp file is invisible to `list` anyway.
            let _ = fs::remove_file(tmp);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    /// `root/bkt/<key>`, with its `s3://` URI.
    fn object(root: &Path, key: &str) -> (PathBuf, ObjectUri) {
        (
            root.join("bkt").join(key),
            ObjectUri::parse(&format!("s3://bkt/{key}")).unwrap(),
        )
    }

    /// Every read entry point, on `path` below `root`: each must refuse with `class`.
    async fn assert_refused(root: &Path, key: &str, class: &str) {
        let (path, uri) = object(root, key);
        let started = Instant::now();
        for inline in [0, 1 << 20] {
            let e = get(&path, Some(root.to_path_buf()), &uri, 1 << 30, inline)
                .await
                .unwrap_err();
            assert_eq!(e.class(), class, "get inline={inline}: {e}");
            assert!(!e.is_transient());
            let e = open(&path, Some(root.to_path_buf()), &uri, inline)
                .await
                .unwrap_err();
            assert_eq!(e.class(), class, "open inline={inline}: {e}");
        }
        let e = reader(&path, Some(root.to_path_buf()), &uri, None)
            .await
            .err()
            .expect("reader refused");
        assert_eq!(e.class(), class, "reader: {e}");
        let e = size(&path, Some(root.to_path_buf()), &uri)
            .await
            .unwrap_err();
        assert_eq!(e.class(), class, "size: {e}");
        let e = read_local(root, &uri, 1 << 30).unwrap_err();
        assert_eq!(e.class(), class, "read_local: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "refusing took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_symlink_to_dev_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bkt")).unwrap();
        symlink("/dev/zero", dir.path().join("bkt/zero.wav")).unwrap();
        assert_refused(dir.path(), "zero.wav", "symlink_refused").await;
        // Without a root (file:// URIs) the last component is still not followed.
        let uri = ObjectUri::parse("s3://bkt/zero.wav").unwrap();
        let e = get(&dir.path().join("bkt/zero.wav"), None, &uri, 1 << 30, 0)
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::SymlinkRefused { .. }), "{e}");
    }

    #[tokio::test]
    async fn symlinks_escaping_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.wav"), "outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bkt")).unwrap();
        // A symlinked file and a symlinked directory on the way.
        symlink(
            outside.path().join("secret.wav"),
            dir.path().join("bkt/file.wav"),
        )
        .unwrap();
        symlink(outside.path(), dir.path().join("bkt/sub")).unwrap();
        assert_refused(dir.path(), "file.wav", "symlink_refused").await;
        assert_refused(dir.path(), "sub/secret.wav", "symlink_refused").await;
        // A symlinked bucket directory too.
        let other = tempfile::tempdir().unwrap();
        fs::create_dir(other.path().join("bkt")).unwrap();
        fs::write(other.path().join("bkt/a.wav"), "x").unwrap();
        let root2 = tempfile::tempdir().unwrap();
        symlink(other.path().join("bkt"), root2.path().join("bkt")).unwrap();
        assert_refused(root2.path(), "a.wav", "symlink_refused").await;
        // The root itself may be a symlink; regular files below it read fine.
        let link_root = root2.path().join("root-link");
        symlink(other.path(), &link_root).unwrap();
        let uri = ObjectUri::parse("s3://bkt/a.wav").unwrap();
        assert_eq!(read_local(&link_root, &uri, 10).unwrap(), Bytes::from("x"));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bkt")).unwrap();
        let fifo = dir.path().join("bkt/pipe.wav");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        // A blocking open would hang its thread (and, inline, the runtime):
        // run the reads on their own thread and give up waiting after 10 s.
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let e = rt.block_on(async {
                assert_refused(&root, "pipe.wav", "not_regular_file").await;
                let (path, uri) = object(&root, "pipe.wav");
                get(&path, None, &uri, 10, 1 << 20).await.unwrap_err()
            });
            let _ = tx.send(e);
        });
        let e = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("refused without blocking");
        assert!(
            matches!(e, StorageError::NotRegularFile { kind: "fifo", .. }),
            "{e}"
        );
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[tokio::test]
    async fn a_device_is_refused() {
        let uri = ObjectUri::parse("s3://bkt/zero.wav").unwrap();
        let e = get(Path::new("/dev/zero"), None, &uri, 1 << 30, 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::NotRegularFile {
                    kind: "character device",
                    ..
                }
            ),
            "{e}"
        );
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn get_and_size_treat_a_directory_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(dir.path().join("f"), "x").unwrap();
        for inline in INLINE {
            let uri = ObjectUri::file(&sub).unwrap();
            assert!(
                get(&sub, None, &uri, 100, inline)
                    .await
                    .unwrap_err()
                    .is_not_found()
            );
            assert_eq!(size(&sub, None, &uri).await.unwrap(), None);
            let missing = dir.path().join("missing");
            let uri = ObjectUri::file(&missing).unwrap();
            assert!(
                get(&missing, None, &uri, 100, inline)
                    .await
                    .unwrap_err()
                    .is_not_found()
            );
            assert_eq!(size(&missing, None, &uri).await.unwrap(), None);
            // A path through a regular file ("not a directory") is not found either.
            let through = dir.path().join("f/g");
            let uri = ObjectUri::file(&through).unwrap();
            assert!(
                get(&through, None, &uri, 100, inline)
                    .await
                    .unwrap_err()
                    .is_not_found()
            );
            assert_eq!(size(&through, None, &uri).await.unwrap(), None);
        }
    }

    /// Every inline threshold that matters for a 4-byte file: always handed
    /// off (0), handed off because larger (3), read inline (4, 1 MiB).
    const INLINE: [u64; 4] = [0, 3, 4, 1 << 20];

    #[tokio::test]
    async fn an_opened_file_reads_the_bytes_it_was_opened_with() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bkt")).unwrap();
        let (path, uri) = object(dir.path(), "a.wav");
        let root = Some(dir.path().to_path_buf());
        for inline in INLINE {
            fs::write(&path, "1234").unwrap();
            let opened = open(&path, root.clone(), &uri, inline).await.unwrap();
            assert_eq!(opened.len(), 4, "inline={inline}");
            // Replaced after the open: the opened file is read, whole.
            put(&path, &uri, Bytes::from("replaced")).await.unwrap();
            assert_eq!(
                read_open(opened, &uri, 4, inline).await.unwrap(),
                Bytes::from("1234"),
                "inline={inline}"
            );
            let opened = open(&path, root.clone(), &uri, inline).await.unwrap();
            assert_eq!(opened.len(), 8);
            let e = read_open(opened, &uri, 7, inline).await.unwrap_err();
            assert_eq!(e.class(), "too_large", "inline={inline}: {e}");
            let (missing, muri) = object(dir.path(), "missing.wav");
            let e = open(&missing, root.clone(), &muri, inline)
                .await
                .unwrap_err();
            assert!(e.is_not_found(), "inline={inline}: {e}");
            // A directory is not found, as by get.
            let e = open(&dir.path().join("bkt"), None, &uri, inline)
                .await
                .unwrap_err();
            assert!(e.is_not_found(), "inline={inline}: {e}");
        }
    }

    #[tokio::test]
    async fn get_limit_is_inclusive() {
        for inline in INLINE {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("o");
            let uri = ObjectUri::file(&p).unwrap();
            put(&p, &uri, Bytes::from("1234")).await.unwrap();
            assert_eq!(
                get(&p, None, &uri, 4, inline).await.unwrap(),
                Bytes::from("1234")
            );
            match get(&p, None, &uri, 3, inline).await.unwrap_err() {
                StorageError::TooLarge { size, limit, .. } => assert_eq!((size, limit), (4, 3)),
                other => panic!("{other:?}"),
            }
            assert_eq!(
                get(&p, None, &uri, 0, inline).await.unwrap_err().class(),
                "too_large"
            );
            let empty = dir.path().join("empty");
            let uri = ObjectUri::file(&empty).unwrap();
            put(&empty, &uri, Bytes::new()).await.unwrap();
            assert_eq!(
                get(&empty, None, &uri, 0, inline).await.unwrap(),
                Bytes::new()
            );
        }
    }

    #[tokio::test]
    async fn small_and_large_reads_return_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let uri = ObjectUri::file(&p).unwrap();
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        put(&p, &uri, Bytes::from(body.clone())).await.unwrap();
        for inline in [0, 1024, 199_999, 200_000, u64::MAX] {
            assert_eq!(
                get(&p, None, &uri, u64::MAX, inline).await.unwrap(),
                Bytes::from(body.clone()),
                "inline threshold {inline}"
            );
        }
    }

    #[tokio::test]
    async fn put_replaces_and_creates_parents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/o");
        let uri = ObjectUri::file(&p).unwrap();
        put(&p, &uri, Bytes::from("first, longer")).await.unwrap();
        put(&p, &uri, Bytes::from("second")).await.unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        assert_eq!(size(&p, None, &uri).await.unwrap(), Some(6));
        assert_eq!(names(&dir.path().join("a/b")), vec!["o"]);
    }

    #[tokio::test]
    async fn a_failed_put_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // The destination is a non-empty directory: the rename fails.
        let p = dir.path().join("d");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inner"), "x").unwrap();
        let uri = ObjectUri::file(&p).unwrap();
        let err = put(&p, &uri, Bytes::from("new")).await.unwrap_err();
        assert_eq!(err.class(), "io", "{err:?}");
        assert_eq!(names(dir.path()), vec!["d"]);
        let src = dir.path().join("d/inner");
        let err = put_file(&p, &uri, &src).await.unwrap_err();
        assert_eq!(err.class(), "io", "{err:?}");
        assert_eq!(names(dir.path()), vec!["d"]);
    }

    #[tokio::test]
    async fn put_file_copies_and_reports_a_missing_source_as_io() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, "payload").unwrap();
        let p = dir.path().join("out/o");
        let uri = ObjectUri::file(&p).unwrap();
        assert_eq!(put_file(&p, &uri, &src).await.unwrap(), 7);
        assert_eq!(fs::read(&p).unwrap(), b"payload");
        assert_eq!(names(&dir.path().join("out")), vec!["o"]);
        let err = put_file(&p, &uri, &dir.path().join("nope"))
            .await
            .unwrap_err();
        assert_eq!(err.class(), "io", "{err:?}");
        assert_eq!(fs::read(&p).unwrap(), b"payload");
    }

    #[tokio::test]
    async fn delete_ensure_dir_and_ping() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("x/y");
        let uri = ObjectUri::file(&d).unwrap();
        assert!(ping(&d, &uri).await.unwrap_err().is_not_found());
        ensure_dir(&d, &uri).await.unwrap();
        ensure_dir(&d, &uri).await.unwrap();
        ping(&d, &uri).await.unwrap();
        let f = d.join("f");
        let furi = ObjectUri::file(&f).unwrap();
        put(&f, &furi, Bytes::from("x")).await.unwrap();
        // A regular file is not a container.
        assert!(ping(&f, &furi).await.unwrap_err().is_not_found());
        assert_eq!(list(&d, &uri).await.unwrap(), vec!["f"]);
        delete(&f, &furi).await.unwrap();
        delete(&f, &furi).await.unwrap();
        assert!(list(&d, &uri).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_panicking_task_is_an_io_error() {
        let uri = ObjectUri::file("/tmp/x").unwrap();
        let err = blocking::<(), _>("get", Path::new("/tmp/x"), &uri, |_, _| panic!("boom"))
            .await
            .unwrap_err();
        assert_eq!(err.class(), "io", "{err:?}");
        assert!(!err.is_transient());
    }
}
