//! What the fake does: latency, quotas, file processing and injected faults.
//!
//! A [`Behaviour`] is set at start and can be changed while the server runs
//! ([`crate::FakeGemini::set_behaviour`]). Faults come from a FIFO queue first
//! (deterministic scripts: "the next three calls answer 503") and then, when
//! the queue is empty, from independent probabilities (soak tests).

use crate::stats::RequestLog;
use crate::wire::QuotaKind;
use rand::Rng;
use std::collections::VecDeque;
use std::time::Duration;

/// Service time added to every `generateContent` call that passes the quota check.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Latency {
    /// Answer immediately.
    #[default]
    None,
    /// Always this long.
    Fixed(Duration),
    /// Uniformly distributed in `[min, max]`.
    Uniform {
        /// Shortest service time.
        min: Duration,
        /// Longest service time.
        max: Duration,
    },
}

impl Latency {
    /// Draws one service time.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Self::None => Duration::ZERO,
            Self::Fixed(d) => d,
            Self::Uniform { min, max } => {
                if max <= min {
                    min
                } else {
                    let span = (max - min).as_micros() as u64;
                    min + Duration::from_micros(rng.random_range(0..=span))
                }
            }
        }
    }
}

/// One injected fault, applied to one `generateContent` call.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this HTTP status and Google's envelope for it (500, 503, 504, 400, 403...).
    Status(u16),
    /// `429 RESOURCE_EXHAUSTED` for `quota`, with an optional `RetryInfo.retryDelay`
    /// (proto-JSON spelling, e.g. `"26s"`, `"1.5s"`); `retry_info_first` puts
    /// `RetryInfo` before `QuotaFailure` in `details`.
    RateLimited {
        /// Which quota the violation names (`Rpd` makes it a per-day violation).
        quota: QuotaKind,
        /// `RetryInfo.retryDelay`, or no `RetryInfo` at all.
        retry_delay: Option<String>,
        /// Detail order.
        retry_info_first: bool,
    },
    /// HTTP 200 whose answer text is cut in the middle of the JSON.
    TruncatedJson,
    /// HTTP 200 with `promptFeedback.blockReason` (e.g. `PROHIBITED_CONTENT`) and no candidates.
    Blocked(String),
    /// HTTP 200 with a candidate whose `finishReason` is `SAFETY` and that has no parts.
    FinishSafety,
    /// HTTP 200 with a candidate whose `finishReason` is `MAX_TOKENS` and that has no parts.
    FinishMaxTokens,
    /// HTTP 200 with scores outside 0–100.
    OutOfRange,
    /// HTTP 200 with an enum value outside the schema's list.
    UnknownEnum,
    /// Wait this long before answering normally (to exercise client timeouts).
    Delay(Duration),
}

impl Fault {
    /// `n` consecutive per-minute 429s with the given retry delay: a 429 burst.
    pub fn burst_429(n: usize, retry_delay: &str) -> Vec<Fault> {
        (0..n)
            .map(|_| Fault::RateLimited {
                quota: QuotaKind::Rpm,
                retry_delay: Some(retry_delay.to_owned()),
                retry_info_first: false,
            })
            .collect()
    }

    /// The fault's `cause` in the [`RequestLog`]: `injected_429`,
    /// `injected_503`, `injected_truncated_json`, …
    pub fn label(&self) -> String {
        match self {
            Self::Status(code) => format!("injected_{code}"),
            Self::RateLimited { .. } => "injected_429".to_owned(),
            Self::TruncatedJson => "injected_truncated_json".to_owned(),
            Self::Blocked(_) => "injected_blocked".to_owned(),
            Self::FinishSafety => "injected_finish_safety".to_owned(),
            Self::FinishMaxTokens => "injected_finish_max_tokens".to_owned(),
            Self::OutOfRange => "injected_out_of_range".to_owned(),
            Self::UnknownEnum => "injected_unknown_enum".to_owned(),
            Self::Delay(_) => "injected_delay".to_owned(),
        }
    }
}

/// Files API processing behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileProcessing {
    /// How many `GET file` calls answer `PROCESSING` before the file is `ACTIVE`.
    pub polls_before_active: u32,
    /// Whether processing ends in `FAILED` instead of `ACTIVE`.
    pub fail: bool,
}

impl Default for FileProcessing {
    fn default() -> Self {
        Self {
            polls_before_active: 1,
            fail: false,
        }
    }
}

/// The scriptable behaviour of a running fake.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Service time of successful calls.
    pub latency: Latency,
    /// Requests per `window` (sliding), or unlimited.
    pub rpm: Option<u32>,
    /// Input tokens per `window` (sliding), or unlimited.
    pub tpm: Option<u64>,
    /// Requests per `day` (sliding), or unlimited.
    pub rpd: Option<u32>,
    /// Length of the per-minute window (60 s unless a test scales time down).
    pub window: Duration,
    /// Length of the per-day window.
    pub day: Duration,
    /// Faults applied in order to the next calls, before any probability.
    pub faults: VecDeque<Fault>,
    /// Independent probabilities (each in 0–1) of faults once the queue is empty.
    pub fault_probabilities: Vec<(f64, Fault)>,
    /// Files API processing.
    pub files: FileProcessing,
    /// Whether a per-day quota 429 carries `RetryInfo` (the wait until the day
    /// window has room); without it, it has only `QuotaFailure`.
    pub rpd_retry_info: bool,
    /// Where to log every `generateContent` request, if anywhere.
    pub request_log: Option<RequestLog>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency: Latency::None,
            rpm: None,
            tpm: None,
            rpd: None,
            window: Duration::from_secs(60),
            day: Duration::from_secs(24 * 3600),
            faults: VecDeque::new(),
            fault_probabilities: Vec::new(),
            files: FileProcessing::default(),
            rpd_retry_info: false,
            request_log: None,
        }
    }
}

impl Behaviour {
    /// The fault for the next call: the queue's head, else a random draw.
    pub fn next_fault(&mut self, rng: &mut impl Rng) -> Option<Fault> {
        if let Some(f) = self.faults.pop_front() {
            return Some(f);
        }
        for (p, fault) in &self.fault_probabilities {
            if rng.random_bool(p.clamp(0.0, 1.0)) {
                return Some(fault.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn queue_comes_before_probabilities() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = Behaviour {
            faults: VecDeque::from(vec![Fault::Status(503)]),
            fault_probabilities: vec![(1.0, Fault::Status(500))],
            ..Behaviour::default()
        };
        assert_eq!(b.next_fault(&mut rng), Some(Fault::Status(503)));
        assert_eq!(b.next_fault(&mut rng), Some(Fault::Status(500)));
        b.fault_probabilities.clear();
        assert_eq!(b.next_fault(&mut rng), None);
    }

    #[test]
    fn uniform_latency_stays_in_range() {
        let mut rng = StdRng::seed_from_u64(2);
        let l = Latency::Uniform {
            min: Duration::from_millis(5),
            max: Duration::from_millis(9),
        };
        for _ in 0..1000 {
            let d = l.sample(&mut rng);
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(9));
        }
    }
}
