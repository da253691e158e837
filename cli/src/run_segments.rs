//! `engage run` on a log that cannot be cut into byte ranges (gzip, one JSON
//! array): one thread decompresses it and cuts the decompressed stream into
//! segments after a line or an array element — the fleet's pre-pass code,
//! [`cut_segments`] — while the other threads clean segments as they come.
//!
//! A gzip stream can only be inflated from its start, so inflating stays on
//! one thread; what no longer waits for it is the cleaning, which was
//! otherwise one more thread working through the whole file in order. Each
//! segment is cleaned by a reader resumed in the state the cut left
//! ([`ActivityReader::for_segment`]), so items keep their line numbers and
//! offsets; each is its own piece (its own duplicate window, like the byte
//! ranges of a plain log). Memory is bounded by the segment size: one
//! segment being filled, one waiting, one per cleaning thread.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, sync_channel};

use anyhow::Context;
use engage_clean::domain::{
    ActivityReader, CleanOptions, CleanStats, Cutting, PieceSinks, clean_into, cut_segments,
};
use engage_model::jobs::SegmentStart;
use engage_model::selection::SelectedLearners;

/// Default segment size: big enough that a piece's output files stay few,
/// small enough that the segments in memory (about four) stay far below
/// the run's other buffers' budget.
pub(crate) const DEFAULT_SEGMENT_BYTES: u64 = 8 << 20;

/// A cut segment: where it starts, and its (decompressed) bytes.
type Segment = (SegmentStart, Vec<u8>);

/// Cleans the file at `path` in segments of about `segment_bytes` on
/// `threads` threads (plus the cutting thread), each segment `i` into
/// `sinks(i)`. Returns each segment's counters in order, or `None` when the
/// file's head is not plausibly a log: nothing was written, clean it whole.
pub(crate) fn clean_segmented<W, J, S>(
    path: &Path,
    selection: &SelectedLearners,
    opts: &CleanOptions,
    segment_bytes: u64,
    threads: usize,
    sinks: S,
) -> anyhow::Result<Option<Vec<CleanStats>>>
where
    W: Write + Send,
    J: Write + Send,
    S: Fn(usize) -> io::Result<PieceSinks<W, J>> + Sync,
{
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let clean_one = |start: &SegmentStart, bytes: &[u8]| -> anyhow::Result<CleanStats> {
        let piece = start.index as usize;
        let PieceSinks {
            partitions,
            mut rejects,
        } = sinks(piece).with_context(|| format!("creating the outputs of segment {piece}"))?;
        let mut reader = ActivityReader::for_segment(bytes, start, opts.reader)?;
        Ok(clean_into(&mut reader, selection, opts, partitions, &mut rejects)?.0)
    };

    // One segment waits while the others are cleaned: the cutter blocks
    // when the cleaners fall behind.
    let (tx, rx) = sync_channel::<Segment>(1);
    // Taken (dropped) by the first cleaner that fails, which stops the cutter.
    let rx: Mutex<Option<Receiver<Segment>>> = Mutex::new(Some(rx));
    // Segment buffers are reused: a fresh multi-MiB buffer per segment cost
    // more in page faults (system time) than the cleaning it spread.
    let capacity = usize::try_from(segment_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 << 10);
    let pool: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let results: Mutex<Vec<(usize, anyhow::Result<CleanStats>)>> = Mutex::new(Vec::new());
    let next = || -> Option<Segment> {
        let guard = rx.lock().ok()?;
        guard.as_ref()?.recv().ok()
    };
    let cleaner = || {
        // A cleaner that panics stops the cutter too (it would otherwise
        // wait forever for one to take its next segment).
        let _stop = StopOnPanic(&rx);
        while let Some((start, mut bytes)) = next() {
            let r = clean_one(&start, &bytes);
            bytes.clear();
            if let Ok(mut free) = pool.lock() {
                free.push(bytes);
            }
            let failed = r.is_err();
            if let Ok(mut v) = results.lock() {
                v.push((start.index as usize, r));
            }
            if failed {
                if let Ok(mut guard) = rx.lock() {
                    guard.take();
                }
                break;
            }
        }
    };
    let (cut, panicked) = std::thread::scope(|s| {
        let cleaners: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(cleaner)).collect();
        let cut = cut_segments(
            io::BufReader::new(file),
            None,
            segment_bytes,
            opts.reader,
            || {
                let reused = pool.lock().ok().and_then(|mut free| free.pop());
                Ok(reused.unwrap_or_else(|| Vec::with_capacity(capacity)))
            },
            |start, bytes, _next| {
                tx.send((start, bytes))
                    .map_err(|_| io::Error::other("a segment failed to clean"))
            },
        );
        // No more segments: the cleaners finish what is queued and stop.
        drop(tx);
        let panicked = cleaners
            .into_iter()
            .map(|h| h.join().is_err())
            .fold(false, |a, b| a | b);
        (cut, panicked)
    });
    if panicked {
        anyhow::bail!("a clean thread panicked");
    }
    let mut results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a clean thread panicked"))?;
    results.sort_by_key(|(piece, _)| *piece);
    // A cleaner's error explains a cutter that stopped because of it.
    let mut stats = Vec::with_capacity(results.len());
    for (piece, r) in results {
        stats.push(r.with_context(|| format!("cleaning segment {piece} of {}", path.display()))?);
    }
    match cut.with_context(|| format!("reading {}", path.display()))? {
        Cutting::Whole(None) => Ok(None),
        // It fitted in one segment: clean it from memory as the only piece.
        Cutting::Whole(Some(bytes)) => {
            let whole = SegmentStart {
                index: 0,
                offset: 0,
                line: 0,
                array: false,
                last: true,
            };
            Ok(Some(vec![clean_one(&whole, &bytes)?]))
        }
        Cutting::Cut(n) => {
            anyhow::ensure!(
                stats.len() == n as usize,
                "{} of {n} segments of {} were cleaned",
                stats.len(),
                path.display()
            );
            Ok(Some(stats))
        }
    }
}

