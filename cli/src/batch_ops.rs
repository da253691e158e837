//! The operator's read verbs over one namespace — which batches there are
//! (`engage batches`) and what became of a batch, a learner or an item
//! (`engage inspect`) — as functions returning typed, serialisable views: the
//! CLI prints them (as text or `--json`), the dashboard can render them.
//!
//! They only read: the ledger and its batch index in Redis, the batch's plan,
//! item log and learner rows in the store, and (passively, for an item's dead
//! letters) the dead-letter queues. Nothing is declared or written.
//!
//! What an item's path can show is what the fleet records: whether it was
//! registered (clean and match), downloaded, made final (with its outcome,
//! analyzer and where the answer came from) and aggregated, plus the
//! attempts, error and time of any dead-lettered job of it. Workers record no
//! per-stage timestamps; the batch's own times (ledger opened, plan made)
//! are shown instead.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use engage_model::envelope::StageName;
use engage_model::jobs::{BatchPlan, ItemState, ids};
use engage_model::layout::{Layout, valid_batch_id};
use engage_runtime::config::FleetConfig;
use engage_runtime::idempotency::{Idempotency, IdempotencyError};
use engage_runtime::item_log;
use engage_runtime::ledger::{Ledger, LedgerError, Progress};
use engage_runtime::services::storage_config;
use engage_runtime::storage::{ObjectUri, Storage};
use serde::Serialize;

use crate::fleet::{self, DeadLetter};

/// Why a read verb could not answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpsError {
    /// The batch id is not a valid id.
    #[error("invalid batch id {0:?}: use 1-64 characters of [A-Za-z0-9._-]")]
    BadBatchId(String),
    /// `--since` is neither a duration nor a time.
    #[error(
        "invalid --since {0:?}: give a duration back from now (`90m`, `2h`, `7d`) or an RFC 3339 time (`2026-12-01T08:00:00Z`)"
    )]
    BadSince(String),
    /// The batch is in neither the ledger nor the store.
    #[error(
        "unknown batch {0}: not in this namespace's ledger nor in the store (wrong --namespace?)"
    )]
    UnknownBatch(String),
    /// The batch holds no such item.
    #[error("batch {batch} has no item {item}")]
    UnknownItem {
        /// The batch.
        batch: String,
        /// The response id asked for.
        item: String,
    },
    /// The batch holds no such learner (the id is not echoed: it is personal).
    #[error("batch {0} has no such learner")]
    UnknownLearner(String),
    /// Redis (or the broker) cannot be reached.
    #[error("{0:#}")]
    Unreachable(anyhow::Error),
    /// Redis failed.
    #[error("reading the ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The store failed.
    #[error("reading the store: {0:#}")]
    Store(anyhow::Error),
    /// The broker failed.
    #[error("reading the dead-letter queues: {0:#}")]
    Broker(anyhow::Error),
    /// Redis failed while reading completion markers.
    #[error("reading completion markers: {0}")]
    Markers(#[from] IdempotencyError),
}

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BatchState {
    /// Planned or running: not complete, not halted.
    Open,
    /// The report is written.
    Complete,
    /// Halted: a dead-lettered clean, match or aggregate job stopped it
    /// (`engage dlq replay` resumes it).
    Failed,
    /// The ledger has expired and the store holds no report: nothing is known.
    #[value(skip)]
    Expired,
}

impl BatchState {
    /// The word `engage batches` prints.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Complete => "complete",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }
}

/// Which batches `engage batches` lists.
#[derive(Debug, Clone, Default)]
pub(crate) struct BatchFilter {
    /// Only batches in this state.
    pub state: Option<BatchState>,
    /// Only batches whose ledger was opened at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// Parses `--since`: a duration back from `now` (`90m`, `2h`, `7d`, `1h 30m`)
/// or an RFC 3339 time.
pub(crate) fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, OpsError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(s).map_err(|_| OpsError::BadSince(s.to_string()))?;
    let d = chrono::Duration::from_std(d).map_err(|_| OpsError::BadSince(s.to_string()))?;
    now.checked_sub_signed(d)
        .ok_or_else(|| OpsError::BadSince(s.to_string()))
}

/// A job that halted a batch.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HaltView {
    /// The dead-lettered job.
    pub job_id: String,
    /// Its stage.
    pub stage: String,
    /// The dead-letter reason.
    pub reason: String,
    /// The last error.
    pub error: String,
}

