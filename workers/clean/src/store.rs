//! Store glue shared by the clean stage's two jobs: URIs and errors in the
//! worker loop's terms, blocking readers over objects, blocking work.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::storage::{ObjectUri, Storage};
use tokio_util::io::SyncIoBridge;

pub(crate) fn poison(e: impl std::fmt::Display) -> JobError {
    JobError::Poison(anyhow::anyhow!("{e}"))
}

pub(crate) fn uri(s: &str) -> Result<ObjectUri, JobError> {
    ObjectUri::parse(s).map_err(|e| JobError::Poison(anyhow::anyhow!("invalid URI {s:?}: {e}")))
}

/// A blocking reader over an object (or the tail of one from `from`), for the
/// synchronous domain parsers. Must be created inside the runtime.
pub(crate) async fn sync_reader(
    st: &Storage,
    u: &ObjectUri,
    from: u64,
) -> Result<impl Read + Send + 'static, JobError> {
    let r = st.reader(u, (from > 0).then_some(from..u64::MAX)).await?;
    Ok(SyncIoBridge::new(r))
}

/// A reader that counts the bytes its source delivered, so that a failure
/// can be judged: an input read to its very end that still cannot be parsed
/// is bad data, not a network hiccup.
pub(crate) struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Counting<R> {
    /// Wraps `inner`; the returned counter follows its bytes.
    pub(crate) fn new(inner: R) -> (Self, Arc<AtomicU64>) {
        let read = Arc::new(AtomicU64::new(0));
        (
            Self {
                inner,
                read: read.clone(),
            },
            read,
        )
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Whether a failure to read an activity input is permanent: the source
/// delivered every byte of the object (`read_all`) and parsing still failed
/// (a truncated gzip stream ends that way), or the decompressor reports
/// corrupt data. Anything else (a connection cut mid-object) is retried.
pub(crate) fn bad_input_data(e: &anyhow::Error, read_all: bool) -> bool {
    read_all
        || e.chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
                )
            })
}

/// The job error for a failure to read an activity input (see
/// [`bad_input_data`]): poison if retrying the same bytes cannot help,
/// else a transient read failure.
pub(crate) fn read_failure(e: anyhow::Error, read_all: bool) -> JobError {
    if bad_input_data(&e, read_all) {
        JobError::Poison(e.context(
            "the activity file is truncated or corrupt (its gzip or JSON data \
             cannot be read to the end)",
        ))
    } else {
        JobError::transient(ErrorClass::Read, e)
    }
}

/// Runs blocking work off the runtime; a panic there is retried.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::transient(ErrorClass::Panic, e))
}
