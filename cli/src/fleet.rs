//! The producer and operator commands that talk to a running fleet:
//! `enqueue`, `status`, `report` and `dlq`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use engage_model::envelope::{Envelope, StageName};
use engage_model::jobs::{BatchSpec, CleanJob, ids};
use engage_model::layout::{Layout, valid_batch_id};
use engage_model::selection::Selection;
use engage_runtime::broker::{self, Publisher, Topology, header_str};
use engage_runtime::config::FleetConfig;
use engage_runtime::idempotency::Idempotency;
use engage_runtime::ledger::{Halt, Ledger, Progress};
use engage_runtime::redis_conn::RedisConn;
use engage_runtime::reopen::reopen_for_replay;
use engage_runtime::secret::redact_url;
use engage_runtime::services::storage_config;
use engage_runtime::storage::{ObjectUri, Storage};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// Arguments of `engage enqueue`.
#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    /// Activity log URI(s) (`s3://…`, `file:///…` or a local path). Repeat for several.
    #[arg(long, required = true)]
    pub activity: Vec<String>,
    /// Sessions CSV URI (or local path).
    #[arg(long)]
    pub sessions: String,
    /// Select these learners (comma-separated ids).
    #[arg(long, value_delimiter = ',', group = "select")]
    pub users: Option<Vec<String>>,
    /// Select the learners listed in this file URI (one id per line).
    #[arg(long, group = "select")]
    pub users_file: Option<String>,
    /// Select learners with at least one session at this milestone.
    #[arg(long, group = "select")]
    pub milestone: Option<String>,
    /// Batch id (default: generated). Re-enqueueing an id is a no-op.
    #[arg(long)]
    pub batch_id: Option<String>,
}

/// Arguments of `engage status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The batch id (omit to list recent batches).
    pub batch: Option<String>,
    /// Wait until the batch is complete (exit 0), or the timeout passes (exit 2).
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Print JSON (the batch as `engage inspect --json` shows it, or the
    /// list as `engage batches --json`) instead of progress lines.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `engage report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The batch id.
    pub batch: String,
    /// Directory to copy the outputs into.
    #[arg(long)]
    pub out: PathBuf,
}

