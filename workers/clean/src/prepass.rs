//! The clean stage's pre-pass job over a whole gzip or JSON-array file (a
//! `split` piece): it streams the file once, cuts the decompressed bytes into
//! segments of about `[clean] piece_bytes` ([`crate::domain::segment`]) and,
//! for each, while it goes on reading:
//!
//! 1. stores the segment's bytes (`segments/SEG.data`) and its piece job
//!    (`segments/SEG.json`),
//! 2. tells the ledger the batch now waits for that segment too,
//! 3. publishes the segment's clean job (other clean workers take it now),
//! 4. stores the checkpoint where the next segment starts.
//!
//! When the file ends it records the segments it cut and its own
//! completion. A pre-pass that died part-way resumes from its checkpoint
//! (decompressing up to it again, without parsing) and publishes the stored
//! segments again (their consumers drop the repeats). A file that fits in
//! one segment is cleaned by this job from the decompressed copy it made; a
//! file whose head is not plausibly a log is cleaned whole from the store,
//! as any other whole-file piece (where the cleaner judges it).

use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;

use engage_model::envelope::StageName;
use engage_model::jobs::{CleanDone, CleanJob, CleanPiece, SegmentStart, ids};
use engage_model::layout::Layout;
use engage_runtime::fan_in;
use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::stage::{Emit, JobCtx};
use engage_runtime::store_io::{get_json, put_json};
use tempfile::NamedTempFile;

use crate::CleanStage;
use crate::domain::{Checkpoint, Cutting, SegmentError, cut_segments};
use crate::store::{Counting, read_failure, sync_reader, uri};

/// A segment the cutter finished, on local disk.
struct Cut {
    start: SegmentStart,
    file: NamedTempFile,
    next: Option<Checkpoint>,
}

/// Runs the pre-pass of `piece` (see the module docs).
pub(crate) async fn run(
    stage: &CleanStage,
    ctx: &JobCtx,
    piece: CleanPiece,
) -> Result<Vec<Emit>, JobError> {
    let (svc, b) = (&ctx.svc, ctx.batch_id.as_str());
    let layout = Layout::new(svc.store_root.clone());
    // Finished before (redelivered after its marker): only the fan-in again.
    if let Some(done) =
        get_json::<CleanDone>(&svc.storage, &layout.clean_done(b, &piece.piece)?).await?
        && done.segments > 0
    {
        return finish(ctx, &layout, &piece, done.segments).await;
    }
    let checkpoint = layout.segment_checkpoint(b, &piece.piece)?;
    let resume = get_json::<Checkpoint>(&svc.storage, &checkpoint).await?;
    if let Some(c) = resume {
        // Segments stored before the stop: their jobs may not have been
        // published. Publishing them again is harmless.
        let mut stored = Vec::new();
        for i in 0..c.index {
            let id = ids::segment(&piece.piece, i);
            match get_json::<CleanPiece>(&svc.storage, &layout.segment_piece(b, &id)?).await? {
                Some(s) => stored.push(s),
                None => {
                    return Err(JobError::Poison(anyhow::anyhow!(
                        "segment {id} is missing below the pre-pass checkpoint"
                    )));
                }
            }
        }
        publish(ctx, &stored).await?;
        tracing::info!(
            resume_at = c.offset,
            segments = c.index,
            "pre-pass resumes from its checkpoint"
        );
    }

    let started = std::time::Instant::now();
    let activity = uri(&piece.activity)?;
    let size = svc.storage.size(&activity).await?;
    let (input, delivered) = Counting::new(sync_reader(&svc.storage, &activity, 0).await?);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Cut>(1);
    let (opts, piece_bytes) = (stage.options.reader, svc.cfg.clean.piece_bytes);
    let cutter = tokio::task::spawn_blocking(move || {
        cut_segments(
            input,
            resume,
            piece_bytes,
            opts,
            || NamedTempFile::new().map(BufWriter::new),
            |start, mut w, next| {
                w.flush()?;
                let file = w.into_inner().map_err(|e| e.into_error())?;
                tx.blocking_send(Cut { start, file, next })
                    .map_err(|_| std::io::Error::other("the pre-pass stopped storing segments"))
            },
        )
    });
    let stored = async {
        while let Some(cut) = rx.recv().await {
            store_segment(ctx, &layout, &piece, cut).await?;
        }
        Ok::<_, JobError>(())
    }
    .await;
    drop(rx);
    let cutting = cutter
        .await
        .map_err(|e| JobError::transient(ErrorClass::Panic, e))?;
    // A store failure stops the cutter: report the cause, not the stop.
    stored?;
    let cutting = cutting.map_err(|e| {
        let read_all = size.is_some_and(|n| delivered.load(Ordering::Relaxed) >= n);
        match e {
            SegmentError::Shrunk { .. } => JobError::Poison(e.into()),
            SegmentError::Write(e) => JobError::transient(ErrorClass::Storage, e),
            SegmentError::Read(e) => read_failure(e.into(), read_all),
        }
    })?;
    match cutting {
        Cutting::Whole(local) => {
            let local = match local {
                Some(mut w) => {
                    w.flush()
                        .map_err(|e| JobError::transient(ErrorClass::Read, e))?;
                    Some(
                        w.into_inner()
                            .map_err(|e| JobError::transient(ErrorClass::Read, e.into_error()))?,
                    )
                }
                None => None,
            };
            stage.clean(ctx, piece, local).await
        }
        Cutting::Cut(n) => {
            tracing::info!(
                segments = n,
                stored_bytes = size.unwrap_or(0),
                seconds = started.elapsed().as_secs_f64(),
                "pre-pass cut the file into segments"
            );
            finish(ctx, &layout, &piece, n).await
        }
    }
}

