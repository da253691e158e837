//! The batch control verbs: `engage pause|resume|cancel|retry BATCH`, as
//! async functions returning typed results, for the CLI and the dashboard.
//!
//! The ledger holds a batch's control state and the workers obey it (see
//! `engage_runtime::batch_control`); these functions change the state and
//! move what waits in the broker:
//!
//! - [`pause`]: the batch's jobs are parked as workers receive them (no
//!   attempt spent); other batches keep flowing.
//! - [`resume`]: clears the pause and sends the batch's jobs parked on the
//!   wait ladder back to their work queues at once.
//! - [`cancel`]: the batch ends *cancelled*: its open items become final as
//!   `cancelled` (item log and ledger), its keys get the finished-batch
//!   retention, `batches/B/cancelled.json` records it in the store, no report
//!   is written; its jobs waiting on the wait ladder or in retry queues are
//!   dropped here, those in work queues by the workers.
//! - [`retry`]: reopens an ended batch's failed items (all, or those of one
//!   reason) and publishes their download jobs again; the usual fan-in then
//!   rewrites the learners' rows and the report.
//!
//! Refusals are [`ControlError`]s; [`exit_code`] maps them to the CLI's exit
//! codes (2: no such batch, 3: refused in the batch's state).

use std::collections::BTreeMap;

use anyhow::Context;
use engage_model::envelope::{Envelope, StageName};
use engage_model::jobs::{BatchPlan, DownloadJob, ids};
use engage_model::layout::{Layout, valid_batch_id};
use engage_runtime::batch_control::{
    self as control, Changed, ControlError, Verb, cancelled_marker, finalize_cancelled, open_items,
};
use engage_runtime::broker::{Publisher, WAIT_RUNGS};
use engage_runtime::config::FleetConfig;
use engage_runtime::idempotency::Idempotency;
use engage_runtime::ledger::Ledger;
use engage_runtime::reconciler::download_jobs;
use engage_runtime::redis_conn::RedisConn;
use engage_runtime::reopen::reopen_items;
use engage_runtime::services::storage_config;
use engage_runtime::storage::{ObjectUri, Storage};
use engage_runtime::store_io::get_json;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};

use crate::fleet::{publisher, redis, topology};

/// What `engage resume BATCH` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resumed {
    /// Whether the batch was paused.
    pub changed: Changed,
    /// The batch's parked jobs sent back to their work queues.
    pub sent_back: u64,
}

/// What `engage cancel BATCH` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cancelled {
    /// Whether the batch was running (`Already`: it was cancelled before).
    pub changed: Changed,
    /// Items made final as `cancelled` now.
    pub items_cancelled: usize,
    /// The batch's jobs dropped from the wait ladder and the retry queues.
    pub jobs_dropped: u64,
}

/// What `engage retry BATCH` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retried {
    /// Failed items that matched the reason (all failed items without one).
    pub matched: usize,
    /// Items reopened and whose download job was published again.
    pub retried: usize,
    /// Matched items that never had a download job (no session, no audio
    /// link): running them again would fail them the same way.
    pub not_retriable: usize,
    /// Matched items by reason.
    pub by_reason: BTreeMap<String, usize>,
}

/// The process exit code of a failed command: 2 for an unknown or invalid
/// batch, 3 for a command its batch's state refuses, 1 otherwise.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ControlError>() {
        Some(ControlError::UnknownBatch(_) | ControlError::InvalidId(_)) => 2,
        Some(
            ControlError::Complete { .. }
            | ControlError::Cancelled { .. }
            | ControlError::NotEnded(_),
        ) => 3,
        _ => 1,
    }
}

/// Redis and the ledger, after the batch id is checked.
async fn ledger(cfg: &FleetConfig, batch: &str) -> anyhow::Result<(RedisConn, Ledger)> {
    if !valid_batch_id(batch) {
        return Err(ControlError::InvalidId(batch.to_string()).into());
    }
    let conn = redis(cfg).await?;
    let ledger = Ledger::new(conn.clone(), cfg.fleet.namespace.clone());
    Ok((conn, ledger))
}

async fn store(cfg: &FleetConfig) -> anyhow::Result<(Storage, Layout)> {
    let storage = Storage::new(&storage_config(cfg)).await?;
    let layout = Layout::new(ObjectUri::parse(&cfg.store.root).context("ENGAGE_STORE")?);
    Ok((storage, layout))
}

/// `engage pause BATCH`: workers park the batch's jobs until it is resumed.
pub(crate) async fn pause(cfg: &FleetConfig, batch: &str) -> anyhow::Result<Changed> {
    let (conn, ledger) = ledger(cfg, batch).await?;
    Ok(control::set(&conn, &ledger, batch, Verb::Pause).await?)
}

