//! Streaming activity input: gzip or plain, JSON Lines or one JSON array, in
//! bounded memory whatever the file size, and byte-range pieces of plain
//! JSON Lines files for parallel cleaning.
//!
//! - **Compression** is detected by the gzip magic bytes (`1f 8b`), not by the
//!   file name; concatenated gzip members are read as one stream.
//! - **Format**: the first non-whitespace byte (after an optional UTF-8 BOM)
//!   being `[` means one JSON array; anything else is JSON Lines.
//! - **JSON Lines** are read line by line: a line that is whole in the read
//!   buffer is handed out in place (no copy), otherwise it is assembled in one
//!   reusable buffer. A line longer than `max_line_bytes` is reported as
//!   `line_too_long` and skipped: only its first `max_line_bytes` bytes are
//!   ever held. Blank lines are skipped but still counted in line numbers.
//! - **JSON arrays** are cut into top-level elements by a small scanner that
//!   tracks strings, escapes and nesting depth; each element is then parsed
//!   like a line. The element's 1-based index is its "line" number. Structural
//!   faults (empty element, trailing comma, missing `]`, data after `]`) are
//!   reported as `invalid_json` items, never as a failure of the file.
//! - **Offsets** are byte offsets of an item's first byte in the (decompressed)
//!   input and are always absolute.
//! - **Byte ranges** ([`ActivityReader::for_range`]): reading `[start, end)`
//!   yields exactly the lines whose first byte lies in the range. A line that
//!   straddles `end` is read to its end; a piece with `start > 0` skips the
//!   partial line it starts in. The pieces of [`split_ranges`] therefore cover
//!   every line exactly once. Line numbers inside a piece count from the
//!   piece's first line, so `line` is absolute only when `start == 0`. Gzip and
//!   array inputs cannot be split by byte ranges (see [`is_splittable`]): a
//!   streaming pre-pass cuts their decompressed stream at
//!   [`ActivityReader::cut_point`]s into segments, each read with
//!   [`ActivityReader::for_segment`] with absolute line numbers and offsets.

use std::io::{self, BufRead, BufReader, Chain, Cursor, Read, Seek, SeekFrom};
use std::ops::Range;

use flate2::read::MultiGzDecoder;

use super::read_ahead::ReadAhead;

use engage_model::jobs::SegmentStart;

use super::parse::{Parsed, RecordError, parse_record};
use super::stats::Reject;

/// Default longest accepted line or array element: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// The reader's buffer: the most it reads past the item it returns.
pub(crate) const READ_BUFFER: usize = 256 * 1024;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The layout of the (decompressed) input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON value per line.
    JsonLines,
    /// One JSON array of values.
    JsonArray,
}

/// Reader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Longest line (or array element) accepted, in bytes, without its newline.
    pub max_line_bytes: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Why the input could not be read further (a data problem in one item is
/// never a `ReadError`; it is a reject).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The underlying reader failed, or the gzip stream is corrupt or truncated.
    #[error("reading activity input: {0}")]
    Io(#[from] io::Error),
    /// A byte range whose start lies after its end.
    #[error("invalid byte range {start}..{end}")]
    BadRange {
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
    },
}

/// One unparsed item: a line or an array element, with where it is.
#[derive(Debug)]
pub struct RawItem<'a> {
    /// 1-based line number (or element index); see the module docs for pieces.
    pub line: u64,
    /// Absolute byte offset of the item's first byte.
    pub offset: u64,
    /// The item's bytes (only the first `max_line_bytes` of a too-long item).
    pub bytes: &'a [u8],
    /// A fault found while reading (too long, array structure), if any.
    pub error: Option<RecordError>,
}

impl RawItem<'_> {
    /// The reject for this item with `error`.
    pub fn reject(&self, error: &RecordError) -> Reject {
        Reject::new(self.line, self.offset, error, self.bytes)
    }
}

/// Where an item is and any fault found while reading it; its bytes are in
/// the reader's buffer.
struct Meta {
    line: u64,
    offset: u64,
    error: Option<RecordError>,
    /// `Some(n)`: the item is the first `n` bytes of the source's buffer
    /// (not copied); `None`: it is in `buf`.
    in_place: Option<usize>,
}

/// A parsed item from the [`ActivityReader`] iterator.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// 1-based line number (or element index).
    pub line: u64,
    /// Absolute byte offset of the item.
    pub offset: u64,
    /// The record or drop, or the reject.
    pub outcome: Result<Parsed, Reject>,
}

type Inner<R> = Chain<Cursor<Vec<u8>>, R>;

/// The byte source: plain or gunzipped, always buffered. The decoder's
/// state (zlib-rs) is boxed: it is several times the size of a plain reader.
enum Source<R: Read> {
    Plain(BufReader<Inner<R>>),
    Gzip(Box<BufReader<MultiGzDecoder<Inner<R>>>>),
    /// Gunzipped on a thread of its own ([`ActivityReader::new_threaded`]).
    Ahead(ReadAhead),
}

impl<R: Read> Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Source::Plain(b) => fill_retrying(b),
            Source::Gzip(b) => fill_retrying(b),
            Source::Ahead(b) => b.fill_buf(),
        }
    }

    /// The buffered bytes, without reading.
    fn buffer(&self) -> &[u8] {
        match self {
            Source::Plain(b) => b.buffer(),
            Source::Gzip(b) => b.buffer(),
            Source::Ahead(b) => b.buffered(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Source::Plain(b) => b.consume(n),
            Source::Gzip(b) => b.consume(n),
            Source::Ahead(b) => b.consume(n),
        }
    }
}

/// Whether a line holds only whitespace (checks the first byte first: most
/// lines are not blank).
fn is_blank(line: &[u8]) -> bool {
    line.first().is_none_or(u8::is_ascii_whitespace) && line.iter().all(u8::is_ascii_whitespace)
}