/// Stores one segment, has the batch expect it, publishes its job, then
/// moves the checkpoint past it.
async fn store_segment(
    ctx: &JobCtx,
    layout: &Layout,
    piece: &CleanPiece,
    cut: Cut,
) -> Result<(), JobError> {
    let (svc, b) = (&ctx.svc, ctx.batch_id.as_str());
    let id = ids::segment(&piece.piece, cut.start.index);
    svc.storage
        .put_file(&layout.segment_data(b, &id)?, cut.file.path())
        .await?;
    let segment = CleanPiece {
        piece: id.clone(),
        activity: piece.activity.clone(),
        range: None,
        partitions: piece.partitions,
        selected: piece.selected,
        split: false,
        segment: Some(cut.start),
    };
    put_json(&svc.storage, &layout.segment_piece(b, &id)?, &segment).await?;
    publish(ctx, std::slice::from_ref(&segment)).await?;
    if let Some(next) = cut.next {
        put_json(
            &svc.storage,
            &layout.segment_checkpoint(b, &piece.piece)?,
            &next,
        )
        .await?;
    }
    Ok(())
}

/// Has the batch expect `segments`, then publishes their clean jobs now.
async fn publish(ctx: &JobCtx, segments: &[CleanPiece]) -> Result<(), JobError> {
    if segments.is_empty() {
        return Ok(());
    }
    let b = ctx.batch_id.as_str();
    let names: Vec<String> = segments.iter().map(|s| s.piece.clone()).collect();
    let mut emits = fan_in::segments_expected(ctx, &names).await?;
    for s in segments {
        emits.push(Emit::new(
            StageName::Clean,
            ids::clean(b, &s.piece),
            &CleanJob::Piece(s.clone()),
        )?);
    }
    ctx.publish_now(emits).await
}

/// Records that the pre-pass cut `n` segments (all expected again, in one
/// call) and that it is done; returns the fan-in's follow-ups.
async fn finish(
    ctx: &JobCtx,
    layout: &Layout,
    piece: &CleanPiece,
    n: u32,
) -> Result<Vec<Emit>, JobError> {
    let (svc, b) = (&ctx.svc, ctx.batch_id.as_str());
    let all: Vec<String> = (0..n).map(|i| ids::segment(&piece.piece, i)).collect();
    let mut emits = fan_in::segments_expected(ctx, &all).await?;
    let done = CleanDone {
        piece: piece.piece.clone(),
        partitions: Vec::new(),
        stats: Default::default(),
        segments: n,
    };
    put_json(&svc.storage, &layout.clean_done(b, &piece.piece)?, &done).await?;
    emits.extend(fan_in::piece_done(ctx, &piece.piece, &[]).await?);
    Ok(emits)
}