/// `engage resume BATCH`: clears the pause and sends the batch's jobs parked
/// on the wait ladder back to their work queues now.
pub(crate) async fn resume(cfg: &FleetConfig, batch: &str) -> anyhow::Result<Resumed> {
    let (conn, ledger) = ledger(cfg, batch).await?;
    let changed = control::set(&conn, &ledger, batch, Verb::Resume).await?;
    let mut sent_back = 0;
    if changed == Changed::Yes {
        let (amqp, p) = publisher(cfg).await?;
        let topo = topology(cfg);
        let ladder: Vec<String> = (0..WAIT_RUNGS).map(|r| topo.wait_queue(r)).collect();
        sent_back = sweep(&p, &ladder, batch, Sweep::SendBack).await?;
        let _ = amqp.close(200, "bye".into()).await;
    }
    Ok(Resumed { changed, sent_back })
}

/// `engage cancel BATCH`: the batch ends as cancelled (see the module doc).
/// A repeat finishes what an interrupted cancel left undone.
pub(crate) async fn cancel(cfg: &FleetConfig, batch: &str) -> anyhow::Result<Cancelled> {
    let (conn, ledger) = ledger(cfg, batch).await?;
    let changed = control::set(&conn, &ledger, batch, Verb::Cancel).await?;
    let (storage, layout) = store(cfg).await?;
    let open = open_items(&conn, &ledger, batch).await?;
    let items_cancelled = finalize_cancelled(&ledger, &storage, &layout, batch, &open).await?;
    ledger.retire(batch, cfg.redis.finished_batch_ttl()).await?;
    let marker = cancelled_marker(&layout, batch)?;
    if storage.size(&marker).await?.is_none() {
        let record = serde_json::json!({
            "batch_id": batch,
            "cancelled_at": chrono::Utc::now().to_rfc3339(),
            "items_cancelled": items_cancelled,
        });
        storage
            .put(&marker, serde_json::to_vec_pretty(&record)?.into())
            .await?;
    }
    // The reconciler sweeps batches with an `active/` marker: not this one.
    if storage.size(&layout.active(batch)?).await?.is_some() {
        storage.delete(&layout.active(batch)?).await?;
    }
    let (amqp, p) = publisher(cfg).await?;
    let topo = topology(cfg);
    let mut queues: Vec<String> = (0..WAIT_RUNGS).map(|r| topo.wait_queue(r)).collect();
    for s in StageName::ALL {
        queues.extend((0..topo.retry_delays_ms.len()).map(|t| topo.retry_queue(s, t)));
    }
    let jobs_dropped = sweep(&p, &queues, batch, Sweep::Drop).await?;
    let _ = amqp.close(200, "bye".into()).await;
    Ok(Cancelled {
        changed,
        items_cancelled,
        jobs_dropped,
    })
}

/// True if the store records that `batch` was cancelled (the ledger may
/// have expired).
pub(crate) async fn cancelled_in_store(cfg: &FleetConfig, batch: &str) -> anyhow::Result<bool> {
    if !valid_batch_id(batch) {
        return Ok(false);
    }
    let (storage, layout) = store(cfg).await?;
    Ok(storage
        .size(&cancelled_marker(&layout, batch)?)
        .await?
        .is_some())
}

/// Whether a failure `reason` is one `engage retry --reason filter` means:
/// the same reason, or any reason under it when the filter ends with `:`
/// (`dead_lettered:` covers `dead_lettered:max_attempts`, …).
pub(crate) fn reason_matches(filter: Option<&str>, reason: &str) -> bool {
    match filter {
        None => true,
        Some(f) if f.ends_with(':') => reason.starts_with(f),
        Some(f) => reason == f,
    }
}

