//! The match stage: one partition of one clean piece → matched records, the
//! learners' items registered in the batch ledger, and one download job per
//! matched response with audio.

use std::sync::Arc;

use bytes::Bytes;
use engage_model::envelope::StageName;
use engage_model::jobs::{DownloadJob, MatchJob, ids};
use engage_model::layout::Layout;
use engage_model::{ActivityRecord, MatchedRef, Session, SessionMatchRef};
use engage_runtime::fan_in;
use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::recovery::learner_items;
use engage_runtime::stage::{Emit, JobCtx, Stage};
use engage_runtime::store_io::{get_jsonl, to_jsonl};
use moka::future::Cache;

use crate::domain::{DEFAULT_TOLERANCE_NS, SessionIndex, match_positions};

/// Sessions kept indexed across jobs, counted in sessions (≈ 100 bytes each
/// indexed, so at most ≈ 200 MiB).
const INDEX_CACHE_SESSIONS: u64 = 2_000_000;

/// The match stage.
pub struct MatchStage {
    /// Session indexes per (batch, partition): every piece's partition `p`
    /// matches against the same sessions, so a worker parses and indexes them
    /// once; concurrent jobs of one partition wait on a single load.
    indexes: Cache<(String, u32), Arc<SessionIndex>>,
}

impl std::fmt::Debug for MatchStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatchStage").finish_non_exhaustive()
    }
}

impl Default for MatchStage {
    fn default() -> Self {
        Self {
            indexes: Cache::builder()
                .weigher(|_, ix: &Arc<SessionIndex>| {
                    u32::try_from(ix.len()).unwrap_or(u32::MAX).max(1)
                })
                .max_capacity(INDEX_CACHE_SESSIONS)
                .build(),
        }
    }
}

impl MatchStage {
    async fn index(
        &self,
        ctx: &JobCtx,
        layout: &Layout,
        p: u32,
    ) -> Result<Arc<SessionIndex>, JobError> {
        self.indexes
            .try_get_with((ctx.batch_id.clone(), p), async {
                let uri = layout.sessions_part(&ctx.batch_id, p)?;
                let sessions = get_jsonl::<Session>(&ctx.svc.storage, &uri)
                    .await?
                    .unwrap_or_default();
                Ok(Arc::new(SessionIndex::build(sessions)))
            })
            .await
            .map_err(|e: Arc<JobError>| e.share())
    }
}

#[async_trait::async_trait]
impl Stage for MatchStage {
    type Job = MatchJob;
    const NAME: StageName = StageName::Match;

    async fn handle(&self, ctx: &JobCtx, job: MatchJob) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let b = ctx.batch_id.as_str();
        let layout = Layout::new(svc.store_root.clone());
        let records = get_jsonl::<ActivityRecord>(
            &svc.storage,
            &layout.clean_part(b, &job.piece, job.partition)?,
        )
        .await?
        .ok_or_else(|| {
            JobError::transient(
                ErrorClass::StoreLag,
                anyhow::anyhow!(
                    "clean output of {}:{} not found yet",
                    job.piece,
                    job.partition
                ),
            )
        })?;
        let index = self.index(ctx, &layout, job.partition).await?;
        // Each response is paired with its session in the shared index:
        // nothing of the session is copied per row.
        let (positions, stats) = match_positions(&records, &index, DEFAULT_TOLERANCE_NS);
        let matched: Vec<MatchedRef<'_>> = records
            .iter()
            .zip(positions)
            .map(|(record, at)| MatchedRef {
                record,
                session: at
                    .and_then(|at| index.session(at))
                    .map(SessionMatchRef::from),
            })
            .collect();
        let body = to_jsonl(&matched)?;
        let n = body.len() as u64;
        svc.storage
            .put(
                &layout.matched_part(b, &job.piece, job.partition)?,
                Bytes::from(body),
            )
            .await?;
        svc.metrics
            .bytes_written
            .with_label_values(&[Self::NAME.as_str()])
            .inc_by(n);
        tracing::debug!(
            matched = stats.matched,
            unmatched = stats.unmatched,
            "partition matched"
        );

        // Register before emitting, so no item can finish before it is expected.
        let part = ids::match_part(&job.piece, job.partition);
        let mut emits =
            fan_in::partition_done(ctx, &part, &learner_items(matched.iter().copied())).await?;
        for r in matched.iter().filter(|r| r.session.is_some()) {
            if let Some(url) = &r.record.audio_url {
                let d = DownloadJob {
                    response_id: r.record.response_id.clone(),
                    user_id: r.record.user_id.clone(),
                    audio_url: url.clone(),
                };
                emits.push(Emit::new(
                    StageName::Download,
                    ids::download(b, &r.record.response_id),
                    &d,
                )?);
            }
        }
        Ok(emits)
    }
}
