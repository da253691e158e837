//! Reading the fleet's state for the pages: the batch ledger (batches,
//! progress, halts), queue depths by passive `queue_declare` (declaring
//! nothing), the workers' heartbeats and per-minute throughput
//! ([`engage_runtime::presence`]), dead letters through `engage dlq list`'s
//! reader, the Gemini limiter's pause, bookings and 429s, and a batch's
//! `report.html` from the store.

use std::collections::BTreeMap;

use anyhow::Context;
use engage_analyze::ratelimit::{FleetLimiter, FleetPause, Quota, Usage};
use engage_model::envelope::StageName;
use engage_model::layout::{Layout, valid_batch_id};
use engage_runtime::config::FleetConfig;
use engage_runtime::ledger::{Halt, Ledger, Progress};
use engage_runtime::presence::{self, FleetPresence};
use engage_runtime::services::storage_config;
use engage_runtime::storage::{ObjectUri, Storage};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::error::DashboardError;
use crate::fleet::{self, DlqPeek};

/// Batches listed on the home page.
pub(crate) const HOME_BATCHES: usize = 50;
/// Dead letters listed on a stage's page.
pub(crate) const DLQ_SHOWN: usize = 50;
/// Minutes of throughput charted on the home page.
pub(crate) const THROUGHPUT_MINUTES: usize = 30;

/// Where a batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchState {
    /// Work under way.
    Running,
    /// The report is written.
    Complete,
    /// A dead-lettered clean, match or aggregate job stopped it.
    Halted,
    /// The ledger does not know it (expired, or not planned yet).
    Unknown,
}

impl BatchState {
    /// The word shown.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Halted => "halted",
            Self::Unknown => "unknown",
        }
    }
}

/// One batch as the pages show it.
#[derive(Debug, Clone)]
pub(crate) struct BatchView {
    /// Its id (validated).
    pub id: String,
    /// Its state.
    pub state: BatchState,
    /// Its ledger progress, if the ledger still has it.
    pub progress: Option<Progress>,
    /// The jobs that halted it.
    pub halts: Vec<Halt>,
}

impl BatchView {
    /// (stage, done, total) per stage, empty without progress.
    pub(crate) fn stages(&self) -> Vec<(&'static str, u64, u64)> {
        self.progress
            .as_ref()
            .map(fleet::stage_lines)
            .unwrap_or_default()
    }
}

/// Counts of one stage's queues (`None`: the queue does not exist or the
/// broker cannot be asked).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StageQueues {
    /// The stage.
    pub stage: StageName,
    /// Messages ready in its work queue.
    pub backlog: Option<u32>,
    /// Messages in its dead-letter queue.
    pub dead: Option<u32>,
}

/// The home page's data.
#[derive(Debug, Clone)]
pub(crate) struct Overview {
    /// Recent batches, newest first.
    pub batches: Vec<BatchView>,
    /// Per stage, its queues.
    pub queues: Vec<StageQueues>,
    /// The fleet's Gemini pause, if any.
    pub pause: Option<FleetPause>,
    /// Jobs parked on the wait ladder (`None`: unknown).
    pub parked: Option<u64>,
    /// Workers heard from lately and jobs finished per minute (`None`:
    /// Redis could not answer).
    pub presence: Option<FleetPresence>,
    /// The Gemini limiter's bookings and the fleet's 429s (`None`: Redis
    /// could not answer).
    pub gemini: Option<Usage>,
    /// The configured Gemini quota: requests/min, tokens/min, requests/day
    /// (`None`: no daily limit).
    pub quota: (u64, u64, Option<u64>),
}

/// The fleet's state as the home page shows it.
pub(crate) async fn overview(cfg: &FleetConfig) -> anyhow::Result<Overview> {
    let ledger = ledger(cfg).await?;
    let mut batches = Vec::new();
    for id in ledger.batches().await?.into_iter().take(HOME_BATCHES) {
        // Ids come from Redis: show only what a batch id may look like.
        if valid_batch_id(&id) {
            batches.push(batch_view(cfg, &ledger, &id).await?);
        }
    }
    let redis = fleet::redis(cfg).await?;
    let ns = &cfg.fleet.namespace;
    let presence = presence::read(&redis, ns, THROUGHPUT_MINUTES)
        .await
        .map_err(|e| tracing::warn!(error = %e, "reading the workers' presence"))
        .ok();
    let gemini = match FleetLimiter::new(redis, ns, Quota::default()) {
        Ok(l) => l
            .usage()
            .await
            .map_err(|e| tracing::warn!(error = %e, "reading the Gemini limiter"))
            .ok(),
        Err(_) => None,
    };
    let g = &cfg.gemini;
    Ok(Overview {
        batches,
        queues: queue_counts(cfg).await,
        pause: crate::quota::fleet_pause(cfg).await?,
        parked: crate::quota::parked_jobs(cfg).await,
        presence,
        gemini,
        quota: (
            u64::from(g.rpm),
            g.tpm,
            (g.rpd > 0).then_some(u64::from(g.rpd)),
        ),
    })
}