/// One line of `engage batches`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BatchRow {
    /// The batch id.
    pub id: String,
    /// Where it stands.
    pub state: BatchState,
    /// When its ledger was opened (RFC 3339, UTC).
    pub created_at: String,
    /// Items registered.
    pub items: u64,
    /// Items final (analyzed or failed).
    pub final_items: u64,
    /// Items final as failed.
    pub failed_items: u64,
    /// Learners.
    pub learners: u64,
    /// Learners aggregated.
    pub learners_aggregated: u64,
    /// The jobs that halted it (empty unless `failed`).
    pub halts: Vec<HaltView>,
}

fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_default()
}

async fn ledger(cfg: &FleetConfig) -> Result<Ledger, OpsError> {
    let conn = fleet::redis(cfg).await.map_err(OpsError::Unreachable)?;
    Ok(Ledger::new(conn, cfg.fleet.namespace.clone()))
}

async fn store(cfg: &FleetConfig) -> Result<(Storage, Layout), OpsError> {
    let st = Storage::new(&storage_config(cfg))
        .await
        .map_err(|e| OpsError::Store(e.into()))?;
    let root = ObjectUri::parse(&cfg.store.root).map_err(|e| OpsError::Store(e.into()))?;
    Ok((st, Layout::new(root)))
}

/// The row of one batch, from its ledger (or, once that expired, the store).
async fn row(
    cfg: &FleetConfig,
    ledger: &Ledger,
    id: &str,
    created_ms: i64,
) -> Result<(BatchRow, Option<Progress>), OpsError> {
    let progress = ledger.progress(id).await?;
    let halts: Vec<HaltView> = ledger
        .halts(id)
        .await?
        .into_iter()
        .map(|h| HaltView {
            job_id: h.job_id,
            stage: h.stage,
            reason: h.reason,
            error: h.error,
        })
        .collect();
    let state = match &progress {
        Some(p) if p.complete => BatchState::Complete,
        _ if !halts.is_empty() => BatchState::Failed,
        Some(_) => BatchState::Open,
        None => {
            let done = fleet::outputs_exist(cfg, id)
                .await
                .map_err(OpsError::Store)?;
            if done {
                BatchState::Complete
            } else {
                BatchState::Expired
            }
        }
    };
    let p = progress.clone().unwrap_or_default();
    Ok((
        BatchRow {
            id: id.to_string(),
            state,
            created_at: rfc3339_ms(created_ms),
            items: p.items,
            final_items: p.final_items,
            failed_items: p.failed.values().sum(),
            learners: p.learners,
            learners_aggregated: p.learners_aggregated,
            halts,
        },
        progress,
    ))
}

/// `engage batches`: the namespace's batches, newest first, filtered.
pub(crate) async fn list_batches(
    cfg: &FleetConfig,
    filter: &BatchFilter,
) -> Result<Vec<BatchRow>, OpsError> {
    let ledger = ledger(cfg).await?;
    let since_ms = filter.since.map(|t| t.timestamp_millis());
    let mut rows = Vec::new();
    for (id, created_ms) in ledger.batch_index().await? {
        if since_ms.is_some_and(|s| created_ms < s) {
            // Newest first: every later entry is older still.
            break;
        }
        let (r, _) = row(cfg, &ledger, &id, created_ms).await?;
        if filter.state.is_none_or(|s| s == r.state) {
            rows.push(r);
        }
    }
    Ok(rows)
}

/// Per stage: done out of expected.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StageCount {
    /// The stage.
    pub stage: &'static str,
    /// Units done (pieces, match jobs, items, learners).
    pub done: u64,
    /// Units expected.
    pub total: u64,
}

/// `engage inspect BATCH`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BatchDetail {
    /// The batch's row (state, counts, halts).
    #[serde(flatten)]
    pub row: BatchRow,
    /// When the plan was made (from the stored plan), if it was.
    pub planned_at: Option<String>,
    /// Clean pieces planned.
    pub pieces: Option<usize>,
    /// Per-stage progress (empty once the ledger expired).
    pub stages: Vec<StageCount>,
    /// Failed items per reason.
    pub failed: BTreeMap<String, u64>,
    /// Reconciler repairs per kind.
    pub repaired: BTreeMap<String, u64>,
    /// Items reopened by replays.
    pub reopened: u64,
}

fn check_id(batch: &str) -> Result<(), OpsError> {
    if valid_batch_id(batch) {
        Ok(())
    } else {
        Err(OpsError::BadBatchId(batch.to_string()))
    }
}

