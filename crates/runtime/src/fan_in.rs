//! The fan-in step, written once: a stage reports "this piece / partition /
//! item / learner is done" and gets back the follow-ups it must emit.
//!
//! Each call records the completion in the batch [`ledger`](crate::ledger)
//! (rebuilding a lost ledger from the store first, see
//! [`recovery`](crate::recovery)); when that completion is the one that
//! unblocks the batch, the learner or the report, this job holds the claim and
//! the aggregate or report jobs come back as [`Emit`]s. Stages never scan the
//! ledger themselves.

use std::collections::BTreeMap;

use crate::job_error::JobError;
use crate::ledger::{FanIn, LearnerItems, LedgerError, ScanResult};
use crate::recovery::rebuild;
use crate::services::Services;
use crate::stage::{Emit, JobCtx};
use engage_model::envelope::StageName;
use engage_model::jobs::{AggregateJob, ids};

/// A clean piece is done: its match jobs (`match_parts`, `piece:partition`)
/// are now expected. If this completed the batch's registration, claims every
/// complete learner (and the report if all are aggregated).
pub async fn piece_done(
    ctx: &JobCtx,
    piece: &str,
    match_parts: &[String],
) -> Result<Vec<Emit>, JobError> {
    let (svc, b, job) = (&*ctx.svc, ctx.batch_id.as_str(), ctx.job_id.as_str());
    let (fan, mut emits) = with_ledger(svc, b, job, || {
        svc.ledger.piece_done(b, piece, match_parts, job)
    })
    .await?;
    if fan == FanIn::Emit {
        emits.extend(scan(svc, b, job).await?);
    }
    Ok(emits)
}

/// A clean pre-pass stored these segments and is about to publish their
/// jobs: the batch now waits for them too (idempotent).
pub async fn segments_expected(ctx: &JobCtx, segments: &[String]) -> Result<Vec<Emit>, JobError> {
    let (svc, b, job) = (&*ctx.svc, ctx.batch_id.as_str(), ctx.job_id.as_str());
    let (_, emits) =
        with_ledger(svc, b, job, || svc.ledger.expect_pieces(b, segments, job)).await?;
    Ok(emits)
}

/// A match partition (`part`, `piece:partition`) is done: registers its
/// learners' items first (no item can finish before it is expected), then
/// records the partition; if this completed registration, scans as
/// [`piece_done`] does.
pub async fn partition_done(
    ctx: &JobCtx,
    part: &str,
    items: &BTreeMap<String, LearnerItems>,
) -> Result<Vec<Emit>, JobError> {
    let (svc, b, job) = (&*ctx.svc, ctx.batch_id.as_str(), ctx.job_id.as_str());
    let (_, mut emits) = with_ledger(svc, b, job, || svc.ledger.register_items(b, items)).await?;
    let (fan, more) = with_ledger(svc, b, job, || svc.ledger.match_done(b, part, job)).await?;
    emits.extend(more);
    if fan == FanIn::Emit {
        emits.extend(scan(svc, b, job).await?);
    }
    Ok(emits)
}

/// An item is final (`state` is its JSON [`ItemState`](engage_model::jobs::ItemState),
/// `failed_reason` set if it failed): if this completed its learner, the
/// learner's aggregate job.
pub async fn item_done(
    ctx: &JobCtx,
    user_id: &str,
    response_id: &str,
    failed_reason: Option<&str>,
    state: &str,
) -> Result<Vec<Emit>, JobError> {
    let (svc, b, job) = (&*ctx.svc, ctx.batch_id.as_str(), ctx.job_id.as_str());
    let (fan, mut emits) = with_ledger(svc, b, job, || {
        svc.ledger
            .finalize_item(b, user_id, response_id, failed_reason, state, job)
    })
    .await?;
    if fan == FanIn::Emit {
        emits.extend(emits_for(
            b,
            ScanResult {
                learners: vec![user_id.to_string()],
                report: false,
            },
        )?);
    }
    Ok(emits)
}

/// A learner's rows are written: if every learner is now aggregated, the
/// batch report job.
pub async fn learner_done(ctx: &JobCtx, user_id: &str) -> Result<Vec<Emit>, JobError> {
    let (svc, b, job) = (&*ctx.svc, ctx.batch_id.as_str(), ctx.job_id.as_str());
    let (fan, mut emits) = with_ledger(svc, b, job, || {
        svc.ledger.learner_aggregated(b, Some(user_id), job)
    })
    .await?;
    if fan == FanIn::Emit {
        emits.extend(emits_for(
            b,
            ScanResult {
                learners: Vec::new(),
                report: true,
            },
        )?);
    }
    Ok(emits)
}

/// The recorded item states (JSON) of a learner, by response id, plus the
/// follow-ups a ledger rebuild produced on the way.
pub async fn learner_states(
    ctx: &JobCtx,
    user_id: &str,
) -> Result<(BTreeMap<String, String>, Vec<Emit>), JobError> {
    let (svc, b, job) = (&*ctx.svc, ctx.batch_id.as_str(), ctx.job_id.as_str());
    with_ledger(svc, b, job, || svc.ledger.item_states(b, user_id)).await
}

/// Claims what a registered batch has complete and turns it into jobs.
async fn scan(svc: &Services, batch: &str, job: &str) -> Result<Vec<Emit>, JobError> {
    emits_for(batch, svc.ledger.scan(batch, job).await?)
}

/// Turns a scan's claims into aggregate and report jobs.
pub fn emits_for(batch: &str, scan: ScanResult) -> Result<Vec<Emit>, JobError> {
    let mut out = Vec::with_capacity(scan.learners.len() + 1);
    for u in scan.learners {
        out.push(Emit::new(
            StageName::Aggregate,
            ids::aggregate(batch, &u),
            &AggregateJob::Learner { user_id: u },
        )?);
    }
    if scan.report {
        out.push(Emit::new(
            StageName::Aggregate,
            ids::report(batch),
            &AggregateJob::Report,
        )?);
    }
    Ok(out)
}

/// Runs a ledger operation; if the ledger was lost, rebuilds it and runs the
/// operation again. Returns the operation's result plus any emits the rebuild
/// produced.
async fn with_ledger<T, F, Fut>(
    svc: &Services,
    batch: &str,
    job: &str,
    op: F,
) -> Result<(T, Vec<Emit>), JobError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, LedgerError>>,
{
    match op().await {
        Ok(v) => Ok((v, Vec::new())),
        Err(LedgerError::Lost) => {
            let claimed = rebuild(svc, batch, job).await?;
            let v = op().await?;
            Ok((v, emits_for(batch, claimed)?))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_become_one_aggregate_job_per_learner_and_one_report() {
        let emits = emits_for(
            "b1",
            ScanResult {
                learners: vec!["u1".into(), "u2".into()],
                report: true,
            },
        )
        .unwrap_or_default();
        let ids: Vec<&str> = emits.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                ids::aggregate("b1", "u1").as_str(),
                ids::aggregate("b1", "u2").as_str(),
                ids::report("b1").as_str()
            ]
        );
        assert!(emits.iter().all(|e| e.stage == StageName::Aggregate));
        assert_eq!(emits[2].job, serde_json::json!({"kind": "report"}));
        assert!(emits_for("b1", ScanResult::default()).is_ok_and(|e| e.is_empty()));
    }
}
