//! Rebuilding a batch's ledger from the durable store after Redis lost it
//! (restart without persistence, `FLUSHALL`).
//!
//! Every state transition of a batch leaves a file in the store (see
//! [`layout`](engage_model::layout)); this module reads them back into the ledger and
//! re-runs the fan-in scan, handing its claims to [`fan_in`](crate::fan_in).
//! At worst, a learner's aggregate job is emitted a second time, which is
//! harmless: its output is deterministic. A batch the store records as
//! cancelled is rebuilt cancelled (an operator's pause, which only Redis
//! holds, is not: it is lost with the ledger).

use std::collections::BTreeMap;

use serde::Deserialize;
use tracing::warn;

use crate::batch_control::{cancelled_marker, mark_cancelled};
use crate::item_log::read_batch;
use crate::job_error::{DelayReason, JobError};
use crate::ledger::{LearnerItems, RestoredFacts, RestoredItem, ScanResult};
use crate::pieces::{batch_pieces, segment_ids};
use crate::services::Services;
use crate::store_io::{get_json, get_jsonl};
use engage_model::jobs::{BatchPlan, CleanDone, ids};
use engage_model::layout::Layout;
use engage_model::{MatchedRecord, MatchedRef};

#[derive(Deserialize)]
struct LearnerFile {
    user_id: String,
}

/// Item ids of matched records that are final at match time (unmatched or no audio).
pub fn final_at_match(r: MatchedRef<'_>) -> bool {
    r.session.is_none() || r.record.audio_url.is_none()
}

/// Groups matched records into per-learner ledger items.
pub fn learner_items<'a>(
    records: impl IntoIterator<Item = MatchedRef<'a>>,
) -> BTreeMap<String, LearnerItems> {
    let mut m: BTreeMap<String, LearnerItems> = BTreeMap::new();
    for r in records {
        let e = m.entry(r.record.user_id.clone()).or_default();
        e.items.push(r.record.response_id.clone());
        if final_at_match(r) {
            e.final_items.push(r.record.response_id.clone());
        }
    }
    m
}

/// Rebuilds the ledger of `batch` from the store (under a lock), then scans.
/// Returns what this caller claimed (its follow-ups: see
/// [`fan_in`](crate::fan_in)). If another worker holds the rebuild lock,
/// answers a short [`JobError::Delay`].
pub async fn rebuild(svc: &Services, batch: &str, job: &str) -> Result<ScanResult, JobError> {
    if svc.ledger.exists(batch).await? {
        return Ok(ScanResult::default());
    }
    if !svc.ledger.try_lock(batch, "rebuild", job, 120_000).await? {
        return Err(JobError::Delay {
            after: std::time::Duration::from_secs(1),
            reason: DelayReason::LedgerRebuild,
        });
    }
    warn!(
        batch_id = batch,
        "batch ledger missing in Redis; rebuilding it from the store"
    );
    let res = rebuild_locked(svc, batch, job).await;
    let _ = svc.ledger.unlock(batch, "rebuild", job).await;
    res
}

async fn rebuild_locked(svc: &Services, batch: &str, job: &str) -> Result<ScanResult, JobError> {
    let layout = Layout::new(svc.store_root.clone());
    let st = &svc.storage;
    let Some(plan) = get_json::<BatchPlan>(st, &layout.batch_spec(batch)?).await? else {
        return Err(JobError::Poison(anyhow::anyhow!(
            "batch {batch} has no plan in the store"
        )));
    };
    let mut facts = RestoredFacts {
        pieces_expected: plan.pieces.len() as u64,
        ..Default::default()
    };
    let pieces = batch_pieces(st, &layout, batch, &plan).await?;
    facts.pieces_extra = segment_ids(&pieces);
    for piece in &pieces {
        if let Some(done) =
            get_json::<CleanDone>(st, &layout.clean_done(batch, &piece.piece)?).await?
        {
            facts.pieces_done.push(piece.piece.clone());
            for p in done.partitions {
                facts.match_expected.push(ids::match_part(&piece.piece, p));
                if let Some(recs) =
                    get_jsonl::<MatchedRecord>(st, &layout.matched_part(batch, &piece.piece, p)?)
                        .await?
                {
                    facts.match_done.push(ids::match_part(&piece.piece, p));
                    for (u, li) in learner_items(recs.iter().map(MatchedRecord::borrowed)) {
                        let e = facts.learners.entry(u).or_default();
                        e.items.extend(li.items);
                        e.final_items.extend(li.final_items);
                    }
                }
            }
        }
    }
    for (rid, item) in read_batch(st, &layout, batch).await? {
        let failed_reason = item.outcome.failure_reason().map(str::to_string);
        let state = serde_json::to_string(&item).map_err(|e| JobError::Poison(e.into()))?;
        facts.final_items.insert(
            rid,
            RestoredItem {
                user_id: item.user_id,
                failed_reason,
                state,
            },
        );
    }
    for uri in st.list(&layout.learners_prefix(batch)?).await? {
        if let Some(l) = get_json::<LearnerFile>(st, &uri).await? {
            facts.aggregated.push(l.user_id);
        }
    }
    // A cancelled batch stays cancelled: its flag was lost with the ledger.
    if st.size(&cancelled_marker(&layout, batch)?).await?.is_some() {
        mark_cancelled(&svc.redis, &svc.ledger, batch).await?;
    }
    svc.ledger.restore(batch, &facts).await?;
    // Registration is re-derived by the next ledger call; trigger it now.
    if let Some(last) = facts.match_done.first() {
        svc.ledger.match_done(batch, last, job).await?;
    } else if let Some(piece) = facts.pieces_done.first() {
        svc.ledger.piece_done(batch, piece, &[], job).await?;
    }
    Ok(svc.ledger.scan(batch, job).await?)
}