/// `fill_buf`, retried on `Interrupted`. The second call returns the data
/// the first one buffered (a borrow-checker workaround); only at the end of
/// the input does it ask the reader again, which again reports the end.
fn fill_retrying<B: BufRead>(b: &mut B) -> io::Result<&[u8]> {
    loop {
        match b.fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => break,
        }
    }
    b.fill_buf()
}

/// Where the array scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Just after `[`.
    First,
    /// Just after a `,`.
    AfterComma,
    /// Just after an element.
    AfterElement,
    /// After the closing `]`.
    Closed,
}

impl<R: Read + Send + 'static> ActivityReader<R> {
    /// As [`Self::new`], but a gzip input is inflated on a thread of its own
    /// ([`ReadAhead`]), so decompression overlaps with the caller's parsing
    /// instead of taking turns with it on one core. Items, offsets, line
    /// numbers and errors are the same as with [`Self::new`].
    pub fn new_threaded(r: R, opts: ReaderOptions) -> Result<Self, ReadError> {
        Self::open(r, opts, |d| {
            Ok(Source::Ahead(ReadAhead::spawn(d, "gunzip")?))
        })
    }
}

/// Streams the items of one activity input (or one byte range of it).
///
/// Use [`ActivityReader::next_raw`] to get unparsed items without allocating
/// (what the cleaner does), or iterate to get parsed [`Entry`]s. After a
/// [`ReadError`] the reader yields nothing more.
pub struct ActivityReader<R: Read> {
    src: Source<R>,
    format: InputFormat,
    gzip: bool,
    max: usize,
    /// Absolute offset of the next unread byte.
    pos: u64,
    /// Range end: items starting at or after it are not read.
    end: Option<u64>,
    /// Lines (or elements) passed so far.
    line: u64,
    buf: Vec<u8>,
    /// Bytes of the source buffer to consume before reading on: the line
    /// last returned in place, with its newline.
    pending: usize,
    array: ArrayState,
    done: bool,
    /// Whether the first item read is the first item of the file (a whole
    /// input, or a range starting at 0).
    starts_file: bool,
    /// A segment that is not the file's last: its end is not the file's.
    more_follows: bool,
    /// Whether the item last returned was an array element that was read
    /// to its end (not a structural fault found by looking ahead).
    after_element: bool,
}

impl<R: Read> ActivityReader<R> {
    /// Reads a whole input, detecting gzip and the format.
    pub fn new(r: R, opts: ReaderOptions) -> Result<Self, ReadError> {
        Self::open(r, opts, |d| {
            Ok(Source::Gzip(Box::new(BufReader::with_capacity(
                READ_BUFFER,
                d,
            ))))
        })
    }

    /// [`Self::new`] with the gzip source made by `gzip`.
    fn open(
        mut r: R,
        opts: ReaderOptions,
        gzip_source: impl FnOnce(MultiGzDecoder<Inner<R>>) -> io::Result<Source<R>>,
    ) -> Result<Self, ReadError> {
        // The first bytes decide gzip (and, for plain input, a BOM); they are
        // read with `read_to_end` so a reader returning short reads still works.
        let mut head = Vec::with_capacity(BOM.len());
        (&mut r).take(BOM.len() as u64).read_to_end(&mut head)?;
        let gzip = head.starts_with(&GZIP_MAGIC);
        let mut skipped = 0;
        if !gzip && head == BOM {
            head.clear();
            skipped = BOM.len() as u64;
        }
        let inner = Cursor::new(head).chain(r);
        let src = if gzip {
            gzip_source(MultiGzDecoder::new(inner))?
        } else {
            Source::Plain(BufReader::with_capacity(READ_BUFFER, inner))
        };
        let mut me = Self::with_source(src, gzip, opts);
        me.pos = skipped;
        if gzip {
            me.skip_bom()?;
        }
        me.detect_format()?;
        Ok(me)
    }

    fn with_source(src: Source<R>, gzip: bool, opts: ReaderOptions) -> Self {
        Self {
            src,
            format: InputFormat::JsonLines,
            gzip,
            max: opts.max_line_bytes,
            pos: 0,
            end: None,
            line: 0,
            buf: Vec::new(),
            pending: 0,
            array: ArrayState::First,
            done: false,
            starts_file: true,
            more_follows: false,
            after_element: false,
        }
    }

    /// The detected layout.
    pub fn format(&self) -> InputFormat {
        self.format
    }

    /// Whether the input was gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// Whether this reader starts at the head of the file (so its first
    /// items tell whether the file is an activity log at all).
    pub fn starts_file(&self) -> bool {
        self.starts_file
    }

    /// Whether the input goes on past this reader's byte range. Meaningful
    /// once [`Self::next_raw`] has returned `None`: a range piece that stops
    /// at its end (not at the end of the file) has not seen the whole file.
    pub fn stopped_at_range_end(&mut self) -> bool {
        self.more_follows
            || self.end.is_some()
                && self.pending == 0
                && self.src.fill_buf().is_ok_and(|b| !b.is_empty())
    }

    /// Where a segment cut right after the item last returned would start,
    /// as (offset, lines so far), if the reader can resume there from those
    /// alone (see [`ActivityReader::for_segment`]): after any line of JSON
    /// Lines, after an element of an array (before the `,` or `]` that
    /// follows it). `None` before the first item, after an array's
    /// structural fault (found by looking past the bytes it stands for), in
    /// its closing data, and after the end.
    pub fn cut_point(&self) -> Option<(u64, u64)> {
        let resumable = match self.format {
            InputFormat::JsonLines => self.line > 0,
            InputFormat::JsonArray => self.after_element,
        };
        (resumable && !self.done).then_some((self.pos, self.line))
    }

