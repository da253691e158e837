//! The command-line face of the read verbs of [`crate::batch_ops`]:
//! `engage batches`, `engage inspect` and `engage status --json`. Each
//! prints text for a person, or with `--json` one JSON document for a
//! script; neither declares anything on the broker.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use engage_runtime::config::FleetConfig;

use crate::batch_ops::{
    self, BatchDetail, BatchFilter, BatchRow, BatchState, ItemDetail, LearnerDetail, StepStatus,
};
use crate::fleet::BatchEnd;

/// Arguments of `engage batches`.
#[derive(Debug, Args)]
pub(crate) struct BatchesArgs {
    /// Only batches in this state (`failed`: halted by a dead-lettered job).
    #[arg(long)]
    pub state: Option<BatchState>,
    /// Only batches opened since then: a duration back from now (`90m`,
    /// `2h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIMESTAMP")]
    pub since: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `engage inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The batch id.
    pub batch: String,
    /// Show one learner's items.
    #[arg(long, group = "what")]
    pub learner: Option<String>,
    /// Show one item's path through the stages (its response id).
    #[arg(long, group = "what")]
    pub item: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `engage batches`.
pub(crate) async fn batches(cfg: &FleetConfig, a: &BatchesArgs) -> anyhow::Result<()> {
    let since = a
        .since
        .as_deref()
        .map(|s| batch_ops::parse_since(s, chrono::Utc::now()))
        .transpose()?;
    let filter = BatchFilter {
        state: a.state,
        since,
    };
    let rows = batch_ops::list_batches(cfg, &filter).await?;
    if a.json {
        return print_json(&rows);
    }
    print!("{}", render_rows(&rows));
    Ok(())
}

/// The table `engage batches` prints.
pub(crate) fn render_rows(rows: &[BatchRow]) -> String {
    let mut out = format!(
        "{:<32} {:<9} {:<21} {:>13} {:>7} {:>10}\n",
        "BATCH", "STATE", "CREATED", "ITEMS FINAL", "FAILED", "LEARNERS"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<32} {:<9} {:<21} {:>13} {:>7} {:>10}",
            r.id,
            r.state.as_str(),
            r.created_at,
            format!("{}/{}", r.final_items, r.items),
            r.failed_items,
            format!("{}/{}", r.learners_aggregated, r.learners),
        );
        if let Some(h) = r.halts.first() {
            let _ = writeln!(
                out,
                "  halted by {} ({}: {}); `engage dlq replay {}` resumes it",
                h.job_id, h.reason, h.error, h.stage
            );
        }
    }
    out
}

/// `engage inspect`.
pub(crate) async fn inspect(cfg: &FleetConfig, a: &InspectArgs) -> anyhow::Result<()> {
    if let Some(item) = &a.item {
        let d = batch_ops::inspect_item(cfg, &a.batch, item).await?;
        return if a.json {
            print_json(&d)
        } else {
            print!("{}", render_item(&d));
            Ok(())
        };
    }
    if let Some(learner) = &a.learner {
        let d = batch_ops::inspect_learner(cfg, &a.batch, learner).await?;
        return if a.json {
            print_json(&d)
        } else {
            print!("{}", render_learner(&d));
            Ok(())
        };
    }
    let d = batch_ops::inspect_batch(cfg, &a.batch).await?;
    if a.json {
        return print_json(&d);
    }
    print!("{}", render_batch(&d));
    Ok(())
}

/// The text of `engage inspect BATCH`.
pub(crate) fn render_batch(d: &BatchDetail) -> String {
    let r = &d.row;
    let mut out = format!("batch {}: {}\n", r.id, r.state.as_str());
    let _ = writeln!(out, "  created  {}", r.created_at);
    if let Some(p) = &d.planned_at {
        let _ = writeln!(
            out,
            "  planned  {p} ({} clean pieces)",
            d.pieces.unwrap_or(0)
        );
    }
    for s in &d.stages {
        let _ = writeln!(out, "  {:<10} {}/{}", s.stage, s.done, s.total);
    }
    for (reason, n) in &d.failed {
        let _ = writeln!(out, "  failed items: {n} {reason}");
    }
    for (kind, n) in &d.repaired {
        let _ = writeln!(out, "  repaired: {n} {kind}");
    }
    if d.reopened > 0 {
        let _ = writeln!(out, "  reopened by replays: {}", d.reopened);
    }
    for h in &r.halts {
        let _ = writeln!(
            out,
            "  halted by {} ({} {}: {})",
            h.job_id, h.stage, h.reason, h.error
        );
    }
    out
}

/// The text of `engage inspect BATCH --item ID`.
pub(crate) fn render_item(d: &ItemDetail) -> String {
    let mut out = format!(
        "item {} of batch {} (learner {})\n",
        d.item,
        d.batch,
        d.learner.as_deref().unwrap_or("?")
    );
    if let Some(t) = &d.batch_created_at {
        let _ = writeln!(out, "  batch created {t}");
    }
    for s in &d.path {
        let mark = match s.status {
            StepStatus::Done => "done",
            StepStatus::Pending => "pending",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "skipped",
        };
        let at =
            s.at.as_deref()
                .map(|t| format!(" (at {t})"))
                .unwrap_or_default();
        let _ = writeln!(out, "  {:<12} {:<8} {}{at}", s.stage, mark, s.note);
    }
    match (d.outcome, &d.failure_reason) {
        (Some(_), Some(r)) => {
            let _ = writeln!(
                out,
                "  outcome: failed ({r}) {}",
                d.failure_detail.as_deref().unwrap_or("")
            );
        }
        (Some(o), None) => {
            let _ = writeln!(
                out,
                "  outcome: {o} by {} from {} ({} prompt + {} output tokens)",
                d.analyzer.as_deref().unwrap_or("?"),
                d.source.unwrap_or("?"),
                d.prompt_tokens,
                d.output_tokens
            );
        }
        (None, _) => out.push_str("  outcome: not final yet\n"),
    }
    for l in &d.dead_letters {
        let _ = writeln!(
            out,
            "  dead-lettered {} at {} after {} attempts ({}): {}",
            l.job_id, l.dead_lettered_at, l.attempts, l.reason, l.error
        );
    }
    out
}

/// The text of `engage inspect BATCH --learner ID`.
pub(crate) fn render_learner(d: &LearnerDetail) -> String {
    let mut out = format!(
        "learner {} of batch {}: {} items, {}\n",
        d.learner,
        d.batch,
        d.items.len(),
        if d.aggregated {
            "aggregated"
        } else {
            "not aggregated yet"
        }
    );
    for i in &d.items {
        let what = match (&i.failure_reason, i.outcome) {
            (Some(r), _) => format!("failed ({r})"),
            (None, Some(o)) => format!(
                "{o} by {} from {}",
                i.analyzer.as_deref().unwrap_or("?"),
                i.source.unwrap_or("?")
            ),
            (None, None) => {
                let at = i
                    .path
                    .iter()
                    .find(|s| s.status == StepStatus::Pending)
                    .map_or("?", |s| s.stage);
                format!("waiting at {at}")
            }
        };
        let _ = writeln!(out, "  {}  {what}", i.item);
    }
    out
}

/// `engage status --json`: without a batch, the batch list (as `engage
/// batches --json`); with one, its detail (as `engage inspect --json`),
/// after waiting for it to end with `--wait`.
pub(crate) async fn status_json(
    cfg: &FleetConfig,
    batch: Option<&str>,
    wait: bool,
    timeout: Duration,
) -> anyhow::Result<BatchEnd> {
    let Some(batch) = batch else {
        print_json(&batch_ops::list_batches(cfg, &BatchFilter::default()).await?)?;
        return Ok(BatchEnd::Complete);
    };
    let deadline = Instant::now() + timeout;
    loop {
        let d = match batch_ops::inspect_batch(cfg, batch).await {
            Ok(d) => Some(d),
            // Not planned yet: while waiting, that is "still open".
            Err(batch_ops::OpsError::UnknownBatch(_)) if wait => None,
            Err(e) => return Err(e).context("engage status --json"),
        };
        let end = match d.as_ref().map(|d| d.row.state) {
            Some(BatchState::Complete) => BatchEnd::Complete,
            Some(BatchState::Failed) => BatchEnd::Halted,
            _ => BatchEnd::Open,
        };
        if end != BatchEnd::Open || !wait || Instant::now() >= deadline {
            match d {
                Some(d) => print_json(&d)?,
                None => print_json(&serde_json::json!({"id": batch, "state": "unknown"}))?,
            }
            return Ok(end);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
