//! The Gemini path of the analyze stage: the free acoustic pre-filter first,
//! then a lease on the audio (two deliveries never both pay), a second look
//! at the result cache under the lease, the fleet-wide rate limit, one call,
//! the answer cached *before* the lease is released, and the error type's
//! disposition. A delivery that finds the audio leased by another gets
//! [`Analyzed::LeasedElsewhere`] (a result, not an error): the stage looks
//! for the holder's cached answer, else delays the job.
//!
//! | Gemini outcome | what the job does |
//! |---|---|
//! | answer | cached durably, item ok |
//! | 429 with RetryInfo / per-day quota | pause the whole fleet (shared key), re-run after the pause, no attempt spent |
//! | 5xx, network, 429 without RetryInfo | retry with backoff and jitter |
//! | blocked, SAFETY/MAX_TOKENS, bad JSON, values out of range | retry; on the last attempt a failed item |
//! | bad key, permission, model gone | fatal: the worker stops consuming and turns not-ready |
//! | bad MIME, oversize | failed item |

use std::time::Duration;

use crate::ratelimit::{Acquired, FleetLimiter, Quota};
use engage_audio::AudioProbe;
use engage_model::AnalysisOutcome;
use engage_model::jobs::ItemCost;
use engage_runtime::idempotency::Idempotency;
use engage_runtime::job_error::{DelayReason, ErrorClass, JobError};
use engage_runtime::redis_conn::RedisConn;
use engage_runtime::storage::{ObjectUri, Storage};
use engage_runtime::store_io::{get_json, put_json};

use crate::acoustic::{PrefilterConfig, prefilter};
use crate::gemini::{Disposition, GeminiClient, GeminiConfig, GeminiError, estimate_tokens};

/// How long a lease on one audio's analysis lasts (longer than a slow call).
const LEASE: Duration = Duration::from_secs(300);

/// How long a delivery that found the audio leased waits before it looks for
/// the lease holder's cached answer again.
pub const LEASED_RECHECK: Duration = Duration::from_secs(5);

/// What [`Paid::analyze`] did.
#[derive(Debug)]
pub enum Analyzed {
    /// The outcome (pre-filtered, cached or answered), stored in the cache.
    Outcome(AnalysisOutcome),
    /// Another delivery holds the lease and is paying for this audio now:
    /// its answer may already be in the cache, else come back after
    /// [`LEASED_RECHECK`].
    LeasedElsewhere,
}

/// The Gemini analyzer with its fleet-wide limiter.
pub struct Paid {
    client: GeminiClient,
    limiter: FleetLimiter<RedisConn>,
    prefilter: PrefilterConfig,
    max_permit_wait: Duration,
}

impl std::fmt::Debug for Paid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paid")
            .field("analyzer", &self.client.analyzer_id())
            .finish()
    }
}

/// MIME type of a probed container format.
pub fn mime_of(format: Option<&str>) -> &'static str {
    match format.unwrap_or("") {
        "mp3" => "audio/mp3",
        "flac" => "audio/flac",
        "ogg" | "vorbis" => "audio/ogg",
        "mp4" | "m4a" | "aac" | "isomp4" => "audio/aac",
        _ => "audio/wav",
    }
}

impl Paid {
    /// Builds the client and the limiter; registers the limiter's metrics.
    pub fn new(
        cfg: GeminiConfig,
        redis: RedisConn,
        namespace: &str,
        quota: Quota,
        max_permit_wait: Duration,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        let client = GeminiClient::new(cfg)?;
        let limiter = FleetLimiter::new(redis, namespace, quota)?;
        limiter.register_metrics(registry)?;
        Ok(Self {
            client,
            limiter,
            prefilter: PrefilterConfig::default(),
            max_permit_wait,
        })
    }

    /// The cache key part: `gemini:<model>:<prompt-version>`.
    pub fn analyzer_id(&self) -> &str {
        self.client.analyzer_id()
    }

    /// Analyzes one stored audio and stores the outcome at `cache` (the
    /// durable result cache). `None` probe means it was not found (analyze
    /// anyway).
    ///
    /// The cache is read again once the lease is held and written before it
    /// is released: a delivery that missed the cache while another one was
    /// paying takes the lease only after the answer is stored, and finds it;
    /// releasing the lease before storing would let it pay again.
    #[allow(clippy::too_many_arguments)]
    pub async fn analyze(
        &self,
        leases: &Idempotency,
        lease_key: &str,
        cache: (&Storage, &ObjectUri),
        bytes: &[u8],
        probe: Option<&AudioProbe>,
        last_attempt: bool,
        cost: &mut ItemCost,
    ) -> Result<Analyzed, JobError> {
        let (storage, cache_uri) = cache;
        if let Some((reason, detail)) = probe.and_then(|p| prefilter(&p.features, &self.prefilter))
        {
            cost.prefiltered = true;
            let outcome = AnalysisOutcome::Failed {
                reason: reason.to_string(),
                detail,
            };
            put_json(storage, cache_uri, &outcome).await?;
            return Ok(Analyzed::Outcome(outcome));
        }
        let Some(lease) = leases
            .try_lease(lease_key, LEASE)
            .await
            .map_err(|e| JobError::transient(ErrorClass::Redis, e))?
        else {
            // Another delivery is paying for this audio now.
            return Ok(Analyzed::LeasedElsewhere);
        };
        let res = self
            .leased(storage, cache_uri, bytes, probe, last_attempt, cost)
            .await;
        let _ = leases.release(lease).await;
        res.map(Analyzed::Outcome)
    }

