//! The clean stage. Two jobs share its queue:
//!
//! - **batch** (from a producer): resolve the selection, partition the
//!   sessions by learner once for the whole batch, cut big activity files into
//!   byte ranges and emit one piece job per range;
//! - **piece**: stream one piece (bounded memory), write kept records per
//!   learner partition and rejects to the store, then emit one match job per
//!   non-empty partition.

use std::io::{Read, Seek, SeekFrom, Write};

use bytes::Bytes;
use engage_model::envelope::StageName;
use engage_model::jobs::{BatchPlan, BatchSpec, CleanDone, CleanJob, CleanPiece, MatchJob, ids};
use engage_model::layout::{Layout, valid_batch_id};
use engage_model::selection::{SelectedLearners, Selection};
use engage_model::session::read_sessions;
use engage_runtime::job_error::JobError;
use engage_runtime::ledger::FanIn;
use engage_runtime::recovery::{fan_in_emits, with_ledger};
use engage_runtime::stage::{Emit, JobCtx, Stage};
use engage_runtime::storage::{ObjectUri, Storage};
use engage_runtime::store_io::{get_json, put_json, to_jsonl};
use tokio_util::io::SyncIoBridge;

use crate::domain::{ActivityReader, CleanOptions, PartitionWriter, clean_piece, is_splittable};
use crate::plan::{activity_counts, partition_sessions, piece_id, ranges_for, session_counts};

/// The clean stage.
#[derive(Debug, Default)]
pub struct CleanStage {
    /// Reader and duplicate-window settings.
    pub options: CleanOptions,
}

fn poison(e: impl std::fmt::Display) -> JobError {
    JobError::Poison(anyhow::anyhow!("{e}"))
}

fn uri(s: &str) -> Result<ObjectUri, JobError> {
    ObjectUri::parse(s).map_err(|e| JobError::Poison(anyhow::anyhow!("invalid URI {s:?}: {e}")))
}

/// A blocking reader over an object (or the tail of one from `from`), for the
/// synchronous domain parsers. Must be created inside the runtime.
async fn sync_reader(
    st: &Storage,
    u: &ObjectUri,
    from: u64,
) -> Result<impl Read + Send + 'static, JobError> {
    let r = st.reader(u, (from > 0).then_some(from..u64::MAX)).await?;
    Ok(SyncIoBridge::new(r))
}

/// Presents a stream that starts at byte `base` of an object as seekable to
/// exactly that position (what `ActivityReader::for_range` asks for first).
struct StartsAt<R> {
    inner: R,
    base: u64,
}

impl<R: Read> Read for StartsAt<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R> Seek for StartsAt<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::Start(n) if n == self.base => Ok(n),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "stream seeks only to its start",
            )),
        }
    }
}

