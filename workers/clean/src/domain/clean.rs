//! A piece of activity input end to end: read, parse, drop, deduplicate,
//! count, write kept records to partitions and rejects to the rejects sink;
//! and [`clean_parallel`], the multi-threaded fast path over byte ranges.
//!
//! **Duplicates** (same response id) are dropped within one piece using a set
//! of 128-bit ids. The set is bounded by [`CleanOptions::dedup_capacity`]:
//! when full it is cleared, so duplicates further apart than that window in
//! one piece, and duplicates across pieces or files, are *not* caught here.
//! They are removed downstream, where records are keyed by response id (the
//! match stage and the batch ledger treat a response id as one item).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Seek, Write};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use engage_model::RejectReason;
use engage_model::selection::SelectedLearners;

use super::parse::{ParsedView, RecordView, parse_view_with};
use super::partition::{PartitionError, PartitionWriter, SpoolFormat};
use super::reader::{ActivityReader, RawItem, ReadError, ReaderOptions};
use super::stats::{CleanStats, Reject};

/// Default size of the per-piece duplicate window (ids); about 36 MB when full.
pub const DEFAULT_DEDUP_CAPACITY: usize = 1 << 20;

/// Default number of rejected items at the head of a file after which the
/// file is judged not to be an activity log ([`CleanOptions::head_probation`]).
pub const DEFAULT_HEAD_PROBATION: usize = 64;

/// How a piece is cleaned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    /// Reader settings (longest accepted line).
    pub reader: ReaderOptions,
    /// Most response ids remembered for duplicate detection in one piece.
    pub dedup_capacity: usize,
    /// Rejects at the head of a file are held back (not written) until an
    /// item parses. If this many items in a row are rejected first, or the
    /// file ends before any item parses, the file is not an activity log:
    /// the held rejects are dropped, the rest is not read, and one
    /// `not_an_activity_log` reject without an excerpt stands for them. This
    /// keeps bytes of a file that was never a log (a key file, `/proc`
    /// entries, a binary) out of `rejects.jsonl`.
    pub head_probation: usize,
    /// How kept records are written into the partitions.
    pub spool: SpoolFormat,
}

impl Default for CleanOptions {
    fn default() -> Self {
        Self {
            reader: ReaderOptions::default(),
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            head_probation: DEFAULT_HEAD_PROBATION,
            spool: SpoolFormat::JsonLines,
        }
    }
}

/// Why cleaning a piece failed as a whole (bad records never fail a piece).
#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    /// The input could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing a partition failed.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// Writing the rejects sink failed.
    #[error("writing rejects: {0}")]
    Rejects(io::Error),
    /// Opening the input for a piece failed.
    #[error("opening input for piece {piece}: {source}")]
    Open {
        /// Index of the piece.
        piece: usize,
        /// The underlying error.
        source: io::Error,
    },
    /// Creating the output sinks for a piece failed.
    #[error("creating output sinks for piece {piece}: {source}")]
    Sinks {
        /// Index of the piece.
        piece: usize,
        /// The underlying error.
        source: io::Error,
    },
    /// A worker thread panicked (a bug, not bad input).
    #[error("a clean worker thread panicked")]
    WorkerPanicked,
}

/// What to do with one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'a> {
    /// Write this record (borrowed from the item) to its partition.
    Keep(RecordView<'a>),
    /// Write this reject to the rejects file.
    Reject(Reject),
    /// Dropped and counted (not English, learner not selected, duplicate).
    Drop,
}

/// Hashes a response id by its low 64 bits. The ids are SHA-256 output, so
/// the bits are already uniform and cannot be steered by input; SipHash would
/// only cost time.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u128` keys; a plain fold keeps it correct anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

/// The duplicate window: 128-bit response ids.
type IdSet = HashSet<u128, BuildHasherDefault<IdHasher>>;

/// The per-piece state: selection, duplicate window and counters.
pub struct PieceCleaner<'s> {
    selection: &'s SelectedLearners,
    seen: IdSet,
    dedup_capacity: usize,
    stats: CleanStats,
}

impl<'s> PieceCleaner<'s> {
    /// A cleaner for one piece.
    pub fn new(selection: &'s SelectedLearners, opts: &CleanOptions) -> Self {
        Self {
            selection,
            seen: IdSet::default(),
            dedup_capacity: opts.dedup_capacity.max(1),
            stats: CleanStats::default(),
        }
    }

