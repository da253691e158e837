//! An operator's control of one batch: pause, resume and cancel (`engage
//! pause|resume|cancel BATCH`), as the ledger records it and the worker
//! loop obeys it.
//!
//! The state lives in the batch ledger's `meta` hash: field [`PAUSED`] or
//! [`CANCELLED`] (the time the operator acted, ms since the epoch), changed
//! by one script that checks the batch's state and sets the field in one
//! step, so repeats are harmless and a complete batch is never touched.
//! Before it runs a job, the worker loop reads the batch's state (one
//! `HMGET`, [`control_cmd`], sent in the same round trip as the job's
//! completion-marker check, so it costs no round trip of its own):
//!
//! - **paused**: the job is parked on the wait ladder for
//!   [`PAUSED_RECHECK`] without spending an attempt (and `engage resume
//!   BATCH` sends the batch's parked jobs back at once);
//! - **cancelled**: the job is acked and dropped (`engage_jobs_total
//!   {outcome="cancelled"}`), so nothing, a Gemini call least of all, is
//!   paid for a cancelled batch once the cancel is seen. `engage cancel`
//!   makes the batch's open items final as `cancelled` ([`finalize_cancelled`],
//!   in the item log and the ledger) and retires the batch's keys: the batch
//!   ends *cancelled*, without a report.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use redis::Script;

use crate::item_log::CANCELLED as CANCELLED_REASON;
use crate::ledger::{Ledger, LedgerError};
use crate::redis_conn::RedisConn;
use crate::storage::{ObjectUri, Storage, StorageError, UriError};
use engage_model::AnalysisOutcome;
use engage_model::jobs::{ItemCost, ItemState};
use engage_model::layout::Layout;

/// The `meta` field of a paused batch.
pub const PAUSED: &str = "paused";

/// The `meta` field of a cancelled batch.
pub const CANCELLED: &str = "cancelled";

/// How long a paused batch's job waits on the ladder before a worker looks
/// at its batch again: one rung (2^5 s), so a parked job makes one hop.
pub const PAUSED_RECHECK: Duration = Duration::from_secs(32);

/// Learners whose open items one pipeline reads.
const CHUNK: usize = 500;

/// What an operator made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Its jobs run.
    Running,
    /// Its jobs are parked until `engage resume BATCH`.
    Paused,
    /// It has ended; its jobs are dropped.
    Cancelled,
}

/// A control command's verb (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `engage pause BATCH`.
    Pause,
    /// `engage resume BATCH`.
    Resume,
    /// `engage cancel BATCH`.
    Cancel,
}

impl Verb {
    /// The command's name, as the script takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
        }
    }
}

/// What a control command changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// The batch's state changed.
    Yes,
    /// It was that way already (a repeat): nothing changed.
    Already,
}

