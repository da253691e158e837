//! What the page shows, computed from the report step's data: per-phase
//! statistics across learners and each learner's rows and responses. Every
//! collection is ordered by content (never by input order), so the page's
//! bytes depend only on the data.

use std::collections::{BTreeMap, HashMap};

use engage_model::{AnalysisOutcome, DominantEmotion, EngagementState, MatchedRecord};

use super::stats::{FiveNum, five_num, median};
use crate::domain::{ReportRow, row_order};

/// Phases shown as chart categories and learner-table columns; the rarer
/// ones (by number of learner rows) are counted, not drawn.
pub(crate) const MAX_PHASES: usize = 16;

/// Statistics of one phase across learners (one value per learner row).
#[derive(Debug)]
pub(crate) struct PhaseStats<'a> {
    /// The phase name (untrusted).
    pub(crate) name: &'a str,
    /// Learner rows in the phase.
    pub(crate) rows: usize,
    /// Spread of the learners' average engagement score.
    pub(crate) engagement: Option<FiveNum>,
    /// Spread of the learners' average emotional score.
    pub(crate) emotional: Option<FiveNum>,
    /// Spread of the learners' average accuracy.
    pub(crate) accuracy: Option<FiveNum>,
    /// Spread of the learners' combined score.
    pub(crate) combined: Option<FiveNum>,
    /// Rows per dominant emotion, in [`DominantEmotion::ALL`] order.
    pub(crate) emotions: Vec<u64>,
    /// Rows per engagement state, in [`EngagementState::ALL`] order.
    pub(crate) states: Vec<u64>,
    /// Median session duration, seconds.
    pub(crate) median_duration_s: Option<f64>,
    /// Median gap to the next phase, seconds (rows with a next phase).
    pub(crate) median_gap_s: Option<f64>,
}

/// One learner: report rows in report order, responses in time order.
#[derive(Debug)]
pub(crate) struct Learner<'a> {
    /// The learner id (untrusted).
    pub(crate) id: &'a str,
    /// Report rows, in report order.
    pub(crate) rows: Vec<&'a ReportRow>,
    /// Kept responses, by `(timestamp, response_id)`.
    pub(crate) responses: Vec<&'a MatchedRecord>,
}

/// The whole page's data.
#[derive(Debug)]
pub(crate) struct Digest<'a> {
    /// Phases drawn, in natural order (`P2` before `P10`).
    pub(crate) phases: Vec<PhaseStats<'a>>,
    /// Distinct phases not drawn (beyond [`MAX_PHASES`]).
    pub(crate) hidden_phases: usize,
    /// Every learner with a kept response or a report row, by id.
    pub(crate) learners: Vec<Learner<'a>>,
}

/// Orders phase names naturally: the text before the trailing digits, then
/// the trailing number (compared as digits, so any length works), then the
/// whole name.
pub(crate) fn natural_key(s: &str) -> (&str, usize, &str, &str) {
    let head = s.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = s[head.len()..].trim_start_matches('0');
    (head, digits.len(), digits, s)
}

fn index_of<T: PartialEq>(all: &[T], v: &T) -> usize {
    all.iter().position(|x| x == v).unwrap_or(0)
}

impl<'a> Digest<'a> {
    /// Builds the digest; `rows` and `records` may be in any order.
    pub(crate) fn new(records: &'a [MatchedRecord], rows: &'a [ReportRow]) -> Self {
        let mut sorted: Vec<&ReportRow> = rows.iter().collect();
        sorted.sort_by(|a, b| row_order(a, b));
        let mut by_phase: HashMap<&str, Vec<&ReportRow>> = HashMap::new();
        for r in &sorted {
            by_phase.entry(r.phase.as_str()).or_default().push(r);
        }
        let mut ranked: Vec<(&str, usize)> = by_phase.iter().map(|(k, v)| (*k, v.len())).collect();
        ranked.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| natural_key(a.0).cmp(&natural_key(b.0)))
        });
        let hidden_phases = ranked.len().saturating_sub(MAX_PHASES);
        ranked.truncate(MAX_PHASES);
        ranked.sort_by(|a, b| natural_key(a.0).cmp(&natural_key(b.0)));
        let phases = ranked
            .into_iter()
            .map(|(name, _)| phase_stats(name, &by_phase[name]))
            .collect();

        let mut learners: BTreeMap<&str, Learner<'a>> = BTreeMap::new();
        for r in sorted {
            learners
                .entry(r.user_id.as_str())
                .or_insert_with(|| Learner::empty(&r.user_id))
                .rows
                .push(r);
        }
        for m in records {
            learners
                .entry(m.record.user_id.as_str())
                .or_insert_with(|| Learner::empty(&m.record.user_id))
                .responses
                .push(m);
        }
        let mut learners: Vec<Learner<'a>> = learners.into_values().collect();
        for l in &mut learners {
            l.responses.sort_by(|a, b| {
                (a.record.timestamp, &a.record.response_id)
                    .cmp(&(b.record.timestamp, &b.record.response_id))
            });
        }
        Self {
            phases,
            hidden_phases,
            learners,
        }
    }
}

impl<'a> Learner<'a> {
    fn empty(id: &'a str) -> Self {
        Self {
            id,
            rows: Vec::new(),
            responses: Vec::new(),
        }
    }

    /// The learner's row of a phase, if any.
    pub(crate) fn row(&self, phase: &str) -> Option<&'a ReportRow> {
        self.rows.iter().copied().find(|r| r.phase == phase)
    }

    /// `(analyzed, failed, unmatched, without audio)` among the responses.
    pub(crate) fn counts(&self, outcomes: &BTreeMap<String, AnalysisOutcome>) -> [usize; 4] {
        let mut c = [0; 4];
        for m in &self.responses {
            if m.session.is_none() {
                c[2] += 1;
            } else if m.record.audio_url.is_none() {
                c[3] += 1;
            } else {
                match outcomes.get(&m.record.response_id) {
                    Some(AnalysisOutcome::Ok(_)) => c[0] += 1,
                    Some(AnalysisOutcome::Failed { .. }) => c[1] += 1,
                    None => {}
                }
            }
        }
        c
    }
}

fn phase_stats<'a>(name: &'a str, rows: &[&ReportRow]) -> PhaseStats<'a> {
    let mut emotions = vec![0; DominantEmotion::ALL.len()];
    let mut states = vec![0; EngagementState::ALL.len()];
    for r in rows {
        if let Some(e) = r.dominant_emotion {
            emotions[index_of(DominantEmotion::ALL, &e)] += 1;
        }
        if let Some(s) = r.engagement_state {
            states[index_of(EngagementState::ALL, &s)] += 1;
        }
    }
    PhaseStats {
        name,
        rows: rows.len(),
        engagement: five_num(rows.iter().filter_map(|r| r.avg_engagement_score)),
        emotional: five_num(rows.iter().filter_map(|r| r.avg_emotional_score)),
        accuracy: five_num(rows.iter().filter_map(|r| r.avg_accuracy)),
        combined: five_num(rows.iter().filter_map(|r| r.combined_score)),
        emotions,
        states,
        median_duration_s: median(rows.iter().map(|r| r.session_duration_s)),
        median_gap_s: median(rows.iter().filter_map(|r| r.gap_to_next_phase_s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_sort_naturally() {
        let mut v = vec!["P10", "S1", "P2", "P02", "P1", "", "P"];
        v.sort_by(|a, b| natural_key(a).cmp(&natural_key(b)));
        assert_eq!(v, ["", "P", "P1", "P02", "P2", "P10", "S1"]);
    }
}
