//! Cutting a gzip or JSON-array activity file into plain segments that
//! several clean jobs can take (the streaming pre-pass).
//!
//! The input is decompressed once, in order, and its decompressed bytes are
//! copied as they are into segments of about `piece_bytes` each. A segment
//! ends at a [`cut_point`](ActivityReader::cut_point) — after a line of JSON
//! Lines, after an element of an array — so the reader that cleans it
//! ([`ActivityReader::for_segment`]) yields exactly the items the whole file
//! would have yielded there, with the same line numbers and offsets. Nothing
//! is parsed here beyond finding item boundaries, and memory stays bounded
//! (about 1.5 MiB) whatever the lines: bytes are written to the segment as
//! they are read, one read buffer held back (see `Tee`). A file may end with
//! an empty segment (when the last cut falls at its very end).
//!
//! A file whose head is not plausibly an activity log is not cut (it is read
//! whole, where the cleaner judges it), nor is one that fits in one segment.
//! A pre-pass that stopped part-way (its process died) resumes from a
//! [`Checkpoint`]: the stream is decompressed again up to it, unread.

use std::cell::RefCell;
use std::io::{self, Cursor, Read, Write};
use std::rc::Rc;

use engage_model::jobs::SegmentStart;
use flate2::read::MultiGzDecoder;
use serde::{Deserialize, Serialize};

use super::clean::head_is_plausible;
use super::reader::{ActivityReader, InputFormat, ReadError, ReaderOptions, SPLIT_PROBE_BYTES};

/// Bytes of decompressed input held before they are written to a segment.
const FLUSH_BYTES: usize = 1024 * 1024;

/// The most the reader reads past the item it returns: its read buffer.
const READ_AHEAD: usize = super::reader::READ_BUFFER;

/// Where the next segment of a file starts: written after each segment is
/// stored, read by a pre-pass that resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The next segment's number.
    pub index: u32,
    /// Its first byte in the decompressed file.
    pub offset: u64,
    /// Lines (or array elements) before it.
    pub line: u64,
    /// Whether the file is one JSON array.
    pub array: bool,
}

/// Why a file could not be cut.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// Reading or decompressing the input failed (or it is corrupt).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A segment could not be written, or its consumer gave up.
    #[error("writing a segment: {0}")]
    Write(io::Error),
    /// The file is shorter than the checkpoint a resumed pre-pass starts at.
    #[error("the file ends at byte {len} of its checkpoint's {offset}: it changed")]
    Shrunk {
        /// Decompressed bytes found.
        len: u64,
        /// The checkpoint's offset.
        offset: u64,
    },
}

/// What a pre-pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutting<W> {
    /// Nothing was cut: clean the file whole. It fitted in one segment,
    /// whose writer (holding every decompressed byte) is handed back, or its
    /// head is not plausibly a log (`None`: nothing was copied).
    Whole(Option<W>),
    /// The file was cut into this many segments (all of them handed out).
    Cut(u32),
}

/// The decompressed bytes the reader has pulled that are not written yet,
/// and the segment they go to (shared between the reader's source and the
/// cutter).
struct Pending<W> {
    /// Offset of `bytes[0]` in the decompressed file.
    base: u64,
    bytes: Vec<u8>,
    /// The segment being written (`None` only between two segments).
    sink: Option<W>,
}

impl<W: Write> Pending<W> {
    /// Writes the bytes before offset `upto` to the segment and forgets them.
    fn write_upto(&mut self, upto: u64) -> io::Result<()> {
        let n = usize::try_from(upto.saturating_sub(self.base))
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        if let Some(w) = self.sink.as_mut() {
            w.write_all(&self.bytes[..n])?;
        }
        self.bytes.drain(..n);
        self.base += n as u64;
        Ok(())
    }
}