/// `engage dlq …`
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCmd {
    /// Show dead-lettered messages (all stages, or one), without removing
    /// them. Reading spends nothing: dead-letter queues have no reachable
    /// delivery limit.
    List {
        /// Stage name (clean, match, download, analyze, aggregate).
        stage: Option<String>,
        /// Messages shown per stage.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON (an array of `{stage, count, letters[]}`).
        #[arg(long)]
        json: bool,
    },
    /// Move dead-lettered messages of a stage back to its work queue
    /// (attempts reset). Filters combine (AND); messages that do not match
    /// stay in the dead-letter queue. Safe to interrupt: each message is
    /// published (and confirmed) before it leaves the dead-letter queue.
    Replay {
        /// Stage name.
        stage: String,
        /// Only messages of this batch.
        #[arg(long)]
        batch: Option<String>,
        /// Only messages dead-lettered for this reason (`max_attempts`,
        /// `poison`, `delivery_limit`, `undecodable`, …).
        #[arg(long)]
        reason: Option<String>,
        /// Only the message of this job id (as `dlq list` shows it).
        #[arg(long)]
        job: Option<String>,
        /// Most messages to replay [default: every matching message].
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
}

pub(crate) fn topology(cfg: &FleetConfig) -> Topology {
    engage_runtime::services::topology(cfg)
}

/// Opens a broker connection, with a clear error; declares nothing.
pub(crate) async fn connect(cfg: &FleetConfig) -> anyhow::Result<lapin::Connection> {
    let url = cfg.broker.amqp_url.expose();
    broker::connect(url, "engage-cli").await.with_context(|| {
        format!(
            "RabbitMQ is not reachable at {} (start it with `rabbitmq-server -detached`)",
            redact_url(url)
        )
    })
}

/// Opens a broker connection and a confirm-mode publisher, with a clear error.
pub(crate) async fn publisher(cfg: &FleetConfig) -> anyhow::Result<(lapin::Connection, Publisher)> {
    let conn = connect(cfg).await?;
    let ch = conn.create_channel().await?;
    topology(cfg).declare(&ch, &StageName::ALL).await?;
    let p = Publisher::open(&conn, topology(cfg)).await?;
    Ok((conn, p))
}

/// Connects to Redis with a clear error.
pub(crate) async fn redis(cfg: &FleetConfig) -> anyhow::Result<RedisConn> {
    let url = cfg.redis.url.expose();
    let conn = RedisConn::connect(url, cfg.redis.cluster).await.with_context(|| {
        format!(
            "Redis is not reachable at {} (start it with `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no`)",
            redact_url(url)
        )
    })?;
    conn.ping()
        .await
        .with_context(|| format!("Redis at {} does not answer", redact_url(url)))?;
    Ok(conn)
}

/// A URI from a URI or a local path.
pub(crate) fn to_uri(s: &str) -> anyhow::Result<String> {
    if s.contains("://") {
        ObjectUri::parse(s).with_context(|| format!("invalid URI {s:?}"))?;
        return Ok(s.to_string());
    }
    let p = std::path::absolute(Path::new(s)).with_context(|| format!("invalid path {s:?}"))?;
    Ok(ObjectUri::file(&p)
        .with_context(|| format!("invalid path {s:?}"))?
        .to_string())
}

/// A new batch id: `b-YYYYMMDD-HHMMSS-xxxx`.
pub(crate) fn new_batch_id() -> String {
    format!(
        "b-{}-{:04x}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        rand::random::<u16>()
    )
}

/// `engage enqueue`: publishes the batch job; returns the batch id.
pub(crate) async fn enqueue(cfg: &FleetConfig, a: &EnqueueArgs) -> anyhow::Result<String> {
    let batch = a.batch_id.clone().unwrap_or_else(new_batch_id);
    if !valid_batch_id(&batch) {
        bail!("invalid batch id {batch:?}: use 1-64 characters of [A-Za-z0-9._-]");
    }
    let selection = if let Some(ids) = &a.users {
        Selection::Users { ids: ids.clone() }
    } else if let Some(f) = &a.users_file {
        Selection::UsersFile { uri: to_uri(f)? }
    } else if let Some(m) = &a.milestone {
        Selection::Milestone {
            milestone: m.clone(),
        }
    } else {
        Selection::All
    };
    let spec = BatchSpec {
        activity: a
            .activity
            .iter()
            .map(|s| to_uri(s))
            .collect::<anyhow::Result<_>>()?,
        sessions: to_uri(&a.sessions)?,
        selection,
    };
    // Refuse before publishing what the clean worker would dead-letter.
    cfg.input_policy()
        .context("fleet.input_prefixes")?
        .check_spec(&spec)
        .map_err(|e| anyhow::anyhow!("{e} [{}]", e.reason()))?;
    let (conn, p) = publisher(cfg).await?;
    let env = Envelope::new(
        &batch,
        ids::plan(&batch),
        uuid::Uuid::new_v4().to_string(),
        CleanJob::Batch(spec),
    );
    p.publish_job(StageName::Clean, &env)
        .await
        .context("publishing the batch")?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(batch)
}

/// Per stage: (name, done, total), as `engage status` and the dashboard show it.
pub(crate) fn stage_lines(p: &Progress) -> Vec<(&'static str, u64, u64)> {
    vec![
        ("clean", p.pieces_done, p.pieces_expected),
        ("match", p.match_done, p.match_expected.max(p.match_done)),
        ("download", p.downloaded, p.items),
        ("analyze", p.final_items, p.items),
        ("aggregate", p.learners_aggregated, p.learners),
    ]
}

/// True if the batch's outputs exist in the store (the ledger may be gone).
pub(crate) async fn outputs_exist(cfg: &FleetConfig, batch: &str) -> anyhow::Result<bool> {
    let st = Storage::new(&storage_config(cfg)).await?;
    let layout = Layout::new(ObjectUri::parse(&cfg.store.root)?);
    Ok(st
        .size(&layout.output(batch)?.join("summary.json")?)
        .await?
        .is_some())
}

/// Where a batch stands, for `engage status`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchEnd {
    /// The report is written.
    Complete,
    /// A dead-lettered clean, match or aggregate job stopped it.
    Halted,
    /// Still running (or unknown, or the wait timed out).
    Open,
    /// An operator cancelled it (`engage cancel`): ended without a report.
    Cancelled,
}

