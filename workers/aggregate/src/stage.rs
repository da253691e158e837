//! The aggregate stage: one learner's per-phase rows, then — once every
//! learner is done — the batch's output files.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use engage_shared::envelope::StageName;
use engage_shared::jobs::{AggregateJob, BatchPlan, ItemState, ids};
use engage_shared::layout::{Layout, partition_of};
use engage_shared::ledger::FanIn;
use engage_shared::model::{AnalysisOutcome, MatchedRecord};
use engage_shared::recovery::with_ledger;
use engage_shared::services::Services;
use engage_shared::store_io::{get_json, get_jsonl, put_json};
use engage_shared::summary::{ActivityCounts, SessionCounts, Summary};
use engage_shared::worker::{Emit, JobCtx, JobError, Stage};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::domain::{ReportRow, Weights, aggregate_learner};
use crate::outputs::{count_into, dedupe_first, render};

/// Parallel store reads per job.
const READ_CONCURRENCY: usize = 32;

/// One learner's rows, stored at `batches/B/learners/LKEY.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LearnerRows {
    /// The learner.
    pub user_id: String,
    /// Its report rows.
    pub rows: Vec<ReportRow>,
}

/// Clean piece completion marker (written by the clean stage).
#[derive(Debug, Deserialize)]
struct CleanDone {
    stats: ActivityCounts,
}

/// The aggregate stage.
#[derive(Debug)]
pub struct AggregateStage {
    weights: Weights,
}

impl AggregateStage {
    /// A stage with the configured combined-score weights.
    pub fn new(weights: Weights) -> anyhow::Result<Self> {
        weights.validate()?;
        Ok(Self { weights })
    }

