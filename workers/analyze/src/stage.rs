//! The analyze stage: one stored audio → an analysis result, answered from the
//! durable result cache when the same audio was analyzed before by the same
//! analyzer (so a redelivery, a re-run batch or the same audio in another
//! batch never pays twice), then recorded as the item's final state.

use engage_audio::AudioProbe;
use engage_model::AnalysisOutcome;
use engage_model::envelope::StageName;
use engage_model::jobs::{AnalyzeJob, ItemCost};
use engage_model::layout::Layout;
use engage_runtime::audio_budget::Held;
use engage_runtime::audio_fetch::{Fetched, fetch_audio};
use engage_runtime::batch_control::BatchRef;
use engage_runtime::items::{failed, finalize, finalize_dead_lettered};
use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::stage::{Emit, JobCtx, Stage};
use engage_runtime::storage::ObjectUri;
use engage_runtime::store_io::{get_json, put_json};

use crate::acoustic::{ACOUSTIC_VERSION, acoustic_memory_need, analyze_bytes};
use crate::gemini::gemini_memory_need;
use crate::paid::{Audio, Paid};

/// Which analyzer a stage runs.
#[derive(Debug)]
pub enum Analyzer {
    /// The offline acoustic analyzer (free, local).
    Acoustic,
    /// Gemini behind the acoustic pre-filter and the fleet-wide limiter.
    Gemini(Box<Paid>),
}

/// The analyze stage.
#[derive(Debug)]
pub struct AnalyzeStage {
    analyzer: Analyzer,
}

impl AnalyzeStage {
    /// A stage running `analyzer`.
    pub fn new(analyzer: Analyzer) -> Self {
        Self { analyzer }
    }

    /// The analyzer id that keys the result cache.
    pub fn analyzer_id(&self) -> &str {
        match &self.analyzer {
            Analyzer::Acoustic => ACOUSTIC_VERSION,
            Analyzer::Gemini(p) => p.analyzer_id(),
        }
    }
}

impl Default for AnalyzeStage {
    fn default() -> Self {
        Self::new(Analyzer::Acoustic)
    }
}

#[async_trait::async_trait]
impl Stage for AnalyzeStage {
    type Job = AnalyzeJob;
    const NAME: StageName = StageName::Analyze;
    const HALTS_BATCH: bool = false;

    async fn dead_lettered(
        &self,
        ctx: &JobCtx,
        job: AnalyzeJob,
        reason: &str,
    ) -> Result<Vec<Emit>, JobError> {
        finalize_dead_lettered(ctx, Self::NAME, &job.user_id, &job.response_id, reason).await
    }

    async fn handle(&self, ctx: &JobCtx, job: AnalyzeJob) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let layout = Layout::new(svc.store_root.clone());
        let cache = layout.result(&job.content_hash, self.analyzer_id())?;
        let mut cost = ItemCost::default();
        if let Some(hit) = get_json::<AnalysisOutcome>(&svc.storage, &cache).await? {
            cost.cache_hit = true;
            return finalize(ctx, Self::NAME, &job.user_id, &job.response_id, hit, cost).await;
        }
        let audio_uri = layout.audio(&job.content_hash)?;
        // Every byte of audio this job holds (the object, then its decode or
        // request body) is reserved in the worker's audio budget first.
        let need = match &self.analyzer {
            Analyzer::Acoustic => acoustic_memory_need,
            Analyzer::Gemini(_) => gemini_memory_need,
        };
        let unusable = match fetch_audio(svc, &audio_uri, need).await? {
            Fetched::Held(held) => {
                return self
                    .analyze_held(ctx, &job, &layout, &cache, held, cost)
                    .await;
            }
            Fetched::Missing => failed(
                "stored_audio_missing",
                "validated audio is gone from the store",
            ),
            Fetched::Refused { reason, detail } => failed(&reason, detail),
        };
        let (user, rid) = (&job.user_id, &job.response_id);
        finalize(ctx, Self::NAME, user, rid, unusable, cost).await
    }
}

impl AnalyzeStage {
    /// Analyzes audio held within the budget (its permit lives until this
    /// returns) and records the item's final state.
    async fn analyze_held(
        &self,
        ctx: &JobCtx,
        job: &AnalyzeJob,
        layout: &Layout,
        cache: &ObjectUri,
        held: Held,
        mut cost: ItemCost,
    ) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let Held {
            permit: _permit,
            bytes,
        } = held;
        svc.metrics
            .bytes_read
            .with_label_values(&[Self::NAME.as_str()])
            .inc_by(bytes.len() as u64);
        let outcome = match &self.analyzer {
            Analyzer::Acoustic => {
                let hint = job.format.clone();
                let outcome =
                    tokio::task::spawn_blocking(move || analyze_bytes(&bytes, hint.as_deref()))
                        .await
                        .map_err(|e| JobError::transient(ErrorClass::Panic, e))?;
                // Stored before the ack: a redelivery finds it and does not analyze again.
                put_json(&svc.storage, cache, &outcome).await?;
                outcome
            }
            Analyzer::Gemini(paid) => {
                let probe =
                    get_json::<AudioProbe>(&svc.storage, &layout.probe(&job.content_hash)?).await?;
                let audio = Audio {
                    bytes: &bytes,
                    probe: probe.as_ref(),
                    storage: &svc.storage,
                    cache,
                    lease_key: &format!("analyze:{}:{}", job.content_hash, paid.analyzer_id()),
                    batch: BatchRef {
                        conn: &svc.redis,
                        ledger: &svc.ledger,
                        batch: &ctx.batch_id,
                    },
                };
                let last = ctx.attempt + 1 >= svc.cfg.limits.max_attempts;
                paid.analyze(&svc.idempotency, audio, last, &mut cost)
                    .await?
            }
        };
        let (user, rid) = (&job.user_id, &job.response_id);
        finalize(ctx, Self::NAME, user, rid, outcome, cost).await
    }
}
