//! The Gemini path of the analyze stage: the free acoustic pre-filter first,
//! then a lease on the audio (two deliveries never both pay), a second look
//! at the result cache under the lease, the fleet-wide rate limit, one call,
//! the answer cached *before* the lease is released, and the error type's
//! disposition. A delivery that finds the audio leased by another waits for
//! the holder's answer in the cache (the lease follows its holder: renewed
//! while it works, freed within `lease_ttl_s` if it dies).
//!
//! | Gemini outcome | what the job does |
//! |---|---|
//! | answer | cached durably, item ok |
//! | no slot within `max_permit_wait_s` | released for exactly the predicted wait, no attempt spent (the daily quota also pauses the fleet) |
//! | 429 with RetryInfo / per-day quota | pause the whole fleet (shared key), re-run after the pause, no attempt spent |
//! | 5xx, network, 429 without RetryInfo | retry with backoff and jitter |
//! | blocked, SAFETY/MAX_TOKENS, bad JSON, values out of range | retry; on the last attempt a failed item |
//! | bad key, permission, model gone | fatal: the worker stops consuming and turns not-ready |
//! | bad MIME, oversize | failed item |

use std::time::{Duration, Instant};

use crate::ratelimit::{FleetLimiter, Limit, Quota, QuotaKind, RateLimitError, Reservation};
use engage_audio::AudioProbe;
use engage_model::AnalysisOutcome;
use engage_model::jobs::ItemCost;
use engage_runtime::batch_control::BatchRef;
use engage_runtime::config::AnalyzeSection;
use engage_runtime::idempotency::{Idempotency, KeptLease};
use engage_runtime::item_log::CANCELLED;
use engage_runtime::job_error::{DelayReason, ErrorClass, JobError};
use engage_runtime::redis_conn::RedisConn;
use engage_runtime::storage::{ObjectUri, Storage};
use engage_runtime::store_io::{get_json, put_json};

use crate::acoustic::{PrefilterConfig, prefilter};
use crate::gemini::{Disposition, GeminiClient, GeminiConfig, GeminiError, estimate_tokens};

/// How often a delivery that found the audio leased looks again for the
/// holder's answer (or for the lease to be free: its holder may have died).
const LEASED_POLL: Duration = Duration::from_secs(1);

/// The Gemini analyzer with its fleet-wide limiter.
pub struct Paid {
    client: GeminiClient,
    limiter: FleetLimiter<RedisConn>,
    prefilter: PrefilterConfig,
    /// Longest a job holds its delivery waiting for a slot or a lease.
    hold: Duration,
    lease_ttl: Duration,
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

/// The audio of one job and where its answer is cached.
#[derive(Debug)]
pub struct Audio<'a> {
    /// The stored audio.
    pub bytes: &'a [u8],
    /// Its probe (`None`: not found; analyze anyway).
    pub probe: Option<&'a AudioProbe>,
    /// The durable result cache.
    pub storage: &'a Storage,
    /// The cache entry of this audio and analyzer.
    pub cache: &'a ObjectUri,
    /// The lease key of this audio and analyzer.
    pub lease_key: &'a str,
    /// The job's batch: a call whose batch was cancelled while it waited
    /// for its quota slot is not sent.
    pub batch: BatchRef<'a>,
}

