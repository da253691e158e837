//! The clean stage's batch job: check the batch, make (or re-read) its plan,
//! open its ledger and emit one piece job per piece. Making a plan parses the
//! sessions once, writes their counters, rejects and learner partitions,
//! resolves the selection, and cuts the activity files ([`crate::plan`] holds
//! the rules).

use bytes::Bytes;
use engage_model::envelope::StageName;
use engage_model::jobs::{BatchPlan, BatchSpec, CleanJob, CleanPiece, ids};
use engage_model::layout::Layout;
use engage_model::selection::{SelectedLearners, Selection};
use engage_model::session::read_sessions;
use engage_runtime::job_error::{ErrorClass, JobError};
use engage_runtime::stage::{Emit, JobCtx};
use engage_runtime::store_io::{get_json, put_json, to_jsonl};

use crate::plan::{self, HEAD_BYTES, partition_sessions, session_counts};
use crate::store::{blocking, poison, sync_reader, uri};

pub(crate) async fn plan(ctx: &JobCtx, spec: BatchSpec) -> Result<Vec<Emit>, JobError> {
    let (svc, b) = (&ctx.svc, ctx.batch_id.as_str());
    plan::check_batch_id(b).map_err(poison)?;
    // Nothing is read from a location a producer may not name.
    let policy = svc
        .cfg
        .input_policy()
        .map_err(|e| JobError::Fatal(anyhow::anyhow!("fleet.input_prefixes: {e}")))?;
    policy
        .check_spec(&spec)
        .map_err(|e| poison(format!("{e} [{}]", e.reason())))?;
    let layout = Layout::new(svc.store_root.clone());
    let plan = match get_json::<BatchPlan>(&svc.storage, &layout.batch_spec(b)?).await? {
        Some(p) => p, // a redelivered plan job: the same plan, re-emitted
        None => make_plan(ctx, &layout, spec).await?,
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
    let piece = |p: &CleanPiece| {
        Emit::new(
            StageName::Clean,
            ids::clean(b, &p.piece),
            &CleanJob::Piece(p.clone()),
        )
    };
    plan.pieces.iter().map(piece).collect()
}

/// Parses the sessions once, writes their counters, rejects and learner
/// partitions, resolves the selection, cuts the files, stores the plan.
async fn make_plan(ctx: &JobCtx, layout: &Layout, spec: BatchSpec) -> Result<BatchPlan, JobError> {
    let (svc, b, partitions) = (
        &ctx.svc,
        ctx.batch_id.as_str(),
        ctx.svc.cfg.clean.partitions,
    );
    plan::check_spec(&spec).map_err(poison)?;
    let sessions_uri = uri(&spec.sessions)?;
    let r = sync_reader(&svc.storage, &sessions_uri, 0).await?;
    let parsed = blocking(move || read_sessions(r))
        .await?
        .map_err(|e| poison(format!("sessions file {sessions_uri}: {e}")))?;
    for rej in &parsed.rejects {
        svc.metrics
            .rejected_records
            .with_label_values(&["clean", rej.reason.name()])
            .inc();
    }
    let counts = session_counts(parsed.sessions.len(), &parsed.rejects);
    put_json(&svc.storage, &layout.sessions_stats(b)?, &counts).await?;
    if !parsed.rejects.is_empty() {
        let lines = to_jsonl(&plan::session_reject_lines(&parsed.rejects))?;
        svc.storage
            .put(&layout.rejects(b, "sessions")?, Bytes::from(lines))
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
        svc.storage
            .put(&layout.selected(b)?, Bytes::from(plan::selected_file(sel)))
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
        let mut r = svc
            .storage
            .reader(&au, Some(0..len.min(HEAD_BYTES)))
            .await?;
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut head)
            .await
            .map_err(|e| JobError::transient(ErrorClass::Read, e))?;
        let piece_bytes = svc.cfg.clean.piece_bytes;
        pieces.extend(plan::file_pieces(
            i,
            a,
            len,
            &head,
            piece_bytes,
            partitions,
            selected.is_some(),
        ));
    }
    let planned_at = chrono::Utc::now().to_rfc3339();
    let plan = BatchPlan {
        spec,
        pieces,
        partitions,
        planned_at,
    };
    put_json(&svc.storage, &layout.batch_spec(b)?, &plan).await?;
    Ok(plan)
}