    async fn learner(&self, ctx: &JobCtx, user_id: String) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let layout = Layout::new(svc.store_root.clone());
        let plan = load_plan(svc, &layout, &ctx.batch_id).await?;
        let p = partition_of(&user_id, plan.partitions);
        let mut mine = Vec::new();
        for piece in &plan.pieces {
            let recs = get_jsonl::<MatchedRecord>(
                &svc.storage,
                &layout.matched_part(&ctx.batch_id, &piece.piece, p)?,
            )
            .await?;
            mine.extend(
                recs.unwrap_or_default()
                    .into_iter()
                    .filter(|r| r.record.user_id == user_id),
            );
        }
        let (records, _) = dedupe_first(mine);
        let wanted: Vec<String> = records
            .iter()
            .filter(|r| r.session.is_some() && r.record.audio_url.is_some())
            .map(|r| r.record.response_id.clone())
            .collect();
        let states = load_items(svc, &layout, &ctx.batch_id, wanted).await?;
        let outcomes: HashMap<String, AnalysisOutcome> = states
            .into_iter()
            .map(|s| (s.response_id, s.outcome))
            .collect();
        let rows = aggregate_learner(&records, &outcomes, &self.weights);
        let n = put_json(
            &svc.storage,
            &layout.learner(&ctx.batch_id, &user_id)?,
            &LearnerRows {
                user_id: user_id.clone(),
                rows,
            },
        )
        .await?;
        svc.metrics
            .bytes_written
            .with_label_values(&[Self::NAME.as_str()])
            .inc_by(n);
        let (fan, mut emits) = with_ledger(svc, &ctx.batch_id, &ctx.job_id, || {
            svc.ledger
                .learner_aggregated(&ctx.batch_id, Some(&user_id), &ctx.job_id)
        })
        .await?;
        if fan == FanIn::Emit {
            emits.push(Emit::new(
                StageName::Aggregate,
                ids::report(&ctx.batch_id),
                &AggregateJob::Report,
            )?);
        }
        Ok(emits)
    }

    async fn report(&self, ctx: &JobCtx) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let b = ctx.batch_id.as_str();
        let layout = Layout::new(svc.store_root.clone());
        let plan = load_plan(svc, &layout, b).await?;
        let mut summary = Summary::default();
        let mut all = Vec::new();
        for piece in &plan.pieces {
            if let Some(done) =
                get_json::<CleanDone>(&svc.storage, &layout.clean_done(b, &piece.piece)?).await?
            {
                summary.activity.merge(&done.stats);
            }
            for p in 0..plan.partitions {
                all.extend(
                    get_jsonl::<MatchedRecord>(
                        &svc.storage,
                        &layout.matched_part(b, &piece.piece, p)?,
                    )
                    .await?
                    .unwrap_or_default(),
                );
            }
        }
        // Repeats across pieces are only visible here.
        let (records, cross_piece_dups) = dedupe_first(all);
        summary.activity.duplicates += cross_piece_dups;
        summary.activity.kept = summary.activity.kept.saturating_sub(cross_piece_dups);
        if let Some(s) = get_json::<SessionCounts>(&svc.storage, &layout.sessions_stats(b)?).await?
        {
            summary.sessions = s;
        }
        let item_uris = svc.storage.list(&layout.items_prefix(b)?).await?;
        let states: Vec<ItemState> = futures::stream::iter(item_uris)
            .map(|u| async move { get_json::<ItemState>(&svc.storage, &u).await })
            .buffer_unordered(READ_CONCURRENCY)
            .try_filter_map(|s| async move { Ok(s) })
            .try_collect()
            .await?;
        let mut outcomes = BTreeMap::new();
        for s in states {
            let c = &mut summary.cost;
            c.calls += u64::from(s.cost.called);
            c.cache_hits += u64::from(s.cost.cache_hit);
            c.prefiltered += u64::from(s.cost.prefiltered);
            c.prompt_tokens += s.cost.prompt_tokens;
            c.output_tokens += s.cost.output_tokens;
            outcomes.insert(s.response_id, s.outcome);
        }
        let mut rows = Vec::new();
        for uri in svc.storage.list(&layout.learners_prefix(b)?).await? {
            if let Some(l) = get_json::<LearnerRows>(&svc.storage, &uri).await? {
                rows.extend(l.rows);
            }
        }
        count_into(&mut summary, &records, &outcomes, &rows);
        let files =
            render(&records, &outcomes, rows, &summary).map_err(|e| JobError::Poison(e.into()))?;
        let out = layout.output(b)?;
        for (name, bytes) in files {
            let n = bytes.len() as u64;
            svc.storage
                .put(&out.join(name)?, Bytes::from(bytes))
                .await?;
            svc.metrics
                .bytes_written
                .with_label_values(&[Self::NAME.as_str()])
                .inc_by(n);
        }
        // Rejected input lines of every piece, concatenated in piece order.
        let mut rejects = Vec::new();
        for uri in svc.storage.list(&layout.rejects_prefix(b)?).await? {
            rejects.extend_from_slice(&svc.storage.get(&uri).await?);
        }
        svc.storage
            .put(&out.join("rejects.jsonl")?, Bytes::from(rejects))
            .await?;
        svc.ledger.complete(b).await?;
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
}

async fn load_plan(svc: &Services, layout: &Layout, b: &str) -> Result<BatchPlan, JobError> {
    get_json::<BatchPlan>(&svc.storage, &layout.batch_spec(b)?)
        .await?
        .ok_or_else(|| JobError::Poison(anyhow::anyhow!("batch {b} has no plan")))
}

/// Loads item states; a missing one means the ledger ran ahead of the store
/// (eventual consistency), so the job is retried.
async fn load_items(
    svc: &Services,
    layout: &Layout,
    b: &str,
    ids: Vec<String>,
) -> Result<Vec<ItemState>, JobError> {
    let uris = ids
        .iter()
        .map(|id| layout.item(b, id))
        .collect::<Result<Vec<_>, _>>()?;
    futures::stream::iter(uris)
        .map(|u| async move {
            get_json::<ItemState>(&svc.storage, &u)
                .await?
                .ok_or_else(|| {
                    JobError::transient(
                        "store_lag",
                        anyhow::anyhow!("item state {u} not found yet"),
                    )
                })
        })
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await
}

#[async_trait::async_trait]
impl Stage for AggregateStage {
    type Job = AggregateJob;
    const NAME: StageName = StageName::Aggregate;

    async fn handle(&self, ctx: &JobCtx, job: AggregateJob) -> Result<Vec<Emit>, JobError> {
        match job {
            AggregateJob::Learner { user_id } => self.learner(ctx, user_id).await,
            AggregateJob::Report => self.report(ctx).await,
        }
    }
}
