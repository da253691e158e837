//! What the fake observed, for assertions: calls, calls per audio, 429s,
//! concurrency and request times.

use std::collections::BTreeMap;
use std::time::Duration;

/// A snapshot of the fake's counters ([`crate::FakeGemini::stats`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Every `generateContent` request received (any outcome).
    pub generate_calls: u64,
    /// `generateContent` requests answered with a usable candidate (HTTP 200 with parts).
    pub successes: u64,
    /// Requests that passed key, model and quota checks and reached the "model",
    /// per audio SHA-256 (lowercase hex): the calls that would be paid for.
    /// A value above 1 means the same audio was paid for more than once.
    pub calls_by_hash: BTreeMap<String, u64>,
    /// Answers that were HTTP 200 with a usable candidate, per audio SHA-256.
    pub successes_by_hash: BTreeMap<String, u64>,
    /// `429 RESOURCE_EXHAUSTED` answers sent (quota and injected).
    pub rate_limited: u64,
    /// 429s by quota label (`rpm`, `tpm`, `rpd`).
    pub rate_limited_by_quota: BTreeMap<&'static str, u64>,
    /// Faults injected from the queue or by probability.
    pub faults_injected: u64,
    /// Most `generateContent` requests in flight at once.
    pub max_concurrent: u64,
    /// Arrival time of every `generateContent` request, since the fake started.
    pub request_times: Vec<Duration>,
    /// Arrival time of the requests admitted by the quota, since the fake started.
    pub admitted_times: Vec<Duration>,
    /// Input tokens of admitted requests.
    pub input_tokens: u64,
    /// Resumable uploads started.
    pub uploads_started: u64,
    /// Uploads finalized (files created).
    pub uploads_finalized: u64,
    /// `GET file` calls.
    pub file_polls: u64,
    /// Files deleted.
    pub files_deleted: u64,
    /// Files still stored (uploaded and not deleted).
    pub files_live: u64,
    /// Requests rejected for a wrong or missing API key.
    pub auth_failures: u64,
}

impl Stats {
    /// The largest number of `times` inside any half-open window `[t, t + window)`.
    pub fn max_in_window(times: &[Duration], window: Duration) -> usize {
        let mut sorted = times.to_vec();
        sorted.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..sorted.len() {
            while sorted[end] - sorted[start] >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    /// The most requests any one audio was paid for (0 when there were none).
    pub fn max_calls_per_audio(&self) -> u64 {
        self.calls_by_hash.values().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_count_is_half_open() {
        let ms = Duration::from_millis;
        let t = [ms(0), ms(500), ms(999), ms(1000), ms(1001)];
        assert_eq!(Stats::max_in_window(&t, ms(1000)), 4);
        assert_eq!(
            Stats::max_in_window(&[ms(0), ms(1000), ms(2000)], ms(1000)),
            1
        );
        assert_eq!(Stats::max_in_window(&[], ms(1000)), 0);
    }
}