/// Drops the segment queue's receiver if its thread unwinds.
struct StopOnPanic<'a, T>(&'a Mutex<Option<Receiver<T>>>);

impl<T> Drop for StopOnPanic<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut guard = match self.0.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip log of `lines` English records, in a temporary directory.
    fn gzip_log(lines: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        for i in 0..lines {
            writeln!(
                gz,
                r#"{{"user_id":"u{}","language":"en","timestamp":{},"accuracy":50}}"#,
                i % 7,
                1_700_000_000_000u64 + i as u64
            )
            .unwrap();
        }
        gz.finish().unwrap();
        (dir, path)
    }

    fn clean(
        path: &Path,
        fail_at: Option<usize>,
    ) -> (anyhow::Result<Option<Vec<CleanStats>>>, Vec<Vec<u8>>) {
        let outs: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());
        struct Out<'a>(&'a Mutex<Vec<(usize, Vec<u8>)>>, usize, Vec<u8>);
        impl Write for Out<'_> {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.2.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                let bytes = std::mem::take(&mut self.2);
                self.0.lock().unwrap().push((self.1, bytes));
                Ok(())
            }
        }
        let r = clean_segmented(
            path,
            &SelectedLearners::All,
            &CleanOptions::default(),
            2048,
            2,
            |piece| {
                if fail_at.is_some_and(|f| piece >= f) {
                    return Err(io::Error::other("disk full"));
                }
                Ok(PieceSinks {
                    partitions: vec![Out(&outs, piece, Vec::new())],
                    rejects: io::sink(),
                })
            },
        );
        let mut outs = outs.into_inner().unwrap();
        outs.sort_by_key(|(p, _)| *p);
        (r, outs.into_iter().map(|(_, b)| b).collect())
    }

    /// Every line is cleaned once, in its segment's place, whatever thread
    /// took the segment.
    #[test]
    fn segments_cover_the_log_in_order() {
        let (_dir, path) = gzip_log(2_000);
        let (r, outs) = clean(&path, None);
        let stats = r.unwrap().unwrap();
        assert!(stats.len() > 10, "{} segments", stats.len());
        assert_eq!(stats.iter().map(|s| s.read).sum::<u64>(), 2_000);
        assert_eq!(stats.iter().map(|s| s.kept).sum::<u64>(), 2_000);
        let all = outs.concat();
        let timestamps: Vec<u64> = all
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["timestamp"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        let want: Vec<u64> = (0..2_000u64)
            .map(|i| (1_700_000_000_000 + i) * 1_000_000)
            .collect();
        assert_eq!(timestamps, want);
    }

    /// Segments that cannot be written (every one from the fourth on, so
    /// every cleaner fails) fail the run with the first one's reason and
    /// stop the cutter instead of leaving it waiting for a cleaner.
    #[test]
    fn a_failing_segment_stops_the_run_with_its_error() {
        let (_dir, path) = gzip_log(2_000);
        let (r, _) = clean(&path, Some(3));
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("segment 3") && e.contains("disk full"), "{e}");
    }
}