/// One batch, or `NotFound` when the id is invalid or nothing knows it.
pub(crate) async fn batch(cfg: &FleetConfig, id: &str) -> Result<BatchView, DashboardError> {
    if !valid_batch_id(id) {
        return Err(DashboardError::NotFound("no such batch".into()));
    }
    let ledger = ledger(cfg).await?;
    let view = batch_view(cfg, &ledger, id).await?;
    if view.state == BatchState::Unknown {
        return Err(DashboardError::NotFound("no such batch".into()));
    }
    Ok(view)
}

async fn ledger(cfg: &FleetConfig) -> anyhow::Result<Ledger> {
    Ok(Ledger::new(
        fleet::redis(cfg).await?,
        cfg.fleet.namespace.clone(),
    ))
}

async fn batch_view(cfg: &FleetConfig, ledger: &Ledger, id: &str) -> anyhow::Result<BatchView> {
    let progress = ledger.progress(id).await?;
    let halts = ledger.halts(id).await?;
    let complete = match &progress {
        Some(p) => p.complete,
        None => fleet::outputs_exist(cfg, id).await?,
    };
    let state = if complete {
        BatchState::Complete
    } else if !halts.is_empty() {
        BatchState::Halted
    } else if progress.is_some() {
        BatchState::Running
    } else {
        BatchState::Unknown
    };
    Ok(BatchView {
        id: id.to_string(),
        state,
        progress,
        halts,
    })
}

/// Ready messages in every stage's work and dead-letter queue, looked up
/// passively (a fresh channel each: a missing queue closes its channel).
pub(crate) async fn queue_counts(cfg: &FleetConfig) -> Vec<StageQueues> {
    let conn = engage_runtime::broker::connect(cfg.broker.amqp_url.expose(), "engage-dashboard")
        .await
        .ok();
    let topo = fleet::topology(cfg);
    let mut out = Vec::new();
    for stage in StageName::ALL {
        let (backlog, dead) = match &conn {
            Some(c) => (
                passive_count(c, &topo.work_queue(stage)).await,
                passive_count(c, &topo.dlq(stage)).await,
            ),
            None => (None, None),
        };
        out.push(StageQueues {
            stage,
            backlog,
            dead,
        });
    }
    if let Some(c) = conn {
        let _ = c.close(200, "bye".into()).await;
    }
    out
}

async fn passive_count(conn: &lapin::Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let n = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    if n.is_some() {
        let _ = ch.close(200, "bye".into()).await;
    }
    n
}

/// A stage's dead letters (at most [`DLQ_SHOWN`]), read like `engage dlq
/// list`; `None` when its dead-letter queue does not exist yet.
pub(crate) async fn dead_letters(
    cfg: &FleetConfig,
    stage: StageName,
) -> anyhow::Result<Option<DlqPeek>> {
    let conn = fleet::connect(cfg).await?;
    let topo = fleet::topology(cfg);
    let ch = conn.create_channel().await?;
    // A missing queue is not an error here: nothing has been dead-lettered.
    let peek = if passive_count(&conn, &topo.dlq(stage)).await.is_some() {
        Some(fleet::dlq_peek(&ch, &topo, stage, DLQ_SHOWN).await?)
    } else {
        None
    };
    let _ = conn.close(200, "bye".into()).await;
    Ok(peek)
}

/// A batch's `report.html` from the store (`outputs/B/report.html`), as
/// `engage report` copies it; `NotFound` when the id is invalid or the
/// report is not written.
pub(crate) async fn report_html(cfg: &FleetConfig, id: &str) -> Result<Vec<u8>, DashboardError> {
    if !valid_batch_id(id) {
        return Err(DashboardError::NotFound("no such batch".into()));
    }
    let st = Storage::new(&storage_config(cfg))
        .await
        .context("opening the store")?;
    let layout = Layout::new(ObjectUri::parse(&cfg.store.root).context("ENGAGE_STORE")?);
    let uri = layout
        .output(id)
        .and_then(|o| o.join("report.html"))
        .context("report path")?;
    if st.size(&uri).await.context("reading the store")?.is_none() {
        return Err(DashboardError::NotFound(
            "no report for this batch yet".into(),
        ));
    }
    Ok(st.get(&uri).await.context("reading the report")?.to_vec())
}

/// Whether a batch's `report.html` exists.
pub(crate) async fn report_exists(cfg: &FleetConfig, id: &str) -> anyhow::Result<bool> {
    let st = Storage::new(&storage_config(cfg)).await?;
    let layout = Layout::new(ObjectUri::parse(&cfg.store.root)?);
    let uri = layout.output(id)?.join("report.html")?;
    Ok(st.size(&uri).await?.is_some())
}

/// Failed items by reason, most first then by name.
pub(crate) fn failed_by_reason(p: &Progress) -> Vec<(&str, u64)> {
    let mut v: Vec<(&str, u64)> = p.failed.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    v
}

/// Halts grouped by stage, for the replay hints.
pub(crate) fn halted_stages(halts: &[Halt]) -> Vec<String> {
    let by: BTreeMap<&str, ()> = halts.iter().map(|h| (h.stage.as_str(), ())).collect();
    by.into_keys().map(str::to_string).collect()
}
