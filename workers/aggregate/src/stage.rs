//! The aggregate stage: one learner's per-phase rows, then — once every
//! learner is done — the batch's output files.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use engage_model::envelope::StageName;
use engage_model::jobs::{AggregateJob, BatchPlan, CleanDone, ItemState, ids};
use engage_model::layout::{Layout, partition_of};
use engage_model::summary::{SessionCounts, Summary};
use engage_model::{AnalysisOutcome, MatchedRecord};
use engage_runtime::job_error::JobError;
use engage_runtime::ledger::FanIn;
use engage_runtime::recovery::with_ledger;
use engage_runtime::services::Services;
use engage_runtime::stage::{Emit, JobCtx, Stage};
use engage_runtime::store_io::{get_json, get_jsonl, put_json};
use futures::{StreamExt, TryStreamExt};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::domain::{ReportRow, Weights, aggregate_learner};
use crate::outputs::{count_into, dedupe_first, render};

/// Parallel store reads per job.
const READ_CONCURRENCY: usize = 32;

/// Matched records kept parsed across learner jobs, counted in records
/// (≈ 0.5 KiB each, so at most ≈ 250 MiB).
const PARTITION_CACHE_RECORDS: u64 = 500_000;

/// One learner's rows, stored at `batches/B/learners/LKEY.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LearnerRows {
    /// The learner.
    pub user_id: String,
    /// Its report rows.
    pub rows: Vec<ReportRow>,
    /// The final states of its items (what the batch report's analysis and
    /// cost columns are built from), by response id.
    #[serde(default)]
    pub items: Vec<ItemState>,
}

/// A matched partition of a piece, grouped by learner.
type ByLearner = HashMap<String, Vec<MatchedRecord>>;

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
                load_plan(svc, layout, b).await.map(Arc::new)
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
                let recs =
                    get_jsonl::<MatchedRecord>(&svc.storage, &layout.matched_part(b, piece, p)?)
                        .await?
                        .unwrap_or_default();
                let mut by: ByLearner = HashMap::new();
                for r in recs {
                    by.entry(r.record.user_id.clone()).or_default().push(r);
                }
                Ok(Arc::new(by))
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
        let (states, mut emits) =
            with_ledger(svc, b, &ctx.job_id, || svc.ledger.item_states(b, &user_id)).await?;
        let items = states
            .into_values()
            .map(|j| serde_json::from_str::<ItemState>(&j))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                JobError::Poison(anyhow::anyhow!("corrupt item state in the ledger: {e}"))
            })?;
        let outcomes: HashMap<String, AnalysisOutcome> = items
            .iter()
            .map(|s| (s.response_id.clone(), s.outcome.clone()))
            .collect();
        // The ledger records an item's state in the same script that makes it
        // final, and the learner is complete only when every item is final.
        let missing = records.iter().find(|r| {
            r.session.is_some()
                && r.record.audio_url.is_some()
                && !outcomes.contains_key(&r.record.response_id)
        });
        let learner_uri = layout.learner(b, &user_id)?;
        match missing {
            // States are dropped once the batch report is written; a re-run of
            // a learner whose rows exist keeps them (written from those states).
            Some(_) if svc.storage.size(&learner_uri).await?.is_some() => {
                tracing::debug!("learner rows already written and states dropped; keeping them");
            }
            Some(r) => {
                return Err(JobError::transient(
                    "state_missing",
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
        let (fan, more) = with_ledger(svc, b, &ctx.job_id, || {
            svc.ledger
                .learner_aggregated(b, Some(&user_id), &ctx.job_id)
        })
        .await?;
        emits.extend(more);
        if fan == FanIn::Emit {
            emits.push(Emit::new(
                StageName::Aggregate,
                ids::report(b),
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
        let mut rows = Vec::new();
        let mut outcomes = BTreeMap::new();
        let learner_uris = svc.storage.list(&layout.learners_prefix(b)?).await?;
        let mut learners = futures::stream::iter(learner_uris)
            .map(|u| async move { get_json::<LearnerRows>(&svc.storage, &u).await })
            .buffered(READ_CONCURRENCY);
        while let Some(l) = learners.try_next().await? {
            let Some(l) = l else { continue };
            rows.extend(l.rows);
            for s in l.items {
                let c = &mut summary.cost;
                c.calls += u64::from(s.cost.called);
                c.cache_hits += u64::from(s.cost.cache_hit);
                c.prefiltered += u64::from(s.cost.prefiltered);
                c.prompt_tokens += s.cost.prompt_tokens;
                c.output_tokens += s.cost.output_tokens;
                outcomes.insert(s.response_id, s.outcome);
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
