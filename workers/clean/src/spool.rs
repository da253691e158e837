//! Cleaning one piece into local spool files (blocking; run it on a blocking
//! thread): one temp file per learner partition plus one of rejects, which
//! the clean stage then uploads. Memory stays bounded whatever the piece size.
//! A piece is a whole file, a byte range, or a segment a pre-pass cut
//! ([`PieceInput`]).

use std::io::{Read, Seek, SeekFrom, Write};

use engage_model::jobs::SegmentStart;
use engage_model::selection::SelectedLearners;
use tempfile::NamedTempFile;

use crate::domain::{ActivityReader, CleanOptions, CleanStats, PartitionWriter, clean_piece};

/// A cleaned piece on local disk.
#[derive(Debug)]
pub struct Spooled {
    /// Kept records of each partition (JSON Lines).
    pub partitions: Vec<NamedTempFile>,
    /// Records written to each partition.
    pub counts: Vec<u64>,
    /// Rejected lines (JSON Lines).
    pub rejects: NamedTempFile,
    /// The piece's counters.
    pub stats: CleanStats,
}

/// What the stream handed to [`clean_to_spool`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceInput {
    /// The whole activity file.
    Whole,
    /// The byte range `[start, end)` of a plain JSON Lines file; the stream
    /// starts at byte `from`, one before `start` (see
    /// [`ActivityReader::for_range`]).
    Range {
        /// Where the stream starts.
        from: u64,
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
    },
    /// A segment a pre-pass cut (the stream is the segment's bytes).
    Segment(SegmentStart),
}

/// Cleans `input` (see [`PieceInput`]) into `partitions` spool files.
pub fn clean_to_spool<R: Read>(
    input: R,
    how: PieceInput,
    partitions: u32,
    selection: &SelectedLearners,
    opts: &CleanOptions,
) -> anyhow::Result<Spooled> {
    let files = (0..partitions)
        .map(|_| NamedTempFile::new())
        .collect::<Result<Vec<_>, _>>()?;
    let mut rejects = std::io::BufWriter::new(NamedTempFile::new()?);
    let mut writer = PartitionWriter::new(files)?;
    let stats = match how {
        PieceInput::Range { from, start, end } => {
            let starts_at = StartsAt {
                inner: input,
                base: from,
            };
            let mut reader = ActivityReader::for_range(starts_at, start..end, opts.reader)?;
            clean_piece(&mut reader, selection, opts, &mut writer, &mut rejects)?
        }
        PieceInput::Whole => {
            let mut reader = ActivityReader::new(input, opts.reader)?;
            clean_piece(&mut reader, selection, opts, &mut writer, &mut rejects)?
        }
        PieceInput::Segment(at) => {
            let mut reader = ActivityReader::for_segment(input, &at, opts.reader)?;
            clean_piece(&mut reader, selection, opts, &mut writer, &mut rejects)?
        }
    };
    let (partitions, counts) = writer.finish()?;
    rejects.flush()?;
    Ok(Spooled {
        partitions,
        counts,
        rejects: rejects.into_inner().map_err(|e| e.into_error())?,
        stats,
    })
}

/// Presents a stream that starts at byte `base` of an object as seekable to
/// exactly that position (what `ActivityReader::for_range` asks for first).
struct StartsAt<R> {
    inner: R,
    base: u64,
}

impl<R: Read> Read for StartsAt<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R> Seek for StartsAt<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::Start(n) if n == self.base => Ok(n),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "stream seeks only to its start",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_read_from_a_stream_that_starts_mid_file_keeps_only_its_lines() {
        let line = |u: &str, t: u32| {
            format!(
                "{{\"user_id\":\"{u}\",\"timestamp\":\"2024-01-01T00:00:{t:02}Z\",\"language\":\"en\"}}\n"
            )
        };
        let file = format!("{}{}{}", line("a", 1), line("b", 2), line("c", 3));
        let start = line("a", 1).len() as u64;
        let end = start + line("b", 2).len() as u64;
        let from = start - 1;
        let tail = &file.as_bytes()[from as usize..];
        let out = clean_to_spool(
            tail,
            PieceInput::Range { from, start, end },
            2,
            &SelectedLearners::All,
            &CleanOptions::default(),
        );
        let out = match out {
            Ok(o) => o,
            Err(e) => panic!("clean failed: {e:#}"),
        };
        assert_eq!(out.stats.read, 1);
        assert_eq!(out.counts.iter().sum::<u64>(), out.stats.kept);
        assert_eq!(out.partitions.len(), 2);
    }

    #[test]
    fn a_stream_refuses_to_seek_anywhere_but_its_start() {
        let mut s = StartsAt {
            inner: &b""[..],
            base: 7,
        };
        assert_eq!(s.seek(SeekFrom::Start(7)).ok(), Some(7));
        assert!(s.seek(SeekFrom::Start(0)).is_err());
    }
}
