//! The clean stage. Two jobs share its queue:
//!
//! - **batch** (from a producer): resolve the selection, partition the
//!   sessions by learner once for the whole batch, cut big activity files into
//!   byte ranges and emit one piece job per range;
//! - **piece**: stream one piece (bounded memory), write kept records per
//!   learner partition and rejects to the store, then emit one match job per
//!   non-empty partition. A piece that stands for a whole gzip or JSON-array
//!   file (`split`) first runs the pre-pass that cuts it into segments, each
//!   a piece of its own ([`crate::prepass`]).
//!
//! Glue only: the batch job is in [`crate::batch`] (rules in
//! [`crate::plan`]), the cleaning in [`crate::spool`] and [`crate::domain`].

use engage_model::envelope::StageName;
use engage_model::jobs::{CleanDone, CleanJob, CleanPiece, MatchJob, ids};
use engage_model::layout::Layout;
use engage_model::selection::SelectedLearners;
use engage_runtime::fan_in;
use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::stage::{Emit, JobCtx, Stage};
use engage_runtime::store_io::put_json;

use crate::domain::CleanOptions;
use crate::plan::activity_counts;
use crate::spool::{PieceInput, Spooled, clean_to_spool};
use crate::store::{Counting, blocking, poison, read_failure, sync_reader, uri};
use std::sync::atomic::Ordering;
use tempfile::NamedTempFile;

/// The clean stage.
#[derive(Debug, Default)]
pub struct CleanStage {
    /// Reader and duplicate-window settings.
    pub options: CleanOptions,
}

impl CleanStage {
    /// Cleans one piece: a whole file, a byte range, or a stored segment;
    /// `local`: the whole file's decompressed bytes, already on local disk
    /// (a pre-pass that found the file fits in one segment).
    pub(crate) async fn clean(
        &self,
        ctx: &JobCtx,
        piece: CleanPiece,
        local: Option<NamedTempFile>,
    ) -> Result<Vec<Emit>, JobError> {
        let (svc, b) = (&ctx.svc, ctx.batch_id.as_str());
        let layout = Layout::new(svc.store_root.clone());
        let selection = if piece.selected {
            let bytes = svc.storage.get(&layout.selected(b)?).await?;
            SelectedLearners::from_stored(&bytes[..]).map_err(poison)?
        } else {
            SelectedLearners::All
        };
        let (source, how) = match (piece.segment, piece.range) {
            (Some(at), _) => (
                layout.segment_data(b, &piece.piece)?,
                PieceInput::Segment(at),
            ),
            (None, Some((start, end))) => (
                uri(&piece.activity)?,
                PieceInput::Range {
                    from: start.saturating_sub(1),
                    start,
                    end,
                },
            ),
            (None, None) => (uri(&piece.activity)?, PieceInput::Whole),
        };
        let (opts, parts) = (self.options, piece.partitions);
        if let Some(file) = local {
            // Plain bytes on local disk: a failure is the disk's (retried).
            let cleaned = blocking(move || {
                let input = std::io::BufReader::new(file.reopen()?);
                clean_to_spool(input, PieceInput::Whole, parts, &selection, &opts)
            })
            .await?
            .map_err(|e| JobError::transient(ErrorClass::Read, e))?;
            return self.store(ctx, &layout, &piece, cleaned).await;
        }
        let from = match how {
            PieceInput::Range { from, .. } => from,
            _ => 0,
        };
        let size = svc.storage.size(&source).await?;
        let (input, delivered) = Counting::new(sync_reader(&svc.storage, &source, from).await?);
        let cleaned =
            blocking(move || clean_to_spool(input, how, parts, &selection, &opts)).await?;
        // The domain never fails on bad records. A read failure is storage
        // trouble (retried) unless the whole object arrived and still could
        // not be read (a truncated gzip stream) or the decompressor found
        // corrupt data: retrying the same bytes cannot help, so it is poison.
        let spooled = cleaned.map_err(|e| {
            let read_all = size.is_some_and(|n| from + delivered.load(Ordering::Relaxed) >= n);
            read_failure(e, read_all)
        })?;
        self.store(ctx, &layout, &piece, spooled).await
    }

    /// Uploads a cleaned piece (partitions, rejects, `done.json`), records
    /// it in the ledger and returns its match jobs.
    async fn store(
        &self,
        ctx: &JobCtx,
        layout: &Layout,
        piece: &CleanPiece,
        spooled: Spooled,
    ) -> Result<Vec<Emit>, JobError> {
        let (svc, b) = (&ctx.svc, ctx.batch_id.as_str());
        for (reason, n) in &spooled.stats.rejected {
            svc.metrics
                .rejected_records
                .with_label_values(&["clean", reason.name()])
                .inc_by(*n);
        }
        let mut written = Vec::new();
        for (p, (file, n)) in spooled
            .partitions
            .into_iter()
            .zip(spooled.counts)
            .enumerate()
        {
            if n == 0 {
                continue;
            }
            let p = p as u32;
            svc.storage
                .put_file(&layout.clean_part(b, &piece.piece, p)?, file.path())
                .await?;
            written.push(p);
        }
        svc.storage
            .put_file(&layout.rejects(b, &piece.piece)?, spooled.rejects.path())
            .await?;
        let stats = activity_counts(&spooled.stats);
        let done = CleanDone {
            piece: piece.piece.clone(),
            partitions: written.clone(),
            stats,
            segments: 0,
        };
        put_json(&svc.storage, &layout.clean_done(b, &piece.piece)?, &done).await?;

        let parts: Vec<String> = written
            .iter()
            .map(|p| ids::match_part(&piece.piece, *p))
            .collect();
        let mut emits = fan_in::piece_done(ctx, &piece.piece, &parts).await?;
        for p in written {
            let job = MatchJob {
                piece: piece.piece.clone(),
                partition: p,
            };
            emits.push(Emit::new(
                StageName::Match,
                ids::match_job(b, &piece.piece, p),
                &job,
            )?);
        }
        Ok(emits)
    }
}

#[async_trait::async_trait]
impl Stage for CleanStage {
    type Job = CleanJob;
    const NAME: StageName = StageName::Clean;

    async fn handle(&self, ctx: &JobCtx, job: CleanJob) -> Result<Vec<Emit>, JobError> {
        match job {
            CleanJob::Batch(spec) => crate::batch::plan(ctx, spec).await,
            CleanJob::Piece(p) if p.split => crate::prepass::run(self, ctx, p).await,
            CleanJob::Piece(p) => self.clean(ctx, p, None).await,
        }
    }
}
