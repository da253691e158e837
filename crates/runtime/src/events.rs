//! Internal events of the worker loop (in the style of Vector's internal
//! events): each event is a small struct whose [`InternalEvent::emit`] writes
//! its log line and increments its counters with the same bounded labels, so
//! a log line and its metric can never disagree.
//!
//! Label values are part of the deployment contract (`deploy/metrics.txt`,
//! the Prometheus rules and dashboards): [`JobOutcome::as_str`] and
//! [`DeadLetterReason::as_str`] keep them.

use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::job_error::{DelayReason, ErrorClass, JobError};
use crate::metrics::Metrics;
use engage_model::envelope::StageName;

/// Something that happened, logged and counted in one place.
pub trait InternalEvent {
    /// Writes the log line and increments the counters.
    fn emit(self, metrics: &Metrics);
}

/// How a delivery ended: the `outcome` label of `engage_jobs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Effects durable, follow-ups confirmed.
    Ok,
    /// The job had already completed; skipped.
    Duplicate,
    /// Scheduled to run again (transient failure).
    Retry,
    /// Scheduled to run again later without spending an attempt.
    Delayed,
    /// A parked job came back before it was due and went down the wait
    /// ladder again (not a run of the job).
    Waiting,
    /// Moved to the dead-letter queue.
    DeadLetter,
    /// The worker stopped consuming; the message was requeued.
    Fatal,
    /// The job's batch is paused (`engage pause`): parked on the wait
    /// ladder, no attempt spent.
    Paused,
    /// The job's batch is cancelled (`engage cancel`): acked and dropped.
    Cancelled,
}

impl JobOutcome {
    /// Every outcome.
    pub const ALL: [JobOutcome; 9] = [
        Self::Ok,
        Self::Duplicate,
        Self::Retry,
        Self::Delayed,
        Self::Waiting,
        Self::DeadLetter,
        Self::Fatal,
        Self::Paused,
        Self::Cancelled,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Duplicate => "duplicate",
            Self::Retry => "retry",
            Self::Delayed => "delayed",
            Self::Waiting => "waiting",
            Self::DeadLetter => "dead_letter",
            Self::Fatal => "fatal",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why a message was dead-lettered: the `reason` label of
/// `engage_dead_lettered_total` and the dead letter's `reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The envelope is not valid.
    Undecodable,
    /// The job body or the job itself can never succeed.
    Poison,
    /// Transient failures used up every attempt.
    MaxAttempts,
    /// The message was delivered as often as the broker allows (it keeps
    /// crashing or stalling its consumer).
    DeliveryLimit,
}

impl DeadLetterReason {
    /// Every reason.
    pub const ALL: [DeadLetterReason; 4] = [
        Self::Undecodable,
        Self::Poison,
        Self::MaxAttempts,
        Self::DeliveryLimit,
    ];

    /// The metric label and header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::Poison => "poison",
            Self::MaxAttempts => "max_attempts",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A delivery was handled (whatever the outcome).
#[derive(Debug)]
pub struct JobFinished {
    /// The stage.
    pub stage: StageName,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Handling time.
    pub elapsed: Duration,
}

impl InternalEvent for JobFinished {
    fn emit(self, m: &Metrics) {
        let stage = self.stage.as_str();
        debug!(outcome = self.outcome.as_str(), elapsed = ?self.elapsed, "job finished");
        m.job_duration
            .with_label_values(&[stage])
            .observe(self.elapsed.as_secs_f64());
        m.jobs
            .with_label_values(&[stage, self.outcome.as_str()])
            .inc();
    }
}

/// A delivery of a job that had already completed.
#[derive(Debug)]
pub struct DuplicateSkipped {
    /// The stage.
    pub stage: StageName,
}

impl InternalEvent for DuplicateSkipped {
    fn emit(self, m: &Metrics) {
        debug!("already done; skipping");
        m.idempotent_skips
            .with_label_values(&[self.stage.as_str()])
            .inc();
    }
}

/// A transient failure: the job runs again after a backoff tier.
#[derive(Debug)]
pub struct RetryScheduled<'a> {
    /// The stage.
    pub stage: StageName,
    /// The error's class.
    pub class: ErrorClass,
    /// The delay tier.
    pub tier: usize,
    /// The attempt number the job will carry.
    pub attempt: u32,
    /// The error, as logged.
    pub error: &'a JobError,
}

impl InternalEvent for RetryScheduled<'_> {
    fn emit(self, m: &Metrics) {
        m.retries
            .with_label_values(&[self.stage.as_str(), self.class.as_str()])
            .inc();
        warn!(error = %self.error, tier = self.tier, attempt = self.attempt, "job will run again later");
    }
}

