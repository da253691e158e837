//! The reconciler: a periodic, idempotent sweep that makes every open batch
//! reach its end even when a message, an emission or a ledger entry was lost.
//!
//! It runs inside the aggregate workers, one leader at a time
//! ([`Ledger::lead`]), every `[aggregate] reconcile_every_s`. Open batches are
//! read from the store (`active/B` markers, durable) and from the ledger's
//! index. A batch whose progress has not moved for `reconcile_stall_s` is
//! compared with the durable store, and what is missing is repaired:
//!
//! - **lost ledger**: rebuilt from the store (as the next job would);
//! - **lost item finals**: item states in the item log that the ledger does
//!   not hold (a Redis failover that dropped a `SADD`) are recorded again;
//! - **lost clean pieces and match jobs**: pieces without their `done.json`
//!   (segments a clean pre-pass stored included; a pre-pass piece published
//!   again resumes from its checkpoint), and partitions of a finished piece
//!   without a matched file, are published again (a finished piece the
//!   ledger forgot is recorded, and stored segments are expected again);
//! - **lost item work**: a kept response with audio that is not final gets
//!   its download job again;
//! - **lost fan-in**: learners with every item final but no rows, and the
//!   report of a batch with every learner aggregated, get their aggregate
//!   jobs again (also when the claim is held by a job that died).
//!
//! Re-published jobs carry their usual ids; their completion markers are
//! forgotten first, so a copy whose follow-ups were lost runs again, and a
//! copy still queued somewhere runs twice at worst (every effect is
//! idempotent). Each repair is counted per batch (`engage status` shows
//! them) and in `engage_reconciler_repairs_total{kind}`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::{self, Publisher};
use crate::fan_in::emits_for;
use crate::item_log::read_batch;
use crate::job_error::JobError;
use crate::ledger::{FanIn, Progress, ScanResult};
use crate::pieces::{batch_pieces, segment_ids};
use crate::recovery::rebuild;
use crate::services::Services;
use crate::stage::Emit;
use crate::storage::Storage;
use crate::store_io::{get_json, get_jsonl};
use engage_model::MatchedRecord;
use engage_model::envelope::{Envelope, StageName};
use engage_model::jobs::{
    AggregateJob, BatchPlan, CleanDone, CleanJob, DownloadJob, MatchJob, ids,
};
use engage_model::layout::{Layout, valid_batch_id};

/// What the reconciler repairs: the `kind` label of
/// `engage_reconciler_repairs_total` and the keys of `engage status`'s
/// `repaired`.
pub mod kind {
    /// A lost ledger, rebuilt from the store.
    pub const LEDGER_REBUILT: &str = "ledger_rebuilt";
    /// An item final state restored from the item log.
    pub const ITEM_FINAL_RESTORED: &str = "item_final_restored";
    /// A clean piece published again.
    pub const CLEAN_JOB: &str = "clean_job";
    /// A match job published again.
    pub const MATCH_JOB: &str = "match_job";
    /// A download job published again.
    pub const DOWNLOAD_JOB: &str = "download_job";
    /// A learner's aggregate job published again.
    pub const AGGREGATE_JOB: &str = "aggregate_job";
    /// The batch's report job published again.
    pub const REPORT_JOB: &str = "report_job";
    /// Every kind.
    pub const ALL: [&str; 7] = [
        LEDGER_REBUILT,
        ITEM_FINAL_RESTORED,
        CLEAN_JOB,
        MATCH_JOB,
        DOWNLOAD_JOB,
        AGGREGATE_JOB,
        REPORT_JOB,
    ];
}

/// Most open batches looked at per sweep (newest first).
const MAX_BATCHES: usize = 1000;

/// Runs the reconciler until `shutdown`.
pub async fn run(svc: Arc<Services>, shutdown: CancellationToken) {
    let mut sweeper = Sweeper {
        owner: format!("reconciler-{}", uuid::Uuid::new_v4()),
        seen: HashMap::new(),
        publisher: None,
        svc,
    };
    let mut tick = tokio::time::interval(sweeper.svc.cfg.aggregate.reconcile_every());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = sweeper.sweep().await {
                    warn!(error = %format!("{e:#}"), "reconciler sweep failed; trying again next time");
                    sweeper.publisher = None;
                }
            }
        }
    }
    if let Some((conn, _)) = sweeper.publisher.take() {
        let _ = conn.close(200, "bye".into()).await;
    }
}

