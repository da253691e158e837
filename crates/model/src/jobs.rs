//! The job bodies of each stage's queue (inside an [`Envelope`](crate::envelope::Envelope)),
//! and the store documents that record a job's result for later stages
//! ([`ItemState`], [`BatchPlan`], [`CleanDone`]).
//!
//! Producers in any language can start a batch by publishing a
//! [`CleanJob::Batch`] envelope to the `clean` routing key of exchange
//! `NS.jobs` (see the README's message schema).

use serde::{Deserialize, Serialize};

use crate::selection::Selection;

/// A batch as a producer describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Activity log URIs (`s3://…` or `file:///…`), JSON Lines or a JSON array, optionally `.gz`.
    pub activity: Vec<String>,
    /// Sessions CSV URI.
    pub sessions: String,
    /// Which learners to analyze (default: all).
    #[serde(default)]
    pub selection: Selection,
}

/// The clean queue: plan a batch, or clean one piece of an activity file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CleanJob {
    /// A new batch: resolve the selection, partition the sessions, split the
    /// activity files into pieces and emit one piece job each.
    Batch(BatchSpec),
    /// One piece: a whole file, a byte range of a plain JSON Lines file, the
    /// streaming pre-pass over a gzip or JSON-array file (`split`), or one
    /// segment that pre-pass cut (`segment`).
    Piece(CleanPiece),
}

/// One clean piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanPiece {
    /// Piece id, unique in the batch (`f{file}-r{range}`).
    pub piece: String,
    /// The activity file.
    pub activity: String,
    /// Byte range `[start, end)`, or the whole file.
    #[serde(default)]
    pub range: Option<(u64, u64)>,
    /// Number of learner partitions.
    pub partitions: u32,
    /// Whether a resolved selection exists at the batch's `selected.json`.
    #[serde(default)]
    pub selected: bool,
    /// A whole gzip or JSON-array file whose job is the streaming pre-pass:
    /// it cuts the decompressed stream into plain segments of about the
    /// piece size, stored under the batch, each cleaned by its own job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split: bool,
    /// Set on a segment the pre-pass cut: where it starts in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentStart>,
}

/// Where a segment of a cut (gzip or JSON-array) file starts, so that its
/// items keep the line numbers and offsets they have in the whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentStart {
    /// The segment's number in its file (0 is the head).
    pub index: u32,
    /// Offset of the segment's first byte in the decompressed file.
    pub offset: u64,
    /// Lines (or array elements) before the segment.
    pub line: u64,
    /// Whether the file is one JSON array (segments after the head start
    /// just after an element).
    pub array: bool,
    /// Whether this is the file's last segment.
    pub last: bool,
}

/// The match queue: one partition of one clean piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchJob {
    /// The clean piece.
    pub piece: String,
    /// The learner partition.
    pub partition: u32,
}

/// The download queue: one response with audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadJob {
    /// The response.
    pub response_id: String,
    /// Its learner (needed for the ledger's per-learner fan-in).
    pub user_id: String,
    /// The audio link as written in the log.
    pub audio_url: String,
}

/// The analyze queue: one downloaded response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeJob {
    /// The response.
    pub response_id: String,
    /// Its learner.
    pub user_id: String,
    /// SHA-256 of the audio (its store key).
    pub content_hash: String,
    /// Format hint for the decoder (`wav`, `mp3`, …).
    #[serde(default)]
    pub format: Option<String>,
}

/// The aggregate queue: one learner's rows, or the batch report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AggregateJob {
    /// Compute one learner's per-phase rows.
    Learner {
        /// The learner.
        user_id: String,
    },
    /// Write the batch's outputs.
    Report,
}

/// The final state of one item: a line of the item log
/// (`batches/B/items/WRITER-SEQ.jsonl`), copied into the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemState {
    /// The response.
    pub response_id: String,
    /// Its learner.
    pub user_id: String,
    /// The outcome.
    pub outcome: crate::AnalysisOutcome,
    /// What producing it cost (paid analyzers).
    #[serde(default)]
    pub cost: ItemCost,
}

/// The cost side of one item's analysis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCost {
    /// A paid model call was made for it (in this batch).
    #[serde(default)]
    pub called: bool,
    /// Answered from the durable result cache.
    #[serde(default)]
    pub cache_hit: bool,
    /// Judged by the free pre-filter, never sent.
    #[serde(default)]
    pub prefiltered: bool,
    /// Prompt tokens of the call.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Output tokens of the call.
    #[serde(default)]
    pub output_tokens: u64,
}

/// The plan of a batch, stored at `batches/B/batch.json` by the plan step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    /// What the producer asked for.
    pub spec: BatchSpec,
    /// The clean pieces.
    pub pieces: Vec<CleanPiece>,
    /// Learner partitions per piece.
    pub partitions: u32,
    /// When the plan was made (RFC 3339).
    pub planned_at: String,
}

/// Completion marker of a clean piece, written last by the clean stage at
/// `batches/B/clean/PIECE/done.json`; the aggregate report reads its counters
/// and the ledger rebuild its partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanDone {
    /// The piece.
    pub piece: String,
    /// Partitions that received records (one match job each).
    pub partitions: Vec<u32>,
    /// The piece's counters.
    pub stats: crate::summary::ActivityCounts,
    /// A pre-pass piece (`split`): how many segments it cut (each a piece
    /// of its own, `PIECE-sNNNNNN`); 0 when it cleaned the file itself.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub segments: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Stable job ids: the same work always gets the same id (the idempotency key).
pub mod ids {
    /// Plan job of a batch.
    pub fn plan(batch: &str) -> String {
        format!("plan:{batch}")
    }
    /// Clean job of a piece.
    pub fn clean(batch: &str, piece: &str) -> String {
        format!("clean:{batch}:{piece}")
    }
    /// Piece id of segment `index` of pre-pass piece `piece` (sorts right
    /// after `piece`, in segment order).
    pub fn segment(piece: &str, index: u32) -> String {
        format!("{piece}-s{index:06}")
    }
    /// `piece:partition`, the ledger's name of a match job.
    pub fn match_part(piece: &str, partition: u32) -> String {
        format!("{piece}:{partition}")
    }
    /// Match job of a piece's partition.
    pub fn match_job(batch: &str, piece: &str, partition: u32) -> String {
        format!("match:{batch}:{piece}:{partition}")
    }
    /// Download job of a response.
    pub fn download(batch: &str, response_id: &str) -> String {
        format!("download:{batch}:{response_id}")
    }
    /// Analyze job of a response.
    pub fn analyze(batch: &str, response_id: &str) -> String {
        format!("analyze:{batch}:{response_id}")
    }
    /// Aggregate job of a learner (hashed: no learner id in a message id).
    pub fn aggregate(batch: &str, user_id: &str) -> String {
        format!("aggregate:{batch}:{}", crate::layout::learner_key(user_id))
    }
    /// Report job of a batch.
    pub fn report(batch: &str) -> String {
        format!("report:{batch}")
    }
}
