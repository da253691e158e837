//! The download stage: fetch one response's audio from an allow-listed source
//! bucket, validate it (decodable, duration, silence), store it in the
//! pipeline's store keyed by content hash, and hand it to analyze.
//!
//! A bad link, missing or undecodable audio is a *failed item* (recorded, the
//! batch still completes); network and 5xx trouble is *transient* (retried).

use bytes::Bytes;
use engage_audio::AudioProbe;
use engage_model::AudioRef;
use engage_model::envelope::StageName;
use engage_model::jobs::{AnalyzeJob, DownloadJob, ids};
use engage_model::layout::Layout;
use engage_runtime::audio_budget::Held;
use engage_runtime::audio_fetch::{Fetched, fetch_audio};
use engage_runtime::items::{failed, finalize, finalize_dead_lettered};
use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::stage::{Emit, JobCtx, Stage};
use engage_runtime::storage::{ObjectUri, content_key};
use engage_runtime::store_io::{get_json, put_json};

use crate::domain::{AUDIO_MISSING, memory_need, source_uri, validate};

/// The download stage (stateless; everything it needs is in the services).
#[derive(Debug, Default)]
pub struct DownloadStage;

#[async_trait::async_trait]
impl Stage for DownloadStage {
    type Job = DownloadJob;
    const NAME: StageName = StageName::Download;
    const HALTS_BATCH: bool = false;

    async fn dead_lettered(
        &self,
        ctx: &JobCtx,
        job: DownloadJob,
        reason: &str,
    ) -> Result<Vec<Emit>, JobError> {
        finalize_dead_lettered(ctx, Self::NAME, &job.user_id, &job.response_id, reason).await
    }

    async fn handle(&self, ctx: &JobCtx, job: DownloadJob) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let fail = |reason: &str, detail: String| {
            finalize(
                ctx,
                Self::NAME,
                &job.user_id,
                &job.response_id,
                failed(reason, detail),
                Default::default(),
            )
        };
        let src = match AudioRef::parse_allowed(&job.audio_url, &svc.cfg.download.audio_buckets) {
            Ok(r) => r,
            Err(e) => return fail(e.name(), e.to_string()).await,
        };
        let uri: ObjectUri = source_uri(&src, &svc.store_root)?;
        // Every byte of audio this job holds (the object, then its decode)
        // is reserved in the worker's audio budget first.
        let held = match fetch_audio(svc, &uri, memory_need).await? {
            Fetched::Held(h) => h,
            Fetched::Missing => {
                return fail(AUDIO_MISSING, "no object at the audio link".into()).await;
            }
            Fetched::Refused { reason, detail } => return fail(&reason, detail).await,
        };
        let Held {
            permit: _permit,
            bytes,
        } = held;
        let bytes: Bytes = bytes;
        svc.metrics
            .bytes_read
            .with_label_values(&[Self::NAME.as_str()])
            .inc_by(bytes.len() as u64);

        let layout = Layout::new(svc.store_root.clone());
        let hash = content_key(&bytes);
        let audio_uri = layout.audio(&hash)?;
        let probe_uri = layout.probe(&hash)?;
        // Hash before decoding: content-addressed, identical audio is stored
        // (and later analyzed) once. Audio and probe are only ever stored
        // after these exact bytes decoded and validated, and the probe is
        // written after the audio, so a readable probe means both are stored
        // and stands for a fresh decode. A missing or unreadable probe (crash
        // between the two writes, a corrupt document) falls back to decoding
        // and rewriting both.
        let stored = get_json::<AudioProbe>(&svc.storage, &probe_uri)
            .await
            .ok()
            .flatten();
        let format = match stored {
            Some(p) => p.format,
            None => {
                let key = src.key().to_string();
                let audio = bytes.clone();
                let probed = tokio::task::spawn_blocking(move || validate(&audio, &key))
                    .await
                    .map_err(|e| JobError::transient(ErrorClass::Panic, e))?;
                let probe = match probed {
                    Ok(p) => p,
                    Err(e) => return fail(e.name(), e.to_string()).await,
                };
                svc.storage.put(&audio_uri, bytes.clone()).await?;
                let n = put_json(&svc.storage, &probe_uri, &probe).await?;
                svc.metrics
                    .bytes_written
                    .with_label_values(&[Self::NAME.as_str()])
                    .inc_by(bytes.len() as u64 + n);
                probe.format
            }
        };
        svc.ledger
            .downloaded(&ctx.batch_id, &job.response_id)
            .await?;
        let next = AnalyzeJob {
            response_id: job.response_id.clone(),
            user_id: job.user_id.clone(),
            content_hash: hash,
            format: Some(format),
        };
        Ok(vec![Emit::new(
            StageName::Analyze,
            ids::analyze(&ctx.batch_id, &job.response_id),
            &next,
        )?])
    }
}
