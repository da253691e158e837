//! `matched.csv` without holding every row: sorted runs, then a k-way merge.
//!
//! A producer that sees the batch one part at a time (one learner partition,
//! say) sorts that part's rows by the `matched.csv` key (user id, timestamp,
//! response id), writes them as a *run* with [`RunWriter`], and drops them;
//! [`merge_runs`] then reads every run once, in step, and writes the file.
//! Memory is one part's rows plus one buffered row per run, whatever the
//! batch size.
//!
//! The cells go through [`matched_cells`] and the same `csv` writer settings
//! as [`crate::write_matched_csv`], so for the same rows (response ids
//! unique, as after deduplication) both write the same bytes; a test checks
//! it on random rows.
//!
//! A run is a sequence of frames, each the row's key and its finished CSV
//! bytes: `u32` user id length, user id, `i64` timestamp, `u32` response id
//! length, response id, `u32` CSV length, CSV bytes (integers little endian).
//! The merge compares keys, never parses CSV. Runs are scratch files of one
//! process, not a stored format.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::{self, BufRead, Write};
use std::rc::Rc;

use engage_model::time::Timestamp;

use crate::report::{
    MATCHED_COLUMNS, MATCHED_TEXT, MatchedView, ReportError, matched_cells, write_safe_record,
};

/// A byte buffer the `csv` writer appends to and the run writer drains: the
/// `csv` writer owns its sink and has no `get_mut`, so they share it.
#[derive(Debug, Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes one sorted run. Rows must come in `matched.csv` order
/// ([`MatchedView::key`]); a row out of order is an error, not a wrong file.
pub struct RunWriter<W: Write> {
    out: W,
    csv: csv::Writer<Shared>,
    bytes: Shared,
    last: Option<(String, Timestamp, String)>,
    rows: u64,
    csv_bytes: u64,
}

impl<W: Write> std::fmt::Debug for RunWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWriter")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<W: Write> RunWriter<W> {
    /// A run written to `out` (buffer it: frames are small writes).
    pub fn new(out: W) -> Self {
        let bytes = Shared::default();
        Self {
            out,
            csv: csv::Writer::from_writer(bytes.clone()),
            bytes,
            last: None,
            rows: 0,
            csv_bytes: 0,
        }
    }

    /// Appends one row; its key must not be below the previous row's.
    pub fn push(&mut self, row: &MatchedView<'_>) -> Result<(), ReportError> {
        let key = row.key();
        // The previous learner is kept unless it changes: consecutive rows
        // are mostly the same learner's.
        let same_learner = match &self.last {
            Some((u, t, r)) => match u.as_str().cmp(key.0) {
                std::cmp::Ordering::Greater => return Err(ReportError::OutOfOrder),
                std::cmp::Ordering::Equal if (*t, r.as_str()) > (key.1, key.2) => {
                    return Err(ReportError::OutOfOrder);
                }
                std::cmp::Ordering::Equal => true,
                std::cmp::Ordering::Less => false,
            },
            None => false,
        };
        write_safe_record(&mut self.csv, &MATCHED_TEXT, &matched_cells(row))?;
        self.csv.flush()?;
        {
            let mut csv = self.bytes.0.borrow_mut();
            write_frame(&mut self.out, key, &csv)?;
            self.csv_bytes += csv.len() as u64;
            csv.clear();
        }
        match &mut self.last {
            Some((u, t, r)) => {
                if !same_learner {
                    u.clear();
                    u.push_str(key.0);
                }
                *t = key.1;
                r.clear();
                r.push_str(key.2);
            }
            None => self.last = Some((key.0.to_string(), key.1, key.2.to_string())),
        }
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes of `matched.csv` the rows written so far make.
    pub fn csv_bytes(&self) -> u64 {
        self.csv_bytes
    }

    /// Flushes and returns the sink.
    pub fn finish(mut self) -> Result<W, ReportError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_len(out: &mut impl Write, n: usize) -> io::Result<()> {
    let n = u32::try_from(n).map_err(|_| io::Error::other("matched row longer than 4 GiB"))?;
    out.write_all(&n.to_le_bytes())
}

fn write_frame(
    out: &mut impl Write,
    (user, ts, rid): (&str, Timestamp, &str),
    csv: &[u8],
) -> io::Result<()> {
    write_len(out, user.len())?;
    out.write_all(user.as_bytes())?;
    out.write_all(&ts.to_le_bytes())?;
    write_len(out, rid.len())?;
    out.write_all(rid.as_bytes())?;
    write_len(out, csv.len())?;
    out.write_all(csv)
}

/// The head frame of one run during the merge.
#[derive(Debug, Default, PartialEq, Eq)]
struct Frame {
    user: Vec<u8>,
    ts: Timestamp,
    rid: Vec<u8>,
    csv: Vec<u8>,
}

impl Frame {
    fn key(&self) -> (&[u8], Timestamp, &[u8]) {
        (&self.user, self.ts, &self.rid)
    }
}

/// A run being read, ordered by its head frame (then run number, so the
/// order is total).
#[derive(Debug)]
struct Head {
    frame: Frame,
    run: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.frame.key(), self.run).cmp(&(other.frame.key(), other.run))
    }
}