/// `engage retry BATCH [--reason R]`: reopens an ended batch's failed items
/// (those failed with `reason`, or all) and publishes their download jobs
/// again. Items that never had a download job are counted, not reopened.
pub(crate) async fn retry(
    cfg: &FleetConfig,
    batch: &str,
    reason: Option<&str>,
) -> anyhow::Result<Retried> {
    let (conn, ledger) = ledger(cfg, batch).await?;
    let Some(progress) = ledger.progress(batch).await? else {
        return Err(ControlError::UnknownBatch(batch.to_string()).into());
    };
    if progress.cancelled {
        let verb = "retry";
        return Err(ControlError::Cancelled {
            batch: batch.to_string(),
            verb,
        }
        .into());
    }
    if !progress.complete {
        return Err(ControlError::NotEnded(batch.to_string()).into());
    }
    let mut c = conn.clone();
    let failed: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{}:failed", ledger.prefix(batch)))
        .query_async(&mut c)
        .await
        .context("reading the batch's failed items")?;
    let wanted: BTreeMap<String, String> = failed
        .into_iter()
        .filter(|(_, r)| reason_matches(reason, r))
        .collect();
    let mut by_reason = BTreeMap::new();
    for r in wanted.values() {
        *by_reason.entry(r.clone()).or_default() += 1;
    }
    let mut out = Retried {
        matched: wanted.len(),
        retried: 0,
        not_retriable: 0,
        by_reason,
    };
    if wanted.is_empty() {
        return Ok(out);
    }
    let (storage, layout) = store(cfg).await?;
    let plan = get_json::<BatchPlan>(&storage, &layout.batch_spec(batch)?)
        .await?
        .with_context(|| format!("batch {batch} has no plan in the store"))?;
    let jobs: BTreeMap<String, DownloadJob> =
        download_jobs(&storage, &layout, batch, &plan, |rid| {
            wanted.contains_key(rid)
        })
        .await?
        .into_iter()
        .map(|j| (j.response_id.clone(), j))
        .collect();
    out.not_retriable = wanted.len() - jobs.len();
    let items: Vec<(String, String)> = jobs
        .values()
        .map(|j| (j.user_id.clone(), j.response_id.clone()))
        .collect();
    let markers = Idempotency::new(conn, cfg.fleet.namespace.clone());
    // Every item is reopened before any job runs: a job finishing early
    // could otherwise let the batch complete in between.
    let reopened = reopen_items(&ledger, &markers, &storage, &layout, batch, &items, "").await?;
    let (amqp, p) = publisher(cfg).await?;
    let trace = format!("retry-{batch}");
    for (_, rid) in &reopened {
        let Some(job) = jobs.get(rid) else { continue };
        let id = ids::download(batch, rid);
        markers.forget(StageName::Download, &id).await?;
        markers
            .forget(StageName::Analyze, &ids::analyze(batch, rid))
            .await?;
        let env = Envelope::new(batch, id, trace.clone(), job);
        p.publish_job(StageName::Download, &env)
            .await
            .context("publishing a retried item's download job")?;
        out.retried += 1;
    }
    let _ = amqp.close(200, "bye".into()).await;
    Ok(out)
}

/// What [`sweep`] does with a batch's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Back to the work queue of its stage, due now.
    SendBack,
    /// Acked and gone.
    Drop,
}

/// The batch a message's envelope names (only that field is read).
fn batch_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        batch_id: String,
    }
    serde_json::from_slice::<Head>(body)
        .ok()
        .map(|h| h.batch_id)
}

/// Takes every message of `queues`, acts on those of `batch` and returns
/// the others where they were (held unacked, then requeued: each keeps its
/// expiry). Returns how many messages of the batch it moved or dropped.
async fn sweep(p: &Publisher, queues: &[String], batch: &str, how: Sweep) -> anyhow::Result<u64> {
    let ch = p.channel();
    let exchange = p.topology().exchange();
    let mut n = 0;
    for q in queues {
        let mut others = Vec::new();
        while let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions::default())
            .await
            .with_context(|| format!("reading {q}"))?
        {
            let d = &m.delivery;
            if batch_of(&d.data).as_deref() != Some(batch) {
                others.push(m);
                continue;
            }
            if how == Sweep::SendBack {
                // The routing key of a parked job is its stage.
                let props = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(d.properties.message_id().clone().unwrap_or_default())
                    .with_headers(crate::quota::without_due(d.properties.headers().as_ref()));
                p.publish_raw(&exchange, d.routing_key.as_str(), &d.data, props)
                    .await
                    .with_context(|| format!("sending a parked job back from {q}"))?;
            }
            ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
                .await?;
            n += 1;
        }
        for m in others {
            m.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_filter_names_one_reason_or_a_family() {
        assert!(reason_matches(None, "audio_missing"));
        assert!(reason_matches(Some("audio_missing"), "audio_missing"));
        assert!(!reason_matches(Some("audio"), "audio_missing"));
        assert!(reason_matches(
            Some("dead_lettered:"),
            "dead_lettered:max_attempts"
        ));
        assert!(!reason_matches(Some("dead_lettered:"), "audio_missing"));
    }

    #[test]
    fn only_the_batch_id_of_a_body_is_read() {
        let body = br#"{"v":1,"batch_id":"b-1","job_id":"x","attempt":0,"trace_id":"t","job":{}}"#;
        assert_eq!(batch_of(body).as_deref(), Some("b-1"));
        assert_eq!(batch_of(b"not json"), None);
    }

    #[test]
    fn refusals_have_their_own_exit_codes() {
        let unknown = anyhow::Error::from(ControlError::UnknownBatch("b".into()));
        assert_eq!(exit_code(&unknown), 2);
        let complete = anyhow::Error::from(ControlError::Complete {
            batch: "b".into(),
            verb: "cancel",
        });
        assert_eq!(exit_code(&complete), 3);
        assert_eq!(exit_code(&anyhow::anyhow!("redis down")), 1);
    }
}
