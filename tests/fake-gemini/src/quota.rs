//! The fake's quota: sliding windows over admitted requests, as a strict
//! reading of Google's per-minute and per-day limits.
//!
//! A request is admitted only if, counting it, the number of requests in the
//! last `window` stays within RPM, their input tokens within TPM, and the
//! number of requests in the last `day` within RPD. Rejected requests are not
//! counted. On rejection the wait until the oldest blocking entry leaves the
//! window is returned (what the fake puts in `RetryInfo.retryDelay`).

use crate::wire::QuotaKind;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Limits checked by [`QuotaState::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Requests per `window`.
    pub rpm: Option<u32>,
    /// Tokens per `window`.
    pub tpm: Option<u64>,
    /// Requests per `day`.
    pub rpd: Option<u32>,
    /// The per-minute window.
    pub window: Duration,
    /// The per-day window.
    pub day: Duration,
}

/// A rejection: which quota, its limit and how long until it would admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    /// The violated quota.
    pub kind: QuotaKind,
    /// Its configured limit.
    pub limit: u64,
    /// Time until the window has room again.
    pub retry_after: Duration,
}

/// Admitted requests (time and tokens), oldest first.
#[derive(Debug, Default)]
pub(crate) struct QuotaState {
    minute: VecDeque<(Instant, u64)>,
    minute_tokens: u64,
    day: VecDeque<Instant>,
}

impl QuotaState {
    /// Admits a request of `tokens` at `now`, or says which quota refuses it.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        tokens: u64,
        limits: &Limits,
    ) -> Result<(), Rejection> {
        while let Some(&(t, tok)) = self.minute.front() {
            if now.saturating_duration_since(t) >= limits.window {
                self.minute.pop_front();
                self.minute_tokens -= tok;
            } else {
                break;
            }
        }
        while let Some(&t) = self.day.front() {
            if now.saturating_duration_since(t) >= limits.day {
                self.day.pop_front();
            } else {
                break;
            }
        }
        if let Some(rpd) = limits.rpd {
            let rpd_len = rpd as usize;
            if self.day.len() >= rpd_len {
                let retry_after = match self.day.len().checked_sub(rpd_len.max(1)) {
                    Some(i) => (self.day[i] + limits.day).saturating_duration_since(now),
                    None => limits.day,
                };
                return Err(Rejection {
                    kind: QuotaKind::Rpd,
                    limit: u64::from(rpd),
                    retry_after,
                });
            }
        }
        if let Some(rpm) = limits.rpm {
            let rpm_len = rpm as usize;
            if self.minute.len() >= rpm_len {
                let retry_after = match self.minute.len().checked_sub(rpm_len.max(1)) {
                    Some(i) => (self.minute[i].0 + limits.window).saturating_duration_since(now),
                    None => limits.window,
                };
                return Err(Rejection {
                    kind: QuotaKind::Rpm,
                    limit: u64::from(rpm),
                    retry_after,
                });
            }
        }
        if let Some(tpm) = limits.tpm
            && self.minute_tokens + tokens > tpm
        {
            // Free entries oldest first until the request fits.
            let mut excess = (self.minute_tokens + tokens).saturating_sub(tpm);
            let mut until = now + limits.window;
            for &(t, tok) in &self.minute {
                excess = excess.saturating_sub(tok);
                if excess == 0 {
                    until = t + limits.window;
                    break;
                }
            }
            return Err(Rejection {
                kind: QuotaKind::Tpm,
                limit: tpm,
                retry_after: until.saturating_duration_since(now),
            });
        }
        self.minute.push_back((now, tokens));
        self.minute_tokens += tokens;
        if limits.rpd.is_some() {
            self.day.push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u64>, rpd: Option<u32>) -> Limits {
        Limits {
            rpm,
            tpm,
            rpd,
            window: Duration::from_secs(60),
            day: Duration::from_secs(86_400),
        }
    }

    #[test]
    fn rpm_is_a_sliding_window_with_correct_retry_delay() {
        let mut q = QuotaState::default();
        let l = limits(Some(2), None, None);
        let t0 = Instant::now();
        q.admit(t0, 1, &l).unwrap();
        q.admit(t0 + Duration::from_secs(10), 1, &l).unwrap();
        let r = q.admit(t0 + Duration::from_secs(20), 1, &l).unwrap_err();
        assert_eq!(r.kind, QuotaKind::Rpm);
        assert_eq!(r.retry_after, Duration::from_secs(40));
        q.admit(t0 + Duration::from_secs(60), 1, &l).unwrap();
    }

    #[test]
    fn tpm_counts_tokens_and_waits_for_enough_room() {
        let mut q = QuotaState::default();
        let l = limits(None, Some(100), None);
        let t0 = Instant::now();
        q.admit(t0, 60, &l).unwrap();
        q.admit(t0 + Duration::from_secs(5), 30, &l).unwrap();
        let r = q.admit(t0 + Duration::from_secs(6), 50, &l).unwrap_err();
        assert_eq!(r.kind, QuotaKind::Tpm);
        assert_eq!(r.retry_after, Duration::from_secs(54));
    }

    #[test]
    fn rpd_rejects_after_limit() {
        let mut q = QuotaState::default();
        let l = limits(None, None, Some(1));
        let t0 = Instant::now();
        q.admit(t0, 1, &l).unwrap();
        let r = q.admit(t0 + Duration::from_secs(120), 1, &l).unwrap_err();
        assert_eq!(r.kind, QuotaKind::Rpd);
    }
}
