//! The contract between the worker loop and a stage: [`Stage`] (what a stage
//! implements), [`JobCtx`] (what a job may touch) and [`Emit`] (a follow-up
//! job it asks the loop to publish).

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

use crate::broker::Publisher;
use crate::job_error::{ErrorClass, JobError};
use crate::services::Services;
use engage_model::envelope::StageName;
use engage_model::job_ids::CheckIds;

/// A follow-up message produced by a job.
#[derive(Debug, Clone)]
pub struct Emit {
    /// The stage whose queue receives it.
    pub stage: StageName,
    /// Stable id of the follow-up job.
    pub job_id: String,
    /// The job body.
    pub job: serde_json::Value,
}

impl Emit {
    /// Builds a follow-up job.
    pub fn new<J: Serialize>(
        stage: StageName,
        job_id: impl Into<String>,
        job: &J,
    ) -> Result<Self, JobError> {
        let job = serde_json::to_value(job).map_err(|e| JobError::Poison(e.into()))?;
        Ok(Self {
            stage,
            job_id: job_id.into(),
            job,
        })
    }
}

/// What a handler knows about the job it runs.
#[derive(Debug, Clone)]
pub struct JobCtx {
    /// Shared services (store, Redis, metrics, config).
    pub svc: Arc<Services>,
    /// The batch.
    pub batch_id: String,
    /// The job's stable id.
    pub job_id: String,
    /// 0 on the first attempt.
    pub attempt: u32,
    /// Trace id carried across stages.
    pub trace_id: String,
    /// The worker's confirm-mode publisher (see [`JobCtx::publish_now`]).
    pub publisher: Publisher,
}

impl JobCtx {
    /// Publishes follow-ups now, with confirms, while the job still runs: for
    /// a long job whose follow-ups can start before it ends (the clean
    /// pre-pass publishes each segment as soon as it is stored). They must be
    /// safe to publish again: a redelivered job publishes them a second time
    /// and the consumer's idempotency drops the repeat.
    pub async fn publish_now(&self, emits: Vec<Emit>) -> Result<(), JobError> {
        let from = (self.batch_id.as_str(), self.trace_id.as_str());
        crate::worker::publish_all(&self.publisher, from, emits)
            .await
            .map_err(|e| JobError::transient(ErrorClass::Amqp, e))
    }
}

/// One stage: a tiny impl around pure domain logic.
#[async_trait::async_trait]
pub trait Stage: Send + Sync + 'static {
    /// The job body this stage consumes.
    type Job: DeserializeOwned + Send + CheckIds;
    /// The stage's name (its queue).
    const NAME: StageName;
    /// Whether a dead-lettered job of this stage halts its batch: its work
    /// is the batch's own (clean, match, aggregate), so the batch cannot end
    /// without it, and it ends *halted* (`engage status` says by which job
    /// and why; replaying the job resumes it). Download and analyze jobs
    /// stand for one item, which becomes final as `dead_lettered:<reason>`
    /// instead (see [`Stage::dead_lettered`]).
    const HALTS_BATCH: bool = true;
    /// Runs one job: write effects under deterministic keys, return follow-ups.
    async fn handle(&self, ctx: &JobCtx, job: Self::Job) -> Result<Vec<Emit>, JobError>;

    /// The job is being dead-lettered after its attempts or deliveries ran
    /// out (`reason`: `max_attempts`, `delivery_limit`): makes the items it
    /// stood for final as `dead_lettered:<reason>` so their batch still
    /// ends, and returns the follow-ups that finality triggers. The default
    /// (stages whose jobs stand for no single item) does nothing.
    async fn dead_lettered(
        &self,
        _ctx: &JobCtx,
        _job: Self::Job,
        _reason: &str,
    ) -> Result<Vec<Emit>, JobError> {
        Ok(Vec::new())
    }
}
