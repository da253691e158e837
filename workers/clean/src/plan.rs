//! Pure planning rules of a batch: which batch ids and specs are acceptable,
//! piece ids, how files are cut into pieces, how sessions are partitioned,
//! what the plan step writes besides the plan (session rejects, the resolved
//! selection), and counters in the summary's vocabulary. No I/O: the clean
//! stage reads sizes and heads and writes the results.

use std::collections::BTreeMap;
use std::ops::Range;

use engage_model::Session;
use engage_model::jobs::{BatchSpec, CleanPiece};
use engage_model::layout::{partition_of, valid_batch_id};
use engage_model::selection::SelectedLearners;
use engage_model::session::SessionReject;
use engage_model::summary::{ActivityCounts, SessionCounts};

use crate::domain::{CleanStats, is_splittable, split_ranges_by_size};

/// Bytes read from the start of an activity file to tell whether it can be cut.
pub const HEAD_BYTES: u64 = 64 * 1024;

/// Why a batch cannot be planned (the plan job is poison).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The batch id would not make a safe store prefix.
    #[error("invalid batch id {0:?}: use 1-64 of [A-Za-z0-9._-]")]
    InvalidBatchId(String),
    /// Nothing to clean.
    #[error("batch has no activity files")]
    NoActivity,
}

/// Checks a batch id before anything is written under it.
pub fn check_batch_id(batch: &str) -> Result<(), PlanError> {
    if valid_batch_id(batch) {
        Ok(())
    } else {
        Err(PlanError::InvalidBatchId(batch.to_string()))
    }
}

/// Checks a producer's spec before a new plan is made from it.
pub fn check_spec(spec: &BatchSpec) -> Result<(), PlanError> {
    if spec.activity.is_empty() {
        Err(PlanError::NoActivity)
    } else {
        Ok(())
    }
}

/// The pieces of activity file `file_ix` (`activity`, `len` bytes, starting
/// with `head`): several byte ranges for a big plain JSON Lines file, else one
/// whole-file piece whose job is the streaming pre-pass (`split`: gzip, JSON
/// arrays, anything not plainly a log), which cuts the file into segments if
/// it is a log bigger than one piece and cleans it whole otherwise.
pub fn file_pieces(
    file_ix: usize,
    activity: &str,
    len: u64,
    head: &[u8],
    piece_bytes: u64,
    partitions: u32,
    selected: bool,
) -> Vec<CleanPiece> {
    let splittable = is_splittable(head).unwrap_or(false);
    ranges_for(len, splittable, piece_bytes)
        .into_iter()
        .enumerate()
        .map(|(j, range)| CleanPiece {
            piece: piece_id(file_ix, j),
            activity: activity.to_string(),
            split: range.is_none() && !splittable,
            range: range.map(|r| (r.start, r.end)),
            partitions,
            selected,
            segment: None,
        })
        .collect()
}

/// The lines of the batch's `sessions` rejects file.
pub fn session_reject_lines(rejects: &[SessionReject]) -> Vec<serde_json::Value> {
    rejects
        .iter()
        .map(|r| serde_json::json!({"source": "sessions", "row": r.row, "reason": r.reason, "detail": r.detail}))
        .collect()
}

/// The batch's stored selection (`selected.json`): the selected ids as a
/// sorted JSON array, exact whatever characters they hold, so pieces select
/// exactly the learners `engage run` selects (ids starting with `#` or holding
/// a newline included).
pub fn selected_file(sel: &SelectedLearners) -> Vec<u8> {
    sel.to_stored().unwrap_or_else(|| b"[]".to_vec())
}

/// The id of piece `range_ix` of activity file `file_ix` (sorts in file order).
pub fn piece_id(file_ix: usize, range_ix: usize) -> String {
    format!("f{file_ix:03}-r{range_ix:04}")
}

/// Byte ranges of one file: several for a big splittable (plain JSON Lines)
/// file, else `None` (one whole-file piece: gzip and JSON arrays cannot be cut).
pub fn ranges_for(len: u64, splittable: bool, piece_bytes: u64) -> Vec<Option<Range<u64>>> {
    if splittable && len > piece_bytes {
        split_ranges_by_size(len, piece_bytes)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    }
}

/// Sessions grouped by learner partition, file order kept inside a partition.
pub fn partition_sessions(sessions: Vec<Session>, partitions: u32) -> BTreeMap<u32, Vec<Session>> {
    let mut out: BTreeMap<u32, Vec<Session>> = BTreeMap::new();
    for s in sessions {
        out.entry(partition_of(&s.user_id, partitions))
            .or_default()
            .push(s);
    }
    out
}