/// A reader that keeps a copy of what it delivers in [`Pending`] and writes
/// it to the current segment as it goes. Every byte up to the end of the
/// item being read belongs to the current segment (segments end after an
/// item); only the read-ahead past it, less than one read buffer, may belong
/// to the next, so that much is held back. Memory stays bounded even while
/// a line far longer than the longest accepted one is skipped.
struct Tee<R, W> {
    inner: R,
    copy: Rc<RefCell<Pending<W>>>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut p = self.copy.borrow_mut();
        p.bytes.extend_from_slice(&buf[..n]);
        if p.bytes.len() >= FLUSH_BYTES + READ_AHEAD {
            let upto = p.base + (p.bytes.len() - READ_AHEAD) as u64;
            p.write_upto(upto)?;
        }
        Ok(n)
    }
}

/// The stored file's bytes, decompressed if they are gzip (detected by the
/// magic bytes; concatenated members are one stream, as the reader reads).
enum Decoded<R: Read> {
    Plain(std::io::Chain<Cursor<Vec<u8>>, R>),
    // Boxed: the zlib-rs inflate state is large and lives as long as the file.
    Gzip(Box<MultiGzDecoder<std::io::Chain<Cursor<Vec<u8>>, R>>>),
}

impl<R: Read> Decoded<R> {
    fn new(mut input: R) -> io::Result<Self> {
        let mut magic = Vec::with_capacity(2);
        (&mut input).take(2).read_to_end(&mut magic)?;
        let gzip = magic == [0x1f, 0x8b];
        let inner = Cursor::new(magic).chain(input);
        Ok(if gzip {
            Self::Gzip(Box::new(MultiGzDecoder::new(inner)))
        } else {
            Self::Plain(inner)
        })
    }
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(r) => r.read(buf),
        }
    }
}

