//! Store glue shared by the clean stage's two jobs: URIs and errors in the
//! worker loop's terms, blocking readers over objects, blocking work.

use std::io::Read;

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

/// Runs blocking work off the runtime; a panic there is retried.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JobError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JobError::transient(ErrorClass::Panic, e))
}