/// A batch's progress as last seen, and since when it has not moved.
struct Seen {
    snapshot: [u64; 7],
    since: Instant,
}

struct Sweeper {
    svc: Arc<Services>,
    owner: String,
    seen: HashMap<String, Seen>,
    publisher: Option<(lapin::Connection, Publisher)>,
}

impl Sweeper {
    async fn sweep(&mut self) -> anyhow::Result<()> {
        let cfg = &self.svc.cfg.aggregate;
        let lease = u64::try_from((cfg.reconcile_every() * 3).as_millis()).unwrap_or(u64::MAX);
        if !self
            .svc
            .ledger
            .lead("reconciler", &self.owner, lease)
            .await?
        {
            self.seen.clear();
            return Ok(());
        }
        let stall = cfg.reconcile_stall();
        let now = Instant::now();
        let mut open = BTreeSet::new();
        for b in self.open_batches().await?.into_iter().take(MAX_BATCHES) {
            let emits = match self.svc.ledger.progress(&b).await? {
                Some(p) if p.complete => continue,
                // An operator holds it: a cancelled batch has ended, a
                // paused one's jobs are parked on purpose.
                Some(p) if p.cancelled || p.paused => continue,
                // A halted batch waits for its dead-lettered job's replay,
                // not for a repair: re-publishing that work would only
                // dead-letter it again.
                Some(_) if !self.svc.ledger.halts(&b).await?.is_empty() => continue,
                Some(p) => {
                    open.insert(b.clone());
                    // A pre-pass cutting segments moves `pieces_expected`.
                    let snapshot = [
                        p.pieces_expected,
                        p.pieces_done,
                        p.match_done,
                        p.items,
                        p.downloaded,
                        p.final_items,
                        p.learners_aggregated,
                    ];
                    match self.seen.get(&b) {
                        // Jobs waiting on the ladder (a Gemini pause, a
                        // quota wait) are work in progress, not lost work:
                        // re-driving items then would only park copies.
                        Some(s) if s.snapshot == snapshot && now - s.since >= stall => {
                            if self.parked().await? > 0 {
                                self.seen.insert(
                                    b.clone(),
                                    Seen {
                                        snapshot,
                                        since: now,
                                    },
                                );
                                continue;
                            }
                        }
                        Some(s) if s.snapshot == snapshot => continue,
                        _ => {
                            self.seen.insert(
                                b.clone(),
                                Seen {
                                    snapshot,
                                    since: now,
                                },
                            );
                            continue;
                        }
                    }
                    // Repaired now: wait a whole stall period before the next repair.
                    self.seen.insert(
                        b.clone(),
                        Seen {
                            snapshot,
                            since: now,
                        },
                    );
                    repair(&self.svc, &b, &p).await?
                }
                // An open batch whose ledger is gone (and no job came to
                // notice): rebuild it as the next job would.
                None => {
                    let job = format!("reconcile:{b}");
                    let scan = match rebuild(&self.svc, &b, &job).await {
                        Ok(scan) => scan,
                        Err(e) => {
                            warn!(batch_id = %b, error = %e, "reconciler could not rebuild the ledger");
                            continue;
                        }
                    };
                    count(&self.svc, &b, kind::LEDGER_REBUILT, 1).await?;
                    emits_for(&b, scan)?
                }
            };
            if !emits.is_empty() {
                self.publish(&b, emits).await?;
            }
        }
        self.seen.retain(|b, _| open.contains(b));
        Ok(())
    }

    /// Batch ids with an `active/B` marker in the store (durable, survives a
    /// Redis loss) or in the ledger's index.
    async fn open_batches(&self) -> anyhow::Result<Vec<String>> {
        let layout = Layout::new(self.svc.store_root.clone());
        let mut out: Vec<String> = self.svc.ledger.batches().await?;
        for uri in self.svc.storage.list(&layout.active_prefix()?).await? {
            if let Some(b) = uri.key().rsplit('/').next()
                && valid_batch_id(b)
                && !out.iter().any(|x| x == b)
            {
                out.push(b.to_string());
            }
        }
        Ok(out)
    }

