//! The pure steps of the aggregate stage around [`crate::domain`]: the
//! learner rows document, which item still lacks a final state, and the batch
//! summary's counters rolled up from clean markers and learner files. No I/O:
//! the stage reads and writes the documents.

use std::collections::{BTreeMap, HashMap};

use engage_model::jobs::{CleanDone, ItemCost, ItemState};
use engage_model::summary::{CostCounts, Summary};
use engage_model::{AnalysisOutcome, MatchedRecord};
use serde::{Deserialize, Serialize};

use crate::domain::ReportRow;
use crate::outputs::dedupe_first;

/// One learner's rows, stored at `batches/B/learners/LKEY.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct LearnerRows {
    /// The learner.
    pub user_id: String,
    /// Its report rows.
    pub rows: Vec<ReportRow>,
    /// The final states of its items (what the batch report's analysis and
    /// cost columns are built from), by response id.
    #[serde(default)]
    pub items: Vec<ItemState>,
}

/// A matched partition of a piece, grouped by learner.
pub type ByLearner = HashMap<String, Vec<MatchedRecord>>;

/// Groups a partition's records by learner, file order kept.
pub fn by_learner(records: Vec<MatchedRecord>) -> ByLearner {
    let mut by: ByLearner = HashMap::new();
    for r in records {
        by.entry(r.record.user_id.clone()).or_default().push(r);
    }
    by
}

/// Parses the item states the ledger kept (JSON, by response id).
pub fn parse_states(states: BTreeMap<String, String>) -> serde_json::Result<Vec<ItemState>> {
    states
        .into_values()
        .map(|j| serde_json::from_str::<ItemState>(&j))
        .collect()
}

/// Each item's outcome, by response id.
pub fn outcomes_of(items: &[ItemState]) -> HashMap<String, AnalysisOutcome> {
    items
        .iter()
        .map(|s| (s.response_id.clone(), s.outcome.clone()))
        .collect()
}

/// The first record that should have been analyzed (matched, with audio) but
/// has no final state.
pub fn first_missing_state<'a>(
    records: &'a [MatchedRecord],
    outcomes: &HashMap<String, AnalysisOutcome>,
) -> Option<&'a MatchedRecord> {
    records.iter().find(|r| {
        r.session.is_some()
            && r.record.audio_url.is_some()
            && !outcomes.contains_key(&r.record.response_id)
    })
}

/// Adds one item's cost to the batch's accounting.
pub fn add_cost(c: &mut CostCounts, cost: &ItemCost) {
    c.calls += u64::from(cost.called);
    c.cache_hits += u64::from(cost.cache_hit);
    c.prefiltered += u64::from(cost.prefiltered);
    c.prompt_tokens += cost.prompt_tokens;
    c.output_tokens += cost.output_tokens;
}

/// Adds a clean piece's counters to the summary.
pub fn add_piece(summary: &mut Summary, done: &CleanDone) {
    summary.activity.merge(&done.stats);
}

/// Drops responses repeated across pieces (only visible once every piece's
/// records are together), moving them from kept to duplicates.
pub fn dedupe_across_pieces(summary: &mut Summary, all: Vec<MatchedRecord>) -> Vec<MatchedRecord> {
    let (records, dups) = dedupe_first(all);
    summary.activity.duplicates += dups;
    summary.activity.kept = summary.activity.kept.saturating_sub(dups);
    records
}

/// Adds a learner file: its rows to `rows`, its items' costs to the summary
/// and their outcomes to `outcomes`.
pub fn add_learner(
    summary: &mut Summary,
    rows: &mut Vec<ReportRow>,
    outcomes: &mut BTreeMap<String, AnalysisOutcome>,
    learner: LearnerRows,
) {
    rows.extend(learner.rows);
    for s in learner.items {
        add_cost(&mut summary.cost, &s.cost);
        outcomes.insert(s.response_id, s.outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::ActivityRecord;
    use engage_model::SessionMatch;

    fn rec(id: &str, matched: bool, audio: bool) -> MatchedRecord {
        MatchedRecord {
            record: ActivityRecord {
                response_id: id.into(),
                user_id: "u".into(),
                timestamp: 0,
                audio_url: audio.then(|| format!("s3://b/{id}.wav")),
                accuracy: None,
                original_text: None,
                response_text: None,
                session_id: None,
                sub_session_id: None,
            },
            session: matched.then(|| SessionMatch {
                session_id: "s".into(),
                created_at: 0,
                milestone: "M1".into(),
                lesson: "P1".into(),
                phase: "P1".into(),
                progress: "1".into(),
            }),
        }
    }

    fn state(id: &str, cost: ItemCost) -> ItemState {
        ItemState {
            response_id: id.into(),
            user_id: "u".into(),
            outcome: AnalysisOutcome::Failed {
                reason: "x".into(),
                detail: String::new(),
            },
            cost,
        }
    }

    #[test]
    fn only_a_matched_record_with_audio_needs_a_state() {
        let recs = [
            rec("a", false, true),
            rec("b", true, false),
            rec("c", true, true),
        ];
        let none = HashMap::new();
        let missing = first_missing_state(&recs, &none).map(|r| r.record.response_id.as_str());
        assert_eq!(missing, Some("c"));
        let have = outcomes_of(&[state("c", ItemCost::default())]);
        assert!(first_missing_state(&recs, &have).is_none());
    }

    #[test]
    fn costs_and_outcomes_roll_up_from_learner_files() {
        let paid = ItemCost {
            called: true,
            prompt_tokens: 10,
            output_tokens: 3,
            ..Default::default()
        };
        let hit = ItemCost {
            cache_hit: true,
            ..Default::default()
        };
        let learner = LearnerRows {
            user_id: "u".into(),
            rows: Vec::new(),
            items: vec![state("a", paid), state("b", hit)],
        };
        let (mut summary, mut rows, mut outcomes) = Default::default();
        add_learner(&mut summary, &mut rows, &mut outcomes, learner);
        let c: &CostCounts = &summary.cost;
        assert_eq!((c.calls, c.cache_hits, c.prefiltered), (1, 1, 0));
        assert_eq!((c.prompt_tokens, c.output_tokens), (10, 3));
        assert_eq!(outcomes.len(), 2);
    }

    #[test]
    fn a_response_repeated_across_pieces_counts_as_a_duplicate_not_kept() {
        let mut summary = Summary::default();
        summary.activity.kept = 3;
        let out = dedupe_across_pieces(
            &mut summary,
            vec![
                rec("a", true, true),
                rec("b", true, true),
                rec("a", true, true),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!((summary.activity.kept, summary.activity.duplicates), (2, 1));
        let states = BTreeMap::from([("a".to_string(), "not json".to_string())]);
        assert!(parse_states(states).is_err());
    }
}