    /// The absolute offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn skip_bom(&mut self) -> Result<(), ReadError> {
        if self.src.fill_buf()?.starts_with(BOM) {
            self.src.consume(BOM.len());
            self.pos += BOM.len() as u64;
        }
        Ok(())
    }

    /// Looks at the first non-whitespace byte; consumes the whitespace before
    /// it (counting its newlines as blank lines of JSON Lines) and, for an
    /// array, the `[`.
    fn detect_format(&mut self) -> Result<(), ReadError> {
        // Blank lines before the first item count as lines of JSON Lines
        // only: an array's "line" is its element index. Counted apart until
        // the format is known, so the count does not depend on where the
        // reads happened to end.
        let mut blank_lines = 0u64;
        loop {
            let avail = self.src.fill_buf()?;
            if avail.is_empty() {
                self.line += blank_lines;
                return Ok(());
            }
            let Some(i) = avail.iter().position(|b| !b.is_ascii_whitespace()) else {
                let n = avail.len();
                blank_lines += memchr::memchr_iter(b'\n', avail).count() as u64;
                self.src.consume(n);
                self.pos += n as u64;
                continue;
            };
            if avail[i] == b'[' {
                self.format = InputFormat::JsonArray;
                self.src.consume(i + 1);
                self.pos += (i + 1) as u64;
                return Ok(());
            }
            // JSON Lines: the first item starts at its first byte. Leading
            // whitespace is consumed whole (not just up to the last newline):
            // a read that ended inside it already consumed part of it above,
            // so only this makes the first item's bytes and offset the same
            // whatever the read sizes.
            self.line += blank_lines + memchr::memchr_iter(b'\n', &avail[..i]).count() as u64;
            self.src.consume(i);
            self.pos += i as u64;
            return Ok(());
        }
    }

    /// The next unparsed item, or `None` at the end of the input (or range).
    pub fn next_raw(&mut self) -> Result<Option<RawItem<'_>>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let r = match self.format {
            InputFormat::JsonLines => self.next_line(),
            InputFormat::JsonArray => self.next_element(),
        };
        match r {
            Ok(Some(m)) => Ok(Some(RawItem {
                line: m.line,
                offset: m.offset,
                bytes: match m.in_place {
                    Some(n) => &self.src.buffer()[..n],
                    None => &self.buf,
                },
                error: m.error,
            })),
            Ok(None) => Ok(None),
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    fn next_line(&mut self) -> Result<Option<Meta>, ReadError> {
        loop {
            if self.pending > 0 {
                self.src.consume(self.pending);
                self.pending = 0;
            }
            if self.end.is_some_and(|end| self.pos >= end) {
                self.done = true;
                return Ok(None);
            }
            let start = self.pos;
            // Fast path: the whole line is already buffered; hand it out in
            // place and consume it on the next call.
            let avail = self.src.fill_buf()?;
            if let Some(n) = memchr::memchr(b'\n', avail)
                && n <= self.max
            {
                let blank = is_blank(&avail[..n]);
                self.pos += (n + 1) as u64;
                self.line += 1;
                if blank {
                    self.src.consume(n + 1);
                    continue;
                }
                self.pending = n + 1;
                return Ok(Some(Meta {
                    line: self.line,
                    offset: start,
                    error: None,
                    in_place: Some(n),
                }));
            }
            self.buf.clear();
            let mut len = 0usize;
            let mut newline = false;
            loop {
                let avail = self.src.fill_buf()?;
                if avail.is_empty() {
                    break;
                }
                let (n, nl) = match memchr::memchr(b'\n', avail) {
                    Some(i) => (i, true),
                    None => (avail.len(), false),
                };
                let room = self.max.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&avail[..n.min(room)]);
                len = len.saturating_add(n);
                let used = n + usize::from(nl);
                self.src.consume(used);
                self.pos += used as u64;
                if nl {
                    newline = true;
                    break;
                }
            }
            if len == 0 && !newline {
                self.done = true;
                return Ok(None);
            }
            self.line += 1;
            if len > self.max {
                return Ok(Some(Meta {
                    line: self.line,
                    offset: start,
                    error: Some(RecordError::LineTooLong { limit: self.max }),
                    in_place: None,
                }));
            }
            if is_blank(&self.buf) {
                continue;
            }
            return Ok(Some(Meta {
                line: self.line,
                offset: start,
                error: None,
                in_place: None,
            }));
        }
    }

    /// Consumes whitespace; returns the next byte without consuming it.
    fn peek_non_ws(&mut self) -> Result<Option<u8>, ReadError> {
        loop {
            let avail = self.src.fill_buf()?;
            if avail.is_empty() {
                return Ok(None);
            }
            match avail.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) => {
                    let b = avail[i];
                    self.src.consume(i);
                    self.pos += i as u64;
                    return Ok(Some(b));
                }
                None => {
                    let n = avail.len();
                    self.src.consume(n);
                    self.pos += n as u64;
                }
            }
        }
    }

    fn structural(&mut self, detail: &str) -> Meta {
        self.line += 1;
        Meta {
            line: self.line,
            offset: self.pos,
            error: Some(RecordError::InvalidJson(detail.to_string())),
            in_place: None,
        }
    }

    fn next_element(&mut self) -> Result<Option<Meta>, ReadError> {
        self.after_element = false;
        loop {
            self.buf.clear();
            let next = self.peek_non_ws()?;
            match (self.array, next) {
                (ArrayState::Closed, None) => {
                    self.done = true;
                    return Ok(None);
                }
                // A segment ends after an element; the file goes on.
                (ArrayState::AfterElement, None) if self.more_follows => {
                    self.done = true;
                    return Ok(None);
                }
                (_, None) => {
                    self.done = true;
                    return Ok(Some(
                        self.structural("unterminated JSON array (no closing ])"),
                    ));
                }
                (ArrayState::Closed, Some(_)) => {
                    // Keep an excerpt of the trailing data, drop the rest.
                    let offset = self.pos;
                    loop {
                        let avail = self.src.fill_buf()?;
                        if avail.is_empty() {
                            break;
                        }
                        let n = avail.len();
                        let room = 1024usize.saturating_sub(self.buf.len());
                        self.buf.extend_from_slice(&avail[..n.min(room)]);
                        self.src.consume(n);
                        self.pos += n as u64;
                    }
                    self.done = true;
                    self.line += 1;
                    return Ok(Some(Meta {
                        line: self.line,
                        offset,
                        error: Some(RecordError::InvalidJson(
                            "data after the end of the JSON array".into(),
                        )),
                        in_place: None,
                    }));
                }
                (ArrayState::First | ArrayState::AfterElement, Some(b']')) => {
                    self.src.consume(1);
                    self.pos += 1;
                    self.array = ArrayState::Closed;
                }
                (ArrayState::AfterElement, Some(b',')) => {
                    self.src.consume(1);
                    self.pos += 1;
                    self.array = ArrayState::AfterComma;
                }
                (ArrayState::AfterComma, Some(b']')) => {
                    self.array = ArrayState::AfterElement;
                    return Ok(Some(self.structural("trailing comma in JSON array")));
                }
                (ArrayState::First | ArrayState::AfterComma, Some(b',')) => {
                    self.array = ArrayState::AfterElement;
                    return Ok(Some(self.structural("empty JSON array element")));
                }
                // An element always ends at a top-level `,` or `]` or at the
                // end of the input, so no other byte can follow one.
                (_, Some(_)) => {
                    self.array = ArrayState::AfterElement;
                    let start = self.pos;
                    let len = self.scan_element()?;
                    self.line += 1;
                    self.after_element = true;
                    let error =
                        (len > self.max).then_some(RecordError::LineTooLong { limit: self.max });
                    return Ok(Some(Meta {
                        line: self.line,
                        offset: start,
                        error,
                        in_place: None,
                    }));
                }
            }
        }
    }

    /// Reads one element up to (not including) the top-level `,` or `]` that
    /// ends it, or to the end of the input. Keeps at most `max` bytes in
    /// `buf`; returns the element's full length.
    fn scan_element(&mut self) -> Result<usize, ReadError> {
        let mut len = 0usize;
        let mut depth = 0u32;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let avail = self.src.fill_buf()?;
            if avail.is_empty() {
                return Ok(len);
            }
            let mut i = 0;
            let mut end = None;
            while i < avail.len() {
                if in_string {
                    if escaped {
                        escaped = false;
                        i += 1;
                        continue;
                    }
                    match memchr::memchr2(b'"', b'\\', &avail[i..]) {
                        None => i = avail.len(),
                        Some(j) => {
                            i += j;
                            if avail[i] == b'\\' {
                                escaped = true;
                            } else {
                                in_string = false;
                            }
                            i += 1;
                        }
                    }
                    continue;
                }
                match avail[i] {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth = depth.saturating_add(1),
                    b'}' => depth = depth.saturating_sub(1),
                    b']' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    b']' => depth -= 1,
                    b',' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let take = end.unwrap_or(avail.len());
            let room = self.max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&avail[..take.min(room)]);
            len = len.saturating_add(take);
            self.src.consume(take);
            self.pos += take as u64;
            if end.is_some() {
                return Ok(len);
            }
        }
    }
}