impl CleanStage {
    async fn plan(&self, ctx: &JobCtx, spec: BatchSpec) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let b = ctx.batch_id.as_str();
        if !valid_batch_id(b) {
            return Err(poison(format!(
                "invalid batch id {b:?}: use 1-64 of [A-Za-z0-9._-]"
            )));
        }
        let layout = Layout::new(svc.store_root.clone());
        let plan = match get_json::<BatchPlan>(&svc.storage, &layout.batch_spec(b)?).await? {
            Some(p) => p, // a redelivered plan job: the same plan, re-emitted
            None => self.make_plan(ctx, &layout, spec).await?,
        };
        svc.ledger.open_batch(b, plan.pieces.len() as u64).await?;
        svc.storage
            .put(&layout.active(b)?, Bytes::from_static(b"running\n"))
            .await?;
        tracing::info!(
            pieces = plan.pieces.len(),
            partitions = plan.partitions,
            "batch planned"
        );
        plan.pieces
            .iter()
            .map(|p| {
                Emit::new(
                    StageName::Clean,
                    ids::clean(b, &p.piece),
                    &CleanJob::Piece(p.clone()),
                )
            })
            .collect()
    }

    async fn make_plan(
        &self,
        ctx: &JobCtx,
        layout: &Layout,
        spec: BatchSpec,
    ) -> Result<BatchPlan, JobError> {
        let svc = &ctx.svc;
        let b = ctx.batch_id.as_str();
        let partitions = svc.cfg.partitions;
        if spec.activity.is_empty() {
            return Err(poison("batch has no activity files"));
        }
        // Sessions: parsed once per batch, partitioned by learner for match.
        let sessions_uri = uri(&spec.sessions)?;
        let r = sync_reader(&svc.storage, &sessions_uri, 0).await?;
        let parsed = tokio::task::spawn_blocking(move || read_sessions(r))
            .await
            .map_err(|e| JobError::transient("panic", e))?
            .map_err(|e| poison(format!("sessions file {sessions_uri}: {e}")))?;
        for rej in &parsed.rejects {
            svc.metrics
                .rejected_records
                .with_label_values(&["clean", rej.reason.name()])
                .inc();
        }
        put_json(
            &svc.storage,
            &layout.sessions_stats(b)?,
            &session_counts(parsed.sessions.len(), &parsed.rejects),
        )
        .await?;
        if !parsed.rejects.is_empty() {
            let lines: Vec<serde_json::Value> = parsed
                .rejects
                .iter()
                .map(|r| serde_json::json!({"source": "sessions", "row": r.row, "reason": r.reason, "detail": r.detail}))
                .collect();
            svc.storage
                .put(
                    &layout.rejects(b, "sessions")?,
                    Bytes::from(to_jsonl(&lines)?),
                )
                .await?;
        }
        let selected = match &spec.selection {
            Selection::All => None,
            Selection::Users { ids } => Some(SelectedLearners::from_ids(ids.iter())),
            Selection::UsersFile { uri: f } => {
                let bytes = svc.storage.get(&uri(f)?).await?;
                Some(SelectedLearners::from_reader(&bytes[..]).map_err(poison)?)
            }
            Selection::Milestone { milestone } => Some(SelectedLearners::from_sessions(
                parsed.sessions.iter(),
                milestone,
            )),
        };
        if let Some(sel) = &selected {
            let mut ids: Vec<&str> = match sel {
                SelectedLearners::Only(set) => set.iter().map(String::as_str).collect(),
                SelectedLearners::All => Vec::new(),
            };
            ids.sort_unstable();
            let mut body = ids.join("\n");
            body.push('\n');
            svc.storage
                .put(&layout.selected(b)?, Bytes::from(body))
                .await?;
        }
        for (p, sessions) in partition_sessions(parsed.sessions, partitions) {
            svc.storage
                .put(
                    &layout.sessions_part(b, p)?,
                    Bytes::from(to_jsonl(&sessions)?),
                )
                .await?;
        }
        // Pieces: big plain JSON Lines files are cut so several workers share them.
        let mut pieces = Vec::new();
        for (i, a) in spec.activity.iter().enumerate() {
            let au = uri(a)?;
            let len = svc
                .storage
                .size(&au)
                .await?
                .ok_or_else(|| poison(format!("activity file not found: {au}")))?;
            let mut head = Vec::new();
            let mut r = svc.storage.reader(&au, Some(0..len.min(64 * 1024))).await?;
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut head)
                .await
                .map_err(|e| JobError::transient("read", e))?;
            let splittable = is_splittable(&head[..]).unwrap_or(false);
            for (j, range) in ranges_for(len, splittable, svc.cfg.clean_piece_bytes)
                .into_iter()
                .enumerate()
            {
                pieces.push(CleanPiece {
                    piece: piece_id(i, j),
                    activity: a.clone(),
                    range: range.map(|r| (r.start, r.end)),
                    partitions,
                    selected: selected.is_some(),
                });
            }
        }
        let plan = BatchPlan {
            spec,
            pieces,
            partitions,
            planned_at: chrono::Utc::now().to_rfc3339(),
        };
        put_json(&svc.storage, &layout.batch_spec(b)?, &plan).await?;
        Ok(plan)
    }

    async fn piece(&self, ctx: &JobCtx, piece: CleanPiece) -> Result<Vec<Emit>, JobError> {
        let svc = &ctx.svc;
        let b = ctx.batch_id.as_str();
        let layout = Layout::new(svc.store_root.clone());
        let selection = if piece.selected {
            let bytes = svc.storage.get(&layout.selected(b)?).await?;
            SelectedLearners::from_reader(&bytes[..]).map_err(poison)?
        } else {
            SelectedLearners::All
        };
        let au = uri(&piece.activity)?;
        let from = piece.range.map_or(0, |(s, _)| s.saturating_sub(1));
        let input = sync_reader(&svc.storage, &au, from).await?;
        let opts = self.options;
        let parts = piece.partitions;
        let range = piece.range;
        let cleaned = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let files = (0..parts)
                .map(|_| tempfile::NamedTempFile::new())
                .collect::<Result<Vec<_>, _>>()?;
            let mut rejects = std::io::BufWriter::new(tempfile::NamedTempFile::new()?);
            let mut writer = PartitionWriter::new(files)?;
            let stats = match range {
                Some((s, e)) => {
                    let mut reader = ActivityReader::for_range(
                        StartsAt {
                            inner: input,
                            base: from,
                        },
                        s..e,
                        opts.reader,
                    )?;
                    clean_piece(&mut reader, &selection, &opts, &mut writer, &mut rejects)?
                }
                None => {
                    let mut reader = ActivityReader::new(input, opts.reader)?;
                    clean_piece(&mut reader, &selection, &opts, &mut writer, &mut rejects)?
                }
            };
            let (files, counts) = writer.finish()?;
            rejects.flush()?;
            Ok((
                files,
                counts,
                rejects.into_inner().map_err(|e| e.into_error())?,
                stats,
            ))
        })
        .await
        .map_err(|e| JobError::transient("panic", e))?;
        // Read failures of the input are storage trouble (retry); the domain
        // never fails on bad records.
        let (files, counts, rejects_file, stats) =
            cleaned.map_err(|e| JobError::transient("read", e))?;
        for (reason, n) in &stats.rejected {
            svc.metrics
                .rejected_records
                .with_label_values(&["clean", reason.name()])
                .inc_by(*n);
        }
        let mut written = Vec::new();
        for (p, (file, n)) in files.into_iter().zip(counts).enumerate() {
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
            .put_file(&layout.rejects(b, &piece.piece)?, rejects_file.path())
            .await?;
        let done = CleanDone {
            piece: piece.piece.clone(),
            partitions: written.clone(),
            stats: activity_counts(&stats),
        };
        put_json(&svc.storage, &layout.clean_done(b, &piece.piece)?, &done).await?;

        let parts: Vec<String> = written
            .iter()
            .map(|p| ids::match_part(&piece.piece, *p))
            .collect();
        let (fan, mut emits) = with_ledger(svc, b, &ctx.job_id, || {
            svc.ledger.piece_done(b, &piece.piece, &parts, &ctx.job_id)
        })
        .await?;
        if fan == FanIn::Emit {
            emits.extend(fan_in_emits(b, svc.ledger.scan(b, &ctx.job_id).await?)?);
        }
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
            CleanJob::Batch(spec) => self.plan(ctx, spec).await,
            CleanJob::Piece(p) => self.piece(ctx, p).await,
        }
    }
}
