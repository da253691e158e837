//! Where a batch's durable state lives in the store. Every effect is written
//! under one of these deterministic keys, so a redelivered job overwrites the
//! same bytes (the item-state log alone is append-only: a redelivery adds a
//! chunk, and readers keep one state per item), and the batch ledger can be
//! rebuilt from the store alone.
//!
//! ```text
//! batches/B/batch.json                     the batch spec and its plan
//! batches/B/selected.json                  resolved selection (if any)
//! batches/B/sessions/part-P.jsonl          sessions partitioned by learner
//! batches/B/clean/PIECE/part-P.jsonl       kept records of a piece, by partition
//! batches/B/clean/PIECE/done.json          piece finished: stats + partitions written
//! batches/B/rejects/PIECE.jsonl            rejected records of a piece
//! batches/B/matched/PIECE/part-P.jsonl     matched records (match job output)
//! batches/B/items/WRITER-SEQ.jsonl        item final states, group-committed
//! batches/B/learners/LKEY.json             one learner's report rows
//! batches/B/output/…                       matched.csv, analysis.csv, report.csv, report.json, …
//! active/B                                 present while the batch runs
//! audio/HH/HASH                            validated audio, by content hash
//! audio/HH/HASH.probe.json                 its probe facts
//! results/HASH/ANALYZER.json               durable analysis cache
//! ```

use sha2::{Digest, Sha256};

use crate::uri::{ObjectUri, UriError};

/// Key builder for one store root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: ObjectUri,
}

/// A learner's key in the store: a hash, so no learner id becomes a path.
pub fn learner_key(user_id: &str) -> String {
    hex::encode(&Sha256::digest(user_id.as_bytes())[..12])
}

impl Layout {
    /// Keys under `root`.
    pub fn new(root: ObjectUri) -> Self {
        Self { root }
    }
    fn at(&self, rel: String) -> Result<ObjectUri, UriError> {
        self.root.join(&rel)
    }
    /// Root of one batch.
    pub fn batch(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}"))
    }
    /// The batch spec and plan.
    pub fn batch_spec(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/batch.json"))
    }
    /// Resolved learner selection.
    pub fn selected(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/selected.json"))
    }
    /// Sessions of one partition.
    pub fn sessions_part(&self, b: &str, p: u32) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/sessions/part-{p:04}.jsonl"))
    }
    /// Counts of the sessions file (rows kept and rejected).
    pub fn sessions_stats(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/sessions/stats.json"))
    }
    /// The decompressed bytes of one segment the pre-pass cut.
    pub fn segment_data(&self, b: &str, segment: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/segments/{segment}.data"))
    }
    /// The piece job of one segment (written after its data: the pre-pass's
    /// checkpoint, and what recovery and the reconciler follow).
    pub fn segment_piece(&self, b: &str, segment: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/segments/{segment}.json"))
    }
    /// Where a pre-pass piece's next segment starts (its resume checkpoint).
    pub fn segment_checkpoint(&self, b: &str, piece: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/segments/{piece}.next.json"))
    }
    /// Prefix of every segment of a batch.
    pub fn segments_prefix(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/segments"))
    }
    /// Kept records of a piece's partition.
    pub fn clean_part(&self, b: &str, piece: &str, p: u32) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/clean/{piece}/part-{p:04}.jsonl"))
    }
    /// Completion marker of a clean piece.
    pub fn clean_done(&self, b: &str, piece: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/clean/{piece}/done.json"))
    }
    /// Rejected records of a piece.
    pub fn rejects(&self, b: &str, piece: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/rejects/{piece}.jsonl"))
    }
    /// Prefix of all rejects.
    pub fn rejects_prefix(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/rejects"))
    }
    /// Matched records of a piece's partition.
    pub fn matched_part(&self, b: &str, piece: &str, p: u32) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/matched/{piece}/part-{p:04}.jsonl"))
    }
    /// One chunk of the item-state log (see the runtime's item log).
    pub fn item_chunk(&self, b: &str, name: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/items/{name}.jsonl"))
    }
    /// Prefix of the item-state log.
    pub fn items_prefix(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/items"))
    }
    /// One learner's report rows.
    pub fn learner(&self, b: &str, user_id: &str) -> Result<ObjectUri, UriError> {
        self.at(format!(
            "batches/{b}/learners/{}.json",
            learner_key(user_id)
        ))
    }
    /// Prefix of all learner rows.
    pub fn learners_prefix(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/learners"))
    }
    /// The batch's output directory.
    pub fn output(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("batches/{b}/output"))
    }
    /// Prefix of the running batches' markers.
    pub fn active_prefix(&self) -> Result<ObjectUri, UriError> {
        self.at("active".to_string())
    }
    /// Marker of a running batch.
    pub fn active(&self, b: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("active/{b}"))
    }
    /// Validated audio by content hash.
    pub fn audio(&self, hash: &str) -> Result<ObjectUri, UriError> {
        self.at(format!("audio/{}/{hash}", hash.get(..2).unwrap_or("xx")))
    }
    /// Probe facts of stored audio.
    pub fn probe(&self, hash: &str) -> Result<ObjectUri, UriError> {
        self.at(format!(
            "audio/{}/{hash}.probe.json",
            hash.get(..2).unwrap_or("xx")
        ))
    }
    /// Durable analysis cache entry for (content hash, analyzer id).
    pub fn result(&self, hash: &str, analyzer: &str) -> Result<ObjectUri, UriError> {
        let safe: String = analyzer
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.at(format!("results/{hash}/{safe}.json"))
    }
}

/// The learner partition (0..`partitions`) of a user id: the first four bytes
/// of its SHA-256, big-endian, modulo `partitions`. Stable across processes,
/// versions and machines (never a randomly seeded hasher), so every stage
/// finds a learner's records in the same partition.
pub fn partition_of(user_id: &str, partitions: u32) -> u32 {
    let d = crate::short_sha::sha256_parts(&[user_id.as_bytes()]);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % partitions.max(1)
}

/// Checks a batch id before it becomes part of a key: `[A-Za-z0-9._-]`, 1–64 chars.
pub fn valid_batch_id(b: &str) -> bool {
    (1..=64).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !b.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_learner_ids_hashed() {
        let l = Layout::new(ObjectUri::parse("s3://store/fleet").unwrap());
        assert_eq!(
            l.clean_part("b1", "f0-r0", 3).unwrap().to_string(),
            "s3://store/fleet/batches/b1/clean/f0-r0/part-0003.jsonl"
        );
        let k = l.learner("b1", "learner 42/../x").unwrap().to_string();
        let name = k
            .strip_prefix("s3://store/fleet/batches/b1/learners/")
            .unwrap();
        assert!(
            !name.contains("learner") && !name.contains('/') && name.ends_with(".json"),
            "{k}"
        );
        assert_eq!(
            l.result("ab12", "gemini:m:p1").unwrap().to_string(),
            "s3://store/fleet/results/ab12/gemini_m_p1.json"
        );
    }

    #[test]
    fn batch_ids() {
        assert!(valid_batch_id("b-2026-11-25_01"));
        assert!(!valid_batch_id("../x"));
        assert!(!valid_batch_id(""));
        assert!(!valid_batch_id("a/b"));
    }
}
