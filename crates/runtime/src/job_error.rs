//! How a job failed: the one error type every stage returns. The variant
//! decides what the worker loop does with the message (retry, delay,
//! dead-letter or stop), so lower layers (the store helpers, the item log,
//! the ledger) classify their own failures into it.

use std::time::Duration;

/// How a job failed; the variant decides retry, delay, dead-letter or stop.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Network, 5xx, 429 without a fleet pause, broker or Redis blips: retried
    /// with exponential backoff, dead-lettered after `max_attempts`.
    #[error("transient ({class}): {error:#}")]
    Transient {
        /// Bounded error class used as a metric label.
        class: &'static str,
        /// The cause.
        error: anyhow::Error,
    },
    /// Not now: run again after at least `after`, without spending an attempt
    /// (rate-limit permit not available in time, fleet paused after a 429).
    #[error("delayed {after:?}: {reason}")]
    Delay {
        /// Minimum delay.
        after: Duration,
        /// Bounded reason label.
        reason: &'static str,
    },
    /// The message itself can never succeed: dead-letter it now.
    #[error("poison message: {0:#}")]
    Poison(anyhow::Error),
    /// The worker cannot do any job (bad API key, model gone): stop consuming,
    /// requeue the message, report not-ready.
    #[error("fatal: {0:#}")]
    Fatal(anyhow::Error),
}

impl JobError {
    /// A transient error of a class.
    pub fn transient(class: &'static str, error: impl Into<anyhow::Error>) -> Self {
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
                reason,
            },
            Self::Transient { class, error } => {
                Self::transient(class, anyhow::anyhow!("{error:#}"))
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
            "storage",
            anyhow::anyhow!("connection reset").context("reading the plan"),
        );
        match e.share() {
            JobError::Transient { class, error } => {
                assert_eq!(class, "storage");
                assert_eq!(format!("{error:#}"), "reading the plan: connection reset");
            }
            other => panic!("variant changed: {other:?}"),
        }
        let d = JobError::Delay {
            after: Duration::from_secs(3),
            reason: "leased",
        };
        assert!(matches!(
            d.share(),
            JobError::Delay { after, reason: "leased" } if after == Duration::from_secs(3)
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
}
