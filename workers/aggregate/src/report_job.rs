//! The aggregate stage's report job, run once every learner is aggregated:
//! roll the batch summary up from the clean markers, matched partitions and
//! learner files ([`crate::rollup`]), write the output files
//! ([`crate::outputs`], `report.html` with examples of the rejects) and the
//! concatenated rejects, mark the batch complete.

use std::collections::BTreeMap;

use bytes::Bytes;
use engage_model::MatchedRecord;
use engage_model::envelope::StageName;
use engage_model::jobs::{BatchPlan, CleanDone};
use engage_model::layout::Layout;
use engage_model::summary::{SessionCounts, Summary};
use engage_runtime::job_error::JobError;
use engage_runtime::services::Services;
use engage_runtime::stage::{Emit, JobCtx};
use engage_runtime::store_io::{get_json, get_jsonl};
use futures::{StreamExt, TryStreamExt};

use crate::html::RejectExamples;
use crate::outputs::{count_into, render};
use crate::rollup::{self, LearnerRows};
use engage_runtime::pieces::batch_pieces;

/// Parallel store reads per job.
const READ_CONCURRENCY: usize = 32;

pub(crate) async fn report(ctx: &JobCtx) -> Result<Vec<Emit>, JobError> {
    let svc = &ctx.svc;
    let b = ctx.batch_id.as_str();
    let layout = Layout::new(svc.store_root.clone());
    let plan = load_plan(svc, &layout, b).await?;
    check_complete(svc, &layout, b, &plan).await?;
    let mut summary = Summary::default();
    let mut all = Vec::new();
    for piece in &plan.pieces {
        if let Some(done) =
            get_json::<CleanDone>(&svc.storage, &layout.clean_done(b, &piece.piece)?).await?
        {
            rollup::add_piece(&mut summary, &done);
        }
        for p in 0..plan.partitions {
            all.extend(
                get_jsonl::<MatchedRecord>(&svc.storage, &layout.matched_part(b, &piece.piece, p)?)
                    .await?
                    .unwrap_or_default(),
            );
        }
    }
    // Repeats across pieces are only visible here.
    let records = rollup::dedupe_across_pieces(&mut summary, all);
    if let Some(s) = get_json::<SessionCounts>(&svc.storage, &layout.sessions_stats(b)?).await? {
        summary.sessions = s;
    }
    let mut rows = Vec::new();
    let mut outcomes = BTreeMap::new();
    let learner_uris = svc.storage.list(&layout.learners_prefix(b)?).await?;
    let mut learners = futures::stream::iter(learner_uris)
        .map(|u| async move { get_json::<LearnerRows>(&svc.storage, &u).await })
        .buffered(READ_CONCURRENCY);
    while let Some(l) = learners.try_next().await? {
        if let Some(l) = l {
            rollup::add_learner(&mut summary, &mut rows, &mut outcomes, l);
        }
    }
    count_into(&mut summary, &records, &outcomes, &rows);
    // Rejected input lines of every piece, concatenated in piece order.
    let mut rejects = Vec::new();
    for uri in svc.storage.list(&layout.rejects_prefix(b)?).await? {
        rejects.extend_from_slice(&svc.storage.get(&uri).await?);
    }
    let examples = RejectExamples::from_jsonl(&rejects);
    let files = render(&records, &outcomes, rows, &summary, &examples)
        .map_err(|e| JobError::Poison(e.into()))?;
    let out = layout.output(b)?;
    for (name, bytes) in files {
        let n = bytes.len() as u64;
        svc.storage
            .put(&out.join(name)?, Bytes::from(bytes))
            .await?;
        svc.metrics
            .bytes_written
            .with_label_values(&[StageName::Aggregate.as_str()])
            .inc_by(n);
    }
    svc.storage
        .put(&out.join("rejects.jsonl")?, Bytes::from(rejects))
        .await?;
    svc.ledger
        .complete(b, svc.cfg.redis.finished_batch_ttl())
        .await?;
    if let Err(e) = svc.storage.delete(&layout.active(b)?).await {
        tracing::warn!(error = %e, "could not remove the active-batch marker");
    }
    tracing::info!(
        rows = summary.report_rows,
        learners = summary.learners,
        "batch report written"
    );
    Ok(Vec::new())
}

/// A report job is obeyed only for a batch that is complete: by its ledger
/// when Redis has it (registered, every learner aggregated), else by the
/// store (every clean piece has its marker). A report job for a batch still
/// under way was not emitted by the fan-in: it is forged or stray, and is
/// dead-lettered (poison, naming `forged_job`) before anything is written, so
/// `output/` never holds a partial report.
async fn check_complete(
    svc: &Services,
    layout: &Layout,
    b: &str,
    plan: &BatchPlan,
) -> Result<(), JobError> {
    let forged = |why: String| {
        Err(JobError::Poison(anyhow::anyhow!(
            "forged_job: a report job for batch {b}, which is not complete ({why})"
        )))
    };
    match svc.ledger.progress(b).await? {
        Some(p) if p.complete => Ok(()),
        Some(p) if !p.registered || p.learners_aggregated < p.learners => forged(format!(
            "{} of {} learners aggregated, registration {}",
            p.learners_aggregated,
            p.learners,
            if p.registered { "done" } else { "open" }
        )),
        Some(_) => Ok(()),
        None => {
            for piece in &plan.pieces {
                let marker = layout.clean_done(b, &piece.piece)?;
                if svc.storage.size(&marker).await?.is_none() {
                    return forged(format!("piece {} is not cleaned", piece.piece));
                }
            }
            Ok(())
        }
    }
}

/// The batch's plan with the segments its pre-passes cut among its pieces
/// (complete once registration is: no learner or report job runs before).
pub(crate) async fn load_plan(
    svc: &Services,
    layout: &Layout,
    b: &str,
) -> Result<BatchPlan, JobError> {
    let mut plan = get_json::<BatchPlan>(&svc.storage, &layout.batch_spec(b)?)
        .await?
        // Learner and report jobs are emitted only after the plan is stored:
        // one for a batch without a plan is forged or stray.
        .ok_or_else(|| {
            JobError::Poison(anyhow::anyhow!(
                "forged_job: batch {b} has no plan (not planned yet, or purged)"
            ))
        })?;
    plan.pieces = batch_pieces(&svc.storage, layout, b, &plan).await?;
    Ok(plan)
}