/// Cuts `input` (the activity file as stored: gzip or plain) into segments
/// of about `piece_bytes` decompressed bytes. `sink` gives each segment's
/// writer; `done` receives each finished segment with where it starts and
/// the checkpoint of the next one (the last segment has `last` set and no
/// next). With `resume`, segments before it are not cut again.
pub fn cut_segments<R, W>(
    input: R,
    resume: Option<Checkpoint>,
    piece_bytes: u64,
    opts: ReaderOptions,
    mut sink: impl FnMut() -> io::Result<W>,
    mut done: impl FnMut(SegmentStart, W, Option<Checkpoint>) -> io::Result<()>,
) -> Result<Cutting<W>, SegmentError>
where
    R: Read,
    W: Write,
{
    let piece_bytes = piece_bytes.max(1);
    let mut decoded = Decoded::new(input).map_err(ReadError::Io)?;
    let copy = Rc::new(RefCell::new(Pending {
        base: 0,
        bytes: Vec::new(),
        sink: None,
    }));
    let (mut reader, mut start) = match resume {
        Some(c) => {
            let skipped = io::copy(&mut (&mut decoded).take(c.offset), &mut io::sink())
                .map_err(ReadError::Io)?;
            if skipped < c.offset {
                return Err(SegmentError::Shrunk {
                    len: skipped,
                    offset: c.offset,
                });
            }
            copy.borrow_mut().base = c.offset;
            let start = SegmentStart {
                index: c.index,
                offset: c.offset,
                line: c.line,
                array: c.array,
                last: false,
            };
            let tee = Tee {
                inner: Cursor::new(Vec::new()).chain(decoded),
                copy: copy.clone(),
            };
            // The cutter's reader sees the file's real end as the end.
            let whole = SegmentStart {
                last: true,
                ..start
            };
            (ActivityReader::for_segment(tee, &whole, opts)?, start)
        }
        None => {
            let mut head = Vec::new();
            (&mut decoded)
                .take(SPLIT_PROBE_BYTES)
                .read_to_end(&mut head)
                .map_err(ReadError::Io)?;
            if !head_is_plausible(&head) {
                return Ok(Cutting::Whole(None));
            }
            copy.borrow_mut().sink = Some(sink().map_err(SegmentError::Write)?);
            let tee = Tee {
                inner: Cursor::new(head).chain(decoded),
                copy: copy.clone(),
            };
            let reader = ActivityReader::new(tee, opts)?;
            let start = SegmentStart {
                index: 0,
                offset: 0,
                line: 0,
                array: reader.format() == InputFormat::JsonArray,
                last: false,
            };
            (reader, start)
        }
    };
    if copy.borrow().sink.is_none() {
        copy.borrow_mut().sink = Some(sink().map_err(SegmentError::Write)?);
    }
    while reader.next_raw()?.is_some() {
        if reader.position().saturating_sub(start.offset) < piece_bytes {
            continue;
        }
        let Some((offset, line)) = reader.cut_point() else {
            continue;
        };
        // Cut here: the bytes before `offset` end this segment.
        let finished = {
            let mut p = copy.borrow_mut();
            p.write_upto(offset).map_err(SegmentError::Write)?;
            p.sink.take()
        };
        let next = Checkpoint {
            index: start.index.saturating_add(1),
            offset,
            line,
            array: start.array,
        };
        if let Some(w) = finished {
            done(start, w, Some(next)).map_err(SegmentError::Write)?;
        }
        copy.borrow_mut().sink = Some(sink().map_err(SegmentError::Write)?);
        start = SegmentStart {
            index: next.index,
            offset,
            line,
            array: next.array,
            last: false,
        };
    }
    drop(reader);
    let last = {
        let mut p = copy.borrow_mut();
        p.write_upto(u64::MAX).map_err(SegmentError::Write)?;
        p.sink.take()
    };
    let Some(w) = last else {
        return Err(SegmentError::Write(io::Error::other("no segment open")));
    };
    if start.index == 0 {
        return Ok(Cutting::Whole(Some(w)));
    }
    start.last = true;
    done(start, w, None).map_err(SegmentError::Write)?;
    Ok(Cutting::Cut(start.index.saturating_add(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CleanOptions, CleanStats, PartitionWriter, Reject, clean_piece};
    use engage_model::ActivityRecord;
    use engage_model::selection::SelectedLearners;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn opts() -> CleanOptions {
        CleanOptions {
            reader: ReaderOptions {
                max_line_bytes: 120,
            },
            ..CleanOptions::default()
        }
    }

    /// Kept records, rejects and counters of one cleaned input.
    #[derive(Debug, Default, PartialEq)]
    struct Out {
        /// Per partition, in the order written.
        kept: Vec<Vec<ActivityRecord>>,
        rejects: Vec<Reject>,
        stats: CleanStats,
    }

    fn lines<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Vec<T> {
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect()
    }

    fn clean<R: Read>(mut reader: ActivityReader<R>) -> Out {
        let mut out = PartitionWriter::new(vec![Vec::new(), Vec::new()]).unwrap();
        let mut rejects = Vec::new();
        let stats = clean_piece(
            &mut reader,
            &SelectedLearners::All,
            &opts(),
            &mut out,
            &mut rejects,
        )
        .unwrap();
        let (sinks, _) = out.finish().unwrap();
        Out {
            kept: sinks.iter().map(|s| lines(s)).collect(),
            rejects: lines(&rejects),
            stats,
        }
    }

    /// The segments of `input` (`None`: not cut).
    fn cut(stored: &[u8], piece_bytes: u64) -> Option<Vec<(SegmentStart, Vec<u8>)>> {
        let mut input = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(stored).read_to_end(&mut input);
        if !stored.starts_with(&[0x1f, 0x8b]) {
            input = stored.to_vec();
        }
        let mut segs = Vec::new();
        let r = cut_segments(
            stored,
            None,
            piece_bytes,
            opts().reader,
            || Ok(Vec::new()),
            |s, w, _| {
                segs.push((s, w));
                Ok(())
            },
        )
        .unwrap();
        match r {
            Cutting::Whole(w) => {
                assert!(segs.is_empty());
                // Handed back whole only when every byte was copied.
                if let Some(w) = w {
                    assert_eq!(w, input);
                }
                None
            }
            Cutting::Cut(n) => {
                assert_eq!(segs.len(), n as usize);
                Some(segs)
            }
        }
    }

    /// Cleans each segment and puts the results together as the report
    /// does (repeats across segments are removed downstream).
    fn clean_segments(segs: &[(SegmentStart, Vec<u8>)]) -> Out {
        let mut all = Out {
            kept: vec![Vec::new(); 2],
            ..Out::default()
        };
        for (at, bytes) in segs {
            let o = clean(ActivityReader::for_segment(&bytes[..], at, opts().reader).unwrap());
            for (p, kept) in o.kept.into_iter().enumerate() {
                all.kept[p].extend(kept);
            }
            all.rejects.extend(o.rejects);
            all.stats.merge(&o.stats);
        }
        // A response id's repeats are in its learner's partition.
        let mut seen = BTreeSet::new();
        for part in &mut all.kept {
            let before = part.len();
            part.retain(|r| seen.insert(r.response_id.clone()));
            let repeats = (before - part.len()) as u64;
            all.stats.kept -= repeats;
            all.stats.duplicates += repeats;
        }
        all
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap_or_default();
        enc.finish().unwrap_or_default()
    }

    fn record(i: usize, lang: &str) -> String {
        format!(
            r#"{{"user_id":"u{}","lang":"{lang}","timestamp":{},"audio":"s3://b/{i}.wav"}}"#,
            i % 3,
            i / 2
        )
    }

    /// An item of the generated files: a record, junk, or (lines only) a
    /// blank or too-long line; (arrays only) structural faults.
    fn item() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (0usize..50, prop_oneof![Just("en"), Just("fr")]).prop_map(|(i, l)| record(i, l)),
            1 => "[a-z{}:,\"]{0,20}",
            1 => Just(String::new()),
            1 => Just(format!("{{\"user_id\":\"{}\"}}", "x".repeat(150))),
        ]
    }

    fn jsonl() -> impl Strategy<Value = Vec<u8>> {
        (proptest::collection::vec(item(), 0..40), any::<bool>()).prop_map(|(items, nl)| {
            let mut s = record(999, "en");
            for it in items {
                s.push('\n');
                s.push_str(&it);
            }
            if nl {
                s.push('\n');
            }
            s.into_bytes()
        })
    }

    fn array() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((item(), "[ \n]{0,2}"), 0..30),
            prop_oneof![Just("]"), Just("]\n"), Just(""), Just(",]"), Just("] x")],
        )
            .prop_map(|(items, end)| {
                let mut s = format!("\u{feff} [ {}", record(999, "en"));
                for (it, ws) in items {
                    s.push(',');
                    s.push_str(&ws);
                    s.push_str(&it);
                }
                s.push_str(end);
                s.into_bytes()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Cleaning the segments gives what cleaning the whole file gives:
        /// the same records, rejects (line numbers and offsets included)
        /// and counters.
        #[test]
        fn segments_clean_like_the_whole_file(
            input in prop_oneof![jsonl(), array()],
            piece_bytes in 1u64..400,
            gz in any::<bool>(),
        ) {
            let whole = clean(ActivityReader::new(&input[..], opts().reader).unwrap());
            let stored = if gz { gzip(&input) } else { input.clone() };
            if let Some(segs) = cut(&stored, piece_bytes) {
                prop_assert!(segs.iter().rev().skip(1).all(|(s, _)| !s.last));
                prop_assert!(segs.last().is_some_and(|(s, _)| s.last));
                let joined: Vec<u8> = segs.iter().flat_map(|(_, b)| b.clone()).collect();
                prop_assert_eq!(&joined, &input);
                prop_assert_eq!(clean_segments(&segs), whole);
            }
        }

        /// A pre-pass resumed from any checkpoint cuts the same segments
        /// from there on.
        #[test]
        fn a_resumed_pre_pass_cuts_the_same_segments(
            input in prop_oneof![jsonl(), array()],
            piece_bytes in 1u64..200,
            at in any::<prop::sample::Index>(),
        ) {
            let mut all = Vec::new();
            let mut checkpoints = Vec::new();
            let r = cut_segments(&input[..], None, piece_bytes, opts().reader, || Ok(Vec::new()), |s, w, next| {
                all.push((s, w));
                checkpoints.extend(next);
                Ok(())
            }).unwrap();
            if let (Cutting::Cut(n), false) = (r, checkpoints.is_empty()) {
                let c = *at.get(&checkpoints);
                let mut rest = Vec::new();
                let resumed = cut_segments(&input[..], Some(c), piece_bytes, opts().reader, || Ok(Vec::new()), |s, w, _| {
                    rest.push((s, w));
                    Ok(())
                }).unwrap();
                prop_assert_eq!(resumed, Cutting::Cut(n));
                prop_assert_eq!(&rest[..], &all[c.index as usize..]);
            }
        }
    }

    #[test]
    fn a_file_that_fits_in_one_segment_or_is_no_log_is_not_cut() {
        let small = format!("{}\n{}\n", record(1, "en"), record(2, "en"));
        assert!(cut(small.as_bytes(), 10_000).is_none());
        let junk = "not a log\n".repeat(200);
        assert!(cut(junk.as_bytes(), 10).is_none());
        assert!(cut(b"", 1).is_none());
    }

    #[test]
    fn a_big_gzip_log_is_cut_near_the_piece_size() {
        let text: String = (0..2_000).map(|i| record(i, "en") + "\n").collect();
        let segs = cut(&gzip(text.as_bytes()), 10_000).unwrap_or_default();
        assert!(segs.len() >= 8, "{} segments", segs.len());
        for (s, bytes) in &segs[..segs.len() - 1] {
            assert!(
                bytes.len() >= 10_000 && bytes.len() < 10_200,
                "{}",
                bytes.len()
            );
            assert!(bytes.ends_with(b"\n"));
            assert!(!s.array);
        }
    }

    /// Counts what it delivers and, at each read, how far the bytes written
    /// to segments lag behind.
    struct Watched<'a> {
        inner: &'a [u8],
        delivered: u64,
        written: Rc<std::cell::Cell<u64>>,
        most_held: u64,
    }

    impl Read for Watched<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.delivered += n as u64;
            let held = self.delivered.saturating_sub(self.written.get());
            self.most_held = self.most_held.max(held);
            Ok(n)
        }
    }

    struct Counted(Rc<std::cell::Cell<u64>>);

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.set(self.0.get() + buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn memory_stays_bounded_while_a_huge_line_is_read() {
        let huge = 24 * 1024 * 1024;
        let mut input = record(1, "en").into_bytes();
        input.push(b'\n');
        input.extend(std::iter::repeat_n(b'x', huge));
        input.push(b'\n');
        input.extend(record(2, "en").into_bytes());
        let written = Rc::new(std::cell::Cell::new(0));
        let mut watched = Watched {
            inner: &input,
            delivered: 0,
            written: written.clone(),
            most_held: 0,
        };
        let r = cut_segments(
            &mut watched,
            None,
            1 << 30,
            ReaderOptions::default(),
            || Ok(Counted(written.clone())),
            |_, _, _| Ok(()),
        );
        assert!(matches!(r, Ok(Cutting::Whole(Some(_)))));
        assert_eq!(written.get(), input.len() as u64);
        let bound = (FLUSH_BYTES + 2 * READ_AHEAD + SPLIT_PROBE_BYTES as usize) as u64;
        assert!(
            watched.most_held <= bound,
            "held {} bytes",
            watched.most_held
        );
    }

    #[test]
    fn a_checkpoint_past_the_end_of_a_changed_file_is_refused() {
        let c = Checkpoint {
            index: 3,
            offset: 1_000,
            line: 9,
            array: false,
        };
        let r = cut_segments(
            &b"{}\n"[..],
            Some(c),
            10,
            opts().reader,
            || Ok(Vec::new()),
            |_, _, _| Ok(()),
        );
        assert!(matches!(
            r,
            Err(SegmentError::Shrunk {
                len: 3,
                offset: 1_000
            })
        ));
    }
}