/// Why a control command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No ledger for the batch.
    #[error(
        "unknown batch {0:?}: never enqueued, not planned yet, or finished longer ago than the ledger keeps it"
    )]
    UnknownBatch(String),
    /// The batch has its report already.
    #[error("batch {batch} is complete: there is nothing to {verb}")]
    Complete {
        /// The batch.
        batch: String,
        /// The refused command.
        verb: &'static str,
    },
    /// The batch was cancelled (final).
    #[error("batch {batch} was cancelled: it cannot {verb} (a cancel is final)")]
    Cancelled {
        /// The batch.
        batch: String,
        /// The refused command.
        verb: &'static str,
    },
    /// The batch has not ended (retry re-runs an ended batch's failures).
    #[error(
        "batch {0} has not ended: `engage retry` re-runs the failed items of an ended batch (see `engage status {0} --wait`)"
    )]
    NotEnded(String),
    /// Not a batch id at all.
    #[error("invalid batch id {0:?}: use 1-64 characters of [A-Za-z0-9._-]")]
    InvalidId(String),
    /// Redis failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store failed.
    #[error("store: {0}")]
    Storage(#[from] StorageError),
    /// A store key could not be formed.
    #[error("store key: {0}")]
    Key(#[from] UriError),
}

impl From<redis::RedisError> for ControlError {
    fn from(e: redis::RedisError) -> Self {
        Self::Ledger(LedgerError::Redis(e))
    }
}

/// The control state of `batch` (`Running` when it has no ledger yet).
pub async fn control(
    conn: &RedisConn,
    ledger: &Ledger,
    batch: &str,
) -> Result<Control, LedgerError> {
    let mut c = conn.clone();
    let answer: ControlAnswer = control_cmd(ledger, batch).query_async(&mut c).await?;
    Ok(control_of(answer))
}

/// What [`control_cmd`] answers: the `paused` and `cancelled` fields.
pub type ControlAnswer = (Option<String>, Option<String>);

/// The one command [`control`] sends (`HMGET` of the batch's `meta`), for a
/// caller that sends it in a round trip it makes anyway (the worker loop,
/// with the job's completion marker); [`control_of`] reads its answer.
pub fn control_cmd(ledger: &Ledger, batch: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(format!("{}:meta", ledger.prefix(batch)))
        .arg(PAUSED)
        .arg(CANCELLED);
    cmd
}

/// The control state [`control_cmd`]'s answer says.
pub fn control_of((paused, cancelled): ControlAnswer) -> Control {
    match (paused, cancelled) {
        (_, Some(_)) => Control::Cancelled,
        (Some(_), None) => Control::Paused,
        (None, None) => Control::Running,
    }
}

/// One batch, as a job that is about to pay for something sees it.
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a> {
    /// Redis.
    pub conn: &'a RedisConn,
    /// The namespace's ledger.
    pub ledger: &'a Ledger,
    /// The batch.
    pub batch: &'a str,
}

impl BatchRef<'_> {
    /// True if the batch was cancelled since its job started: a last look
    /// before a paid call that waited for its quota slot. Redis trouble
    /// answers `false` (the call goes ahead, as it would have a moment
    /// earlier).
    pub async fn cancelled(&self) -> bool {
        matches!(
            control(self.conn, self.ledger, self.batch).await,
            Ok(Control::Cancelled)
        )
    }
}

/// KEYS[1] = the batch's `meta`, ARGV[1] = the verb, ARGV[2] = now (ms).
/// -1: no ledger; -2: complete; -3: cancelled; 0: changed; 1: already so.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local m = KEYS[1]
if redis.call('HEXISTS', m, 'pieces_expected') == 0 then return -1 end
local verb = ARGV[1]
if verb == 'resume' then
  if redis.call('HDEL', m, 'paused') == 1 then return 0 end
  if redis.call('HEXISTS', m, 'cancelled') == 1 then return -3 end
  return 1
end
if redis.call('HEXISTS', m, 'cancelled') == 1 then
  if verb == 'cancel' then return 1 end
  return -3
end
if redis.call('HGET', m, 'complete') == '1' then return -2 end
if verb == 'pause' then
  if redis.call('HSETNX', m, 'paused', ARGV[2]) == 1 then return 0 end
  return 1
end
redis.call('HSET', m, 'cancelled', ARGV[2])
redis.call('HDEL', m, 'paused')
return 0
"#,
    )
});

/// Pauses, resumes or cancels `batch` (only the ledger's state; the caller
/// moves parked jobs and makes items final).
pub async fn set(
    conn: &RedisConn,
    ledger: &Ledger,
    batch: &str,
    verb: Verb,
) -> Result<Changed, ControlError> {
    let mut c = conn.clone();
    let got: i64 = SET
        .key(format!("{}:meta", ledger.prefix(batch)))
        .arg(verb.as_str())
        .arg(chrono::Utc::now().timestamp_millis())
        .invoke_async(&mut c)
        .await?;
    let verb = verb.as_str();
    match got {
        0 => Ok(Changed::Yes),
        1 => Ok(Changed::Already),
        -1 => Err(ControlError::UnknownBatch(batch.to_string())),
        -2 => Err(ControlError::Complete {
            batch: batch.to_string(),
            verb,
        }),
        -3 => Err(ControlError::Cancelled {
            batch: batch.to_string(),
            verb,
        }),
        other => Err(LedgerError::Protocol(other.to_string()).into()),
    }
}

