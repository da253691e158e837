//! A batch's clean pieces as the later steps read them: the plan's pieces in
//! plan order, each pre-pass piece (a gzip or JSON-array file, `split`)
//! followed by the segments it has cut so far, in segment order — the order
//! in which a whole-file piece would have produced the same records.
//!
//! A segment exists once its piece job is stored (`segments/PIECE.json`,
//! written after its data and before its job is published), so the ledger
//! rebuild, the reconciler and the report all see the same segments.

use engage_model::job_ids::valid_piece_id;
use engage_model::jobs::{BatchPlan, CleanPiece};
use engage_model::layout::Layout;
use futures::StreamExt;

use crate::job_error::JobError;
use crate::storage::Storage;
use crate::store_io::get_json;

/// Parallel store reads while listing segments.
const READ_CONCURRENCY: usize = 16;

/// The plan's pieces with the stored segments of its pre-pass pieces
/// inserted after each (see the module docs). A plan without pre-pass
/// pieces is returned as it is, without touching the store.
pub async fn batch_pieces(
    st: &Storage,
    layout: &Layout,
    batch: &str,
    plan: &BatchPlan,
) -> Result<Vec<CleanPiece>, JobError> {
    if !plan.pieces.iter().any(|p| p.split) {
        return Ok(plan.pieces.clone());
    }
    let segments = stored_segments(st, layout, batch).await?;
    let mut out = Vec::with_capacity(plan.pieces.len() + segments.len());
    for p in &plan.pieces {
        out.push(p.clone());
        if p.split {
            out.extend(
                segments
                    .iter()
                    .filter(|s| segment_of(&s.piece) == Some(p.piece.as_str()))
                    .cloned(),
            );
        }
    }
    Ok(out)
}

/// The ids of the segments among `pieces` (what the ledger expects beyond
/// the plan's pieces).
pub fn segment_ids(pieces: &[CleanPiece]) -> Vec<String> {
    pieces
        .iter()
        .filter(|p| p.segment.is_some())
        .map(|p| p.piece.clone())
        .collect()
}

/// The pre-pass piece a segment id belongs to.
pub fn segment_of(piece: &str) -> Option<&str> {
    piece.split_once("-s").map(|(of, _)| of)
}

/// Every stored segment piece of a batch, sorted by piece id (segment ids
/// are zero-padded, so that is file order, then segment order).
async fn stored_segments(
    st: &Storage,
    layout: &Layout,
    batch: &str,
) -> Result<Vec<CleanPiece>, JobError> {
    let prefix = layout.segments_prefix(batch)?;
    let mut names: Vec<String> = st
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|u| {
            u.relative_to(&prefix)?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .filter(|n| valid_piece_id(n) && segment_of(n).is_some())
        .collect();
    names.sort();
    let reads = names.into_iter().map(|n| async move {
        let uri = layout.segment_piece(batch, &n)?;
        let piece = get_json::<CleanPiece>(st, &uri).await?;
        Ok::<_, JobError>(piece.filter(|p| p.piece == n && p.segment.is_some()))
    });
    let mut out = Vec::new();
    let mut stream = futures::stream::iter(reads).buffered(READ_CONCURRENCY);
    while let Some(p) = stream.next().await {
        out.extend(p?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_names_its_pre_pass_piece() {
        assert_eq!(segment_of("f000-r0000-s000003"), Some("f000-r0000"));
        assert_eq!(segment_of("f000-r0000"), None);
    }
}
