//! The durable log of item states, written by group commit.
//!
//! Every analyzed or failed item must be durable before the job that produced
//! it is acknowledged. One object (temp file, fsync, rename, directory fsync
//! on a local store; one PUT on S3) per item made that the fleet's largest
//! cost, so a worker process funnels its item states through one writer
//! task: each [`ItemLog::append`] waits until the chunk holding its state is
//! durable, and every state that arrived while the previous chunk was being
//! written goes into the next one. Under load a chunk holds tens to hundreds
//! of states; an idle worker writes one-state chunks with no added latency
//! (the writer never waits for company).
//!
//! Chunks are `batches/B/items/WRITER-SEQ.jsonl` (see
//! [`Layout::item_chunk`]): unique per process and sequence number, never
//! overwritten. A redelivered job appends its state again into a later chunk;
//! readers ([`crate::recovery`]) take one state per response id. The batch
//! ledger keeps a copy of each state (written by the same fan-in script that
//! marks the item final), which is what the aggregate stage reads; the log is
//! what the ledger is rebuilt from after Redis lost it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use prometheus::Histogram;
use tokio::sync::{mpsc, oneshot};

use crate::job_error::{ErrorClass, JobError};
use crate::storage::{ObjectUri, Storage};
use engage_model::jobs::ItemState;
use engage_model::layout::Layout;

/// Most states written in one chunk (bounds a chunk to a few hundred KiB).
const MAX_GROUP: usize = 1024;

/// Item-log failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ItemLogError {
    /// The chunk's key could not be formed from the batch id.
    #[error("invalid item-log key: {0}")]
    Key(String),
    /// Writing the chunk failed; `transient` says whether a retry may succeed.
    #[error("writing item states to {uri}: {message}")]
    Write {
        /// The chunk.
        uri: String,
        /// The store's error.
        message: String,
        /// A retry may succeed (network, throttling, 5xx).
        transient: bool,
    },
    /// The writer task is gone (the runtime is shutting down).
    #[error("the item-state writer is not running")]
    Closed,
}

impl From<ItemLogError> for JobError {
    fn from(e: ItemLogError) -> Self {
        match e {
            ItemLogError::Write {
                transient: true, ..
            }
            | ItemLogError::Closed => JobError::transient(ErrorClass::Storage, e),
            other => JobError::Poison(other.into()),
        }
    }
}

/// One state waiting to be written.
struct Append {
    batch: String,
    line: Vec<u8>,
    done: oneshot::Sender<Result<(), ItemLogError>>,
}

/// The process's item-state writer (started on first use).
#[derive(Debug)]
pub struct ItemLog {
    storage: Storage,
    layout: Layout,
    /// Names this process's chunks.
    writer: String,
    /// States per chunk written.
    chunk_states: Histogram,
    tx: OnceLock<mpsc::UnboundedSender<Append>>,
}

impl ItemLog {
    /// A log writing under the store root of `layout`, observing each
    /// chunk's size in `chunk_states`.
    pub fn new(storage: Storage, layout: Layout, chunk_states: Histogram) -> Self {
        Self {
            storage,
            layout,
            writer: uuid::Uuid::new_v4().simple().to_string(),
            chunk_states,
            tx: OnceLock::new(),
        }
    }

    /// Appends one state, as a single-line JSON document (`serde_json::to_string`
    /// of an [`ItemState`]), to batch `batch`'s log; returns once it is
    /// durable, with the bytes it took.
    pub async fn append(&self, batch: &str, state_json: &str) -> Result<u64, ItemLogError> {
        let mut line = Vec::with_capacity(state_json.len() + 1);
        line.extend_from_slice(state_json.as_bytes());
        line.push(b'\n');
        let n = line.len() as u64;
        let (done, wait) = oneshot::channel();
        self.sender()
            .send(Append {
                batch: batch.to_string(),
                line,
                done,
            })
            .map_err(|_| ItemLogError::Closed)?;
        wait.await.map_err(|_| ItemLogError::Closed)??;
        Ok(n)
    }