/// `engage inspect BATCH`: the batch's state, plan and per-stage progress.
pub(crate) async fn inspect_batch(cfg: &FleetConfig, batch: &str) -> Result<BatchDetail, OpsError> {
    check_id(batch)?;
    let ledger = ledger(cfg).await?;
    let created_ms = ledger
        .batch_index()
        .await?
        .into_iter()
        .find(|(b, _)| b == batch)
        .map(|(_, ms)| ms);
    let (st, layout) = store(cfg).await?;
    let plan: Option<BatchPlan> = engage_runtime::store_io::get_json(
        &st,
        &layout
            .batch_spec(batch)
            .map_err(|e| OpsError::Store(e.into()))?,
    )
    .await
    .map_err(|e| OpsError::Store(e.into()))?;
    let (row, progress) = row(cfg, &ledger, batch, created_ms.unwrap_or(0)).await?;
    if created_ms.is_none() && progress.is_none() && plan.is_none() {
        return Err(OpsError::UnknownBatch(batch.to_string()));
    }
    let p = progress.unwrap_or_default();
    let stages = if row.state == BatchState::Expired || p.pieces_expected == 0 && p.items == 0 {
        Vec::new()
    } else {
        fleet::stage_lines(&p)
            .into_iter()
            .map(|(stage, done, total)| StageCount { stage, done, total })
            .collect()
    };
    Ok(BatchDetail {
        planned_at: plan.as_ref().map(|p| p.planned_at.clone()),
        pieces: plan.as_ref().map(|p| p.pieces.len()),
        stages,
        failed: p.failed,
        repaired: p.repaired,
        reopened: p.reopened,
        row,
    })
}

/// How far an item got in one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StepStatus {
    /// Done.
    Done,
    /// Not yet (or, once the ledger expired, not known).
    Pending,
    /// The item was made final as failed at this stage.
    Failed,
    /// Never to run: the item failed at an earlier stage.
    Skipped,
}

/// One stage of an item's path.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Step {
    /// `clean+match`, `download`, `analyze` or `aggregate`.
    pub stage: &'static str,
    /// How far it got.
    pub status: StepStatus,
    /// What the fleet recorded there (outcome, source, reason).
    pub note: String,
    /// When the stage's job for the item finished (RFC 3339), from its
    /// completion marker (kept 7 days); `None` when not known (not run yet,
    /// or a stage shared by many items: clean and match).
    pub at: Option<String>,
}

/// `engage inspect BATCH --item ID`: one item's path through the stages.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ItemDetail {
    /// The batch.
    pub batch: String,
    /// The response id.
    pub item: String,
    /// Its learner (when known).
    pub learner: Option<String>,
    /// The batch's ledger was opened at (RFC 3339), when known.
    pub batch_created_at: Option<String>,
    /// The stages, in order.
    pub path: Vec<Step>,
    /// `analyzed` or `failed` once final.
    pub outcome: Option<&'static str>,
    /// The failure reason, if it failed.
    pub failure_reason: Option<String>,
    /// The failure detail, if it failed.
    pub failure_detail: Option<String>,
    /// The analyzer (and version) that answered, if analyzed.
    pub analyzer: Option<String>,
    /// Where the answer came from: `paid_call`, `result_cache`, `prefilter`
    /// or `none` (nothing was asked: the item failed before analysis).
    pub source: Option<&'static str>,
    /// Prompt tokens of its paid call.
    pub prompt_tokens: u64,
    /// Output tokens of its paid call.
    pub output_tokens: u64,
    /// Its download and analyze jobs found in the dead-letter queues, with
    /// their attempts, last error and time.
    pub dead_letters: Vec<DeadLetter>,
}

/// `engage inspect BATCH --learner ID`: a learner's items.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LearnerDetail {
    /// The batch.
    pub batch: String,
    /// The learner.
    pub learner: String,
    /// Aggregated (its report rows written).
    pub aggregated: bool,
    /// Its items, by response id.
    pub items: Vec<ItemDetail>,
}

/// Where an item's answer came from.
fn source(s: &ItemState) -> &'static str {
    if s.cost.called {
        "paid_call"
    } else if s.cost.cache_hit {
        "result_cache"
    } else if s.cost.prefiltered {
        "prefilter"
    } else {
        "none"
    }
}

