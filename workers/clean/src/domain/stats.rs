//! Counting and reporting: the clean counters of one piece (or a whole batch,
//! after [`CleanStats::merge`]) and the [`Reject`] line of the rejects file.

use std::collections::BTreeMap;

use engage_model::RejectReason;
use serde::{Deserialize, Serialize};

use super::parse::RecordError;

/// How many characters of a rejected line the rejects file keeps.
pub const EXCERPT_CHARS: usize = 200;

/// What happened to every item (non-blank line or array element) read.
///
/// Invariant: `read == kept + non_english + deselected + duplicates + rejected_total()`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanStats {
    /// Items read (blank lines are not items).
    pub read: u64,
    /// Records kept and written to a partition.
    pub kept: u64,
    /// Records dropped because they are not English (or name no language).
    pub non_english: u64,
    /// Records of learners outside the batch's selection.
    pub deselected: u64,
    /// Records whose response id was already kept in the same piece.
    pub duplicates: u64,
    /// Rejected items by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
}

impl CleanStats {
    /// Adds another piece's counters to these.
    pub fn merge(&mut self, other: &CleanStats) {
        self.read += other.read;
        self.kept += other.kept;
        self.non_english += other.non_english;
        self.deselected += other.deselected;
        self.duplicates += other.duplicates;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(*reason).or_insert(0) += n;
        }
    }

    /// The sum of several pieces' counters.
    pub fn merged<'a>(pieces: impl IntoIterator<Item = &'a CleanStats>) -> CleanStats {
        let mut total = CleanStats::default();
        for p in pieces {
            total.merge(p);
        }
        total
    }

    /// Counts one rejected item.
    pub fn count_reject(&mut self, reason: RejectReason) {
        *self.rejected.entry(reason).or_insert(0) += 1;
    }

    /// All rejected items, whatever the reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Whether every item read is accounted for exactly once.
    pub fn is_consistent(&self) -> bool {
        self.read
            == self.kept
                + self.non_english
                + self.deselected
                + self.duplicates
                + self.rejected_total()
    }
}

/// One line of the rejects file (`rejects.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// 1-based line number (JSON Lines) or element index (JSON array). In a
    /// byte-range piece that does not start at 0 it counts from the piece start.
    pub line: u64,
    /// Byte offset of the line start in the (decompressed) input; always absolute.
    pub offset: u64,
    /// Why the item was rejected.
    pub reason: RejectReason,
    /// A human-readable explanation.
    pub detail: String,
    /// The first [`EXCERPT_CHARS`] characters of the item, lossily decoded.
    pub excerpt: String,
}

impl Reject {
    /// Builds a reject for `raw` (the bytes read of the item, possibly a prefix).
    pub fn new(line: u64, offset: u64, error: &RecordError, raw: &[u8]) -> Self {
        Self {
            line,
            offset,
            reason: error.reason(),
            detail: error.to_string(),
            excerpt: excerpt(raw),
        }
    }
}

/// The first [`EXCERPT_CHARS`] characters of `raw`, invalid UTF-8 replaced.
pub fn excerpt(raw: &[u8]) -> String {
    // Four bytes per character at most: never decode more than needed.
    let head = &raw[..raw.len().min(EXCERPT_CHARS * 4)];
    String::from_utf8_lossy(head)
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stats(read: u64, kept: u64, rejected: &[(RejectReason, u64)]) -> CleanStats {
        CleanStats {
            read,
            kept,
            rejected: rejected.iter().copied().collect(),
            ..CleanStats::default()
        }
    }

    #[test]
    fn merge_adds_every_counter() {
        let mut a = stats(5, 3, &[(RejectReason::InvalidJson, 2)]);
        a.non_english = 1;
        let mut b = stats(
            4,
            1,
            &[
                (RejectReason::InvalidJson, 1),
                (RejectReason::BadTimestamp, 1),
            ],
        );
        b.duplicates = 2;
        b.deselected = 3;
        a.merge(&b);
        assert_eq!(a.read, 9);
        assert_eq!(a.kept, 4);
        assert_eq!(a.non_english, 1);
        assert_eq!(a.duplicates, 2);
        assert_eq!(a.deselected, 3);
        assert_eq!(a.rejected[&RejectReason::InvalidJson], 3);
        assert_eq!(a.rejected[&RejectReason::BadTimestamp], 1);
        assert_eq!(a.rejected_total(), 4);
        assert_eq!(CleanStats::merged([&b, &CleanStats::default()]), b);
    }

    #[test]
    fn consistency_checks_the_sum() {
        let mut s = stats(3, 1, &[(RejectReason::LineTooLong, 1)]);
        s.non_english = 1;
        assert!(s.is_consistent());
        s.read += 1;
        assert!(!s.is_consistent());
    }

    #[test]
    fn stats_serialise_reason_names_as_keys() {
        let s = stats(1, 0, &[(RejectReason::BadAudioUrl, 1)]);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["rejected"]["bad_audio_url"], 1);
        assert_eq!(serde_json::from_value::<CleanStats>(v).unwrap(), s);
    }

    #[test]
    fn reject_serializes_to_one_line() {
        let r = Reject::new(7, 120, &RecordError::MissingUserId, b"{\"a\":1}");
        // The cleaner writes each reject with `serde_json::to_writer` and a newline.
        let line = serde_json::to_vec(&r).unwrap();
        assert!(!line.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["reason"], "missing_user_id");
        assert_eq!(v["line"], 7);
        assert_eq!(v["offset"], 120);
        assert_eq!(v["excerpt"], "{\"a\":1}");
    }

    #[test]
    fn excerpt_is_bounded_and_lossy() {
        let long = "é".repeat(1000);
        assert_eq!(excerpt(long.as_bytes()).chars().count(), EXCERPT_CHARS);
        assert_eq!(excerpt(b"ab\xffc"), "ab\u{fffd}c");
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in 0u64..1000, b in 0u64..1000, c in 0u64..1000, d in 0u64..1000) {
            let x = stats(a, b, &[(RejectReason::InvalidJson, c)]);
            let y = stats(c, d, &[(RejectReason::BadUserId, a)]);
            let mut xy = x.clone();
            xy.merge(&y);
            let mut yx = y.clone();
            yx.merge(&x);
            prop_assert_eq!(xy, yx);
        }

        #[test]
        fn excerpt_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert!(excerpt(&raw).chars().count() <= EXCERPT_CHARS);
        }
    }
}