/// The line `engage status` prints for a halted batch.
fn halt_line(halts: &[Halt]) -> String {
    let mut stages: Vec<&str> = halts.iter().map(|h| h.stage.as_str()).collect();
    stages.dedup();
    let first = &halts[0];
    format!(
        "halted: {} dead-lettered job(s), first {} ({}: {}); fix the cause, then `engage dlq replay {}`",
        halts.len(),
        first.job_id,
        first.reason,
        first.error,
        stages.join("`, `engage dlq replay ")
    )
}

/// `engage status`: prints progress; with `--wait`, waits until the batch
/// completes or is halted.
pub(crate) async fn status(cfg: &FleetConfig, a: &StatusArgs) -> anyhow::Result<BatchEnd> {
    let conn = redis(cfg).await?;
    let ledger = Ledger::new(conn, cfg.fleet.namespace.clone());
    let Some(batch) = &a.batch else {
        for b in ledger.batches().await?.into_iter().take(20) {
            let halted = !ledger.halts(&b).await?.is_empty();
            let state = match ledger.progress(&b).await? {
                Some(p) if p.complete => "complete".to_string(),
                Some(p) if p.cancelled => "cancelled".to_string(),
                _ if halted => "halted (see `engage status BATCH`)".to_string(),
                Some(p) if p.paused => {
                    format!("paused ({}/{} items final)", p.final_items, p.items)
                }
                Some(p) => format!("running ({}/{} items final)", p.final_items, p.items),
                None => "unknown".to_string(),
            };
            println!("{b}\t{state}");
        }
        return Ok(BatchEnd::Complete);
    };
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bars: Vec<ProgressBar> = ["clean", "match", "download", "analyze", "aggregate"]
        .iter()
        .map(|s| {
            let b = multi.add(
                ProgressBar::new(0)
                    .with_style(style.clone())
                    .with_prefix(*s),
            );
            if !tty {
                b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            b
        })
        .collect();
    let mut last = String::new();
    loop {
        let progress = ledger.progress(batch).await?;
        let complete = match &progress {
            Some(p) => p.complete,
            None => outputs_exist(cfg, batch).await?,
        };
        let cancelled = match &progress {
            Some(p) => p.cancelled,
            None if !complete => crate::batch_control::cancelled_in_store(cfg, batch).await?,
            None => false,
        };
        let halts = ledger.halts(batch).await?;
        let text = match &progress {
            _ if !complete && !cancelled && !halts.is_empty() => halt_line(&halts),
            Some(p) => {
                for (bar, (_, done, total)) in bars.iter().zip(stage_lines(p)) {
                    bar.set_length(total);
                    bar.set_position(done);
                }
                let mut t: String = stage_lines(p)
                    .iter()
                    .map(|(s, d, t)| format!("{s}: {d}/{t}  "))
                    .collect();
                if !p.failed.is_empty() {
                    t += &format!("failed: {:?}", p.failed);
                }
                if !p.repaired.is_empty() {
                    t += &format!("  repaired: {:?}", p.repaired);
                }
                if p.reopened > 0 {
                    t += &format!("  reopened: {}", p.reopened);
                }
                if p.paused && !p.complete {
                    t += &format!("  paused (`engage resume {batch}` to go on)");
                }
                // Analysis waiting for quota: say so, and until when.
                if !p.complete && p.final_items < p.items {
                    let pause = crate::quota::fleet_pause(cfg).await?;
                    let parked = crate::quota::parked_jobs(cfg).await;
                    if let Some(line) = crate::quota::pause_line(pause.as_ref(), parked) {
                        t += &format!("  {line}");
                    }
                }
                t
            }
            None if complete => "complete (ledger expired; outputs in the store)".to_string(),
            None if cancelled => "cancelled (ledger expired)".to_string(),
            None => "unknown batch (not planned yet, or never enqueued)".to_string(),
        };
        if !tty && text != last {
            println!("{batch} {text}");
            last = text.clone();
        }
        if complete {
            for b in &bars {
                b.finish();
            }
            println!("{batch} complete");
            return Ok(BatchEnd::Complete);
        }
        if cancelled {
            multi.clear().ok();
            if tty {
                println!("{batch} {text}");
            }
            println!("{batch} cancelled (no report; `engage cancel` ended it)");
            return Ok(BatchEnd::Cancelled);
        }
        if !halts.is_empty() {
            multi.clear().ok();
            println!("{batch} {text}");
            return Ok(BatchEnd::Halted);
        }
        if !a.wait {
            if tty {
                multi.clear().ok();
                println!("{batch} {text}");
            }
            return Ok(BatchEnd::Open);
        }
        if Instant::now() >= deadline {
            println!("{batch} not complete after {}s", a.timeout);
            return Ok(BatchEnd::Open);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `engage report`: copies a complete batch's outputs to a directory.
pub(crate) async fn report(cfg: &FleetConfig, a: &ReportArgs) -> anyhow::Result<Vec<PathBuf>> {
    if !valid_batch_id(&a.batch) {
        bail!("invalid batch id {:?}", a.batch);
    }
    let st = Storage::new(&storage_config(cfg)).await?;
    let layout = Layout::new(ObjectUri::parse(&cfg.store.root).context("ENGAGE_STORE")?);
    let out_prefix = layout.output(&a.batch)?;
    let files = st.list(&out_prefix).await?;
    if !files.iter().any(|u| u.file_name() == Some("summary.json")) {
        if crate::batch_control::cancelled_in_store(cfg, &a.batch).await? {
            bail!("batch {} was cancelled: it has no report", a.batch);
        }
        bail!(
            "batch {} has no outputs yet (see `engage status {}`)",
            a.batch,
            a.batch
        );
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut written = Vec::new();
    for u in files {
        let Some(name) = u.file_name() else { continue };
        let path = a.out.join(name);
        std::fs::write(&path, st.get(&u).await?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn stages(stage: Option<&str>) -> anyhow::Result<Vec<StageName>> {
    match stage {
        None => Ok(StageName::ALL.to_vec()),
        Some(s) => Ok(vec![StageName::parse(s).with_context(|| {
            format!("unknown stage {s:?}: use clean, match, download, analyze or aggregate")
        })?]),
    }
}

/// One dead-lettered message as `engage dlq list` shows it: its headers and
/// its envelope's batch id (the job itself, which may name a learner, is
/// never read out).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DeadLetter {
    /// The job id (the message id), `?` when absent.
    pub job_id: String,
    /// The batch the envelope names, `?` when the body is undecodable.
    pub batch: String,
    /// `x-engage-reason`, else the broker's `x-first-death-reason`, else `?`.
    pub reason: String,
    /// `x-engage-attempts`, `?` when absent.
    pub attempts: String,
    /// `x-engage-error` (untrusted text), empty when absent.
    pub error: String,
    /// `x-engage-dead-lettered-at` (RFC 3339), empty when absent.
    pub dead_lettered_at: String,
}

impl DeadLetter {
    /// Reads what a dead-lettered delivery says about itself.
    fn of(props: &lapin::BasicProperties, body: &[u8]) -> Self {
        Self {
            job_id: props
                .message_id()
                .as_ref()
                .map(|s| s.as_str())
                .unwrap_or("?")
                .to_string(),
            batch: Envelope::decode(body)
                .map(|e| e.batch_id)
                .unwrap_or_else(|_| "?".into()),
            reason: header_str(props, "x-engage-reason")
                .or_else(|| header_str(props, "x-first-death-reason"))
                .unwrap_or_else(|| "?".into()),
            attempts: header_str(props, "x-engage-attempts").unwrap_or_else(|| "?".into()),
            error: header_str(props, "x-engage-error").unwrap_or_default(),
            dead_lettered_at: header_str(props, "x-engage-dead-lettered-at").unwrap_or_default(),
        }
    }
}

/// A look at a stage's dead-letter queue: how many messages it holds and
/// the first few of them.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DlqPeek {
    /// Messages in the queue.
    pub count: u32,
    /// Up to the requested number of them, oldest first.
    pub letters: Vec<DeadLetter>,
}

/// Ready messages in queue `q`, looked up passively (an error if it does not
/// exist; declares nothing).
async fn depth(ch: &lapin::Channel, q: &str) -> anyhow::Result<u32> {
    let info = ch
        .queue_declare(
            q.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("queue {q} is not declared (no worker has started yet?)"))?;
    Ok(info.message_count())
}

/// Reads up to `limit` dead letters of stage `s` without removing them: each
/// is taken with `basic.get`, held until all are read (so none is read twice),
/// then requeued. That spends nothing that matters: a dead-letter queue's
/// delivery limit is [`broker::DLQ_DELIVERY_LIMIT`], out of reach (RabbitMQ
/// 4.3+ does not even count a `basic.nack`). Declares nothing: the queue is
/// only looked up, passively, so a missing queue is an error.
pub(crate) async fn dlq_peek(
    ch: &lapin::Channel,
    topo: &Topology,
    s: StageName,
    limit: usize,
) -> anyhow::Result<DlqPeek> {
    let q = topo.dlq(s);
    let count = depth(ch, &q).await?;
    let mut letters = Vec::new();
    let mut held = Vec::new();
    while held.len() < limit.min(count as usize) {
        let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        letters.push(DeadLetter::of(&m.delivery.properties, &m.delivery.data));
        held.push(m);
    }
    requeue(held).await?;
    Ok(DlqPeek { count, letters })
}

/// Returns held deliveries to their queue (`basic.nack`, requeue).
async fn requeue(held: Vec<lapin::message::BasicGetMessage>) -> anyhow::Result<()> {
    for m in held {
        m.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// Which dead letters `engage dlq replay` moves: every given filter must
/// match (AND); none given matches every decodable message.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayFilter {
    /// The envelope's batch id.
    pub batch: Option<String>,
    /// The dead-letter reason (as [`DeadLetter::reason`]).
    pub reason: Option<String>,
    /// The job id (the message id, else the envelope's).
    pub job: Option<String>,
    /// Most messages to replay (`None`: all that match).
    pub limit: Option<usize>,
}

impl ReplayFilter {
    /// True if a decoded dead letter passes every filter.
    pub(crate) fn matches(&self, letter: &DeadLetter, env: &Envelope<serde_json::Value>) -> bool {
        let job = if letter.job_id == "?" {
            env.job_id.as_str()
        } else {
            letter.job_id.as_str()
        };
        self.batch.as_deref().is_none_or(|b| b == env.batch_id)
            && self.reason.as_deref().is_none_or(|r| r == letter.reason)
            && self.job.as_deref().is_none_or(|j| j == job)
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Replayed {
    /// Jobs sent back to the work queue (attempts reset).
    pub replayed: usize,
    /// Decodable messages the filters left in the dead-letter queue.
    pub not_matching: usize,
    /// Undecodable messages left in the dead-letter queue.
    pub undecodable: usize,
    /// Items made final as dead-lettered that were reopened.
    pub reopened: usize,
}

/// `engage dlq replay STAGE`: moves the dead letters of stage `s` that pass
/// `filter` back to its work queue, attempts reset, reopening their items and
/// lifting their batches' halts; every other message stays in the
/// dead-letter queue.
///
/// Each message in the queue when the replay starts is looked at once (held
/// unacknowledged, so `basic.get` hands out the next). Safe to interrupt at
/// any point: a held message returns to the dead-letter queue when the
/// connection drops; a matching one is published to the work queue and its
/// confirm awaited *before* it is acknowledged, so an interruption in between
/// leaves it in both queues (its job is idempotent, so the copy a later
/// replay sends is harmless), never in neither. Items reopened before an
/// interruption wait for the job still in the dead-letter queue: run the same
/// replay again.
pub(crate) async fn dlq_replay(
    cfg: &FleetConfig,
    s: StageName,
    filter: &ReplayFilter,
) -> anyhow::Result<Replayed> {
    let (conn, p) = publisher(cfg).await?;
    let ch = conn.create_channel().await?;
    let q = topology(cfg).dlq(s);
    let redis = redis(cfg).await?;
    let ledger = Ledger::new(redis.clone(), cfg.fleet.namespace.clone());
    let markers = Idempotency::new(redis, cfg.fleet.namespace.clone());
    let storage = Storage::new(&storage_config(cfg)).await?;
    let layout = Layout::new(ObjectUri::parse(&cfg.store.root)?);
    let limit = filter.limit.unwrap_or(usize::MAX);
    let count = depth(&ch, &q).await?;
    let mut taken = Vec::new();
    let mut left = Vec::new();
    let (mut not_matching, mut undecodable) = (0, 0);
    for _ in 0..count {
        if taken.len() >= limit {
            break;
        }
        let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        let letter = DeadLetter::of(&m.delivery.properties, &m.delivery.data);
        match Envelope::decode(&m.delivery.data) {
            Ok(env) if filter.matches(&letter, &env) => taken.push((m, env)),
            Ok(_) => {
                not_matching += 1;
                left.push(m);
            }
            Err(_) => {
                undecodable += 1;
                left.push(m);
            }
        }
    }
    // What stays goes back first: the replay below may take a while.
    requeue(left).await?;
    // Every item first, then every job: a replayed job that finished
    // before another item of its learner was reopened would let the
    // batch complete in between.
    let mut reopened = 0usize;
    for (_, env) in &taken {
        // Made final as dead-lettered: reopen it, so that the batch's
        // report is rewritten when the job finishes.
        if reopen_for_replay(&ledger, &markers, &storage, &layout, s, env).await? {
            reopened += 1;
        }
    }
    let replayed = taken.len();
    for (m, mut env) in taken {
        env.attempt = 0;
        // Published and confirmed before the dead letter is acknowledged.
        p.publish_job(s, &env).await?;
        m.delivery.ack(BasicAckOptions::default()).await?;
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(Replayed {
        replayed,
        not_matching,
        undecodable,
        reopened,
    })
}

/// `engage dlq list|replay`.
pub(crate) async fn dlq(cfg: &FleetConfig, cmd: &DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List { stage, limit, json } => {
            // Listing only reads: it declares nothing, so it works whatever
            // the caller's retry settings (the topology's arguments) are.
            let conn = connect(cfg).await?;
            let topo = topology(cfg);
            let ch = conn.create_channel().await?;
            let mut all = Vec::new();
            for s in stages(stage.as_deref())? {
                all.push((s, dlq_peek(&ch, &topo, s, *limit).await?));
            }
            let _ = conn.close(200, "bye".into()).await;
            if *json {
                let doc: Vec<_> = all
                    .iter()
                    .map(|(s, p)| {
                        serde_json::json!({"stage": s.as_str(), "count": p.count, "letters": p.letters})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(());
            }
            for (s, peek) in all {
                println!("{s}: {} dead-lettered", peek.count);
                for l in &peek.letters {
                    println!(
                        "  job={} batch={} reason={} attempts={} at={} error={}",
                        l.job_id, l.batch, l.reason, l.attempts, l.dead_lettered_at, l.error
                    );
                }
            }
        }
        DlqCmd::Replay {
            stage,
            batch,
            reason,
            job,
            limit,
        } => {
            let s = stages(Some(stage))?[0];
            let filter = ReplayFilter {
                batch: batch.clone(),
                reason: reason.clone(),
                job: job.clone(),
                limit: *limit,
            };
            let r = dlq_replay(cfg, s, &filter).await?;
            println!(
                "{s}: replayed {}; {} undecodable left in the dead-letter queue, {} not matching",
                r.replayed, r.undecodable, r.not_matching
            );
            if r.reopened > 0 {
                println!(
                    "{s}: reopened {} dead-lettered items; their batches' reports are \
                     rewritten when the replayed jobs finish",
                    r.reopened
                );
            }
        }
    }
    Ok(())
}
