//! Recording an item's final state (analyzed or failed) and the fan-in that
//! follows: written durably first (the group-committed item log), then
//! recorded in the ledger, which may make the learner complete and hand this
//! job the aggregate emission.

use crate::job_error::JobError;
use crate::ledger::{FanIn, ScanResult};
use crate::recovery::{fan_in_emits, with_ledger};
use crate::stage::{Emit, JobCtx};
use engage_model::AnalysisOutcome;
use engage_model::envelope::StageName;
use engage_model::jobs::{ItemCost, ItemState};

/// Appends the item's state to the item log and marks the item final.
/// Returns the aggregate job to emit if this made the learner complete.
pub async fn finalize(
    ctx: &JobCtx,
    stage: StageName,
    user_id: &str,
    response_id: &str,
    outcome: AnalysisOutcome,
    cost: ItemCost,
) -> Result<Vec<Emit>, JobError> {
    let svc = &ctx.svc;
    let reason = match &outcome {
        AnalysisOutcome::Failed { reason, detail } => {
            svc.metrics
                .failed_items
                .with_label_values(&[stage.as_str(), reason.as_str()])
                .inc();
            tracing::info!(
                reason = reason.as_str(),
                detail = detail.as_str(),
                "item failed"
            );
            Some(reason.clone())
        }
        AnalysisOutcome::Ok(_) => None,
    };
    let state = ItemState {
        response_id: response_id.to_string(),
        user_id: user_id.to_string(),
        outcome,
        cost,
    };
    // One serialisation serves the durable log and the ledger's copy.
    let json = serde_json::to_string(&state).map_err(|e| JobError::Poison(e.into()))?;
    let n = svc.item_log.append(&ctx.batch_id, &json).await?;
    svc.metrics
        .bytes_written
        .with_label_values(&[stage.as_str()])
        .inc_by(n);
    let (fan, mut emits) = with_ledger(svc, &ctx.batch_id, &ctx.job_id, || {
        svc.ledger.finalize_item(
            &ctx.batch_id,
            user_id,
            response_id,
            reason.as_deref(),
            &json,
            &ctx.job_id,
        )
    })
    .await?;
    if fan == FanIn::Emit {
        emits.extend(fan_in_emits(
            &ctx.batch_id,
            ScanResult {
                learners: vec![user_id.to_string()],
                report: false,
            },
        )?);
    }
    Ok(emits)
}

/// Shorthand for a failed item.
pub fn failed(reason: &str, detail: impl Into<String>) -> AnalysisOutcome {
    AnalysisOutcome::Failed {
        reason: reason.to_string(),
        detail: detail.into(),
    }
}
