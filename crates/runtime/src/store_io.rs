//! Small typed helpers over [`Storage`]: JSON documents and JSON Lines files,
//! with errors classified for the worker loop (transient → retry, anything
//! else about our own store → poison, since the store is ours and a broken
//! document there is a bug, not a learner's bad input).

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::job_error::{ErrorClass, JobError};
use crate::storage::{ObjectUri, Storage, StorageError, UriError};

impl From<StorageError> for JobError {
    fn from(e: StorageError) -> Self {
        if e.is_transient() {
            JobError::transient(ErrorClass::Storage, e)
        } else {
            JobError::Poison(anyhow::Error::from(e))
        }
    }
}

impl From<UriError> for JobError {
    fn from(e: UriError) -> Self {
        JobError::Poison(e.into())
    }
}

impl From<crate::ledger::LedgerError> for JobError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        JobError::transient(ErrorClass::Redis, e)
    }
}

/// Reads a JSON document; `Ok(None)` if it does not exist.
pub async fn get_json<T: DeserializeOwned>(
    s: &Storage,
    uri: &ObjectUri,
) -> Result<Option<T>, JobError> {
    match s.get(uri).await {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| JobError::Poison(anyhow::anyhow!("corrupt document {uri}: {e}"))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes a JSON document (pretty, so operators can read it).
pub async fn put_json<T: Serialize>(s: &Storage, uri: &ObjectUri, v: &T) -> Result<u64, JobError> {
    let body = serde_json::to_vec_pretty(v).map_err(|e| JobError::Poison(e.into()))?;
    let n = body.len() as u64;
    s.put(uri, Bytes::from(body)).await?;
    Ok(n)
}

/// Reads a JSON Lines file into values; `Ok(None)` if it does not exist.
pub async fn get_jsonl<T: DeserializeOwned>(
    s: &Storage,
    uri: &ObjectUri,
) -> Result<Option<Vec<T>>, JobError> {
    let b = match s.get(uri).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for (i, line) in b.split(|c| *c == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(serde_json::from_slice(line).map_err(|e| {
            JobError::Poison(anyhow::anyhow!("corrupt line {} of {uri}: {e}", i + 1))
        })?);
    }
    Ok(Some(out))
}

/// Serialises values as JSON Lines.
pub fn to_jsonl<T: Serialize>(items: &[T]) -> Result<Vec<u8>, JobError> {
    let mut out = Vec::new();
    for it in items {
        serde_json::to_writer(&mut out, it).map_err(|e| JobError::Poison(e.into()))?;
        out.push(b'\n');
    }
    Ok(out)
}