    fn sender(&self) -> &mpsc::UnboundedSender<Append> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_loop(
                self.storage.clone(),
                self.layout.clone(),
                self.writer.clone(),
                self.chunk_states.clone(),
                rx,
            ));
            tx
        })
    }
}

/// Takes every waiting state, writes one chunk per batch, answers the waiters;
/// ends when every [`ItemLog`] handle is dropped.
async fn write_loop(
    storage: Storage,
    layout: Layout,
    writer: String,
    chunk_states: Histogram,
    mut rx: mpsc::UnboundedReceiver<Append>,
) {
    let mut seq: u64 = 0;
    let mut buf = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut buf, MAX_GROUP).await > 0 {
        let mut by_batch: BTreeMap<String, Vec<Append>> = BTreeMap::new();
        for a in buf.drain(..) {
            by_batch.entry(a.batch.clone()).or_default().push(a);
        }
        for (batch, group) in by_batch {
            seq += 1;
            chunk_states.observe(group.len() as f64);
            let result = match layout.item_chunk(&batch, &format!("{writer}-{seq:010}")) {
                Ok(uri) => write_chunk(&storage, &uri, &group).await,
                Err(e) => Err(ItemLogError::Key(e.to_string())),
            };
            for a in group {
                // A waiter that gave up (its job was cancelled) is fine to skip.
                let _ = a.done.send(result.clone());
            }
        }
    }
}

async fn write_chunk(
    storage: &Storage,
    uri: &ObjectUri,
    group: &[Append],
) -> Result<(), ItemLogError> {
    let mut body = Vec::with_capacity(group.iter().map(|a| a.line.len()).sum());
    for a in group {
        body.extend_from_slice(&a.line);
    }
    storage
        .put(uri, Bytes::from(body))
        .await
        .map_err(|e| ItemLogError::Write {
            uri: uri.to_string(),
            message: e.to_string(),
            transient: e.is_transient(),
        })
}

/// One state per response id from the chunks' states, in any order: a
/// `dead_lettered:*` state loses to any other (its job was replayed and
/// finished), a `cancelled` one to any but those, a failed one to an
/// analyzed one (its failure was retried with `engage retry`); then a state
/// whose paid call was made wins over a later cache hit, otherwise the first.
pub fn one_per_item(states: impl IntoIterator<Item = ItemState>) -> BTreeMap<String, ItemState> {
    let mut out: BTreeMap<String, ItemState> = BTreeMap::new();
    for s in states {
        let replace = match out.get(&s.response_id) {
            None => true,
            Some(have) if rank(have) != rank(&s) => rank(have) < rank(&s),
            Some(have) => !have.cost.called && s.cost.called,
        };
        if replace {
            out.insert(s.response_id.clone(), s);
        }
    }
    out
}

/// How much a state of an item counts when one item has several: an
/// analyzed state over a failure, a failure over an operator's cancel, a
/// cancel over a dead-lettered job's state.
fn rank(s: &ItemState) -> u8 {
    match s.outcome.failure_reason() {
        None => 3,
        Some(r) if r.starts_with(DEAD_LETTERED) => 0,
        Some(CANCELLED) => 1,
        Some(_) => 2,
    }
}

/// The failure reason of an item its batch's cancel made final (`engage
/// cancel`).
pub const CANCELLED: &str = "cancelled";

/// Whether a state records that its job was dead-lettered.
pub fn dead_lettered(s: &ItemState) -> bool {
    s.outcome
        .failure_reason()
        .is_some_and(|r| r.starts_with(DEAD_LETTERED))
}

/// Every item state a batch's log holds, one per response id
/// ([`one_per_item`]): what the ledger rebuild, the reconciler and a replay's
/// reopening read back.
pub async fn read_batch(
    storage: &Storage,
    layout: &Layout,
    batch: &str,
) -> Result<BTreeMap<String, ItemState>, JobError> {
    let mut logged = Vec::new();
    for uri in storage.list(&layout.items_prefix(batch)?).await? {
        logged.extend(
            crate::store_io::get_jsonl::<ItemState>(storage, &uri)
                .await?
                .unwrap_or_default(),
        );
    }
    Ok(one_per_item(logged))
}