    /// Classifies one item and counts it.
    pub fn decide<'a>(&mut self, item: &RawItem<'a>) -> Decision<'a> {
        self.stats.read += 1;
        let parsed = match &item.error {
            Some(e) => Err(e.clone()),
            None => parse_view_with(item.bytes, |u| self.selection.contains(u)),
        };
        match parsed {
            Err(e) => {
                self.stats.count_reject(e.reason());
                Decision::Reject(item.reject(&e))
            }
            Ok(ParsedView::NonEnglish) => {
                self.stats.non_english += 1;
                Decision::Drop
            }
            Ok(ParsedView::Deselected) => {
                self.stats.deselected += 1;
                Decision::Drop
            }
            Ok(ParsedView::Record(r)) => {
                let id = r.id_u128();
                if self.seen.len() >= self.dedup_capacity {
                    if self.seen.contains(&id) {
                        self.stats.duplicates += 1;
                        return Decision::Drop;
                    }
                    self.seen.clear();
                }
                // One probe: `insert` says whether the id was already there.
                if !self.seen.insert(id) {
                    self.stats.duplicates += 1;
                    return Decision::Drop;
                }
                self.stats.kept += 1;
                Decision::Keep(r)
            }
        }
    }

    /// Re-counts `held` rejects (already counted by their own reasons) as
    /// `not_an_activity_log`: the file they came from is not a log.
    pub fn not_an_activity_log(&mut self, held: &[Reject]) {
        for rej in held {
            if let Some(n) = self.stats.rejected.get_mut(&rej.reason) {
                *n -= 1;
                if *n == 0 {
                    self.stats.rejected.remove(&rej.reason);
                }
            }
            self.stats.count_reject(RejectReason::NotAnActivityLog);
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &CleanStats {
        &self.stats
    }

    /// The final counters.
    pub fn into_stats(self) -> CleanStats {
        self.stats
    }
}

/// [`clean_piece`] into `partitions` (written in `opts.spool`), then flushes
/// both sinks: the piece's outputs are complete when it returns. Returns the
/// counters, the partition sinks and the records written to each.
pub fn clean_into<R: Read, W: Write, J: Write>(
    reader: &mut ActivityReader<R>,
    selection: &SelectedLearners,
    opts: &CleanOptions,
    partitions: Vec<W>,
    rejects: &mut J,
) -> Result<(CleanStats, Vec<W>, Vec<u64>), CleanError> {
    let mut out = PartitionWriter::with_format(partitions, opts.spool)?;
    let stats = clean_piece(reader, selection, opts, &mut out, rejects)?;
    let (partitions, counts) = out.finish()?;
    rejects.flush().map_err(CleanError::Rejects)?;
    Ok((stats, partitions, counts))
}

/// Cleans everything `reader` yields: kept records go to `out`, rejects to
/// `rejects` as JSON lines. Returns the piece's counters. Neither sink is
/// flushed here except the partition buffers when the caller calls
/// [`PartitionWriter::finish`].
pub fn clean_piece<R: Read, W: Write, J: Write>(
    reader: &mut ActivityReader<R>,
    selection: &SelectedLearners,
    opts: &CleanOptions,
    out: &mut PartitionWriter<W>,
    rejects: &mut J,
) -> Result<CleanStats, CleanError> {
    let write_reject = |rejects: &mut J, rej: &Reject| -> Result<(), CleanError> {
        serde_json::to_writer(&mut *rejects, rej).map_err(|e| CleanError::Rejects(e.into()))?;
        rejects.write_all(b"\n").map_err(CleanError::Rejects)
    };
    let mut cleaner = PieceCleaner::new(selection, opts);
    // Rejects held back while the head of the file is on probation.
    let mut held: Vec<Reject> = Vec::new();
    let mut probation = reader.starts_file() && opts.head_probation > 0;
    while let Some(item) = reader.next_raw()? {
        let decision = cleaner.decide(&item);
        if probation {
            if let Decision::Reject(rej) = decision {
                held.push(rej);
                if held.len() >= opts.head_probation {
                    break;
                }
                continue;
            }
            probation = false;
            for rej in held.drain(..) {
                write_reject(rejects, &rej)?;
            }
        }
        // By reference: moving the record view out cost a copy per record.
        match &decision {
            Decision::Keep(r) => {
                out.write_view(r)?;
            }
            Decision::Reject(rej) => write_reject(rejects, rej)?,
            Decision::Drop => {}
        }
    }
    if probation && !held.is_empty() {
        if held.len() < opts.head_probation && reader.stopped_at_range_end() {
            // The piece ended on probation and the file goes on in the next
            // piece: it was judged a log when it was split (see
            // `is_splittable`), so these are a log's bad lines.
            for rej in held.drain(..) {
                write_reject(rejects, &rej)?;
            }
        } else {
            let first = &held[0];
            let verdict = Reject {
                line: first.line,
                offset: first.offset,
                reason: RejectReason::NotAnActivityLog,
                detail: format!(
                    "the first {} item(s) of the file were all rejected ({}); it is not read further and no excerpt is kept",
                    held.len(),
                    first.reason
                ),
                excerpt: String::new(),
            };
            cleaner.not_an_activity_log(&held);
            write_reject(rejects, &verdict)?;
        }
    }
    Ok(cleaner.into_stats())
}

/// Whether `head` (the first bytes of a plain input) holds an item that
/// parses before [`DEFAULT_HEAD_PROBATION`] items are rejected: the same
/// judgement [`clean_piece`] makes at the head of a file, made on every
/// learner (a selection only turns some rejects into drops).
pub fn head_is_plausible(head: &[u8]) -> bool {
    let Ok(mut reader) = ActivityReader::new(head, ReaderOptions::default()) else {
        return false;
    };
    let all = SelectedLearners::All;
    let mut cleaner = PieceCleaner::new(&all, &CleanOptions::default());
    let mut rejected = 0;
    while let Ok(Some(item)) = reader.next_raw() {
        match cleaner.decide(&item) {
            Decision::Reject(_) => {
                rejected += 1;
                if rejected >= DEFAULT_HEAD_PROBATION {
                    return false;
                }
            }
            Decision::Keep(_) | Decision::Drop => return true,
        }
    }
    false
}

/// The sinks a piece writes into: one per partition, and one for rejects.
pub struct PieceSinks<W, J> {
    /// One sink per partition (the same count for every piece).
    pub partitions: Vec<W>,
    /// The rejects sink (JSON Lines of [`Reject`]).
    pub rejects: J,
}

/// The result of one piece of [`clean_parallel`].
pub struct PieceOutput<W, J> {
    /// Index of the piece in the `ranges` given.
    pub piece: usize,
    /// The byte range cleaned.
    pub range: Range<u64>,
    /// The partition sinks, flushed.
    pub partitions: Vec<W>,
    /// Records written per partition.
    pub partition_counts: Vec<u64>,
    /// The rejects sink, flushed.
    pub rejects: J,
    /// The piece's counters.
    pub stats: CleanStats,
}

/// Cleans a plain JSON Lines input in parallel over byte `ranges` (see
/// [`super::reader::split_ranges`]) with up to `threads` threads.
///
/// Every piece opens its own reader with `open` and gets its own sinks from
/// `sinks(piece, range)`, so output is written as it is produced and memory
/// stays bounded by threads × (read buffer + partitions × sink buffer +
/// duplicate window). The outputs come back in piece order; merge their
/// counters with [`CleanStats::merged`]. On the first failure the remaining
/// pieces are not started and the error of the lowest failed piece is returned.
pub fn clean_parallel<R, W, J, O, S>(
    ranges: &[Range<u64>],
    threads: usize,
    selection: &SelectedLearners,
    opts: &CleanOptions,
    open: O,
    sinks: S,
) -> Result<Vec<PieceOutput<W, J>>, CleanError>
where
    R: Read + Seek,
    W: Write + Send,
    J: Write + Send,
    O: Fn() -> io::Result<R> + Sync,
    S: Fn(usize, &Range<u64>) -> io::Result<PieceSinks<W, J>> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results = Mutex::new(Vec::with_capacity(ranges.len()));
    let threads = threads.clamp(1, ranges.len().max(1));

    let run_piece = |piece: usize| -> Result<PieceOutput<W, J>, CleanError> {
        let range = ranges[piece].clone();
        let input = open().map_err(|source| CleanError::Open { piece, source })?;
        let PieceSinks {
            partitions,
            mut rejects,
        } = sinks(piece, &range).map_err(|source| CleanError::Sinks { piece, source })?;
        let mut reader = ActivityReader::for_range(input, range.clone(), opts.reader)?;
        let (stats, partitions, partition_counts) =
            clean_into(&mut reader, selection, opts, partitions, &mut rejects)?;
        Ok(PieceOutput {
            piece,
            range,
            partitions,
            partition_counts,
            rejects,
            stats,
        })
    };

    let worker = || {
        loop {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let piece = next.fetch_add(1, Ordering::Relaxed);
            if piece >= ranges.len() {
                break;
            }
            let r = run_piece(piece);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            match results.lock() {
                Ok(mut v) => v.push((piece, r)),
                Err(poisoned) => poisoned.into_inner().push((piece, r)),
            }
        }
    };

    let panicked = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| h.join().is_err())
            .fold(false, |a, b| a | b)
    });
    if panicked {
        return Err(CleanError::WorkerPanicked);
    }
    let mut results = match results.into_inner() {
        Ok(v) => v,
        Err(poisoned) => poisoned.into_inner(),
    };
    results.sort_by_key(|(piece, _)| *piece);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::reader::{is_splittable, split_ranges};
    use engage_model::ActivityRecord;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::io::Cursor;

    fn line(user: &str, lang: &str, ms: i64) -> String {
        format!(
            r#"{{"user_id":"{user}","lang":"{lang}","timestamp":{ms},"audio":"s3://b/{user}/{ms}.wav","score":50}}"#
        )
    }

    struct Cleaned {
        stats: CleanStats,
        kept: Vec<ActivityRecord>,
        rejects: Vec<Reject>,
    }

    fn clean_bytes(input: &[u8], selection: &SelectedLearners, opts: &CleanOptions) -> Cleaned {
        let mut reader = ActivityReader::new(input, opts.reader).unwrap();
        let mut out = PartitionWriter::new(vec![Vec::new(), Vec::new()]).unwrap();
        let mut rejects = Vec::new();
        let stats = clean_piece(&mut reader, selection, opts, &mut out, &mut rejects).unwrap();
        let (sinks, counts) = out.finish().unwrap();
        assert_eq!(counts.iter().sum::<u64>(), stats.kept);
        Cleaned {
            stats,
            kept: sinks
                .iter()
                .flat_map(|s| parse_lines::<ActivityRecord>(s))
                .collect(),
            rejects: parse_lines(&rejects),
        }
    }

    fn parse_lines<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_piece_is_counted_and_written() {
        let input = [
            line("u1", "en", 1),
            line("u1", "en", 1), // duplicate
            line("u2", "fr", 2),
            line("u3", "EN-gb", 3),
            "{broken".to_string(),
            String::new(),
            r#"{"lang":"en","timestamp":1}"#.to_string(),
            line("u4", "en", 4),
        ]
        .join("\n");
        let sel = SelectedLearners::from_ids(["u1", "u2", "u3"]);
        let c = clean_bytes(input.as_bytes(), &sel, &CleanOptions::default());
        assert_eq!(c.stats.read, 7);
        assert_eq!(c.stats.kept, 2);
        assert_eq!(c.stats.duplicates, 1);
        assert_eq!(c.stats.non_english, 1);
        assert_eq!(c.stats.deselected, 1);
        assert_eq!(c.stats.rejected[&RejectReason::InvalidJson], 1);
        assert_eq!(c.stats.rejected[&RejectReason::MissingUserId], 1);
        assert!(c.stats.is_consistent());
        let users: BTreeSet<_> = c.kept.iter().map(|r| r.user_id.as_str()).collect();
        assert_eq!(users, BTreeSet::from(["u1", "u3"]));
        let rejects: Vec<(u64, RejectReason)> =
            c.rejects.iter().map(|r| (r.line, r.reason)).collect();
        assert_eq!(
            rejects,
            vec![
                (5, RejectReason::InvalidJson),
                (7, RejectReason::MissingUserId)
            ]
        );
        assert_eq!(c.rejects[0].excerpt, "{broken");
    }

    #[test]
    fn same_response_in_two_spellings_is_one_item() {
        let a =
            r#"{"user_id":"7","lang":"en","timestamp":"2024-03-01T10:00:00Z","audio":"s3://b/k"}"#;
        let b =
            r#"{"learner_id":7,"language":"english","ets":1709287200000,"audio_url":"s3://b/k"}"#;
        let c = clean_bytes(
            format!("{a}\n{b}\n").as_bytes(),
            &SelectedLearners::All,
            &CleanOptions::default(),
        );
        assert_eq!((c.stats.kept, c.stats.duplicates), (1, 1));
    }

    #[test]
    fn dedup_window_is_bounded() {
        let input: String = (0..10)
            .chain(0..10)
            .map(|i| line("u", "en", i) + "\n")
            .collect();
        let opts = CleanOptions {
            dedup_capacity: 4,
            ..CleanOptions::default()
        };
        let c = clean_bytes(input.as_bytes(), &SelectedLearners::All, &opts);
        // The window forgets old ids: fewer duplicates are caught, none is lost.
        assert!(c.stats.duplicates < 10);
        assert_eq!(c.stats.kept + c.stats.duplicates, 20);
        let full = clean_bytes(
            input.as_bytes(),
            &SelectedLearners::All,
            &CleanOptions::default(),
        );
        assert_eq!((full.stats.kept, full.stats.duplicates), (10, 10));
    }

    #[test]
    fn rejects_sink_failure_is_an_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut reader = ActivityReader::new(&b"nope\n"[..], ReaderOptions::default()).unwrap();
        let mut out = PartitionWriter::new(vec![Vec::new()]).unwrap();
        let r = clean_piece(
            &mut reader,
            &SelectedLearners::All,
            &CleanOptions::default(),
            &mut out,
            &mut Broken,
        );
        assert!(matches!(r, Err(CleanError::Rejects(_))));
    }

    type Out = PieceOutput<Vec<u8>, Vec<u8>>;

    fn run_parallel(
        input: &[u8],
        ranges: &[Range<u64>],
        threads: usize,
    ) -> Result<Vec<Out>, CleanError> {
        clean_parallel(
            ranges,
            threads,
            &SelectedLearners::All,
            &CleanOptions::default(),
            || Ok(Cursor::new(input)),
            |_, _| {
                Ok(PieceSinks {
                    partitions: vec![Vec::new(); 3],
                    rejects: Vec::new(),
                })
            },
        )
    }

    #[test]
    fn a_file_that_is_not_a_log_leaks_no_bytes() {
        // /proc/self/environ-like: NUL-separated variables on one "line".
        let environ = b"PATH=/usr/bin\0GEMINI_API_KEY=AIzaSECRET123\0HOME=/root\0";
        let c = clean_bytes(environ, &SelectedLearners::All, &CleanOptions::default());
        assert_eq!(c.rejects.len(), 1);
        assert_eq!(c.rejects[0].reason, RejectReason::NotAnActivityLog);
        assert_eq!(c.rejects[0].excerpt, "");
        assert!(!c.rejects[0].detail.contains("SECRET"));
        assert_eq!(c.stats.rejected[&RejectReason::NotAnActivityLog], 1);
        assert!(c.stats.is_consistent());

        // Many lines of a key file: reading stops after the probation window.
        let keys: String = (0..1000).map(|i| format!("secret-{i}=SECRET\n")).collect();
        let c = clean_bytes(
            keys.as_bytes(),
            &SelectedLearners::All,
            &CleanOptions::default(),
        );
        assert_eq!(c.rejects.len(), 1);
        assert_eq!(c.rejects[0].reason, RejectReason::NotAnActivityLog);
        assert_eq!(c.stats.read, DEFAULT_HEAD_PROBATION as u64);
        assert_eq!(
            c.stats.rejected.get(&RejectReason::NotAnActivityLog),
            Some(&(DEFAULT_HEAD_PROBATION as u64))
        );
        assert_eq!(c.stats.rejected.len(), 1, "{:?}", c.stats.rejected);
        assert!(c.stats.is_consistent());
        assert!(!is_splittable(keys.as_bytes()).unwrap());
    }

    #[test]
    fn bad_lines_at_the_head_of_a_real_log_are_kept_with_excerpts() {
        let input = format!(
            "{{broken\nnot json\n{}\n{{\"lang\":\"en\"}}\n",
            line("u", "en", 1)
        );
        let c = clean_bytes(
            input.as_bytes(),
            &SelectedLearners::All,
            &CleanOptions::default(),
        );
        assert_eq!(c.kept.len(), 1);
        let reasons: Vec<_> = c.rejects.iter().map(|r| (r.line, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (1, RejectReason::InvalidJson),
                (2, RejectReason::InvalidJson),
                (4, RejectReason::MissingUserId)
            ]
        );
        assert_eq!(c.rejects[0].excerpt, "{broken");
        assert!(is_splittable(input.as_bytes()).unwrap());
    }

    #[test]
    fn probation_only_judges_the_head_of_a_file() {
        // Past the head, any number of bad lines is read and rejected one by one.
        let mut input = line("u", "en", 1) + "\n";
        for _ in 0..(DEFAULT_HEAD_PROBATION * 2) {
            input.push_str("nope\n");
        }
        let c = clean_bytes(
            input.as_bytes(),
            &SelectedLearners::All,
            &CleanOptions::default(),
        );
        assert_eq!(c.kept.len(), 1);
        assert_eq!(c.rejects.len(), DEFAULT_HEAD_PROBATION * 2);
        assert!(
            c.rejects
                .iter()
                .all(|r| r.reason == RejectReason::InvalidJson)
        );
    }

    #[test]
    fn a_head_piece_that_ends_on_probation_keeps_its_rejects() {
        // The first piece holds only a bad line; the file goes on in the next
        // piece, so the line is a log's bad line, as in one sequential pass.
        let input = format!("aAA    Aa\n{}\n", line("a", "en", 0));
        let cut = input.find('\n').unwrap() as u64 + 1;
        let ranges = [0..cut, cut..input.len() as u64];
        let outs = run_parallel(input.as_bytes(), &ranges, 1).unwrap();
        let stats = CleanStats::merged(outs.iter().map(|o| &o.stats));
        let seq = clean_bytes(
            input.as_bytes(),
            &SelectedLearners::All,
            &CleanOptions::default(),
        );
        assert_eq!(stats.rejected, seq.stats.rejected);
        assert_eq!(stats.rejected.get(&RejectReason::InvalidJson), Some(&1));
        assert_eq!(stats.kept, 1);
    }

    #[test]
    fn parallel_failure_of_one_piece_fails_the_run() {
        let input = line("u", "en", 1);
        let ranges = split_ranges(input.len() as u64, 4);
        let r: Result<Vec<Out>, _> = clean_parallel(
            &ranges,
            2,
            &SelectedLearners::All,
            &CleanOptions::default(),
            || Ok(Cursor::new(input.as_bytes())),
            |piece, _| {
                if piece == 2 {
                    Err(io::Error::other("no space"))
                } else {
                    Ok(PieceSinks {
                        partitions: vec![Vec::new()],
                        rejects: Vec::new(),
                    })
                }
            },
        );
        assert!(
            matches!(r, Err(CleanError::Sinks { piece: 2, .. })),
            "{:?}",
            r.err()
        );
    }

    fn input_strategy() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                6 => ("[a-e]", "(en|fr)", 0i64..30).prop_map(|(u, l, t)| line(&u, &l, t)),
                1 => "[ -~]{0,30}",
                1 => Just(String::new()),
            ],
            0..60,
        )
        .prop_map(|lines| lines.join("\n").into_bytes())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The parallel run over any number of pieces keeps the same responses
        /// (up to cross-piece duplicates, left to downstream) and accounts for
        /// every line; every learner's records of a piece share one partition.
        #[test]
        fn parallel_equals_sequential(input in input_strategy(), pieces in 1usize..9, threads in 1usize..4) {
            // As the product does: only inputs that pass `is_splittable` take
            // this path (a JSON array or gzip is read whole by
            // `ActivityReader::new`, format detection included).
            if !is_splittable(&input[..]).unwrap() {
                return Ok(());
            }
            let seq = clean_bytes(&input, &SelectedLearners::All, &CleanOptions::default());
            let ranges = split_ranges(input.len() as u64, pieces);
            let outs = run_parallel(&input, &ranges, threads).unwrap();
            prop_assert_eq!(outs.len(), ranges.len());
            let stats = CleanStats::merged(outs.iter().map(|o| &o.stats));
            prop_assert!(stats.is_consistent());
            prop_assert_eq!(stats.read, seq.stats.read);
            prop_assert_eq!(stats.non_english, seq.stats.non_english);
            prop_assert_eq!(&stats.rejected, &seq.stats.rejected);
            prop_assert_eq!(stats.kept + stats.duplicates, seq.stats.kept + seq.stats.duplicates);
            let mut ids = BTreeSet::new();
            let mut rejected_offsets = Vec::new();
            for (i, o) in outs.iter().enumerate() {
                prop_assert_eq!(o.piece, i);
                for (p, sink) in o.partitions.iter().enumerate() {
                    for r in parse_lines::<ActivityRecord>(sink) {
                        prop_assert_eq!(crate::domain::partition_of(&r.user_id, 3), p as u32);
                        ids.insert(r.response_id);
                    }
                }
                rejected_offsets.extend(parse_lines::<Reject>(&o.rejects).into_iter().map(|r| r.offset));
            }
            let want: BTreeSet<_> = seq.kept.iter().map(|r| r.response_id.clone()).collect();
            prop_assert_eq!(ids, want);
            let want_offsets: Vec<_> = seq.rejects.iter().map(|r| r.offset).collect();
            prop_assert_eq!(rejected_offsets, want_offsets);
        }
    }
}
