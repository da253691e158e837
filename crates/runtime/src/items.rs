//! Recording an item's final state (analyzed or failed) and the fan-in that
//! follows: written durably first (the group-committed item log), then
//! recorded in the ledger through [`fan_in`](crate::fan_in), which may make
//! the learner complete and hand this job the aggregate emission.

use crate::events::{InternalEvent, ItemFailed};
use crate::fan_in;
use crate::job_error::JobError;
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
            ItemFailed {
                stage,
                reason,
                detail,
            }
            .emit(&svc.metrics);
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
    fan_in::item_done(ctx, user_id, response_id, reason.as_deref(), &json).await
}

/// Shorthand for a failed item.
pub fn failed(reason: &str, detail: impl Into<String>) -> AnalysisOutcome {
    AnalysisOutcome::Failed {
        reason: reason.to_string(),
        detail: detail.into(),
    }
}

/// Makes an item whose job was dead-lettered final as
/// `dead_lettered:<reason>` (see [`Stage::dead_lettered`](crate::stage::Stage::dead_lettered)).
pub async fn finalize_dead_lettered(
    ctx: &JobCtx,
    stage: StageName,
    user_id: &str,
    response_id: &str,
    reason: &str,
) -> Result<Vec<Emit>, JobError> {
    let out = failed(
        &format!("{}{reason}", crate::item_log::DEAD_LETTERED),
        format!(
            "the {} job was dead-lettered; `engage dlq replay {}` runs it again",
            stage.as_str(),
            stage.as_str()
        ),
    );
    finalize(ctx, stage, user_id, response_id, out, ItemCost::default()).await
}