/// The facts about one batch that every item of it shares.
struct BatchFacts {
    batch: String,
    created_at: Option<String>,
    /// The ledger exists (false once it expired).
    live: bool,
    registered: BTreeSet<String>,
    downloaded: BTreeSet<String>,
    final_items: BTreeSet<String>,
    aggregated_learners: BTreeSet<String>,
    /// One logged state per response id.
    logged: BTreeMap<String, ItemState>,
    dead: Vec<(String, DeadLetter)>,
    complete: bool,
}

async fn facts(cfg: &FleetConfig, batch: &str) -> Result<BatchFacts, OpsError> {
    check_id(batch)?;
    let ledger = ledger(cfg).await?;
    let created_at = ledger
        .batch_index()
        .await?
        .into_iter()
        .find(|(b, _)| b == batch)
        .map(|(_, ms)| rfc3339_ms(ms));
    let progress = ledger.progress(batch).await?;
    let (st, layout) = store(cfg).await?;
    let logged = item_log::read_batch(&st, &layout, batch)
        .await
        .map_err(|e| OpsError::Store(anyhow::anyhow!("{e}")))?;
    if progress.is_none() && logged.is_empty() && created_at.is_none() {
        return Err(OpsError::UnknownBatch(batch.to_string()));
    }
    let set = |name: &'static str| {
        let ledger = &ledger;
        async move { ledger.members(batch, name).await }
    };
    Ok(BatchFacts {
        batch: batch.to_string(),
        created_at,
        live: progress.is_some(),
        complete: progress.as_ref().is_some_and(|p| p.complete)
            || fleet::outputs_exist(cfg, batch)
                .await
                .map_err(OpsError::Store)?,
        registered: set("all_items").await?,
        downloaded: set("downloaded").await?,
        final_items: set("all_final").await?,
        aggregated_learners: set("agg_done").await?,
        logged,
        dead: item_dead_letters(cfg, batch).await?,
    })
}

