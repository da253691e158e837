//! Reopening a finished item when its dead-lettered job is replayed.
//!
//! A download or analyze job that ran out of attempts made its item final as
//! `dead_lettered:<reason>` (see [`Stage::dead_lettered`](crate::stage::Stage::dead_lettered)),
//! so its batch could end. `engage dlq replay` calls [`reopen_for_replay`]
//! before it publishes such a job again: the item is no longer final, its
//! learner no longer aggregated, the batch no longer complete; the learner's
//! recorded states come back from the item log (completion dropped them),
//! the completion markers of its aggregate and report jobs are forgotten, and
//! the batch's `active/` marker is back. When the replayed job finishes, the
//! usual fan-in aggregates the learner again and rewrites the report (the
//! item log's newer state wins over the dead-lettered one). A replayed job
//! that halted its batch (clean, match, aggregate) lifts its halt.
//!
//! `engage retry` reopens a finished batch's failed items the same way
//! ([`reopen_items`], any failure reason or one named reason) before it
//! publishes their download jobs again.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::idempotency::Idempotency;
use crate::item_log::{DEAD_LETTERED, read_batch};
use crate::ledger::{Ledger, LedgerError};
use crate::storage::Storage;
use engage_model::envelope::{Envelope, StageName};
use engage_model::job_ids::CheckIds;
use engage_model::jobs::{AnalyzeJob, DownloadJob, ids};
use engage_model::layout::Layout;

/// Reopens the item of a dead-lettered job about to be replayed; `true` if
/// one was reopened (`false`: not an item job, forged ids, the item is not
/// dead-lettered, or its batch's ledger is gone).
pub async fn reopen_for_replay(
    ledger: &Ledger,
    markers: &Idempotency,
    storage: &Storage,
    layout: &Layout,
    stage: StageName,
    env: &Envelope<serde_json::Value>,
) -> anyhow::Result<bool> {
    let b = env.batch_id.as_str();
    // A replayed clean, match or aggregate job no longer halts its batch.
    ledger.clear_halt(b, &env.job_id).await?;
    let item = match stage {
        StageName::Download => item_of::<DownloadJob>(env, |j| (j.user_id, j.response_id)),
        StageName::Analyze => item_of::<AnalyzeJob>(env, |j| (j.user_id, j.response_id)),
        _ => None,
    };
    let Some((user, rid)) = item else {
        return Ok(false);
    };
    let items = [(user, rid)];
    let reopened = reopen_items(ledger, markers, storage, layout, b, &items, DEAD_LETTERED).await?;
    Ok(!reopened.is_empty())
}

/// Reopens items of batch `b`, each a (learner, response id), made final as
/// failed with a reason starting with `reason_prefix` (`""`: any failure),
/// before their jobs run again (`engage dlq replay`, `engage retry`):
/// every item first, then each learner's recorded states come back from the
/// item log, the completion markers of its aggregate job and of the report
/// are forgotten and the batch's `active/` marker is back. Returns the items
/// reopened (an item that is not failed that way, or a batch whose ledger
/// is gone, reopens nothing).
pub async fn reopen_items(
    ledger: &Ledger,
    markers: &Idempotency,
    storage: &Storage,
    layout: &Layout,
    b: &str,
    items: &[(String, String)],
    reason_prefix: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut reopened: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (user, rid) in items {
        match ledger.reopen_item(b, user, rid, reason_prefix).await {
            Ok(true) => {
                reopened
                    .entry(user.as_str())
                    .or_default()
                    .insert(rid.as_str());
            }
            Ok(false) => {}
            Err(LedgerError::Lost) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
    if reopened.is_empty() {
        return Ok(Vec::new());
    }
    let logged = read_batch(storage, layout, b).await?;
    for (user, rids) in &reopened {
        let mut states = BTreeMap::new();
        for (id, s) in &logged {
            if s.user_id == *user && !rids.contains(id.as_str()) {
                states.insert(id.clone(), serde_json::to_string(s)?);
            }
        }
        ledger.put_states(b, user, &states).await?;
        markers
            .forget(StageName::Aggregate, &ids::aggregate(b, user))
            .await?;
    }
    markers
        .forget(StageName::Aggregate, &ids::report(b))
        .await?;
    storage
        .put(&layout.active(b)?, Bytes::from_static(b"running\n"))
        .await?;
    Ok(reopened
        .iter()
        .flat_map(|(u, rids)| rids.iter().map(|r| (u.to_string(), r.to_string())))
        .collect())
}

/// The (learner, response) of an item job whose body decodes and whose ids
/// pass the worker's checks (a forged job reopens nothing).
fn item_of<J: serde::de::DeserializeOwned + CheckIds>(
    env: &Envelope<serde_json::Value>,
    ids_of: impl FnOnce(J) -> (String, String),
) -> Option<(String, String)> {
    let job: J = env.job_as().ok()?;
    job.check_ids(&env.batch_id, &env.job_id).ok()?;
    Some(ids_of(job))
}