/// Prefix of the failure reason of an item whose job was dead-lettered.
pub const DEAD_LETTERED: &str = "dead_lettered:";

#[cfg(test)]
mod tests {
    use super::*;
    use engage_model::AnalysisOutcome;
    use engage_model::jobs::ItemCost;

    fn state(rid: &str, called: bool) -> ItemState {
        ItemState {
            response_id: rid.into(),
            user_id: "u".into(),
            outcome: AnalysisOutcome::Failed {
                reason: "x".into(),
                detail: String::new(),
            },
            cost: ItemCost {
                called,
                cache_hit: !called,
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_paid_state_wins_over_a_redelivered_cache_hit() {
        let m = one_per_item([state("a", false), state("a", true), state("a", false)]);
        assert!(m["a"].cost.called);
        let m = one_per_item([state("b", false), state("c", true)]);
        assert_eq!(m.len(), 2);
        assert!(!m["b"].cost.called);
    }

    #[test]
    fn a_dead_lettered_state_loses_to_the_replayed_job_in_any_order() {
        let mut dead = state("a", false);
        dead.outcome = AnalysisOutcome::Failed {
            reason: "dead_lettered:max_attempts".into(),
            detail: String::new(),
        };
        let again = state("a", false);
        for order in [[dead.clone(), again.clone()], [again.clone(), dead.clone()]] {
            let m = one_per_item(order);
            assert!(!dead_lettered(&m["a"]), "{:?}", m["a"]);
        }
        // Alone, it stands.
        assert!(dead_lettered(&one_per_item([dead])["a"]));
    }

    #[test]
    fn a_retried_failure_loses_to_the_analyzed_state_in_any_order() {
        let failed = state("a", false);
        let mut analyzed = state("a", false);
        analyzed.outcome = AnalysisOutcome::Ok(engage_model::AnalysisResult {
            emotional_score: 1.0,
            engagement_score: 2.0,
            dominant_emotion: engage_model::DominantEmotion::Calm,
            engagement_state: engage_model::EngagementState::Engaged,
            pronunciation_quality: engage_model::PronunciationQuality::Good,
            audio_quality: engage_model::AudioQuality::Good,
            analyzer: "acoustic:1".into(),
        });
        let mut cancelled = state("a", false);
        cancelled.outcome = AnalysisOutcome::Failed {
            reason: CANCELLED.into(),
            detail: String::new(),
        };
        for order in [
            [failed.clone(), analyzed.clone()],
            [analyzed.clone(), failed.clone()],
        ] {
            assert_eq!(one_per_item(order)["a"].outcome.failure_reason(), None);
        }
        for order in [
            [failed.clone(), cancelled.clone()],
            [cancelled.clone(), failed.clone()],
        ] {
            assert_eq!(one_per_item(order)["a"].outcome.failure_reason(), Some("x"));
        }
    }

    #[tokio::test]
    async fn concurrent_appends_share_chunks_and_every_state_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let root = ObjectUri::file(dir.path()).unwrap();
        let storage = Storage::local(None);
        let sizes = Histogram::with_opts(prometheus::HistogramOpts::new("t", "t")).unwrap();
        let log = std::sync::Arc::new(ItemLog::new(
            storage.clone(),
            Layout::new(root.clone()),
            sizes.clone(),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let log = log.clone();
            let json = serde_json::to_string(&state(&format!("r{i}"), true)).unwrap();
            tasks.spawn(async move { log.append("b1", &json).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(r.unwrap().unwrap() > 0);
        }
        let layout = Layout::new(root);
        let chunks = storage
            .list(&layout.items_prefix("b1").unwrap())
            .await
            .unwrap();
        assert!(
            !chunks.is_empty() && chunks.len() < 200,
            "{} chunks",
            chunks.len()
        );
        let mut all = Vec::new();
        for c in chunks {
            all.extend(
                crate::store_io::get_jsonl::<ItemState>(&storage, &c)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(one_per_item(all).len(), 200);
    }
}