/// The batch's download and analyze dead letters, with their job ids. A
/// dead-letter queue that does not exist yet holds nothing.
async fn item_dead_letters(
    cfg: &FleetConfig,
    batch: &str,
) -> Result<Vec<(String, DeadLetter)>, OpsError> {
    /// Most dead letters read per stage.
    const SCAN: usize = 10_000;
    let conn = fleet::connect(cfg).await.map_err(OpsError::Unreachable)?;
    let topo = fleet::topology(cfg);
    let mut out = Vec::new();
    for s in [StageName::Download, StageName::Analyze] {
        // A missing queue closes its channel: one channel per stage.
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| OpsError::Broker(e.into()))?;
        if let Ok(peek) = fleet::dlq_peek(&ch, &topo, s, SCAN).await {
            out.extend(
                peek.letters
                    .into_iter()
                    .filter(|l| l.batch == batch)
                    .map(|l| (l.job_id.clone(), l)),
            );
            let _ = ch.close(200, "bye".into()).await;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(out)
}

fn item_detail(f: &BatchFacts, item: &str, learner: Option<&str>) -> ItemDetail {
    let state = f.logged.get(item);
    let learner = state
        .map(|s| s.user_id.clone())
        .or(learner.map(str::to_string));
    let is_final = f.final_items.contains(item) || state.is_some();
    let failure = state.and_then(|s| s.outcome.failure_reason().map(str::to_string));
    let downloaded = f.downloaded.contains(item);
    let registered = f.registered.contains(item) || state.is_some();
    let aggregated = learner
        .as_deref()
        .is_some_and(|u| f.aggregated_learners.contains(u))
        || f.complete;
    let step = |stage, done: bool, failed: bool, note: String| Step {
        stage,
        status: if done {
            StepStatus::Done
        } else if failed {
            StepStatus::Failed
        } else {
            StepStatus::Pending
        },
        note,
        at: None,
    };
    let pending_note = if f.live {
        String::new()
    } else {
        "ledger expired: not known".to_string()
    };
    let mut path = vec![step(
        "clean+match",
        registered,
        false,
        if registered {
            "registered".into()
        } else {
            pending_note.clone()
        },
    )];
    // An item that failed before analysis (no audio) was never downloaded.
    let failed_early = is_final && !downloaded && failure.is_some();
    path.push(step(
        "download",
        downloaded || (is_final && failure.is_none()),
        failed_early,
        match (&failure, failed_early) {
            (Some(r), true) => r.clone(),
            _ if downloaded => "audio fetched".into(),
            _ => pending_note.clone(),
        },
    ));
    let mut analyze = step(
        "analyze",
        is_final && failure.is_none(),
        is_final && failure.is_some() && !failed_early,
        match state {
            Some(s) => match &s.outcome {
                engage_model::AnalysisOutcome::Ok(r) => {
                    format!("analyzed by {} ({})", r.analyzer, source(s))
                }
                engage_model::AnalysisOutcome::Failed { reason, .. } => format!("failed: {reason}"),
            },
            None if is_final => "final".into(),
            None => pending_note.clone(),
        },
    );
    if failed_early {
        analyze.status = StepStatus::Skipped;
    }
    path.push(analyze);
    path.push(step(
        "aggregate",
        aggregated,
        false,
        if aggregated {
            "learner aggregated".into()
        } else {
            pending_note
        },
    ));
    let jobs = [ids::download(&f.batch, item), ids::analyze(&f.batch, item)];
    ItemDetail {
        batch: f.batch.clone(),
        item: item.to_string(),
        learner,
        batch_created_at: f.created_at.clone(),
        path,
        outcome: is_final.then_some(if failure.is_some() {
            "failed"
        } else {
            "analyzed"
        }),
        failure_reason: failure,
        failure_detail: state.and_then(|s| match &s.outcome {
            engage_model::AnalysisOutcome::Failed { detail, .. } => Some(detail.clone()),
            engage_model::AnalysisOutcome::Ok(_) => None,
        }),
        analyzer: state
            .and_then(|s| s.outcome.result())
            .map(|r| r.analyzer.clone()),
        source: state.map(source),
        prompt_tokens: state.map_or(0, |s| s.cost.prompt_tokens),
        output_tokens: state.map_or(0, |s| s.cost.output_tokens),
        dead_letters: f
            .dead
            .iter()
            .filter(|(job, _)| jobs.contains(job))
            .map(|(_, l)| l.clone())
            .collect(),
    }
}

/// `engage inspect BATCH --item ID`.
pub(crate) async fn inspect_item(
    cfg: &FleetConfig,
    batch: &str,
    item: &str,
) -> Result<ItemDetail, OpsError> {
    let f = facts(cfg, batch).await?;
    let known = f.registered.contains(item)
        || f.logged.contains_key(item)
        || f.final_items.contains(item)
        || f.dead
            .iter()
            .any(|(j, _)| *j == ids::download(batch, item) || *j == ids::analyze(batch, item));
    if !known {
        return Err(OpsError::UnknownItem {
            batch: batch.to_string(),
            item: item.to_string(),
        });
    }
    // The learner of an item not final yet: the ledger's per-learner sets.
    let mut learner = None;
    if !f.logged.contains_key(item) {
        let ledger = ledger(cfg).await?;
        for u in ledger.learners(batch).await? {
            if ledger
                .members(batch, &format!("items:{u}"))
                .await?
                .contains(item)
            {
                learner = Some(u);
                break;
            }
        }
    }
    let mut detail = item_detail(&f, item, learner.as_deref());
    stage_times(cfg, &mut detail).await?;
    Ok(detail)
}

/// Fills in when the item's download, analyze and aggregate jobs finished,
/// from their completion markers.
async fn stage_times(cfg: &FleetConfig, d: &mut ItemDetail) -> Result<(), OpsError> {
    let conn = fleet::redis(cfg).await.map_err(OpsError::Unreachable)?;
    let markers = Idempotency::new(conn, cfg.fleet.namespace.clone());
    for step in &mut d.path {
        let job = match step.stage {
            "download" => (StageName::Download, ids::download(&d.batch, &d.item)),
            "analyze" => (StageName::Analyze, ids::analyze(&d.batch, &d.item)),
            "aggregate" => match &d.learner {
                Some(u) => (StageName::Aggregate, ids::aggregate(&d.batch, u)),
                None => continue,
            },
            _ => continue,
        };
        step.at = markers.done_at(job.0, &job.1).await?.map(rfc3339_ms);
    }
    Ok(())
}

/// `engage inspect BATCH --learner ID`.
pub(crate) async fn inspect_learner(
    cfg: &FleetConfig,
    batch: &str,
    learner: &str,
) -> Result<LearnerDetail, OpsError> {
    let f = facts(cfg, batch).await?;
    let ledger = ledger(cfg).await?;
    let mut items: BTreeSet<String> = ledger.members(batch, &format!("items:{learner}")).await?;
    items.extend(
        f.logged
            .values()
            .filter(|s| s.user_id == learner)
            .map(|s| s.response_id.clone()),
    );
    if items.is_empty() {
        return Err(OpsError::UnknownLearner(batch.to_string()));
    }
    Ok(LearnerDetail {
        batch: batch.to_string(),
        learner: learner.to_string(),
        aggregated: f.aggregated_learners.contains(learner) || f.complete,
        items: items
            .iter()
            .map(|i| item_detail(&f, i, Some(learner)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::AnalysisOutcome;
    use engage_model::jobs::ItemCost;

    fn facts(logged: Vec<ItemState>, dead: Vec<(String, DeadLetter)>) -> BatchFacts {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        BatchFacts {
            batch: "b".into(),
            created_at: None,
            live: true,
            registered: set(&["r1", "r2", "r3"]),
            downloaded: set(&["r1", "r3"]),
            final_items: set(&["r1", "r2"]),
            aggregated_learners: BTreeSet::new(),
            logged: logged
                .into_iter()
                .map(|s| (s.response_id.clone(), s))
                .collect(),
            dead,
            complete: false,
        }
    }

    fn letter(job: &str) -> (String, DeadLetter) {
        (
            job.into(),
            DeadLetter {
                job_id: job.into(),
                batch: "b".into(),
                reason: "max_attempts".into(),
                attempts: "3".into(),
                error: "timeout".into(),
                dead_lettered_at: "2026-12-01T00:00:00Z".into(),
            },
        )
    }

    fn statuses(d: &ItemDetail) -> Vec<StepStatus> {
        d.path.iter().map(|s| s.status).collect()
    }

    #[test]
    fn an_item_without_audio_failed_at_download_and_was_never_analyzed() {
        let no_audio = ItemState {
            response_id: "r2".into(),
            user_id: "u".into(),
            outcome: AnalysisOutcome::Failed {
                reason: "audio_missing".into(),
                detail: "404".into(),
            },
            cost: ItemCost::default(),
        };
        let d = item_detail(&facts(vec![no_audio], vec![]), "r2", None);
        use StepStatus::*;
        assert_eq!(statuses(&d), [Done, Failed, Skipped, Pending]);
        assert_eq!(d.outcome, Some("failed"));
        assert_eq!(d.failure_reason.as_deref(), Some("audio_missing"));
        assert_eq!(d.source, Some("none"));
        assert_eq!(d.learner.as_deref(), Some("u"));
    }

    #[test]
    fn a_waiting_item_shows_its_dead_lettered_analyze_job_and_nothing_else() {
        let f = facts(
            vec![],
            vec![
                letter(&ids::analyze("b", "r3")),
                letter(&ids::analyze("b", "r1")),
            ],
        );
        let d = item_detail(&f, "r3", Some("u3"));
        use StepStatus::*;
        assert_eq!(statuses(&d), [Done, Done, Pending, Pending]);
        assert_eq!(d.outcome, None);
        assert_eq!(d.dead_letters.len(), 1, "{:?}", d.dead_letters);
        assert_eq!(d.dead_letters[0].job_id, ids::analyze("b", "r3"));
        assert_eq!(d.dead_letters[0].attempts, "3");
        assert_eq!(d.learner.as_deref(), Some("u3"));
    }

    #[test]
    fn a_cache_hit_is_told_apart_from_a_paid_call() {
        let state = |called, cache_hit| ItemState {
            response_id: "r1".into(),
            user_id: "u".into(),
            outcome: AnalysisOutcome::Failed {
                reason: "x".into(),
                detail: String::new(),
            },
            cost: ItemCost {
                called,
                cache_hit,
                ..Default::default()
            },
        };
        assert_eq!(source(&state(true, false)), "paid_call");
        assert_eq!(source(&state(false, true)), "result_cache");
        assert_eq!(source(&state(false, false)), "none");
    }

    #[test]
    fn since_takes_a_duration_back_from_now_or_a_time() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("90m", now).unwrap().to_rfc3339(),
            "2026-12-01T10:30:00+00:00"
        );
        assert_eq!(
            parse_since("2d", now).unwrap().to_rfc3339(),
            "2026-11-29T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-11-30T08:00:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-11-30T07:00:00+00:00"
        );
        for bad in ["", "yesterday", "-5m", "5 parsecs"] {
            assert!(
                matches!(parse_since(bad, now), Err(OpsError::BadSince(_))),
                "{bad:?}"
            );
        }
    }
}