    /// The broker connection and publisher, opened on first use.
    async fn publisher(&mut self) -> anyhow::Result<&Publisher> {
        if self.publisher.is_none() {
            let name = format!("engage-reconciler@{}", self.svc.cfg.fleet.namespace);
            let conn = broker::connect(self.svc.cfg.broker.amqp_url.expose(), &name).await?;
            let p = Publisher::open(&conn, self.svc.topology.clone()).await?;
            self.publisher = Some((conn, p));
        }
        match &self.publisher {
            Some((_, p)) => Ok(p),
            None => anyhow::bail!("no broker connection"),
        }
    }

    /// Jobs parked on the namespace's wait ladder now.
    async fn parked(&mut self) -> anyhow::Result<u64> {
        let topo = self.svc.topology.clone();
        let conn = match &self.publisher {
            Some((conn, _)) => conn,
            None => {
                self.publisher().await?;
                match &self.publisher {
                    Some((conn, _)) => conn,
                    None => return Ok(0),
                }
            }
        };
        let ch = conn.create_channel().await?;
        let parked = topo.parked_jobs(&ch).await;
        let _ = ch.close(200, "bye".into()).await;
        Ok(parked?)
    }

    async fn publish(&mut self, batch: &str, emits: Vec<Emit>) -> anyhow::Result<()> {
        let p = self.publisher().await?;
        for e in emits {
            let env = Envelope::new(batch, e.job_id, format!("reconcile-{batch}"), e.job);
            p.publish_job(e.stage, &env).await?;
        }
        Ok(())
    }
}

/// Adds `n` repairs of `kind` to the batch's counts and the metric.
async fn count(svc: &Services, batch: &str, kind: &str, n: u64) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    svc.ledger.record_repairs(batch, kind, n).await?;
    svc.metrics
        .reconciler_repairs
        .with_label_values(&[kind])
        .inc_by(n);
    info!(
        batch_id = batch,
        kind, n, "reconciler repaired a stalled batch"
    );
    Ok(())
}

