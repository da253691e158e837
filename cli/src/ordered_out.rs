//! One output file written by several pieces at once, in piece order:
//! `cleaned.jsonl` of `engage run --stop-after clean`.
//!
//! The piece at the head of the order (every earlier piece finished) writes
//! straight into the file; a piece that runs ahead of it writes into a spool
//! file of its own, which is copied in when the piece before it finishes, and
//! from then on it too writes straight into the file. With two threads about
//! half the output takes the detour instead of all of it, and the file is the
//! same as concatenating the pieces' outputs in order, whatever the timing.
//!
//! A piece's output ends with its sink's [`Write::flush`]: the partition
//! writer flushes each sink once, when the piece is done. Writing after that
//! is an error, as is finishing the file before every piece has flushed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Bytes a piece gathers before handing them over.
const CHUNK: usize = 1 << 20;

/// The shared file and who may write into it.
pub(crate) struct OrderedFile {
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    /// The first piece that has not finished: it writes into `file`.
    head: usize,
    /// Finished pieces after the head.
    done: BTreeSet<usize>,
    /// Spools of pieces after the head.
    spools: BTreeMap<usize, (File, PathBuf)>,
    /// Where spools are created.
    dir: PathBuf,
}

impl OrderedFile {
    /// Creates `path`; spools go to `dir`.
    pub(crate) fn create(path: &std::path::Path, dir: PathBuf) -> io::Result<Self> {
        Ok(Self {
            inner: Mutex::new(Inner {
                file: File::create(path)?,
                head: 0,
                done: BTreeSet::new(),
                spools: BTreeMap::new(),
                dir,
            }),
        })
    }

    /// The sink of piece `piece` (0, 1, 2, … with no gaps, each once).
    pub(crate) fn sink(&self, piece: usize) -> PieceSink<'_> {
        PieceSink {
            out: self,
            piece,
            buf: Vec::new(),
            finished: false,
        }
    }

    /// Checks that pieces `0..pieces` all finished and syncs nothing more:
    /// the file is complete.
    pub(crate) fn finish(self, pieces: usize) -> io::Result<()> {
        let inner = self.inner.into_inner().map_err(|_| poisoned())?;
        if inner.head != pieces || !inner.spools.is_empty() {
            return Err(io::Error::other(format!(
                "ordered output incomplete: {} of {pieces} pieces written",
                inner.head
            )));
        }
        Ok(())
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| poisoned())
    }
}

fn poisoned() -> io::Error {
    io::Error::other("a thread failed while writing the ordered output")
}

impl Inner {
    /// Appends `bytes` of `piece`: to the file if it is the head, else to
    /// its spool.
    fn push(&mut self, piece: usize, bytes: &[u8]) -> io::Result<()> {
        if piece == self.head {
            return self.file.write_all(bytes);
        }
        let spool = match self.spools.entry(piece) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let path = self.dir.join(format!("ordered-{piece:06}.spool"));
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                e.insert((file, path))
            }
        };
        spool.0.write_all(bytes)
    }

    /// Records that `piece` wrote everything; moves the head past every
    /// finished piece, copying in the spool of each piece it reaches.
    fn finished(&mut self, piece: usize) -> io::Result<()> {
        if piece < self.head || !self.done.insert(piece) {
            return Err(io::Error::other(format!("piece {piece} finished twice")));
        }
        while self.done.remove(&self.head) {
            self.head += 1;
            if let Some((mut spool, path)) = self.spools.remove(&self.head) {
                spool.rewind()?;
                io::copy(&mut spool, &mut self.file)?;
                drop(spool);
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// One piece's way into an [`OrderedFile`].
pub(crate) struct PieceSink<'a> {
    out: &'a OrderedFile,
    piece: usize,
    buf: Vec<u8>,
    finished: bool,
}

impl PieceSink<'_> {
    fn hand_over(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.lock()?.push(self.piece, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Write for PieceSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other(format!(
                "piece {} wrote after its end",
                self.piece
            )));
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(CHUNK);
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(bytes.len())
    }

    /// Ends the piece: hands over the rest and lets the next piece write
    /// straight into the file. Later flushes do nothing.
    fn flush(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.hand_over()?;
        self.finished = true;
        self.buf = Vec::new();
        self.out.lock()?.finished(self.piece)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece_bytes(piece: usize, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b'a' + ((piece * 7 + i) % 26) as u8)
            .collect()
    }

    /// Pieces written in any interleaving and finished in any order give
    /// the pieces' bytes in piece order, and leave no spool behind.
    #[test]
    fn any_schedule_gives_the_pieces_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let lens = [3 * CHUNK + 5, 10, 0, CHUNK, 2 * CHUNK + 1, 7];
        // Finishing orders: in order, reversed, and interleaved.
        for order in [
            vec![0, 1, 2, 3, 4, 5],
            vec![5, 4, 3, 2, 1, 0],
            vec![1, 3, 0, 5, 2, 4],
        ] {
            let path = dir.path().join("out");
            let out = OrderedFile::create(&path, dir.path().to_path_buf()).unwrap();
            let mut sinks: Vec<_> = (0..lens.len()).map(|p| out.sink(p)).collect();
            // Every piece writes its bytes in small slices, round robin.
            let data: Vec<_> = lens
                .iter()
                .enumerate()
                .map(|(p, &l)| piece_bytes(p, l))
                .collect();
            let mut at = vec![0; lens.len()];
            while at.iter().zip(&lens).any(|(a, l)| a < l) {
                for p in 0..lens.len() {
                    let end = (at[p] + 100_003).min(lens[p]);
                    sinks[p].write_all(&data[p][at[p]..end]).unwrap();
                    at[p] = end;
                }
            }
            for &p in &order {
                sinks[p].flush().unwrap();
            }
            drop(sinks);
            out.finish(lens.len()).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data.concat(), "{order:?}");
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n != "out")
                .collect();
            assert!(left.is_empty(), "spools left: {left:?}");
        }
    }

    #[test]
    fn unfinished_pieces_and_late_writes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = OrderedFile::create(&dir.path().join("out"), dir.path().to_path_buf()).unwrap();
        let mut a = out.sink(0);
        let mut b = out.sink(1);
        b.write_all(b"b").unwrap();
        b.flush().unwrap();
        a.write_all(b"a").unwrap();
        a.flush().unwrap();
        assert!(a.write_all(b"late").is_err());
        drop((a, b));
        // Three pieces were expected, two finished.
        assert!(out.finish(3).is_err());
        assert_eq!(std::fs::read(dir.path().join("out")).unwrap(), b"ab");
    }
}