    /// The part of [`Paid::analyze`] that runs under the lease.
    async fn leased(
        &self,
        storage: &Storage,
        cache_uri: &ObjectUri,
        bytes: &[u8],
        probe: Option<&AudioProbe>,
        last_attempt: bool,
        cost: &mut ItemCost,
    ) -> Result<AnalysisOutcome, JobError> {
        if let Some(hit) = get_json::<AnalysisOutcome>(storage, cache_uri).await? {
            cost.cache_hit = true;
            return Ok(hit);
        }
        let (outcome, lasting) = self.call(bytes, probe, last_attempt, cost).await?;
        // Only answers and permanent failures are cached: a transient fault
        // on the last attempt fails this batch's item, but the same audio in
        // a later batch is asked again.
        if lasting == Lasting::Yes {
            put_json(storage, cache_uri, &outcome).await?;
        }
        Ok(outcome)
    }

    async fn call(
        &self,
        bytes: &[u8],
        probe: Option<&AudioProbe>,
        last_attempt: bool,
        cost: &mut ItemCost,
    ) -> Result<(AnalysisOutcome, Lasting), JobError> {
        let tokens = estimate_tokens(probe.map_or(60.0, |p| p.duration_s));
        match self
            .limiter
            .acquire(tokens, self.max_permit_wait)
            .await
            .map_err(|e| JobError::transient(ErrorClass::Redis, e))?
        {
            Acquired::Granted(_) => {}
            // Never hold a message past the broker's ack timeout waiting for quota.
            Acquired::NotWithin { wait, .. } => {
                return Err(JobError::Delay {
                    after: wait,
                    reason: DelayReason::RateLimit,
                });
            }
        }
        let mime = mime_of(probe.map(|p| p.format.as_str()));
        match self.client.analyze(bytes, mime).await {
            Ok(answer) => {
                cost.called = true;
                cost.prompt_tokens = answer.usage.prompt_token_count;
                cost.output_tokens = answer.usage.candidates_token_count;
                self.limiter
                    .record_actual_tokens(answer.usage.prompt_token_count);
                Ok((AnalysisOutcome::Ok(answer.result), Lasting::Yes))
            }
            Err(e) => {
                cost.called = true;
                self.on_error(e, last_attempt).await
            }
        }
    }

    async fn on_error(
        &self,
        e: GeminiError,
        last_attempt: bool,
    ) -> Result<(AnalysisOutcome, Lasting), JobError> {
        if let Some(q) = e.quota_kind() {
            self.limiter.record_429(q);
        }
        let failed = |e: &GeminiError| AnalysisOutcome::Failed {
            reason: format!("gemini_{}", e.class()),
            detail: e.to_string(),
        };
        match e.disposition() {
            Disposition::PauseFleet { pause } => {
                self.limiter
                    .pause_fleet(pause)
                    .await
                    .map_err(|err| JobError::transient(ErrorClass::Redis, err))?;
                tracing::warn!(
                    class = e.class(),
                    ?pause,
                    "Gemini quota exhausted: pausing the fleet"
                );
                Err(JobError::Delay {
                    after: pause,
                    reason: DelayReason::FleetPaused,
                })
            }
            Disposition::Fatal => Err(JobError::Fatal(anyhow::anyhow!(
                "Gemini refuses every call ({}): {e}",
                e.class()
            ))),
            Disposition::FailItem => Ok((failed(&e), Lasting::Yes)),
            Disposition::Retry { .. } if last_attempt => Ok((failed(&e), Lasting::No)),
            Disposition::Retry { after: Some(after) } => Err(JobError::Delay {
                after,
                reason: DelayReason::ServerRetryAfter,
            }),
            Disposition::Retry { after: None } => Err(JobError::Transient {
                class: ErrorClass::Upstream(e.class()),
                error: e.into(),
            }),
        }
    }
}

/// Whether an outcome holds for the same audio in any later batch (and so
/// goes into the durable result cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lasting {
    /// An answer, or a permanent failure (the model refuses this audio).
    Yes,
    /// A transient fault that outlived this job's attempts.
    No,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types() {
        assert_eq!(mime_of(Some("mp3")), "audio/mp3");
        assert_eq!(mime_of(Some("wav")), "audio/wav");
        assert_eq!(mime_of(None), "audio/wav");
        assert_eq!(mime_of(Some("isomp4")), "audio/aac");
    }
}
