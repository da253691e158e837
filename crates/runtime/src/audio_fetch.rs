//! Fetching one audio object within the worker's audio budget, written once
//! for the download and analyze stages: the object opened (its size), then
//! [`AudioBudget::hold`](crate::audio_budget::AudioBudget::hold) reading it,
//! then the store's errors sorted into what the item and the job should do.

use crate::audio_budget::{Held, HoldError};
use crate::job_error::{ErrorClass, JobError};
use crate::services::Services;
use crate::storage::ObjectUri;

/// What fetching an audio object came to, besides a job error (transient
/// trouble: retried).
#[derive(Debug)]
pub enum Fetched {
    /// The bytes, with the reservation that covers them and their use.
    Held(Held),
    /// There is no object at the URI.
    Missing,
    /// The object cannot be used by this item, for good: over the audio
    /// budget (`audio_too_large`), access denied, not a regular file, …
    Refused {
        /// The failed-item reason.
        reason: String,
        /// What happened.
        detail: String,
    },
}

/// Fetches `uri` holding `need(&bytes)` bytes of the audio budget (see
/// [`AudioBudget::hold`](crate::audio_budget::AudioBudget::hold)).
pub async fn fetch_audio(
    svc: &Services,
    uri: &ObjectUri,
    need: impl Fn(&[u8]) -> u64,
) -> Result<Fetched, JobError> {
    let refused = |reason: &str, detail: String| {
        Ok(Fetched::Refused {
            reason: reason.to_string(),
            detail,
        })
    };
    // One open gives the size to reserve and, on the first fetch, the bytes
    // (a local file is opened and its path checked once, not twice).
    let opened = match svc.storage.open(uri).await {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(Fetched::Missing),
        Err(e) if e.is_transient() => return Err(JobError::transient(ErrorClass::Storage, e)),
        Err(e) => return refused(e.class(), e.to_string()),
    };
    let size = opened.size();
    let mut first = Some(opened);
    // A second fetch (the budget was short once the need was known) opens
    // the object again.
    let fetch = || {
        let opened = first.take();
        async move {
            match opened {
                Some(o) => o.read().await,
                None => svc.storage.get(uri).await,
            }
        }
    };
    match svc.audio_budget.hold(size, fetch, need).await {
        Ok(held) => Ok(Fetched::Held(held)),
        Err(HoldError::Budget(e)) => refused(e.name(), e.to_string()),
        Err(HoldError::Fetch(e)) if e.is_not_found() => Ok(Fetched::Missing),
        Err(HoldError::Fetch(e)) if e.is_transient() => {
            Err(JobError::transient(ErrorClass::Storage, e))
        }
        Err(HoldError::Fetch(e)) => refused(e.class(), e.to_string()),
        Err(e @ HoldError::Changing(_)) => Err(JobError::transient(ErrorClass::Storage, e)),
    }
}
