//! The match stage: one partition of one clean piece → matched records, the
//! learners' items registered in the batch ledger, and one download job per
//! matched response with audio.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use engage_shared::envelope::StageName;
use engage_shared::jobs::{DownloadJob, MatchJob, ids};
use engage_shared::layout::Layout;
use engage_shared::ledger::FanIn;
use engage_shared::model::{ActivityRecord, Session};
use engage_shared::recovery::{fan_in_emits, learner_items, with_ledger};
use engage_shared::store_io::{get_jsonl, to_jsonl};
use engage_shared::worker::{Emit, JobCtx, JobError, Stage};

use crate::domain::{DEFAULT_TOLERANCE_NS, SessionIndex, match_records};

/// Session indexes kept per (batch, partition), so a worker that handles the
/// same partition of several pieces parses its sessions once.
const INDEX_CACHE: usize = 64;

/// The match stage.
#[derive(Debug, Default)]
pub struct MatchStage {
    indexes: Mutex<HashMap<(String, u32), Arc<SessionIndex>>>,
}

impl MatchStage {
    async fn index(
        &self,
        ctx: &JobCtx,
        layout: &Layout,
        p: u32,
    ) -> Result<Arc<SessionIndex>, JobError> {
        let key = (ctx.batch_id.clone(), p);
        if let Some(ix) = self.indexes.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(ix);
        }
        let sessions =
            get_jsonl::<Session>(&ctx.svc.storage, &layout.sessions_part(&ctx.batch_id, p)?)
                .await?
                .unwrap_or_default();
        let ix = Arc::new(SessionIndex::build(sessions));
        if let Ok(mut m) = self.indexes.lock() {
            if m.len() >= INDEX_CACHE {
                m.clear();
            }
            m.insert(key, ix.clone());
        }
        Ok(ix)
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
                "store_lag",
                anyhow::anyhow!(
                    "clean output of {}:{} not found yet",
                    job.piece,
                    job.partition
                ),
            )
        })?;
        let index = self.index(ctx, &layout, job.partition).await?;
        let (matched, stats) = match_records(records, &index, DEFAULT_TOLERANCE_NS);
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
        let items = learner_items(&matched);
        let (_, mut emits) =
            with_ledger(svc, b, &ctx.job_id, || svc.ledger.register_items(b, &items)).await?;
        let part = ids::match_part(&job.piece, job.partition);
        let (fan, more) = with_ledger(svc, b, &ctx.job_id, || {
            svc.ledger.match_done(b, &part, &ctx.job_id)
        })
        .await?;
        emits.extend(more);
        if fan == FanIn::Emit {
            emits.extend(fan_in_emits(b, svc.ledger.scan(b, &ctx.job_id).await?)?);
        }
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
