//! The clean stage's pure domain logic: parsing, streaming, counting and
//! partitioning activity records. No network, broker or async runtime; input
//! and output are `std::io::Read`/`Write` supplied by the caller.
//!
//! - [`parse`]: one line (or array element) → record, drop or reject;
//!   `flat` is its hand-written fast path for flat objects.
//! - [`reader`]: streaming over gzip / JSON Lines / JSON arrays, byte ranges.
//! - [`read_ahead`]: gzip inflated on a thread of its own.
//! - [`stats`]: counters and the rejects-file line.
//! - [`partition`]: stable learner → partition hashing and partitioned output.
//! - [`compact`]: the binary spool frames of `engage run`'s streamed match.
//! - [`clean`]: a piece of input end to end, and the parallel fast path.
//! - [`segment`]: the pre-pass that cuts gzip and JSON-array files into
//!   segments several clean jobs can take.

mod flat;
pub mod parse;

pub use parse::{
    Parsed, ParsedView, RecordError, RecordView, is_english, parse_record, parse_record_with,
    parse_view_with,
};
pub mod clean;
pub mod compact;
pub mod partition;
pub mod read_ahead;
pub mod reader;
pub mod segment;
pub mod stats;

pub use clean::{
    CleanError, CleanOptions, Decision, PieceCleaner, PieceOutput, PieceSinks, clean_into,
    clean_parallel, clean_piece,
};
pub use partition::{PartitionError, PartitionWriter, SpoolFormat, partition_of};
pub use reader::{
    ActivityReader, Entry, InputFormat, RawItem, ReadError, ReaderOptions, is_splittable,
    split_ranges, split_ranges_by_size,
};
pub use segment::{Checkpoint, Cutting, SegmentError, cut_segments};
pub use stats::{CleanStats, Reject};