impl<R: Read + Seek> ActivityReader<R> {
    /// Reads the lines of a plain JSON Lines input whose first byte lies in
    /// `range` (see the module docs). No gzip or format detection: check
    /// [`is_splittable`] first. Line numbers count from the piece's first line.
    pub fn for_range(mut r: R, range: Range<u64>, opts: ReaderOptions) -> Result<Self, ReadError> {
        if range.start > range.end {
            return Err(ReadError::BadRange {
                start: range.start,
                end: range.end,
            });
        }
        let from = range.start.saturating_sub(1);
        r.seek(SeekFrom::Start(from))?;
        let inner = Cursor::new(Vec::new()).chain(r);
        let src = Source::Plain(BufReader::with_capacity(READ_BUFFER, inner));
        let mut me = Self::with_source(src, false, opts);
        me.pos = from;
        me.end = Some(range.end);
        me.starts_file = range.start == 0;
        if range.start == 0 {
            me.skip_bom()?;
        } else {
            // Skip through the newline that ends the line containing byte
            // `start - 1`: lands on the first line starting at or after `start`.
            loop {
                let avail = me.src.fill_buf()?;
                if avail.is_empty() {
                    break;
                }
                match memchr::memchr(b'\n', avail) {
                    Some(i) => {
                        me.src.consume(i + 1);
                        me.pos += (i + 1) as u64;
                        break;
                    }
                    None => {
                        let n = avail.len();
                        me.src.consume(n);
                        me.pos += n as u64;
                    }
                }
            }
        }
        Ok(me)
    }
}

impl<R: Read> ActivityReader<R> {
    /// Reads one segment of a file a pre-pass cut at [`Self::cut_point`]s:
    /// `r` holds the segment's bytes (decompressed), `at` where it starts.
    /// The head segment is read as a whole input (format detection, BOM);
    /// a later one resumes in the state the cut left: the next line, or
    /// just after an array element. Items keep the line numbers and offsets
    /// they have in the whole file, and a segment that is not the last ends
    /// quietly (its end is not the file's: no "unterminated array", and a
    /// head still on probation is judged by the file, see
    /// [`Self::stopped_at_range_end`]).
    pub fn for_segment(r: R, at: &SegmentStart, opts: ReaderOptions) -> Result<Self, ReadError> {
        let mut me = if at.index == 0 {
            Self::new(r, opts)?
        } else {
            let inner = Cursor::new(Vec::new()).chain(r);
            let src = Source::Plain(BufReader::with_capacity(READ_BUFFER, inner));
            let mut me = Self::with_source(src, false, opts);
            me.pos = at.offset;
            me.line = at.line;
            me.starts_file = false;
            if at.array {
                me.format = InputFormat::JsonArray;
                me.array = ArrayState::AfterElement;
            }
            me
        };
        me.more_follows = !at.last;
        Ok(me)
    }
}