/// Not now: the job runs again after a delay, no attempt spent (counted as
/// the `delayed` outcome of [`JobFinished`]).
#[derive(Debug)]
pub struct DelayScheduled<'a> {
    /// The stage.
    pub stage: StageName,
    /// Why.
    pub reason: DelayReason,
    /// The attempt number the job keeps.
    pub attempt: u32,
    /// The error, as logged.
    pub error: &'a JobError,
}

impl InternalEvent for DelayScheduled<'_> {
    fn emit(self, m: &Metrics) {
        // Waiting for quota is normal operation, not a warning; the error's
        // text names the wait and its reason (`delayed 45s: rate_limit`).
        info!(error = %self.error, reason = self.reason.as_str(), attempt = self.attempt, "job parked until its wait is over");
        m.delays
            .with_label_values(&[self.stage.as_str(), self.reason.as_str()])
            .inc();
    }
}

/// A message moved to its stage's dead-letter queue.
#[derive(Debug)]
pub struct DeadLettered<'a> {
    /// The stage.
    pub stage: StageName,
    /// Why.
    pub reason: DeadLetterReason,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub error: &'a str,
}

impl InternalEvent for DeadLettered<'_> {
    fn emit(self, m: &Metrics) {
        error!(
            reason = self.reason.as_str(),
            attempts = self.attempts,
            error = self.error,
            "dead-lettering message"
        );
        m.dead_lettered
            .with_label_values(&[self.stage.as_str(), self.reason.as_str()])
            .inc();
    }
}

/// The worker cannot do any job: it stops consuming (the readiness gauge
/// follows from the health state the loop sets).
#[derive(Debug)]
pub struct FatalStop<'a> {
    /// The cause.
    pub error: &'a anyhow::Error,
}

impl InternalEvent for FatalStop<'_> {
    fn emit(self, _: &Metrics) {
        error!(error = %format!("{:#}", self.error), "fatal error: this worker stops consuming");
    }
}

/// The broker connection was lost; the loop reconnects after `wait`.
#[derive(Debug)]
pub struct Reconnecting<'a> {
    /// The stage.
    pub stage: StageName,
    /// The backoff before the next try.
    pub wait: Duration,
    /// Why the connection ended.
    pub error: &'a anyhow::Error,
}

impl InternalEvent for Reconnecting<'_> {
    fn emit(self, m: &Metrics) {
        let stage = self.stage.as_str();
        m.reconnects.with_label_values(&[stage, "amqp"]).inc();
        warn!(stage, error = %format!("{:#}", self.error), wait = ?self.wait, "broker connection lost; reconnecting");
    }
}

/// An item was recorded as failed (its batch still completes).
#[derive(Debug)]
pub struct ItemFailed<'a> {
    /// The stage.
    pub stage: StageName,
    /// The failure's bounded reason.
    pub reason: &'a str,
    /// Details for the operator.
    pub detail: &'a str,
}

impl InternalEvent for ItemFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.failed_items
            .with_label_values(&[self.stage.as_str(), self.reason])
            .inc();
        info!(reason = self.reason, detail = self.detail, "item failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_and_dead_letter_labels_keep_their_values() {
        let outcomes = [
            JobOutcome::Ok,
            JobOutcome::Duplicate,
            JobOutcome::Retry,
            JobOutcome::Delayed,
            JobOutcome::DeadLetter,
            JobOutcome::Fatal,
        ]
        .map(JobOutcome::as_str);
        assert_eq!(
            outcomes,
            [
                "ok",
                "duplicate",
                "retry",
                "delayed",
                "dead_letter",
                "fatal"
            ]
        );
        let reasons = [
            DeadLetterReason::Undecodable,
            DeadLetterReason::Poison,
            DeadLetterReason::MaxAttempts,
        ]
        .map(DeadLetterReason::as_str);
        assert_eq!(reasons, ["undecodable", "poison", "max_attempts"]);
    }

    #[test]
    fn an_event_counts_with_the_labels_it_logs() {
        let m = Metrics::new();
        JobFinished {
            stage: StageName::Match,
            outcome: JobOutcome::DeadLetter,
            elapsed: Duration::from_millis(5),
        }
        .emit(&m);
        DeadLettered {
            stage: StageName::Match,
            reason: DeadLetterReason::MaxAttempts,
            attempts: 5,
            error: "boom",
        }
        .emit(&m);
        RetryScheduled {
            stage: StageName::Clean,
            class: ErrorClass::Upstream("server_error"),
            tier: 1,
            attempt: 2,
            error: &JobError::transient(
                ErrorClass::Upstream("server_error"),
                anyhow::anyhow!("503"),
            ),
        }
        .emit(&m);
        let text = m.render();
        assert!(text.contains("engage_jobs_total{outcome=\"dead_letter\",stage=\"match\"} 1"));
        assert!(
            text.contains("engage_dead_lettered_total{reason=\"max_attempts\",stage=\"match\"} 1")
        );
        assert!(
            text.contains("engage_retries_total{error_class=\"server_error\",stage=\"clean\"} 1")
        );
    }
}