/// Clean counters in the summary's vocabulary.
pub fn activity_counts(s: &CleanStats) -> ActivityCounts {
    ActivityCounts {
        read: s.read,
        kept: s.kept,
        non_english: s.non_english,
        deselected: s.deselected,
        duplicates: s.duplicates,
        rejected: s
            .rejected
            .iter()
            .map(|(r, n)| (r.name().to_string(), *n))
            .collect(),
    }
}

/// Sessions counters in the summary's vocabulary.
pub fn session_counts(kept: usize, rejects: &[SessionReject]) -> SessionCounts {
    let mut rejected = BTreeMap::new();
    for r in rejects {
        *rejected.entry(r.reason.name().to_string()).or_insert(0) += 1;
    }
    SessionCounts {
        kept: kept as u64,
        rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_ids_sort_in_file_order() {
        let mut v = vec![piece_id(1, 0), piece_id(0, 10), piece_id(0, 2)];
        v.sort();
        assert_eq!(v, vec!["f000-r0002", "f000-r0010", "f001-r0000"]);
    }

    #[test]
    fn only_big_splittable_files_are_cut() {
        assert_eq!(ranges_for(100, true, 1000), vec![None]);
        assert_eq!(ranges_for(10_000, false, 1000), vec![None]);
        let r = ranges_for(10_000, true, 1000);
        assert_eq!(r.len(), 10);
        assert_eq!(r.first().cloned().flatten(), Some(0..1000));
        assert_eq!(r.last().cloned().flatten().map(|r| r.end), Some(10_000));
    }

    #[test]
    fn bad_batch_ids_and_empty_specs_are_refused() {
        assert_eq!(check_batch_id("b-1.x_2"), Ok(()));
        assert_eq!(
            check_batch_id("../x"),
            Err(PlanError::InvalidBatchId("../x".into()))
        );
        let mut spec = BatchSpec {
            activity: Vec::new(),
            sessions: "file:///s.csv".into(),
            selection: Default::default(),
        };
        assert_eq!(check_spec(&spec), Err(PlanError::NoActivity));
        spec.activity.push("file:///a.jsonl".into());
        assert_eq!(check_spec(&spec), Ok(()));
    }

    #[test]
    fn a_big_json_lines_file_becomes_ranged_pieces_and_gzip_one_piece() {
        let lines = b"{\"a\":1}\n{\"a\":2}\n";
        let p = file_pieces(2, "s3://b/a.jsonl", 10_000, lines, 4_000, 8, true);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].piece, "f002-r0000");
        assert_eq!(p[0].range.map(|r| r.0), Some(0));
        assert_eq!(p[2].range.map(|r| r.1), Some(10_000));
        assert!(p.iter().all(|x| x.partitions == 8 && x.selected));
        let gz = file_pieces(
            0,
            "s3://b/a.gz",
            10_000,
            &[0x1f, 0x8b, 8, 0],
            4_000,
            8,
            false,
        );
        assert_eq!(gz.len(), 1);
        assert_eq!(gz[0].range, None);
        assert!(gz[0].split, "a gzip file is cut by the pre-pass");
        assert!(p.iter().all(|x| !x.split));
    }

    #[test]
    fn the_selection_file_keeps_every_id_exactly() {
        let sel = SelectedLearners::from_ids(["b", "a", "#c", "d\ne"].iter());
        assert_eq!(selected_file(&sel), br##"["#c","a","b","d\ne"]"##.to_vec());
        assert_eq!(
            SelectedLearners::from_stored(&selected_file(&sel)).unwrap(),
            sel
        );
    }

    #[test]
    fn sessions_partition_by_learner() {
        let s = |u: &str, row| Session {
            user_id: u.into(),
            session_id: format!("s{row}"),
            created_at: 0,
            milestone: "M1".into(),
            lesson: "P1".into(),
            progress: "0".into(),
            phase: "P1".into(),
            row,
        };
        let parts = partition_sessions(vec![s("a", 0), s("b", 1), s("a", 2)], 4);
        let a = &parts[&partition_of("a", 4)];
        assert!(
            a.iter()
                .filter(|x| x.user_id == "a")
                .map(|x| x.row)
                .eq([0, 2])
        );
        assert_eq!(parts.values().map(Vec::len).sum::<usize>(), 3);
    }
}
