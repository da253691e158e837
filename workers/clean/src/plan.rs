//! Pure planning rules of a batch: piece ids, how files are cut into pieces,
//! how sessions are partitioned, and counters in the summary's vocabulary.

use std::collections::BTreeMap;
use std::ops::Range;

use engage_model::Session;
use engage_model::layout::partition_of;
use engage_model::session::SessionReject;
use engage_model::summary::{ActivityCounts, SessionCounts};

use crate::domain::{CleanStats, split_ranges_by_size};

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