impl Paid {
    /// Builds the client and the limiter; registers the limiter's metrics.
    pub fn new(
        cfg: GeminiConfig,
        settings: &AnalyzeSection,
        redis: RedisConn,
        namespace: &str,
        quota: Quota,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Self> {
        let client = GeminiClient::new(cfg)?;
        let limiter = FleetLimiter::new(redis, namespace, quota)?
            .with_transit_margin(Duration::from_millis(settings.transit_margin_ms));
        limiter.register_metrics(registry)?;
        Ok(Self {
            client,
            limiter,
            prefilter: PrefilterConfig::default(),
            hold: Duration::from_secs(settings.max_permit_wait_s),
            lease_ttl: Duration::from_secs(settings.lease_ttl_s),
        })
    }

    /// The cache key part: `gemini:<model>:<prompt-version>`.
    pub fn analyzer_id(&self) -> &str {
        self.client.analyzer_id()
    }

    /// Analyzes one stored audio and stores the outcome in the durable
    /// result cache; `cost` says what it cost.
    ///
    /// Under a lease that follows its holder (renewed while the call runs):
    /// the cache is read again once the lease is held and written before it
    /// is released, so a delivery that missed the cache while another one
    /// was paying finds the answer. A delivery that finds the lease held
    /// waits (up to `max_permit_wait_s`) for the holder's answer or for the
    /// lease to free, then is delayed.
    pub async fn analyze(
        &self,
        leases: &Idempotency,
        audio: Audio<'_>,
        last_attempt: bool,
        cost: &mut ItemCost,
    ) -> Result<AnalysisOutcome, JobError> {
        if let Some((reason, detail)) = audio
            .probe
            .and_then(|p| prefilter(&p.features, &self.prefilter))
        {
            cost.prefiltered = true;
            let outcome = AnalysisOutcome::Failed {
                reason: reason.to_string(),
                detail,
            };
            put_json(audio.storage, audio.cache, &outcome).await?;
            return Ok(outcome);
        }
        let Some(lease) = self.lease_or_answer(leases, &audio, cost).await? else {
            // The holder's answer, from the cache.
            return get_json::<AnalysisOutcome>(audio.storage, audio.cache)
                .await?
                .ok_or_else(|| {
                    JobError::transient(
                        ErrorClass::StoreLag,
                        anyhow::anyhow!("cached answer vanished"),
                    )
                });
        };
        let res = self.leased(&audio, last_attempt, cost).await;
        let _ = leases.release_kept(lease).await;
        res
    }

    /// Takes the lease, or waits for whoever holds it: `None` once the
    /// holder's answer is in the cache.
    async fn lease_or_answer(
        &self,
        leases: &Idempotency,
        audio: &Audio<'_>,
        cost: &mut ItemCost,
    ) -> Result<Option<KeptLease>, JobError> {
        let deadline = Instant::now() + self.hold;
        let mut waited = false;
        loop {
            let lease = leases
                .try_keep_lease(audio.lease_key, self.lease_ttl)
                .await
                .map_err(|e| JobError::transient(ErrorClass::Redis, e))?;
            if lease.is_some() {
                return Ok(lease);
            }
            // Another delivery is paying for this audio now.
            if !waited {
                tracing::info!(
                    "another delivery holds the lease on this audio: waiting for its answer"
                );
                waited = true;
            }
            if get_json::<AnalysisOutcome>(audio.storage, audio.cache)
                .await?
                .is_some()
            {
                cost.cache_hit = true;
                return Ok(None);
            }
            if Instant::now() + LEASED_POLL > deadline {
                return Err(JobError::Delay {
                    after: LEASED_POLL,
                    reason: DelayReason::Leased,
                });
            }
            tokio::time::sleep(LEASED_POLL).await;
        }
    }

    /// The part of [`Paid::analyze`] that runs under the lease.
    async fn leased(
        &self,
        audio: &Audio<'_>,
        last_attempt: bool,
        cost: &mut ItemCost,
    ) -> Result<AnalysisOutcome, JobError> {
        if let Some(hit) = get_json::<AnalysisOutcome>(audio.storage, audio.cache).await? {
            cost.cache_hit = true;
            return Ok(hit);
        }
        let (outcome, lasting) = self.call(audio, last_attempt, cost).await?;
        // Only answers and permanent failures are cached: a transient fault
        // on the last attempt fails this batch's item, but the same audio in
        // a later batch is asked again.
        if lasting == Lasting::Yes {
            put_json(audio.storage, audio.cache, &outcome).await?;
        }
        Ok(outcome)
    }

    async fn call(
        &self,
        audio: &Audio<'_>,
        last_attempt: bool,
        cost: &mut ItemCost,
    ) -> Result<(AnalysisOutcome, Lasting), JobError> {
        let tokens = estimate_tokens(audio.probe.map_or(60.0, |p| p.duration_s));
        let mime = mime_of(audio.probe.map(|p| p.format.as_str()));
        // Upload first (large audio): the slot is booked when the request
        // is ready, so only the send itself lies between slot and arrival.
        let prepared = match self.client.prepare(audio.bytes, mime).await {
            Ok(p) => p,
            Err(e) => return self.on_error(e, last_attempt).await,
        };
        match self.permit(tokens).await {
            Ok(()) => {}
            // More estimated tokens than the whole TPM quota: no wait helps.
            Err(Refused::NeverFits(detail)) => {
                self.client.discard(prepared).await;
                let outcome = AnalysisOutcome::Failed {
                    reason: "gemini_exceeds_tpm_quota".to_owned(),
                    detail,
                };
                // Not cached: a larger quota later may fit it.
                return Ok((outcome, Lasting::No));
            }
            Err(Refused::Job(e)) => {
                self.client.discard(prepared).await;
                return Err(e);
            }
        }
        if audio.batch.cancelled().await {
            self.client.discard(prepared).await;
            let outcome = AnalysisOutcome::Failed {
                reason: CANCELLED.to_owned(),
                detail:
                    "the batch was cancelled while the call waited for its quota slot; not sent"
                        .to_owned(),
            };
            return Ok((outcome, Lasting::No));
        }
        let answer = self.client.send(&prepared).await;
        self.client.discard(prepared).await;
        cost.called = true;
        match answer {
            Ok(answer) => {
                cost.prompt_tokens = answer.usage.prompt_token_count;
                cost.output_tokens = answer.usage.candidates_token_count;
                self.limiter
                    .record_actual_tokens(answer.usage.prompt_token_count);
                Ok((AnalysisOutcome::Ok(answer.result), Lasting::Yes))
            }
            Err(e) => self.on_error(e, last_attempt).await,
        }
    }

    /// Waits for this request's booked slot. A slot further away than
    /// `max_permit_wait_s` releases the job for exactly that long (no
    /// attempt spent); an exhausted daily quota also pauses the fleet, so
    /// every worker parks its jobs at once and `engage status` says until when.
    async fn permit(&self, tokens: u64) -> Result<(), Refused> {
        let refused = match self.limiter.acquire(tokens, self.hold).await {
            Ok(r) => r,
            Err(e @ RateLimitError::CostExceedsQuota { .. }) => {
                return Err(Refused::NeverFits(e.to_string()));
            }
            Err(e) => return Err(Refused::Job(JobError::transient(ErrorClass::Redis, e))),
        };
        let Reservation::NotWithin { wait, limit } = refused else {
            return Ok(());
        };
        if limit == Limit::Rpd {
            self.limiter
                .pause_fleet(wait, QuotaKind::Rpd)
                .await
                .map_err(|e| Refused::Job(JobError::transient(ErrorClass::Redis, e)))?;
        }
        let reason = match limit {
            Limit::Pause | Limit::Rpd => DelayReason::FleetPaused,
            Limit::None | Limit::Rpm | Limit::Tpm => DelayReason::RateLimit,
        };
        Err(Refused::Job(JobError::Delay {
            after: wait,
            reason,
        }))
    }

    async fn on_error(
        &self,
        e: GeminiError,
        last_attempt: bool,
    ) -> Result<(AnalysisOutcome, Lasting), JobError> {
        if let Some(q) = e.quota_kind() {
            self.limiter.record_429(q).await;
        }
        let failed = |e: &GeminiError| AnalysisOutcome::Failed {
            reason: format!("gemini_{}", e.class()),
            detail: e.to_string(),
        };
        match e.disposition() {
            Disposition::PauseFleet { pause } => {
                let quota = e.quota_kind().unwrap_or(QuotaKind::Unknown);
                self.limiter
                    .pause_fleet(pause, quota)
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

/// Why a request got no slot.
#[derive(Debug)]
enum Refused {
    /// It can never fit the quota (more tokens than the whole TPM).
    NeverFits(String),
    /// Wait (parked for exactly the predicted time) or a Redis failure.
    Job(JobError),
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