/// Compares a stalled batch with the store and returns the jobs to publish
/// again (recording what it restored in the ledger on the way).
async fn repair(svc: &Services, b: &str, p: &Progress) -> anyhow::Result<Vec<Emit>> {
    let layout = Layout::new(svc.store_root.clone());
    let st = &svc.storage;
    let Some(plan) = get_json::<BatchPlan>(st, &layout.batch_spec(b)?).await? else {
        // Not planned yet: its plan job is the producer's message.
        return Ok(Vec::new());
    };
    let job = format!("reconcile:{b}");
    let mut emits = Vec::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();

    // Item finals the item log holds but the ledger lost.
    let mut finals = svc.ledger.members(b, "all_final").await?;
    for (rid, item) in read_batch(st, &layout, b).await? {
        if finals.contains(&rid) {
            continue;
        }
        let reason = item.outcome.failure_reason();
        let state = serde_json::to_string(&item)?;
        let fan = svc
            .ledger
            .finalize_item(b, &item.user_id, &rid, reason, &state, &job)
            .await?;
        if fan == FanIn::Emit {
            emits.extend(emits_for(
                b,
                ScanResult {
                    learners: vec![item.user_id.clone()],
                    report: false,
                },
            )?);
        }
        finals.insert(rid);
        *counts.entry(kind::ITEM_FINAL_RESTORED).or_default() += 1;
    }

    if !p.registered {
        let pieces_done = svc.ledger.members(b, "pieces_done").await?;
        let match_done = svc.ledger.members(b, "match_done").await?;
        let pieces = batch_pieces(st, &layout, b, &plan).await?;
        // Segments a pre-pass stored are expected even if Redis lost the note.
        let segments = segment_ids(&pieces);
        if !segments.is_empty() {
            svc.ledger.expect_pieces(b, &segments, &job).await?;
        }
        for piece in &pieces {
            let Some(done) =
                get_json::<CleanDone>(st, &layout.clean_done(b, &piece.piece)?).await?
            else {
                let id = ids::clean(b, &piece.piece);
                svc.idempotency.forget(StageName::Clean, &id).await?;
                emits.push(Emit::new(
                    StageName::Clean,
                    id,
                    &CleanJob::Piece(piece.clone()),
                )?);
                *counts.entry(kind::CLEAN_JOB).or_default() += 1;
                continue;
            };
            let parts: Vec<String> = done
                .partitions
                .iter()
                .map(|p| ids::match_part(&piece.piece, *p))
                .collect();
            if !pieces_done.contains(&piece.piece) {
                let fan = svc.ledger.piece_done(b, &piece.piece, &parts, &job).await?;
                if fan == FanIn::Emit {
                    emits.extend(emits_for(b, svc.ledger.scan(b, &job).await?)?);
                }
                *counts.entry("piece_restored").or_default() += 1;
            }
            for &partition in &done.partitions {
                if match_done.contains(&ids::match_part(&piece.piece, partition)) {
                    continue;
                }
                let id = ids::match_job(b, &piece.piece, partition);
                svc.idempotency.forget(StageName::Match, &id).await?;
                let m = MatchJob {
                    piece: piece.piece.clone(),
                    partition,
                };
                emits.push(Emit::new(StageName::Match, id, &m)?);
                *counts.entry(kind::MATCH_JOB).or_default() += 1;
            }
        }
    } else if finals.len() < usize::try_from(p.items).unwrap_or(usize::MAX) {
        // Kept responses with audio that are not final: their download again.
        for d in download_jobs(st, &layout, b, &plan, |rid| !finals.contains(rid)).await? {
            let id = ids::download(b, &d.response_id);
            svc.idempotency.forget(StageName::Download, &id).await?;
            svc.idempotency
                .forget(StageName::Analyze, &ids::analyze(b, &d.response_id))
                .await?;
            emits.push(Emit::new(StageName::Download, id, &d)?);
            *counts.entry(kind::DOWNLOAD_JOB).or_default() += 1;
        }
    } else {
        // Every item final: learners without rows, then the report.
        let aggregated = svc.ledger.members(b, "agg_done").await?;
        let waiting: Vec<String> = svc
            .ledger
            .learners(b)
            .await?
            .into_iter()
            .filter(|u| !aggregated.contains(u))
            .collect();
        if waiting.is_empty() {
            let id = ids::report(b);
            svc.idempotency.forget(StageName::Aggregate, &id).await?;
            emits.push(Emit::new(StageName::Aggregate, id, &AggregateJob::Report)?);
            *counts.entry(kind::REPORT_JOB).or_default() += 1;
        }
        for u in waiting {
            let id = ids::aggregate(b, &u);
            svc.idempotency.forget(StageName::Aggregate, &id).await?;
            emits.push(Emit::new(
                StageName::Aggregate,
                id,
                &AggregateJob::Learner { user_id: u },
            )?);
            *counts.entry(kind::AGGREGATE_JOB).or_default() += 1;
        }
    }
    for (kind, n) in counts {
        count(svc, b, kind, n).await?;
    }
    Ok(emits)
}

/// The download jobs of a batch's items that `want` (by response id), as
/// the match stage made them: from every matched partition the plan's
/// finished pieces wrote, each matched response with audio once (its first
/// occurrence), in plan order. The reconciler re-drives lost downloads with
/// it, and `engage retry` re-runs failed items.
pub async fn download_jobs(
    st: &Storage,
    layout: &Layout,
    batch: &str,
    plan: &BatchPlan,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<DownloadJob>, JobError> {
    let mut seen = BTreeSet::new();
    let mut jobs = Vec::new();
    for piece in &batch_pieces(st, layout, batch, plan).await? {
        let Some(done) =
            get_json::<CleanDone>(st, &layout.clean_done(batch, &piece.piece)?).await?
        else {
            continue;
        };
        for &partition in &done.partitions {
            let uri = layout.matched_part(batch, &piece.piece, partition)?;
            for r in get_jsonl::<MatchedRecord>(st, &uri)
                .await?
                .unwrap_or_default()
            {
                let rid = &r.record.response_id;
                let (Some(_), Some(url)) = (&r.session, &r.record.audio_url) else {
                    continue;
                };
                if want(rid) && seen.insert(rid.clone()) {
                    jobs.push(DownloadJob {
                        response_id: rid.clone(),
                        user_id: r.record.user_id.clone(),
                        audio_url: url.clone(),
                    });
                }
            }
        }
    }
    Ok(jobs)
}