/// Appends exactly `n` bytes of `r` to `into` (cleared first), a buffer at a
/// time: a corrupt length cannot make us allocate it up front.
fn read_into(r: &mut impl BufRead, n: usize, into: &mut Vec<u8>) -> io::Result<()> {
    into.clear();
    while into.len() < n {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let m = buf.len().min(n - into.len());
        into.extend_from_slice(&buf[..m]);
        r.consume(m);
    }
    Ok(())
}

fn read_array<const N: usize>(r: &mut impl BufRead) -> io::Result<[u8; N]> {
    let mut b = [0; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Reads the next frame into `into`, reusing its buffers; `Ok(false)` at a
/// clean end of the run.
fn read_frame(r: &mut impl BufRead, into: &mut Frame) -> io::Result<bool> {
    loop {
        match r.fill_buf() {
            Ok([]) => return Ok(false),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let n = u32::from_le_bytes(read_array(r)?) as usize;
    read_into(r, n, &mut into.user)?;
    into.ts = i64::from_le_bytes(read_array(r)?);
    let n = u32::from_le_bytes(read_array(r)?) as usize;
    read_into(r, n, &mut into.rid)?;
    let n = u32::from_le_bytes(read_array(r)?) as usize;
    read_into(r, n, &mut into.csv)?;
    Ok(true)
}

/// The bytes of `matched.csv`'s header line.
pub fn matched_header() -> Result<Vec<u8>, ReportError> {
    let mut header = csv::Writer::from_writer(Vec::new());
    header.write_record(MATCHED_COLUMNS)?;
    header
        .into_inner()
        .map_err(|e| ReportError::from(e.into_error()))
}

/// Merges sorted runs into `matched.csv` (header included) and returns the
/// number of rows written. Runs must hold disjoint response ids (rows are
/// written as they are, nothing is deduplicated here). Give each run a
/// buffer (a `BufReader` over a file): frames are read from it in place.
pub fn merge_runs<R: BufRead, W: Write>(runs: Vec<R>, mut out: W) -> Result<u64, ReportError> {
    out.write_all(&matched_header()?)?;
    merge_run_rows(runs, out)
}

/// [`merge_runs`] without the header: the rows of one key range of
/// `matched.csv`, for a caller that writes disjoint ranges side by side.
pub fn merge_run_rows<R: BufRead, W: Write>(runs: Vec<R>, mut out: W) -> Result<u64, ReportError> {
    let mut runs = runs;
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (run, r) in runs.iter_mut().enumerate() {
        let mut frame = Frame::default();
        if read_frame(r, &mut frame)? {
            heap.push(Reverse(Head { frame, run }));
        }
    }
    let mut rows = 0;
    // The frame last written; its buffers are swapped in for the next read,
    // so the merge allocates nothing per row.
    let mut prev = Frame::default();
    while let Some(mut top) = heap.peek_mut() {
        let head = &mut top.0;
        out.write_all(&head.frame.csv)?;
        rows += 1;
        std::mem::swap(&mut prev, &mut head.frame);
        let run = head.run;
        if !read_frame(&mut runs[run], &mut head.frame)? {
            std::collections::binary_heap::PeekMut::pop(top);
            continue;
        }
        if head.frame.key() < prev.key() {
            return Err(ReportError::OutOfOrder);
        }
        // Dropping `top` re-sifts the heap with the run's new head.
    }
    out.flush()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::SessionView;
    use crate::write_matched_csv;
    use engage_model::{ActivityRecord, MatchedRecord, SessionMatch};
    use proptest::prelude::*;

    fn record(
        rid: String,
        user: &str,
        ts: i64,
        audio: Option<&str>,
        acc: Option<f64>,
        session: Option<(&str, i64)>,
    ) -> MatchedRecord {
        MatchedRecord {
            record: ActivityRecord {
                response_id: rid,
                user_id: user.into(),
                timestamp: ts,
                audio_url: audio.map(str::to_string),
                accuracy: acc,
                original_text: None,
                response_text: None,
                session_id: None,
                sub_session_id: None,
            },
            session: session.map(|(id, at)| SessionMatch {
                session_id: id.into(),
                created_at: at,
                milestone: "=M1".into(),
                lesson: "P,1".into(),
                phase: "p\"h".into(),
                progress: "10".into(),
            }),
        }
    }

    /// Runs by the rule `engage run` uses (a hash of the user id picks the
    /// run), each sorted, then merged.
    fn via_runs(records: &[MatchedRecord], parts: usize) -> Vec<u8> {
        let mut by_part: Vec<Vec<&MatchedRecord>> = vec![Vec::new(); parts];
        for r in records {
            let p = engage_model::layout::partition_of(&r.record.user_id, parts as u32);
            by_part[p as usize].push(r);
        }
        let runs: Vec<Vec<u8>> = by_part
            .into_iter()
            .map(|mut rs| {
                rs.sort_by(|a, b| {
                    MatchedView::from(*a)
                        .key()
                        .cmp(&MatchedView::from(*b).key())
                });
                let mut w = RunWriter::new(Vec::new());
                for r in rs {
                    w.push(&MatchedView::from(r)).expect("push");
                }
                w.finish().expect("finish")
            })
            .collect();
        let mut out = Vec::new();
        let n = merge_runs(runs.iter().map(|r| r.as_slice()).collect(), &mut out).expect("merge");
        assert_eq!(n, records.len() as u64);
        out
    }

    fn in_memory(records: &[MatchedRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        write_matched_csv(&mut out, records).expect("write");
        out
    }

    #[test]
    fn same_bytes_as_the_in_memory_writer_on_awkward_cells() {
        let t = 1_709_287_200_000_000_000;
        let records = vec![
            record(
                "b".into(),
                "-1",
                t,
                Some("s3://b/k,1.wav"),
                Some(12.5),
                Some(("s\n1", t)),
            ),
            record("a".into(), "-1", t, None, None, None),
            record(
                "c".into(),
                "=u",
                t - 1,
                Some("@x"),
                Some(-0.0),
                Some(("s2", t + 7)),
            ),
            record(
                "d".into(),
                "u\"q",
                t + 1_500_000,
                Some(""),
                Some(100.0),
                None,
            ),
            record("e".into(), "", t, None, Some(0.0004), Some(("", t))),
        ];
        for parts in [1, 2, 3, 7] {
            assert_eq!(
                String::from_utf8(via_runs(&records, parts)).expect("utf-8"),
                String::from_utf8(in_memory(&records)).expect("utf-8"),
                "{parts} runs"
            );
        }
    }

    #[test]
    fn no_runs_is_the_header_alone() {
        let mut out = Vec::new();
        assert_eq!(merge_runs(Vec::<&[u8]>::new(), &mut out).expect("merge"), 0);
        assert_eq!(out, in_memory(&[]));
    }

    #[test]
    fn rows_out_of_order_are_refused() {
        let a = record("a".into(), "u2", 5, None, None, None);
        let b = record("b".into(), "u1", 5, None, None, None);
        let mut w = RunWriter::new(Vec::new());
        w.push(&MatchedView::from(&a)).expect("first row");
        assert!(matches!(
            w.push(&MatchedView::from(&b)),
            Err(ReportError::OutOfOrder)
        ));
        // A run that is not sorted (not written by RunWriter) fails the merge.
        let mut bad = Vec::new();
        for m in [&a, &b] {
            let v = MatchedView::from(m);
            write_frame(&mut bad, v.key(), b"x\n").expect("frame");
        }
        assert!(matches!(
            merge_runs(vec![bad.as_slice()], Vec::new()),
            Err(ReportError::OutOfOrder)
        ));
    }

    #[test]
    fn a_truncated_run_is_an_error() {
        let a = record("a".into(), "u", 5, None, None, None);
        let mut w = RunWriter::new(Vec::new());
        w.push(&MatchedView::from(&a)).expect("row");
        let run = w.finish().expect("finish");
        for cut in 1..run.len() {
            assert!(
                matches!(
                    merge_runs(vec![&run[..cut]], Vec::new()),
                    Err(ReportError::Io(_))
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn session_view_borrows_a_session() {
        let s = engage_model::Session {
            user_id: "u".into(),
            session_id: "s".into(),
            created_at: 3,
            milestone: "m".into(),
            lesson: "l".into(),
            progress: "p".into(),
            phase: "ph".into(),
            row: 0,
        };
        let m = SessionMatch::from(&s);
        assert_eq!(SessionView::from(&s), SessionView::from(&m));
    }

    fn arb_record() -> impl Strategy<Value = MatchedRecord> {
        let text = prop::sample::select(vec![
            "", "a", "b", "-x", "=1", "a,b", "q\"", "n\nl", "é", " s",
        ]);
        (
            prop::sample::select(vec!["1", "2", "10", "-3", "=u", "a b", "é"]),
            0i64..6,
            prop::option::of(text.clone()),
            prop::option::of(prop::sample::select(vec![
                0.0, 12.5, 66.666_666, 100.0, -0.0,
            ])),
            prop::option::of((text, -3i64..9)),
        )
            .prop_map(|(user, ts, audio, acc, session)| {
                record(
                    String::new(),
                    user,
                    ts * 60_000_000_000,
                    audio,
                    acc,
                    session,
                )
            })
    }

    proptest! {
        /// For unique response ids (what deduplication leaves), runs merged
        /// are byte for byte the in-memory `matched.csv`, however the rows
        /// are spread over runs.
        #[test]
        fn merged_runs_equal_the_in_memory_file(
            mut records in prop::collection::vec(arb_record(), 0..60),
            parts in 1usize..6,
        ) {
            for (i, r) in records.iter_mut().enumerate() {
                // Unique ids whose order differs from input order.
                r.record.response_id = format!("{:08x}", (i as u32).wrapping_mul(2_654_435_761));
            }
            prop_assert_eq!(via_runs(&records, parts), in_memory(&records));
        }

        /// Rows split at a learner into two key ranges, each merged apart
        /// with [`merge_run_rows`] and laid after the header in range order,
        /// are the whole file; each range's size is what its runs' writers
        /// counted, so ranges can be written side by side at known offsets.
        #[test]
        fn key_ranges_merged_apart_concatenate_to_the_file(
            mut records in prop::collection::vec(arb_record(), 0..60),
            parts in 1usize..5,
            split in ".{0,3}",
        ) {
            for (i, r) in records.iter_mut().enumerate() {
                r.record.response_id = format!("{:08x}", (i as u32).wrapping_mul(2_654_435_761));
            }
            let mut file = matched_header().expect("header");
            for below in [true, false] {
                let mut counted = 0;
                let runs: Vec<Vec<u8>> = (0..parts)
                    .map(|p| {
                        let mut rs: Vec<&MatchedRecord> = records
                            .iter()
                            .filter(|r| (r.record.user_id.as_str() < split.as_str()) == below)
                            .filter(|r| engage_model::layout::partition_of(&r.record.user_id, parts as u32) == p as u32)
                            .collect();
                        rs.sort_by(|a, b| MatchedView::from(*a).key().cmp(&MatchedView::from(*b).key()));
                        let mut w = RunWriter::new(Vec::new());
                        for r in rs {
                            w.push(&MatchedView::from(r)).expect("push");
                        }
                        counted += w.csv_bytes();
                        w.finish().expect("finish")
                    })
                    .collect();
                let before = file.len();
                merge_run_rows(runs.iter().map(|r| r.as_slice()).collect(), &mut file).expect("merge");
                prop_assert_eq!((file.len() - before) as u64, counted);
            }
            prop_assert_eq!(file, in_memory(&records));
        }
    }
}
