//! The aggregate stage: one learner's per-phase rows, then — once every
//! learner is done — the batch's output files.
//!
//! Glue only: the rows come from [`crate::domain`], the summary's roll-up
//! from [`crate::rollup`], the files from [`crate::outputs`].

use engage_model::MatchedRecord;
use engage_model::envelope::StageName;
use engage_model::jobs::{AggregateJob, BatchPlan};
use engage_model::layout::{Layout, partition_of};
use engage_runtime::fan_in;
use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::services::Services;
use engage_runtime::stage::{Emit, JobCtx, Stage};
use engage_runtime::store_io::{get_jsonl, put_json};
use moka::future::Cache;
use std::sync::Arc;

use crate::domain::{Weights, aggregate_learner};
use crate::outputs::dedupe_first;
use crate::rollup::{self, ByLearner, LearnerRows};

/// Matched records kept parsed across learner jobs, counted in records
/// (≈ 0.5 KiB each, so at most ≈ 250 MiB).
const PARTITION_CACHE_RECORDS: u64 = 500_000;

/// The aggregate stage.
pub struct AggregateStage {
    weights: Weights,
    /// Batch plans (immutable once a batch is planned).
    plans: Cache<String, Arc<BatchPlan>>,
    /// Matched partitions, parsed once and shared by every learner job of the
    /// partition (the match stage writes each exactly once, deterministically).
    /// Without it every learner job re-parsed its whole partition: the cost
    /// grew with items² / partitions.
    partitions: Cache<(String, String, u32), Arc<ByLearner>>,
}

impl std::fmt::Debug for AggregateStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateStage")
            .field("weights", &self.weights)
            .finish_non_exhaustive()
    }
}

impl AggregateStage {
    /// A stage with the configured combined-score weights.
    pub fn new(weights: Weights) -> anyhow::Result<Self> {
        weights.validate()?;
        Ok(Self {
            weights,
            plans: Cache::new(256),
            partitions: Cache::builder()
                .weigher(|_, v: &Arc<ByLearner>| {
                    u32::try_from(v.values().map(Vec::len).sum::<usize>()).unwrap_or(u32::MAX)
                })
                .max_capacity(PARTITION_CACHE_RECORDS)
                .build(),
        })
    }

    async fn plan(
        &self,
        svc: &Services,
        layout: &Layout,
        b: &str,
    ) -> Result<Arc<BatchPlan>, JobError> {
        self.plans
            .try_get_with(b.to_string(), async {
                crate::report_job::load_plan(svc, layout, b)
                    .await
                    .map(Arc::new)
            })
            .await
            .map_err(|e: Arc<JobError>| e.share())
    }

    /// The learner's records in one piece's partition (a cached parse).
    async fn matched(
        &self,
        svc: &Services,
        layout: &Layout,
        b: &str,
        piece: &str,
        p: u32,
    ) -> Result<Arc<ByLearner>, JobError> {
        self.partitions
            .try_get_with((b.to_string(), piece.to_string(), p), async {
                let uri = layout.matched_part(b, piece, p)?;
                let recs = get_jsonl::<MatchedRecord>(&svc.storage, &uri).await?;
                Ok(Arc::new(rollup::by_learner(recs.unwrap_or_default())))
            })
            .await
            .map_err(|e: Arc<JobError>| e.share())
    }

    async fn learner(&self, ctx: &JobCtx, user_id: String) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let b = ctx.batch_id.as_str();
        let layout = Layout::new(svc.store_root.clone());
        let plan = self.plan(svc, &layout, b).await?;
        let p = partition_of(&user_id, plan.partitions);
        let mut mine = Vec::new();
        for piece in &plan.pieces {
            let part = self.matched(svc, &layout, b, &piece.piece, p).await?;
            mine.extend(part.get(&user_id).into_iter().flatten().cloned());
        }
        let (records, _) = dedupe_first(mine);
        let (states, mut emits) = fan_in::learner_states(ctx, &user_id).await?;
        let items = rollup::parse_states(states).map_err(|e| {
            JobError::Poison(anyhow::anyhow!("corrupt item state in the ledger: {e}"))
        })?;
        let outcomes = rollup::outcomes_of(&items);
        // The ledger records an item's state in the same script that makes it
        // final, and the learner is complete only when every item is final.
        let missing = rollup::first_missing_state(&records, &outcomes);
        let learner_uri = layout.learner(b, &user_id)?;
        match missing {
            // States are dropped once the batch report is written; a re-run of
            // a learner whose rows exist keeps them (written from those states).
            Some(_) if svc.storage.size(&learner_uri).await?.is_some() => {
                tracing::debug!("learner rows already written and states dropped; keeping them");
            }
            Some(r) => {
                return Err(JobError::transient(
                    ErrorClass::StateMissing,
                    anyhow::anyhow!("item {} has no final state yet", r.record.response_id),
                ));
            }
            None => {
                let rows = aggregate_learner(&records, &outcomes, &self.weights);
                let learner = LearnerRows {
                    user_id: user_id.clone(),
                    rows,
                    items,
                };
                let n = put_json(&svc.storage, &learner_uri, &learner).await?;
                svc.metrics
                    .bytes_written
                    .with_label_values(&[Self::NAME.as_str()])
                    .inc_by(n);
            }
        }
        emits.extend(fan_in::learner_done(ctx, &user_id).await?);
        Ok(emits)
    }
}

#[async_trait::async_trait]
impl Stage for AggregateStage {
    type Job = AggregateJob;
    const NAME: StageName = StageName::Aggregate;

    async fn handle(&self, ctx: &JobCtx, job: AggregateJob) -> Result<Vec<Emit>, JobError> {
        match job {
            AggregateJob::Learner { user_id } => self.learner(ctx, user_id).await,
            AggregateJob::Report => crate::report_job::report(ctx).await,
        }
    }
}
