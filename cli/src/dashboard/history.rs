//! The backlog's recent past, kept by the dashboard process: every time the
//! home page reads the queue depths (it reloads every 5 s while open), the
//! depths are kept as one sample, at most one per [`MIN_SPACING`] and for at
//! most [`WINDOW`], so memory stays bounded ([`CAPACITY`] samples). The
//! broker keeps no history of a queue's depth, and Prometheus may not be
//! there; while nobody watches, nothing is sampled (the chart shows the gap
//! as a flat step).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engage_model::envelope::StageName;

use super::model::StageQueues;

/// How far back the backlog chart looks.
pub(crate) const WINDOW: Duration = Duration::from_secs(600);
/// The closest two samples may be.
pub(crate) const MIN_SPACING: Duration = Duration::from_secs(4);
/// The most samples kept.
const CAPACITY: usize = (WINDOW.as_secs() / MIN_SPACING.as_secs()) as usize + 1;

/// One sample: when, and each stage's ready messages (`None`: unknown).
type Sample = (Instant, [Option<u32>; 5]);

/// Recent backlog samples.
#[derive(Debug, Default)]
pub(crate) struct BacklogHistory {
    samples: Mutex<VecDeque<Sample>>,
}

impl BacklogHistory {
    /// Keeps `queues` as the sample of `now` (unless the last one is too
    /// recent), dropping samples older than [`WINDOW`].
    pub(crate) fn record(&self, now: Instant, queues: &[StageQueues]) {
        let mut depths = [None; 5];
        for q in queues {
            if let Some(i) = StageName::ALL.iter().position(|s| *s == q.stage) {
                depths[i] = q.backlog;
            }
        }
        // A poisoned lock only means a panic elsewhere mid-push: the deque is intact.
        let mut s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.back()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) < MIN_SPACING)
        {
            return;
        }
        s.push_back((now, depths));
        while s
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
            || s.len() > CAPACITY
        {
            s.pop_front();
        }
    }

    /// `stage`'s samples as (seconds before `now`, ready messages), oldest
    /// first, skipping unknown depths.
    pub(crate) fn series(&self, now: Instant, stage: StageName) -> Vec<(f64, u32)> {
        let Some(i) = StageName::ALL.iter().position(|s| *s == stage) else {
            return Vec::new();
        };
        let s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.iter()
            .filter_map(|(t, d)| Some((now.saturating_duration_since(*t).as_secs_f64(), d[i]?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(clean: Option<u32>) -> Vec<StageQueues> {
        vec![StageQueues {
            stage: StageName::Clean,
            backlog: clean,
            dead: None,
        }]
    }

    #[test]
    fn samples_are_spaced_and_bounded() {
        let h = BacklogHistory::default();
        let t0 = Instant::now();
        h.record(t0, &queues(Some(1)));
        h.record(t0 + Duration::from_secs(1), &queues(Some(99))); // too soon
        h.record(t0 + Duration::from_secs(5), &queues(None)); // unknown
        h.record(t0 + Duration::from_secs(10), &queues(Some(3)));
        let now = t0 + Duration::from_secs(10);
        assert_eq!(h.series(now, StageName::Clean), vec![(10.0, 1), (0.0, 3)]);
        assert!(h.series(now, StageName::Match).is_empty());
        // Far later: only the new sample is kept.
        let later = t0 + WINDOW + Duration::from_secs(60);
        h.record(later, &queues(Some(7)));
        assert_eq!(h.series(later, StageName::Clean), vec![(0.0, 7)]);
        for i in 0..(CAPACITY as u64 * 2) {
            h.record(later + MIN_SPACING * (i as u32 + 1), &queues(Some(1)));
        }
        assert!(h.samples.lock().map(|s| s.len()).unwrap_or(0) <= CAPACITY);
    }
}