impl<R: Read> Iterator for ActivityReader<R> {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.next_raw() {
            Ok(Some(item)) => item,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let outcome = match &item.error {
            Some(e) => Err(item.reject(e)),
            None => parse_record(item.bytes).map_err(|e| item.reject(&e)),
        };
        Some(Ok(Entry {
            line: item.line,
            offset: item.offset,
            outcome,
        }))
    }
}

/// How much of an input's head [`is_splittable`] looks at.
pub const SPLIT_PROBE_BYTES: u64 = 64 * 1024;

/// Whether an input can be cut into byte ranges: plain (not gzip) JSON Lines
/// whose head (the first [`SPLIT_PROBE_BYTES`] of `r`) is plausibly an
/// activity log, i.e. an item in it parses before
/// [`DEFAULT_HEAD_PROBATION`](super::clean::DEFAULT_HEAD_PROBATION) items are
/// rejected (see `CleanOptions::head_probation`). Anything else is read as one
/// piece from its head, where the cleaner judges whether it is a log at all,
/// so no range of a file that is not a log is ever read on its own, and the
/// verdict does not depend on how the file was split.
pub fn is_splittable<R: Read>(r: R) -> io::Result<bool> {
    let mut head = Vec::new();
    r.take(SPLIT_PROBE_BYTES).read_to_end(&mut head)?;
    if head.starts_with(&GZIP_MAGIC) {
        return Ok(false);
    }
    let body = head.strip_prefix(BOM).unwrap_or(&head);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(true),
        Some(b) if *b != b'{' => return Ok(false),
        Some(_) => {}
    }
    Ok(super::clean::head_is_plausible(&head))
}

/// Splits `[0, len)` into at most `pieces` contiguous ranges of near-equal
/// size (at least one range; empty input gives `[0..0]`).
pub fn split_ranges(len: u64, pieces: usize) -> Vec<Range<u64>> {
    let n = (pieces.max(1) as u64).min(len.max(1));
    (0..n)
        .map(|i| {
            let start = (u128::from(len) * u128::from(i) / u128::from(n)) as u64;
            let end = (u128::from(len) * u128::from(i + 1) / u128::from(n)) as u64;
            start..end
        })
        .collect()
}