/// Records `batch` as cancelled without looking at its ledger: for a ledger
/// rebuilt from the store after Redis lost it, whose store says the batch
/// was cancelled (`cancelled.json`). Written before the rebuilt ledger
/// exists, so no job of the batch runs in between.
pub async fn mark_cancelled(
    conn: &RedisConn,
    ledger: &Ledger,
    batch: &str,
) -> Result<(), LedgerError> {
    let mut c = conn.clone();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:meta", ledger.prefix(batch)))
        .arg(CANCELLED)
        .arg(chrono::Utc::now().timestamp_millis())
        .query_async(&mut c)
        .await?;
    Ok(())
}

/// The registered items of `batch` that are not final, as (learner,
/// response id).
pub async fn open_items(
    conn: &RedisConn,
    ledger: &Ledger,
    batch: &str,
) -> Result<Vec<(String, String)>, LedgerError> {
    let p = ledger.prefix(batch);
    let mut c = conn.clone();
    let mut out = Vec::new();
    for chunk in ledger.learners(batch).await?.chunks(CHUNK) {
        let mut pipe = redis::pipe();
        for u in chunk {
            pipe.sdiff(&[format!("{p}:items:{u}"), format!("{p}:final:{u}")]);
        }
        let open: Vec<BTreeSet<String>> = pipe.query_async(&mut c).await?;
        for (u, rids) in chunk.iter().zip(open) {
            out.extend(rids.into_iter().map(|r| (u.clone(), r)));
        }
    }
    Ok(out)
}

/// Makes `items` of a cancelled batch final as `cancelled`: durable in one
/// item-log chunk first, then in the ledger (whose fan-in claims are
/// harmless: the batch's aggregate jobs are dropped). Returns how many.
pub async fn finalize_cancelled(
    ledger: &Ledger,
    storage: &Storage,
    layout: &Layout,
    batch: &str,
    items: &[(String, String)],
) -> Result<usize, ControlError> {
    if items.is_empty() {
        return Ok(0);
    }
    let mut states = Vec::with_capacity(items.len());
    let mut chunk = Vec::new();
    for (user, rid) in items {
        let state = ItemState {
            response_id: rid.clone(),
            user_id: user.clone(),
            outcome: AnalysisOutcome::Failed {
                reason: CANCELLED_REASON.to_string(),
                detail: "the batch was cancelled (`engage cancel`) before this item ran".into(),
            },
            cost: ItemCost::default(),
        };
        let json = serde_json::to_string(&state)
            .map_err(|e| LedgerError::Protocol(format!("cannot serialise a state: {e}")))?;
        chunk.extend_from_slice(json.as_bytes());
        chunk.push(b'\n');
        states.push(json);
    }
    let name = format!("cancel-{}", uuid::Uuid::new_v4().simple());
    storage
        .put(&layout.item_chunk(batch, &name)?, Bytes::from(chunk))
        .await?;
    let job = format!("cancel:{batch}");
    for ((user, rid), state) in items.iter().zip(&states) {
        ledger
            .finalize_item(batch, user, rid, Some(CANCELLED_REASON), state, &job)
            .await?;
    }
    Ok(items.len())
}

/// The store's durable record that `batch` was cancelled (the ledger
/// forgets it after the finished-batch retention).
pub fn cancelled_marker(layout: &Layout, batch: &str) -> Result<ObjectUri, UriError> {
    layout.batch(batch)?.join("cancelled.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_name_the_commands() {
        assert_eq!(
            [Verb::Pause, Verb::Resume, Verb::Cancel].map(Verb::as_str),
            ["pause", "resume", "cancel"]
        );
    }

    #[test]
    fn refusals_say_what_and_why() {
        let e = ControlError::Complete {
            batch: "b1".into(),
            verb: "cancel",
        };
        assert_eq!(
            e.to_string(),
            "batch b1 is complete: there is nothing to cancel"
        );
        assert!(
            ControlError::UnknownBatch("b2".into())
                .to_string()
                .starts_with("unknown batch \"b2\"")
        );
    }
}
