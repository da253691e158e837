//! Decompression on a thread of its own: [`ReadAhead`] runs a reader (the
//! gzip decoder) on a background thread and hands its output over in
//! chunks, so inflating one part of a log overlaps with cleaning the part
//! before it instead of the two taking turns on one core.
//!
//! Memory is bounded: at most [`CHUNKS_IN_FLIGHT`] chunks of [`CHUNK`]
//! bytes wait in the queue, and chunks are handed back for reuse. When the
//! consumer is dropped early the thread stops at its next hand-over.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes per chunk handed over.
pub const CHUNK: usize = 1 << 20;

/// Chunks decoded ahead of the consumer, at most.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// What the background thread sends.
enum Msg {
    /// A chunk and how many of its bytes are data.
    Data(Vec<u8>, usize),
    /// The input ended cleanly.
    End,
    /// Reading failed; nothing follows.
    Failed(io::Error),
}

/// A [`BufRead`] over what a reader yields, read on a background thread.
pub struct ReadAhead {
    rx: Receiver<Msg>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
    len: usize,
    done: bool,
}

impl ReadAhead {
    /// Starts a thread (named `name`) reading `inner` to its end.
    pub fn spawn<R: Read + Send + 'static>(inner: R, name: &str) -> io::Result<Self> {
        let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
        // One slot more than can be in flight, so handing back never blocks.
        let (recycle, returned) = sync_channel(CHUNKS_IN_FLIGHT + 2);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || produce(inner, &tx, &returned))?;
        Ok(Self {
            rx,
            recycle,
            cur: Vec::new(),
            at: 0,
            len: 0,
            done: false,
        })
    }
}

/// The background loop: fill a chunk, send it, until the end, an error or
/// a consumer that has gone away.
fn produce<R: Read>(mut inner: R, tx: &SyncSender<Msg>, returned: &Receiver<Vec<u8>>) {
    loop {
        // A chunk handed back, or a new one.
        let mut buf = returned.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut n = 0;
        while n < CHUNK {
            match inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Hand over what was read before the failure first.
                    if n > 0 && tx.send(Msg::Data(buf, n)).is_err() {
                        return;
                    }
                    let _ = tx.send(Msg::Failed(e));
                    return;
                }
            }
        }
        if n == 0 {
            let _ = tx.send(Msg::End);
            return;
        }
        if tx.send(Msg::Data(buf, n)).is_err() {
            return;
        }
    }
}

impl ReadAhead {
    /// The bytes at hand, without waiting for more.
    pub fn buffered(&self) -> &[u8] {
        &self.cur[self.at..self.len]
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.at == self.len && !self.done {
            let used = std::mem::take(&mut self.cur);
            (self.at, self.len) = (0, 0);
            if used.capacity() > 0 {
                // The thread may be gone or the slots full: then it is dropped.
                let _ = self.recycle.try_send(used);
            }
            match self.rx.recv() {
                Ok(Msg::Data(buf, n)) => {
                    self.cur = buf;
                    self.at = 0;
                    self.len = n;
                }
                Ok(Msg::End) => self.done = true,
                Ok(Msg::Failed(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::other(
                        "the decompression thread stopped without finishing",
                    ));
                }
            }
        }
        Ok(&self.cur[self.at..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_over_everything_in_order() {
        let data: Vec<u8> = (0..3 * CHUNK + 12_345).map(|i| (i % 251) as u8).collect();
        let mut r = ReadAhead::spawn(io::Cursor::new(data.clone()), "test").unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        // The end stays the end.
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn an_error_arrives_after_the_data_before_it() {
        struct FailsAfter(usize);
        impl Read for FailsAfter {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt"));
                }
                let n = out.len().min(self.0).min(1000);
                out[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = ReadAhead::spawn(FailsAfter(5000), "test").unwrap();
        let mut got = Vec::new();
        let err = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(got.len(), 5000);
        // Nothing follows an error.
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }

    #[test]
    fn dropping_the_consumer_stops_the_thread() {
        /// Endless input that reports when it is dropped (with its thread).
        struct Endless(SyncSender<()>);
        impl Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                out.fill(b'y');
                Ok(out.len())
            }
        }
        impl Drop for Endless {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let (tx, rx) = sync_channel(1);
        let mut r = ReadAhead::spawn(Endless(tx), "test").unwrap();
        assert!(!r.fill_buf().unwrap().is_empty());
        drop(r);
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the thread stopped and dropped its input");
    }
}