/// Splits `[0, len)` into ranges of at most `max_piece_bytes` each.
pub fn split_ranges_by_size(len: u64, max_piece_bytes: u64) -> Vec<Range<u64>> {
    let pieces = len.div_ceil(max_piece_bytes.max(1)).max(1);
    split_ranges(len, usize::try_from(pieces).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::RejectReason;
    use proptest::prelude::*;
    use std::io::Write;

    /// A reader that returns one byte per `read`, to exercise every buffer boundary.
    struct OneByte<R>(R);
    impl<R: Read> Read for OneByte<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match buf.first_mut() {
                Some(b0) => {
                    let mut one = [0u8];
                    let n = self.0.read(&mut one)?;
                    *b0 = one[0];
                    Ok(n)
                }
                None => Ok(0),
            }
        }
    }

    fn opts(max: usize) -> ReaderOptions {
        ReaderOptions {
            max_line_bytes: max,
        }
    }

    /// (line, offset, bytes, error reason) of every raw item.
    type Raw = (u64, u64, Vec<u8>, Option<RejectReason>);

    fn raw_items<R: Read>(mut r: ActivityReader<R>) -> Vec<Raw> {
        let mut out = Vec::new();
        while let Some(i) = r.next_raw().expect("readable") {
            out.push((
                i.line,
                i.offset,
                i.bytes.to_vec(),
                i.error.as_ref().map(RecordError::reason),
            ));
        }
        out
    }

    fn read_all(input: &[u8], max: usize) -> Vec<Raw> {
        raw_items(ActivityReader::new(input, opts(max)).expect("opens"))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn records(input: &[u8]) -> Vec<Parsed> {
        ActivityReader::new(input, ReaderOptions::default())
            .unwrap()
            .map(|e| e.unwrap().outcome.unwrap())
            .collect()
    }

    const A: &str =
        r#"{"user_id":"a","lang":"en","timestamp":"2024-03-01T10:00:00Z","audio":"s3://b/1"}"#;
    const B: &str = r#"{"userId":7,"language":"en-IN","ets":1709287200000,"text":"[{,\"]}"}"#;
    const C: &str = r#"{"user_id":"c","lang":"fr","timestamp":"2024-03-01T10:00:00Z"}"#;

    #[test]
    fn json_lines_with_numbers_offsets_and_blank_lines() {
        let input = format!("{A}\n\n  \r\n{B}\r\n{C}");
        let items = read_all(input.as_bytes(), 4096);
        assert_eq!(items.len(), 3);
        assert_eq!((items[0].0, items[0].1), (1, 0));
        assert_eq!(items[1].0, 4);
        assert_eq!(items[1].1 as usize, A.len() + 1 + 1 + 4);
        assert_eq!(items[2].0, 5);
        assert_eq!(&items[2].2, C.as_bytes());
        assert_eq!(&input.as_bytes()[items[2].1 as usize..], C.as_bytes());
    }

    #[test]
    fn leading_blank_lines_and_bom_keep_numbers_and_offsets_right() {
        let input = format!("\u{feff}\n\n{A}\n");
        let items = read_all(input.as_bytes(), 4096);
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].0, 3);
        assert_eq!(items[0].1, 5);
        assert_eq!(&items[0].2, A.as_bytes());
    }

    #[test]
    fn array_and_json_lines_give_the_same_records() {
        let lines = format!("{A}\n{B}\n{C}\n");
        let compact = format!("[{A},{B},{C}]");
        let pretty = format!("\n  [\n  {A} ,\n\t{B}\n,{C}\n]\n\n");
        let want = records(lines.as_bytes());
        assert_eq!(want.len(), 3);
        assert!(matches!(want[0], Parsed::Record(_)));
        assert!(matches!(want[1], Parsed::Record(_)));
        assert_eq!(want[2], Parsed::NonEnglish);
        for input in [compact, pretty] {
            let r = ActivityReader::new(input.as_bytes(), ReaderOptions::default()).unwrap();
            assert_eq!(r.format(), InputFormat::JsonArray);
            assert_eq!(records(input.as_bytes()), want);
        }
        let items = read_all(format!("[{A},{B}]").as_bytes(), 4096);
        assert_eq!((items[0].0, items[0].1), (1, 1));
        assert_eq!((items[1].0, items[1].1 as usize), (2, A.len() + 2));
    }

    #[test]
    fn gzip_is_detected_by_magic_bytes_including_multi_member() {
        let plain = format!("{A}\n{B}\n");
        let mut gz = gzip(plain.as_bytes());
        let r = ActivityReader::new(gz.as_slice(), ReaderOptions::default()).unwrap();
        assert!(r.is_gzip());
        assert_eq!(records(&gz), records(plain.as_bytes()));
        // Two concatenated members read as one stream.
        gz.extend(gzip(format!("{C}\n").as_bytes()));
        assert_eq!(records(&gz).len(), 3);
        let arr = gzip(format!("[{A},{B}]").as_bytes());
        let r = ActivityReader::new(arr.as_slice(), ReaderOptions::default()).unwrap();
        assert_eq!(r.format(), InputFormat::JsonArray);
        assert_eq!(records(&arr), records(plain.as_bytes()));
    }

    #[test]
    fn corrupt_gzip_is_a_read_error_not_a_panic() {
        let mut gz = gzip(format!("{A}\n").repeat(1000).as_bytes());
        gz.truncate(gz.len() / 2);
        let results: Vec<_> = ActivityReader::new(gz.as_slice(), ReaderOptions::default())
            .unwrap()
            .collect();
        assert!(matches!(results.last(), Some(Err(ReadError::Io(_)))));
        // After the error the reader is finished.
        let mut r = ActivityReader::new(gz.as_slice(), ReaderOptions::default()).unwrap();
        while r.next_raw().is_ok_and(|i| i.is_some()) {}
        assert!(matches!(r.next_raw(), Ok(None)));
    }

    #[test]
    fn threaded_gunzip_reads_what_the_inline_one_reads() {
        // Several members, blank lines, a bad line, a line over the limit,
        // a BOM, and more than one hand-over chunk of output.
        let body: String = (0..40_000)
            .map(|i| match i % 97 {
                0 => "\n".to_string(),
                1 => "{not json\n".to_string(),
                2 => format!("{}\n", "x".repeat(300)),
                _ => format!("{A}\n"),
            })
            .collect();
        let mut gz = gzip(&[BOM, body.as_bytes()].concat());
        gz.extend(gzip(format!("{B}\n{C}").as_bytes()));
        let inline = raw_items(ActivityReader::new(gz.as_slice(), opts(256)).unwrap());
        let threaded = ActivityReader::new_threaded(std::io::Cursor::new(gz.clone()), opts(256));
        assert_eq!(raw_items(threaded.unwrap()), inline);
        assert!(inline.len() > 39_000, "{}", inline.len());

        // A truncated stream fails the same way, after the same items.
        gz.truncate(gz.len() / 2);
        let mut r = ActivityReader::new_threaded(std::io::Cursor::new(gz), opts(256)).unwrap();
        let mut n = 0;
        let err = loop {
            match r.next_raw() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a truncated stream must fail"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ReadError::Io(_)), "{err}");
        assert!(n > 0);
        assert!(matches!(r.next_raw(), Ok(None)));
    }

    /// Produces `prefix`, then `len` bytes of `x`, then `suffix`, without
    /// ever holding the long part in memory.
    struct Huge {
        prefix: Vec<u8>,
        len: u64,
        suffix: Vec<u8>,
        pos: u64,
    }
    impl Read for Huge {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let p = self.prefix.len() as u64;
            let mut n = 0;
            while n < buf.len() {
                let at = self.pos;
                let b = if at < p {
                    self.prefix[at as usize]
                } else if at < p + self.len {
                    b'x'
                } else if at < p + self.len + self.suffix.len() as u64 {
                    self.suffix[(at - p - self.len) as usize]
                } else {
                    break;
                };
                buf[n] = b;
                n += 1;
                self.pos += 1;
            }
            Ok(n)
        }
    }

    #[test]
    fn too_long_line_is_skipped_without_buffering_it() {
        let huge = Huge {
            prefix: format!("{A}\n{{\"user_id\":\"").into_bytes(),
            len: 64 * 1024 * 1024,
            suffix: format!("\"}}\n{B}\n").into_bytes(),
            pos: 0,
        };
        let max = 4096;
        let mut r = ActivityReader::new(huge, opts(max)).unwrap();
        let first = r.next_raw().unwrap().unwrap();
        assert_eq!(first.error, None);
        let long = r.next_raw().unwrap().unwrap();
        assert_eq!(long.line, 2);
        assert_eq!(long.offset as usize, A.len() + 1);
        assert_eq!(long.error, Some(RecordError::LineTooLong { limit: max }));
        assert_eq!(long.bytes.len(), max);
        assert!(
            r.buf.capacity() <= 2 * max + READ_BUFFER,
            "{}",
            r.buf.capacity()
        );
        let last = r.next_raw().unwrap().unwrap();
        assert_eq!(last.line, 3);
        assert_eq!(last.bytes, B.as_bytes());
        assert!(r.next_raw().unwrap().is_none());
    }

    #[test]
    fn too_long_array_element_is_skipped_without_buffering_it() {
        let huge = Huge {
            prefix: format!("[{A},{{\"t\":\"").into_bytes(),
            len: 16 * 1024 * 1024,
            suffix: format!("\"}},{B}]").into_bytes(),
            pos: 0,
        };
        let max = 1024;
        let mut r = ActivityReader::new(huge, opts(max)).unwrap();
        assert_eq!(r.next_raw().unwrap().unwrap().error, None);
        let long = r.next_raw().unwrap().unwrap();
        assert_eq!(long.error, Some(RecordError::LineTooLong { limit: max }));
        assert!(r.buf.capacity() <= 2 * max + READ_BUFFER);
        let last = r.next_raw().unwrap().unwrap();
        assert_eq!((last.line, last.bytes), (3, B.as_bytes()));
        assert!(r.next_raw().unwrap().is_none());
    }

    #[test]
    fn array_structure_faults_are_invalid_json_items() {
        use RejectReason::InvalidJson as J;
        let reasons = |s: &str| -> Vec<Option<RejectReason>> {
            read_all(s.as_bytes(), 4096)
                .into_iter()
                .map(|i| i.3)
                .collect()
        };
        assert_eq!(reasons("[]"), vec![]);
        assert_eq!(reasons("  [ \n ]  \n"), vec![]);
        assert_eq!(reasons(&format!("[{A},]")), vec![None, Some(J)]);
        assert_eq!(reasons(&format!("[,{A}]")), vec![Some(J), None]);
        assert_eq!(reasons(&format!("[{A},,{A}]")), vec![None, Some(J), None]);
        assert_eq!(reasons(&format!("[{A}")), vec![None, Some(J)]);
        assert_eq!(reasons(&format!("[{A}] junk")), vec![None, Some(J)]);
        // A missing comma makes one element that is not valid JSON.
        let glued = format!("[{A} {A}]");
        assert_eq!(reasons(&glued), vec![None]);
        let parsed: Vec<_> = ActivityReader::new(glued.as_bytes(), ReaderOptions::default())
            .unwrap()
            .map(|e| e.unwrap().outcome.map_err(|r| r.reason))
            .collect();
        assert_eq!(parsed, vec![Err(J)]);
        assert_eq!(reasons("["), vec![Some(J)]);
        // Non-object elements are items too; they fail later, at parsing.
        assert_eq!(reasons("[1, \"x\", [1,[2]], null]").len(), 4);
    }

    #[test]
    fn invalid_utf8_and_invalid_json_lines_are_items() {
        let input = b"{\"a\":\"\xff\"}\n{nope\n";
        let kinds: Vec<_> = ActivityReader::new(&input[..], ReaderOptions::default())
            .unwrap()
            .map(|e| e.unwrap().outcome.unwrap_err().reason)
            .collect();
        assert_eq!(
            kinds,
            vec![RejectReason::InvalidUtf8, RejectReason::InvalidJson]
        );
    }

    #[test]
    fn blank_lines_before_an_array_are_not_lines_however_the_reads_fall() {
        let input = b"\r\n\r\n[";
        let whole = raw_items(ActivityReader::new(&input[..], opts(64)).unwrap());
        let bytewise = raw_items(ActivityReader::new(OneByte(&input[..]), opts(64)).unwrap());
        assert_eq!(whole, bytewise);
        // The unterminated array's fault is its first "element".
        assert_eq!(whole.first().map(|r| r.0), Some(1));
    }

    #[test]
    fn empty_input_has_no_items() {
        assert!(read_all(b"", 10).is_empty());
        assert!(read_all(b"\n\n \n", 10).is_empty());
        assert!(read_all(&gzip(b""), 10).is_empty());
    }

    #[test]
    fn splittable_only_for_plain_json_lines() {
        assert!(is_splittable(format!("{A}\n").as_bytes()).unwrap());
        assert!(is_splittable(&b""[..]).unwrap());
        assert!(!is_splittable(format!("\u{feff} \n [{A}]").as_bytes()).unwrap());
        assert!(!is_splittable(gzip(b"{}").as_slice()).unwrap());
    }

    #[test]
    fn ranges_cover_the_input_contiguously() {
        assert_eq!(split_ranges(0, 4), vec![0..0]);
        assert_eq!(split_ranges(3, 10), vec![0..1, 1..2, 2..3]);
        assert_eq!(split_ranges(10, 3), vec![0..3, 3..6, 6..10]);
        assert_eq!(split_ranges(10, 0), vec![0..10]);
        assert_eq!(split_ranges_by_size(100, 30).len(), 4);
        assert_eq!(split_ranges_by_size(0, 30), vec![0..0]);
    }

    #[test]
    fn reversed_range_is_an_error() {
        let reversed = Range { start: 2, end: 1 };
        let r = ActivityReader::for_range(Cursor::new(b"{}\n".to_vec()), reversed, opts(10));
        assert!(matches!(r, Err(ReadError::BadRange { start: 2, end: 1 })));
    }

    #[test]
    fn range_starting_exactly_at_a_line_start_takes_that_line() {
        let input = format!("{A}\n{B}\n{C}\n");
        let cut = (A.len() + 1) as u64;
        let second = raw_items(
            ActivityReader::for_range(Cursor::new(input.clone()), cut..cut + 1, opts(4096))
                .unwrap(),
        );
        assert_eq!(second.len(), 1);
        assert_eq!((second[0].0, second[0].1), (1, cut));
        assert_eq!(&second[0].2, B.as_bytes());
        let first =
            raw_items(ActivityReader::for_range(Cursor::new(input), 0..cut, opts(4096)).unwrap());
        assert_eq!(first.len(), 1);
    }

    /// A line for the JSONL generators: records, junk and blanks.
    fn line_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => ("[a-c]{1,3}", 0i64..10_000, "(en|fr|en-GB)").prop_map(|(u, t, l)| {
                format!(r#"{{"user_id":"{u}","lang":"{l}","timestamp":{t},"audio":"s3://b/{t}"}}"#)
            }),
            1 => "[ -~]{0,40}",
            1 => Just(String::new()),
            1 => "[ \t]{1,4}",
            1 => Just("x".repeat(70)),
        ]
    }

    fn jsonl_strategy() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((line_strategy(), any::<bool>()), 0..40),
            any::<bool>(),
        )
            .prop_map(|(lines, final_newline)| {
                let mut out = Vec::new();
                for (i, (l, crlf)) in lines.iter().enumerate() {
                    out.extend_from_slice(l.as_bytes());
                    if i + 1 < lines.len() || final_newline {
                        out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                    }
                }
                out
            })
    }

    /// Whitespace without a newline before the first line is not part of
    /// it, however the reads fall.
    #[test]
    fn leading_whitespace_does_not_depend_on_reads() {
        for input in [&b" \r\n !"[..], b" \n  {\"a\":1}\n", b"\t{}\n"] {
            let big = read_all(input, 64);
            let small = raw_items(ActivityReader::new(OneByte(input), opts(64)).unwrap());
            assert_eq!(big, small, "{:?}", String::from_utf8_lossy(input));
        }
        let items = read_all(b" \n  {}\n", 64);
        assert_eq!((items[0].0, items[0].1), (2, 4), "line 2, at the `{{`");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any split into byte ranges reads exactly the items of the whole file.
        #[test]
        fn byte_ranges_partition_the_items(
            input in jsonl_strategy(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            pieces in 1usize..12,
        ) {
            let len = input.len() as u64;
            let whole = raw_items(ActivityReader::for_range(Cursor::new(&input), 0..len, opts(64)).unwrap());
            if is_splittable(input.as_slice()).unwrap() {
                prop_assert_eq!(&read_all(&input, 64), &whole);
            }
            // Random cut points, plus the regular split.
            let mut points: Vec<u64> = cuts.iter().map(|c| c.index(input.len() + 1) as u64).collect();
            points.extend([0, len]);
            points.sort_unstable();
            points.dedup();
            let random: Vec<Range<u64>> = points.windows(2).map(|w| w[0]..w[1]).collect();
            for ranges in [random, split_ranges(len, pieces)] {
                let mut got: Vec<(u64, Vec<u8>, Option<RejectReason>)> = Vec::new();
                for range in ranges {
                    let r = ActivityReader::for_range(Cursor::new(&input), range.clone(), opts(64)).unwrap();
                    for (line, offset, bytes, err) in raw_items(r) {
                        prop_assert!(offset >= range.start && offset < range.end.max(range.start + 1));
                        if range.start == 0 {
                            prop_assert!(whole.iter().any(|w| w.0 == line && w.1 == offset));
                        }
                        got.push((offset, bytes, err));
                    }
                }
                let want: Vec<_> = whole.iter().map(|w| (w.1, w.2.clone(), w.3)).collect();
                prop_assert_eq!(got, want);
            }
        }

        /// Reading one byte at a time gives the same items as big buffers.
        /// (Once failed on `" \r\n !"`: whitespace after the last blank line
        /// went with the first item or not depending on where a read ended.)
        #[test]
        fn buffer_boundaries_do_not_matter(input in jsonl_strategy(), as_array in any::<bool>()) {
            let input = if as_array {
                let text = String::from_utf8_lossy(&input).replace('\n', ",");
                format!("[{text}]").into_bytes()
            } else {
                input
            };
            let big = read_all(&input, 64);
            let small = raw_items(ActivityReader::new(OneByte(input.as_slice()), opts(64)).unwrap());
            prop_assert_eq!(big, small);
        }

        /// The array splitter cuts exactly where serde_json sees elements,
        /// whatever the strings contain.
        #[test]
        fn array_splitter_agrees_with_serde_json(
            values in proptest::collection::vec(
                proptest::collection::btree_map(
                    "[a-z\"\\\\\\[\\]{},:]{1,6}",
                    prop_oneof![
                        "[\"\\\\\\[\\]{},: \n\té\u{1F600}a-z]{0,12}".prop_map(serde_json::Value::from),
                        any::<i64>().prop_map(serde_json::Value::from),
                        Just(serde_json::json!([["]"], {"}": "[,"}])),
                        Just(serde_json::Value::Null),
                    ],
                    0..5,
                ),
                0..8,
            ),
            pretty in any::<bool>(),
            one_byte in any::<bool>(),
        ) {
            let values: Vec<serde_json::Value> = values
                .into_iter()
                .map(|m| serde_json::Value::Object(m.into_iter().collect()))
                .collect();
            let text = if pretty {
                serde_json::to_vec_pretty(&values).unwrap()
            } else {
                serde_json::to_vec(&values).unwrap()
            };
            let items = if one_byte {
                raw_items(ActivityReader::new(OneByte(text.as_slice()), opts(1 << 20)).unwrap())
            } else {
                read_all(&text, 1 << 20)
            };
            prop_assert_eq!(items.len(), values.len());
            for (i, (item, want)) in items.iter().zip(&values).enumerate() {
                prop_assert_eq!(item.0, i as u64 + 1);
                prop_assert_eq!(item.3, None);
                let got: serde_json::Value = serde_json::from_slice(&item.2).unwrap();
                prop_assert_eq!(&got, want);
                prop_assert_eq!(text.get(item.1 as usize), Some(&b'{'));
            }
        }

        /// Arbitrary bytes never panic, in any mode.
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300), max in 1usize..50) {
            for prefix in [&b""[..], b"["] {
                let mut data = prefix.to_vec();
                data.extend_from_slice(&input);
                for e in ActivityReader::new(data.as_slice(), opts(max)).unwrap() {
                    let _ = e;
                }
            }
        }
    }
}
