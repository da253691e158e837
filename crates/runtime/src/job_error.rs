//! How a job failed: the one error type every stage returns. The variant
//! decides what the worker loop does with the message (retry, delay,
//! dead-letter or stop), so lower layers (the store helpers, the item log,
//! the ledger) classify their own failures into it.
//!
//! Error classes and delay reasons are enums, not strings: their `as_str` is
//! the bounded metric label or log value (`deploy/` rules and dashboards use
//! the values), and code that must react to one matches a variant.

use std::time::Duration;

/// How a job failed; the variant decides retry, delay, dead-letter or stop.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Network, 5xx, 429 without a fleet pause, broker or Redis blips: retried
    /// with exponential backoff, dead-lettered after `max_attempts`.
    #[error("transient ({class}): {error:#}")]
    Transient {
        /// Bounded error class (the `error_class` metric label).
        class: ErrorClass,
        /// The cause.
        error: anyhow::Error,
    },
    /// Not now: run again after at least `after`, without spending an attempt
    /// (rate-limit permit not available in time, fleet paused after a 429).
    #[error("delayed {after:?}: {reason}")]
    Delay {
        /// Minimum delay.
        after: Duration,
        /// Why.
        reason: DelayReason,
    },
    /// The message itself can never succeed: dead-letter it now.
    #[error("poison message: {0:#}")]
    Poison(anyhow::Error),
    /// The worker cannot do any job (bad API key, model gone): stop consuming,
    /// requeue the message, report not-ready.
    #[error("fatal: {0:#}")]
    Fatal(anyhow::Error),
}

/// The class of a transient error: the `error_class` label of
/// `engage_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Redis did not answer (idempotency, ledger, leases, limiter).
    Redis,
    /// The store answered with a transient error.
    Storage,
    /// The broker did not confirm a publish.
    Amqp,
    /// A handler or blocking task panicked.
    Panic,
    /// Reading an input stream failed mid-way.
    Read,
    /// A previous stage's output is not visible in the store yet.
    StoreLag,
    /// An item's final state is not in the ledger yet.
    StateMissing,
    /// An upstream client's own bounded class (the Gemini error classes).
    Upstream(&'static str),
}

impl ErrorClass {
    /// Every class of the runtime's own (an [`ErrorClass::Upstream`] class
    /// is the client's: the Gemini error classes).
    pub const OWN: [ErrorClass; 7] = [
        Self::Redis,
        Self::Storage,
        Self::Amqp,
        Self::Panic,
        Self::Read,
        Self::StoreLag,
        Self::StateMissing,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Storage => "storage",
            Self::Amqp => "amqp",
            Self::Panic => "panic",
            Self::Read => "read",
            Self::StoreLag => "store_lag",
            Self::StateMissing => "state_missing",
            Self::Upstream(class) => class,
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job is delayed (no attempt spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayReason {
    /// Another delivery holds the lease on this audio's paid analysis.
    Leased,
    /// No rate-limit permit within the longest wait a message may be held.
    RateLimit,
    /// The fleet is paused after a quota 429.
    FleetPaused,
    /// The server asked to come back later (Retry-After).
    ServerRetryAfter,
    /// Another worker is rebuilding the batch ledger.
    LedgerRebuild,
}

impl DelayReason {
    /// Every reason.
    pub const ALL: [DelayReason; 5] = [
        Self::Leased,
        Self::RateLimit,
        Self::FleetPaused,
        Self::ServerRetryAfter,
        Self::LedgerRebuild,
    ];

    /// The log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leased => "leased",
            Self::RateLimit => "rate_limit",
            Self::FleetPaused => "fleet_paused",
            Self::ServerRetryAfter => "server_retry_after",
            Self::LedgerRebuild => "ledger_rebuild",
        }
    }
}

impl std::fmt::Display for DelayReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JobError {
    /// A transient error of a class.
    pub fn transient(class: ErrorClass, error: impl Into<anyhow::Error>) -> Self {
        Self::Transient {
            class,
            error: error.into(),
        }
    }

    /// The same error for another job: a cache load's error is shared by
    /// every job that waited on that load, and `anyhow::Error` is not `Clone`
    /// (the copy keeps the variant, the class and the message chain).
    pub fn share(&self) -> Self {
        match self {
            Self::Poison(err) => Self::Poison(anyhow::anyhow!("{err:#}")),
            Self::Fatal(err) => Self::Fatal(anyhow::anyhow!("{err:#}")),
            Self::Delay { after, reason } => Self::Delay {
                after: *after,
                reason: *reason,
            },
            Self::Transient { class, error } => {
                Self::transient(*class, anyhow::anyhow!("{error:#}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_error_keeps_its_variant_class_and_cause_chain() {
        let e = JobError::transient(
            ErrorClass::Storage,
            anyhow::anyhow!("connection reset").context("reading the plan"),
        );
        match e.share() {
            JobError::Transient { class, error } => {
                assert_eq!(class, ErrorClass::Storage);
                assert_eq!(format!("{error:#}"), "reading the plan: connection reset");
            }
            other => panic!("variant changed: {other:?}"),
        }
        let d = JobError::Delay {
            after: Duration::from_secs(3),
            reason: DelayReason::Leased,
        };
        assert!(matches!(
            d.share(),
            JobError::Delay { after, reason: DelayReason::Leased } if after == Duration::from_secs(3)
        ));
        assert!(matches!(
            JobError::Poison(anyhow::anyhow!("bad")).share(),
            JobError::Poison(_)
        ));
        assert!(matches!(
            JobError::Fatal(anyhow::anyhow!("key")).share(),
            JobError::Fatal(_)
        ));
    }

    #[test]
    fn labels_and_messages_keep_their_values() {
        let labels: Vec<&str> = [
            ErrorClass::Redis,
            ErrorClass::Storage,
            ErrorClass::Amqp,
            ErrorClass::Panic,
            ErrorClass::Read,
            ErrorClass::StoreLag,
            ErrorClass::StateMissing,
            ErrorClass::Upstream("server_error"),
        ]
        .iter()
        .map(|c| c.as_str())
        .collect();
        assert_eq!(
            labels,
            [
                "redis",
                "storage",
                "amqp",
                "panic",
                "read",
                "store_lag",
                "state_missing",
                "server_error"
            ]
        );
        let e = JobError::transient(ErrorClass::Redis, anyhow::anyhow!("down"));
        assert_eq!(e.to_string(), "transient (redis): down");
        let d = JobError::Delay {
            after: Duration::from_secs(1),
            reason: DelayReason::LedgerRebuild,
        };
        assert_eq!(d.to_string(), "delayed 1s: ledger_rebuild");
    }
}
