//! The batch ledger in Redis: expected and completed work per batch, and the
//! fan-in that emits exactly one aggregate job per learner and one report per
//! batch.
//!
//! All keys of a batch share the hash tag `{ns:batch}`, so every script runs
//! on one Redis Cluster slot. Completion is recorded with set membership, never
//! blind increments: a redelivered completion is not counted twice.
//!
//! A learner is complete only when (1) every clean piece of the batch has
//! finished — the plan's pieces and every segment a clean pre-pass added with
//! [`Ledger::expect_pieces`] before publishing it (`pieces_extra`) — (2) every match job those pieces produced has registered its
//! items ("registered"), and (3) each of the learner's items is final. Claims
//! store the claiming job's id, so a job that crashed after claiming re-emits
//! on redelivery instead of losing the emission.
//!
//! If the ledger is gone (Redis restarted without persistence, `FLUSHALL`),
//! scripts answer [`LedgerError::Lost`] and the caller rebuilds it from the
//! durable store (see `rebuild`).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::redis_conn::RedisConn;

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Redis did not answer (transient).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The batch's ledger is missing: rebuild it from the store.
    #[error("batch ledger missing in Redis (data lost?); rebuild from the store")]
    Lost,
    /// A script answered something unexpected.
    #[error("unexpected ledger answer: {0}")]
    Protocol(String),
}

/// Batch ledger operations of one namespace.
#[derive(Clone, Debug)]
pub struct Ledger {
    conn: RedisConn,
    ns: String,
}

/// A learner's items to register after matching.
#[derive(Debug, Default, Clone)]
pub struct LearnerItems {
    /// Every response id of the learner in this match job.
    pub items: Vec<String>,
    /// Those already final at match time (unmatched, no audio).
    pub final_items: Vec<String>,
}

/// What the fan-in decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanIn {
    /// Nothing to emit yet.
    Wait,
    /// Emit the follow-up (this job holds the claim).
    Emit,
}

/// Progress of a batch, for `engage status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Clean pieces in the plan, plus the segments pre-passes have cut so far.
    pub pieces_expected: u64,
    /// Clean pieces finished.
    pub pieces_done: u64,
    /// Match jobs the finished pieces emitted.
    pub match_expected: u64,
    /// Match jobs that registered their items.
    pub match_done: u64,
    /// Whether every item of the batch is registered (no more can appear).
    pub registered: bool,
    /// Registered items (kept responses).
    pub items: u64,
    /// Items whose audio was downloaded.
    pub downloaded: u64,
    /// Items in a final state.
    pub final_items: u64,
    /// Learners with registered items.
    pub learners: u64,
    /// Learners whose rows are written.
    pub learners_aggregated: u64,
    /// Whether the batch's report is written.
    pub complete: bool,
    /// Failed items by reason.
    pub failed: BTreeMap<String, u64>,
    /// What the reconciler repaired in this batch, by kind.
    pub repaired: BTreeMap<String, u64>,
    /// Items reopened because their dead-lettered job was replayed, or
    /// their failure retried (`engage retry`).
    pub reopened: u64,
    /// An operator paused the batch (`engage pause`): its jobs are parked.
    #[serde(default)]
    pub paused: bool,
    /// An operator cancelled the batch (`engage cancel`): it has ended
    /// without a report.
    #[serde(default)]
    pub cancelled: bool,
}

/// Why a batch stopped: a job of a stage whose work is the batch's own
/// (clean, match, aggregate) was dead-lettered. The batch ends *halted*
/// rather than waiting forever; replaying the job resumes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Halt {
    /// The dead-lettered job.
    #[serde(skip)]
    pub job_id: String,
    /// Its stage.
    pub stage: String,
    /// The dead-letter reason (`poison`, `max_attempts`, `delivery_limit`, …).
    pub reason: String,
    /// The last error, one line.
    pub error: String,
}

/// Prefix of the `meta` fields counting reconciler repairs.
const REPAIRED: &str = "repaired:";

/// Learners whose item states one pipeline drops at batch completion.
const STATE_DROP_CHUNK: usize = 500;

// A shared Lua prelude: is the batch registered? Claims registration for ARGV job id.
const REGISTERED: &str = r#"
local function registered(p, job)
  local exp = redis.call('HGET', p .. ':meta', 'pieces_expected')
  if not exp then return -1 end
  local reg = redis.call('HGET', p .. ':meta', 'registered')
  if reg == job then return 2 end
  if reg then return 1 end
  if redis.call('SCARD', p .. ':pieces_done') >= tonumber(exp) + redis.call('SCARD', p .. ':pieces_extra')
     and redis.call('SCARD', p .. ':match_done') >= redis.call('SCARD', p .. ':match_expected') then
    redis.call('HSET', p .. ':meta', 'registered', job)
    return 2
  end
  return 0
end
local function claim(key, job)
  local ok = redis.call('SET', key, job, 'NX')
  if ok then return 1 end
  if redis.call('GET', key) == job then return 1 end
  return 0
end
"#;

/// A fan-in script: the shared prelude, then `body`. Built once per script
/// (the statics below), so the SHA-1 is computed once and EVALSHA hits the
/// server's script cache; keys and values travel as KEYS/ARGV only.
fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{REGISTERED}\n{body}"))
}

/// Every per-batch key but the per-learner ones and `learners` (suffixes of
/// the batch prefix): what [`Ledger::complete`] gives a time to live.
const BATCH_KEYS: [&str; 12] = [
    "meta",
    "pieces_done",
    "pieces_extra",
    "match_expected",
    "match_done",
    "all_items",
    "downloaded",
    "all_final",
    "agg_done",
    "failed",
    "report_claim",
    "lock:rebuild",
];

/// Per-learner keys (`PREFIX:KIND:LEARNER`).
const LEARNER_KEYS: [&str; 3] = ["items", "final", "agg_claim"];

/// KEYS[1] = the batch prefix, ARGV[1] = the job id, ARGV[2] = the piece, ARGV[3..] = the match parts it produced.
static PIECE_DONE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local p = KEYS[1]
if not redis.call('HGET', p .. ':meta', 'pieces_expected') then return -1 end
redis.call('SADD', p .. ':pieces_done', ARGV[2])
for i = 3, #ARGV do redis.call('SADD', p .. ':match_expected', ARGV[i]) end
return registered(p, ARGV[1])
"#,
    )
});

/// KEYS[1] = the batch prefix, ARGV[1] = the job id, ARGV[2..] = segment pieces now expected.
static EXPECT_PIECES: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local p = KEYS[1]
if not redis.call('HGET', p .. ':meta', 'pieces_expected') then return -1 end
for i = 2, #ARGV do redis.call('SADD', p .. ':pieces_extra', ARGV[i]) end
return 0
"#,
    )
});

/// KEYS[1] = the batch prefix, ARGV[1] = the job id, ARGV[2] = the match part.
static MATCH_DONE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local p = KEYS[1]
if not redis.call('HGET', p .. ':meta', 'pieces_expected') then return -1 end
redis.call('SADD', p .. ':match_done', ARGV[2])
return registered(p, ARGV[1])
"#,
    )
});

/// KEYS[1] = the batch prefix, ARGV[1] = the job id, ARGV[2] = the learner, ARGV[3] = the response id, ARGV[4] = the failure reason (or empty), ARGV[5] = the state.
static FINALIZE_ITEM: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local p = KEYS[1]
local u = ARGV[2]
if not redis.call('HGET', p .. ':meta', 'pieces_expected') then return -1 end
redis.call('SADD', p .. ':final:' .. u, ARGV[3])
redis.call('SADD', p .. ':all_final', ARGV[3])
redis.call('HSETNX', p .. ':state:' .. u, ARGV[3], ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', p .. ':failed', ARGV[3], ARGV[4]) end
if registered(p, ARGV[1]) < 1 then return 0 end
if redis.call('SISMEMBER', p .. ':agg_done', u) == 1 then return 0 end
if redis.call('SCARD', p .. ':final:' .. u) < redis.call('SCARD', p .. ':items:' .. u) then return 0 end
return claim(p .. ':agg_claim:' .. u, ARGV[1]) * 2
"#,
    )
});

/// KEYS[1] = the batch prefix, ARGV[1] = the job id, ARGV[2] = the learner.
static TRY_CLAIM_LEARNER: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local p = KEYS[1]
local u = ARGV[2]
if registered(p, ARGV[1]) < 0 then return -1 end
if not redis.call('HGET', p .. ':meta', 'registered') then return 0 end
if redis.call('SISMEMBER', p .. ':agg_done', u) == 1 then return 0 end
if redis.call('SCARD', p .. ':final:' .. u) < redis.call('SCARD', p .. ':items:' .. u) then return 0 end
return claim(p .. ':agg_claim:' .. u, ARGV[1]) * 2
"#,
    )
});

/// KEYS[1] = the batch prefix, ARGV[1] = the job id, ARGV[2] = the learner (or empty for a scan).
static LEARNER_AGGREGATED: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local p = KEYS[1]
if registered(p, ARGV[1]) < 0 then return -1 end
if ARGV[2] ~= '' then redis.call('SADD', p .. ':agg_done', ARGV[2]) end
if not redis.call('HGET', p .. ':meta', 'registered') then return 0 end
if redis.call('SCARD', p .. ':agg_done') < redis.call('SCARD', p .. ':learners') then return 0 end
return claim(p .. ':report_claim', ARGV[1]) * 2
"#,
    )
});

impl Ledger {
    /// Ledger of namespace `ns`.
    pub fn new(conn: RedisConn, ns: impl Into<String>) -> Self {
        Self {
            conn,
            ns: ns.into(),
        }
    }

    /// The key prefix (with hash tag) of a batch.
    pub fn prefix(&self, batch: &str) -> String {
        format!("{{{}:{}}}", self.ns, batch)
    }

    /// Creates the batch's ledger (idempotent): `pieces` expected clean pieces.
    pub async fn open_batch(&self, batch: &str, pieces: u64) -> Result<(), LedgerError> {
        let p = self.prefix(batch);
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .hset_nx(format!("{p}:meta"), "pieces_expected", pieces)
            .hset_nx(
                format!("{p}:meta"),
                "created_ms",
                chrono::Utc::now().timestamp_millis(),
            )
            .query_async(&mut c)
            .await?;
        // The batch index lives in another cluster slot: a separate command.
        let _: () = c
            .zadd(
                format!("{}:batches", self.ns),
                batch,
                chrono::Utc::now().timestamp_millis(),
            )
            .await?;
        Ok(())
    }

    /// True if the batch's ledger exists.
    pub async fn exists(&self, batch: &str) -> Result<bool, LedgerError> {
        let mut c = self.conn.clone();
        Ok(
            c.hexists(format!("{}:meta", self.prefix(batch)), "pieces_expected")
                .await?,
        )
    }

    /// Records a finished clean piece and the match jobs it produced.
    /// Returns `Emit` if this completed registration (the caller must then scan).
    pub async fn piece_done(
        &self,
        batch: &str,
        piece: &str,
        match_parts: &[String],
        job: &str,
    ) -> Result<FanIn, LedgerError> {
        let mut args = vec![piece];
        args.extend(match_parts.iter().map(String::as_str));
        self.fan_in(&PIECE_DONE, batch, job, &args).await
    }

    /// Adds pieces to those the batch waits for beyond its plan's (the
    /// segments a clean pre-pass cut), before their jobs are published:
    /// registration then cannot complete until each one is done.
    pub async fn expect_pieces(
        &self,
        batch: &str,
        pieces: &[String],
        job: &str,
    ) -> Result<FanIn, LedgerError> {
        let args: Vec<&str> = pieces.iter().map(String::as_str).collect();
        self.fan_in(&EXPECT_PIECES, batch, job, &args).await
    }

    /// Registers learners' items found by a match job (idempotent set adds).
    pub async fn register_items(
        &self,
        batch: &str,
        learners: &BTreeMap<String, LearnerItems>,
    ) -> Result<(), LedgerError> {
        let p = self.prefix(batch);
        let mut pipe = redis::pipe();
        for (u, li) in learners {
            pipe.sadd(format!("{p}:learners"), u).ignore();
            if !li.items.is_empty() {
                pipe.sadd(format!("{p}:items:{u}"), &li.items).ignore();
                pipe.sadd(format!("{p}:all_items"), &li.items).ignore();
            }
            if !li.final_items.is_empty() {
                pipe.sadd(format!("{p}:final:{u}"), &li.final_items)
                    .ignore();
                pipe.sadd(format!("{p}:all_final"), &li.final_items)
                    .ignore();
            }
        }
        let mut c = self.conn.clone();
        let _: () = pipe.query_async(&mut c).await?;
        Ok(())
    }

    /// Records a finished match job. `Emit` means registration just completed
    /// (or this job completed it before and is redelivered): scan learners.
    pub async fn match_done(
        &self,
        batch: &str,
        part: &str,
        job: &str,
    ) -> Result<FanIn, LedgerError> {
        self.fan_in(&MATCH_DONE, batch, job, &[part]).await
    }

    /// Runs a fan-in script with KEYS[1] = the batch prefix, ARGV[1] = the job id.
    async fn fan_in(
        &self,
        script: &Script,
        batch: &str,
        job: &str,
        args: &[&str],
    ) -> Result<FanIn, LedgerError> {
        let mut inv = script.key(self.prefix(batch));
        inv.arg(job);
        for a in args {
            inv.arg(*a);
        }
        let mut c = self.conn.clone();
        Self::registration(inv.invoke_async(&mut c).await?)
    }

    fn registration(v: i64) -> Result<FanIn, LedgerError> {
        match v {
            -1 => Err(LedgerError::Lost),
            2 => Ok(FanIn::Emit),
            0 | 1 => Ok(FanIn::Wait),
            other => Err(LedgerError::Protocol(other.to_string())),
        }
    }

    /// Marks an item downloaded (progress only).
    pub async fn downloaded(&self, batch: &str, response_id: &str) -> Result<(), LedgerError> {
        let mut c = self.conn.clone();
        let _: () = c
            .sadd(format!("{}:downloaded", self.prefix(batch)), response_id)
            .await?;
        Ok(())
    }

    /// Marks an item final and keeps its state (`state`, JSON) for the
    /// learner's aggregate; `Emit` means the learner is now complete and this
    /// job holds the claim to emit its aggregate job. The first state
    /// recorded for an item stays (a redelivery's cache hit does not replace
    /// the paid call).
    pub async fn finalize_item(
        &self,
        batch: &str,
        user: &str,
        response_id: &str,
        failed_reason: Option<&str>,
        state: &str,
        job: &str,
    ) -> Result<FanIn, LedgerError> {
        self.fan_in(
            &FINALIZE_ITEM,
            batch,
            job,
            &[user, response_id, failed_reason.unwrap_or(""), state],
        )
        .await
    }

    /// The recorded states (JSON) of a learner's final items, by response id.
    pub async fn item_states(
        &self,
        batch: &str,
        user: &str,
    ) -> Result<BTreeMap<String, String>, LedgerError> {
        let p = self.prefix(batch);
        let mut c = self.conn.clone();
        let (exists, states): (bool, BTreeMap<String, String>) = redis::pipe()
            .hexists(format!("{p}:meta"), "pieces_expected")
            .hgetall(format!("{p}:state:{user}"))
            .query_async(&mut c)
            .await?;
        if !exists {
            return Err(LedgerError::Lost);
        }
        Ok(states)
    }

    /// For a scan after registration: claims the learner if complete.
    pub async fn try_claim_learner(
        &self,
        batch: &str,
        user: &str,
        job: &str,
    ) -> Result<FanIn, LedgerError> {
        self.fan_in(&TRY_CLAIM_LEARNER, batch, job, &[user]).await
    }

    /// All learners of a batch (SSCAN, so a big batch does not block Redis).
    pub async fn learners(&self, batch: &str) -> Result<Vec<String>, LedgerError> {
        Ok(self.members(batch, "learners").await?.into_iter().collect())
    }

    /// The members of one of the batch's sets (SSCAN, so a big batch does not
    /// block Redis): `learners`, `agg_done`, `all_final`, `pieces_done`,
    /// `match_done`, `match_expected`.
    pub async fn members(
        &self,
        batch: &str,
        set: &str,
    ) -> Result<std::collections::BTreeSet<String>, LedgerError> {
        let mut c = self.conn.clone();
        let mut out = std::collections::BTreeSet::new();
        let mut it: redis::AsyncIter<String> =
            c.sscan(format!("{}:{set}", self.prefix(batch))).await?;
        while let Some(u) = futures::StreamExt::next(&mut it).await {
            out.insert(u?);
        }
        Ok(out)
    }

    /// Reopens an item made final as failed with a reason starting with
    /// `reason_prefix` (`dead_lettered:` for a replayed job, `""` for any
    /// failure, for `engage retry`): it is no longer final, its learner is no longer aggregated
    /// and the batch no longer complete (claims dropped, so the replayed job's
    /// completion claims them again), and the batch's keys lose the time to
    /// live completion gave them. `Ok(false)`: the item did not fail that way
    /// (nothing to reopen). [`LedgerError::Lost`]: the ledger is gone.
    pub async fn reopen_item(
        &self,
        batch: &str,
        user: &str,
        rid: &str,
        reason_prefix: &str,
    ) -> Result<bool, LedgerError> {
        static REOPEN: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r#"
local p = KEYS[1]
local u = ARGV[1]
local r = ARGV[2]
if not redis.call('HGET', p .. ':meta', 'pieces_expected') then return -1 end
local reason = redis.call('HGET', p .. ':failed', r)
if not reason or string.sub(reason, 1, #ARGV[3]) ~= ARGV[3] then return 0 end
redis.call('SREM', p .. ':final:' .. u, r)
redis.call('SREM', p .. ':all_final', r)
redis.call('HDEL', p .. ':failed', r)
redis.call('HDEL', p .. ':state:' .. u, r)
redis.call('SREM', p .. ':agg_done', u)
redis.call('DEL', p .. ':agg_claim:' .. u, p .. ':report_claim')
redis.call('HDEL', p .. ':meta', 'complete')
redis.call('HINCRBY', p .. ':meta', 'reopened', 1)
for _, k in ipairs({'meta', 'pieces_done', 'pieces_extra', 'match_expected', 'match_done', 'all_items',
    'downloaded', 'all_final', 'agg_done', 'failed', 'learners'}) do
  redis.call('PERSIST', p .. ':' .. k)
end
local learners = redis.call('SMEMBERS', p .. ':learners')
for _, l in ipairs(learners) do
  redis.call('PERSIST', p .. ':items:' .. l)
  redis.call('PERSIST', p .. ':final:' .. l)
end
return 1
"#,
            )
        });
        let mut c = self.conn.clone();
        let got: i64 = REOPEN
            .key(self.prefix(batch))
            .arg(user)
            .arg(rid)
            .arg(reason_prefix)
            .invoke_async(&mut c)
            .await?;
        match got {
            -1 => Err(LedgerError::Lost),
            n => Ok(n == 1),
        }
    }

    /// Puts back a learner's recorded item states (dropped when its batch
    /// completed) so that it can be aggregated again: only for items that are
    /// final, and never over a state recorded since.
    pub async fn put_states(
        &self,
        batch: &str,
        user: &str,
        states: &BTreeMap<String, String>,
    ) -> Result<(), LedgerError> {
        static PUT: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r#"
local p = KEYS[1]
local u = ARGV[1]
for i = 2, #ARGV, 2 do
  if redis.call('SISMEMBER', p .. ':final:' .. u, ARGV[i]) == 1 then
    redis.call('HSETNX', p .. ':state:' .. u, ARGV[i], ARGV[i + 1])
  end
end
return 0
"#,
            )
        });
        let mut c = self.conn.clone();
        for chunk in states.iter().collect::<Vec<_>>().chunks(STATE_DROP_CHUNK) {
            let mut inv = PUT.key(self.prefix(batch));
            inv.arg(user);
            for (rid, state) in chunk {
                inv.arg(rid.as_str()).arg(state.as_str());
            }
            let _: i64 = inv.invoke_async(&mut c).await?;
        }
        Ok(())
    }

    /// Adds `n` to the batch's count of reconciler repairs of `kind` (shown
    /// by `engage status`).
    pub async fn record_repairs(&self, batch: &str, kind: &str, n: u64) -> Result<(), LedgerError> {
        let mut c = self.conn.clone();
        let _: () = c
            .hincr(
                format!("{}:meta", self.prefix(batch)),
                format!("{REPAIRED}{kind}"),
                n,
            )
            .await?;
        Ok(())
    }

    /// Records a learner's aggregate as written; `Emit` means every learner is
    /// done and this job holds the claim to emit the batch report.
    pub async fn learner_aggregated(
        &self,
        batch: &str,
        user: Option<&str>,
        job: &str,
    ) -> Result<FanIn, LedgerError> {
        self.fan_in(&LEARNER_AGGREGATED, batch, job, &[user.unwrap_or("")])
            .await
    }

    /// Marks the batch complete (its outputs are written), drops the item
    /// states it kept for the aggregate jobs (the learner files hold them
    /// now), so Redis does not keep ~0.3 KiB per item of every finished
    /// batch, and gives every other key of the batch `retention` to live:
    /// `engage status` answers for a finished batch that long, then its
    /// keys are gone (the outputs stay in the store). Batch-index entries
    /// whose ledger has expired are pruned on the way.
    pub async fn complete(&self, batch: &str, retention: Duration) -> Result<(), LedgerError> {
        let mut c = self.conn.clone();
        let _: () = c
            .hset(format!("{}:meta", self.prefix(batch)), "complete", 1)
            .await?;
        self.retire(batch, retention).await
    }

    /// What [`Ledger::complete`] does once the batch has ended (completed,
    /// or cancelled by an operator): drops the item states and gives every
    /// key of the batch `retention` to live.
    pub async fn retire(&self, batch: &str, retention: Duration) -> Result<(), LedgerError> {
        let p = self.prefix(batch);
        let mut c = self.conn.clone();
        let ttl = i64::try_from(retention.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for k in BATCH_KEYS {
            pipe.expire(format!("{p}:{k}"), ttl).ignore();
        }
        let _: () = pipe.query_async(&mut c).await?;
        for chunk in self.learners(batch).await?.chunks(STATE_DROP_CHUNK) {
            let mut pipe = redis::pipe();
            for u in chunk {
                pipe.unlink(format!("{p}:state:{u}")).ignore();
                for k in LEARNER_KEYS {
                    pipe.expire(format!("{p}:{k}:{u}"), ttl).ignore();
                }
            }
            let _: () = pipe.query_async(&mut c).await?;
        }
        // The learner set goes last: it names the per-learner keys above.
        let _: () = c.expire(format!("{p}:learners"), ttl).await?;
        self.prune_index(retention).await
    }

    /// Removes batch-index entries older than `retention` whose ledger is gone.
    async fn prune_index(&self, retention: Duration) -> Result<(), LedgerError> {
        let mut c = self.conn.clone();
        let index = format!("{}:batches", self.ns);
        let cutoff = chrono::Utc::now().timestamp_millis()
            - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let old: Vec<String> = c
            .zrangebyscore_limit(&index, "-inf", cutoff, 0, 100)
            .await?;
        for b in old {
            let alive: bool = c.exists(format!("{}:meta", self.prefix(&b))).await?;
            if !alive {
                let _: () = c.zrem(&index, &b).await?;
            }
        }
        Ok(())
    }

    /// Records that `batch` is halted by a dead-lettered job (several jobs
    /// may halt one batch). Kept for `ttl`; works without a ledger (a batch
    /// may be halted before it is planned), and enters the batch index if
    /// the batch is not there yet, so `engage batches` lists a batch halted
    /// before its plan (its entry is pruned like any other once no ledger
    /// backs it).
    pub async fn halt(&self, batch: &str, halt: &Halt, ttl: Duration) -> Result<(), LedgerError> {
        let key = format!("{}:halted", self.prefix(batch));
        let value = serde_json::to_string(halt).unwrap_or_default();
        let mut c = self.conn.clone();
        let _: () = redis::pipe()
            .hset(&key, &halt.job_id, value)
            .pexpire(&key, i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
            .query_async(&mut c)
            .await?;
        // The batch index lives in another cluster slot: a separate command.
        let _: () = redis::cmd("ZADD")
            .arg(format!("{}:batches", self.ns))
            .arg("NX")
            .arg(chrono::Utc::now().timestamp_millis())
            .arg(batch)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// The jobs that halted `batch` (empty if it is not halted).
    pub async fn halts(&self, batch: &str) -> Result<Vec<Halt>, LedgerError> {
        let mut c = self.conn.clone();
        let all: BTreeMap<String, String> =
            c.hgetall(format!("{}:halted", self.prefix(batch))).await?;
        Ok(all
            .into_iter()
            .filter_map(|(job_id, v)| {
                let h: Halt = serde_json::from_str(&v).ok()?;
                Some(Halt { job_id, ..h })
            })
            .collect())
    }

    /// Forgets one job's halt (it is being replayed); `true` if it was there.
    pub async fn clear_halt(&self, batch: &str, job_id: &str) -> Result<bool, LedgerError> {
        let mut c = self.conn.clone();
        let n: u64 = c
            .hdel(format!("{}:halted", self.prefix(batch)), job_id)
            .await?;
        Ok(n > 0)
    }

    /// Batch ids known to this namespace, newest first.
    pub async fn batches(&self) -> Result<Vec<String>, LedgerError> {
        let mut c = self.conn.clone();
        Ok(c.zrevrange(format!("{}:batches", self.ns), 0, -1).await?)
    }

    /// The batch index: every batch id of this namespace with the time its
    /// ledger was opened (ms since the epoch), newest first.
    pub async fn batch_index(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        let mut c = self.conn.clone();
        Ok(
            c.zrevrange_withscores(format!("{}:batches", self.ns), 0, -1)
                .await?,
        )
    }

    /// Progress counters of a batch (`None` if the ledger does not exist).
    pub async fn progress(&self, batch: &str) -> Result<Option<Progress>, LedgerError> {
        let p = self.prefix(batch);
        let mut c = self.conn.clone();
        let meta: BTreeMap<String, String> = c.hgetall(format!("{p}:meta")).await?;
        let Some(exp) = meta.get("pieces_expected") else {
            return Ok(None);
        };
        let (pd, px, me, md, it, dl, fi, le, ag): (u64, u64, u64, u64, u64, u64, u64, u64, u64) =
            redis::pipe()
                .scard(format!("{p}:pieces_done"))
                .scard(format!("{p}:pieces_extra"))
                .scard(format!("{p}:match_expected"))
                .scard(format!("{p}:match_done"))
                .scard(format!("{p}:all_items"))
                .scard(format!("{p}:downloaded"))
                .scard(format!("{p}:all_final"))
                .scard(format!("{p}:learners"))
                .scard(format!("{p}:agg_done"))
                .query_async(&mut c)
                .await?;
        let repaired = meta
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(REPAIRED)?.to_string(), v.parse().ok()?)))
            .collect();
        let failed_by_item: BTreeMap<String, String> = c.hgetall(format!("{p}:failed")).await?;
        let mut failed = BTreeMap::new();
        for reason in failed_by_item.into_values() {
            *failed.entry(reason).or_insert(0) += 1;
        }
        Ok(Some(Progress {
            pieces_expected: exp.parse::<u64>().unwrap_or(0).saturating_add(px),
            pieces_done: pd,
            match_expected: me,
            match_done: md,
            registered: meta.contains_key("registered"),
            items: it,
            downloaded: dl,
            final_items: fi,
            learners: le,
            learners_aggregated: ag,
            complete: meta.get("complete").is_some_and(|v| v == "1"),
            failed,
            repaired,
            reopened: meta
                .get("reopened")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            paused: meta.contains_key(crate::batch_control::PAUSED),
            cancelled: meta.contains_key(crate::batch_control::CANCELLED),
        }))
    }

    /// A short lock (SET NX PX) for rebuilds, held by `owner`.
    pub async fn try_lock(
        &self,
        batch: &str,
        what: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<bool, LedgerError> {
        let mut c = self.conn.clone();
        let ok: Option<String> = redis::cmd("SET")
            .arg(format!("{}:lock:{what}", self.prefix(batch)))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut c)
            .await?;
        Ok(ok.is_some())
    }

    /// Releases a lock taken with [`Ledger::try_lock`] if `owner` still holds
    /// it: a holder whose lock expired (and was taken by another) must not
    /// release the other's.
    pub async fn unlock(&self, batch: &str, what: &str, owner: &str) -> Result<(), LedgerError> {
        static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
            )
        });
        let mut c = self.conn.clone();
        let _: i64 = UNLOCK
            .key(format!("{}:lock:{what}", self.prefix(batch)))
            .arg(owner)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    /// Takes or keeps the fleet-wide lead of `role` for `owner` for `ttl_ms`:
    /// true if `owner` holds it now (taken free, or renewed). One leader at a
    /// time; a leader that dies loses it when the time runs out.
    pub async fn lead(&self, role: &str, owner: &str, ttl_ms: u64) -> Result<bool, LedgerError> {
        static LEAD: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                r#"
local cur = redis.call('GET', KEYS[1])
if cur == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
            )
        });
        let mut c = self.conn.clone();
        let got: i64 = LEAD
            .key(format!("{}:lead:{role}", self.ns))
            .arg(owner)
            .arg(ttl_ms)
            .invoke_async(&mut c)
            .await?;
        Ok(got == 1)
    }
}

/// What a scan of a registered batch found to emit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanResult {
    /// Learners whose aggregate job this caller must emit.
    pub learners: Vec<String>,
    /// True if this caller must emit the batch report.
    pub report: bool,
}

impl Ledger {
    /// After registration completed: claims every complete learner not yet
    /// aggregated, and the report if every learner is aggregated.
    pub async fn scan(&self, batch: &str, job: &str) -> Result<ScanResult, LedgerError> {
        let mut out = ScanResult::default();
        for u in self.learners(batch).await? {
            if self.try_claim_learner(batch, &u, job).await? == FanIn::Emit {
                out.learners.push(u);
            }
        }
        out.report = self.learner_aggregated(batch, None, job).await? == FanIn::Emit;
        Ok(out)
    }

    /// Bulk form of the durable facts, used by the rebuild after data loss.
    ///
    /// The batch's `pieces_expected` (what every script checks first) is
    /// written last: until every fact is back, concurrent ledger calls see
    /// the batch as lost and wait for the rebuild instead of judging a
    /// half-restored ledger (which could complete registration or a learner
    /// early).
    pub async fn restore(&self, batch: &str, facts: &RestoredFacts) -> Result<(), LedgerError> {
        let p = self.prefix(batch);
        let mut pipe = redis::pipe();
        for piece in &facts.pieces_done {
            pipe.sadd(format!("{p}:pieces_done"), piece).ignore();
        }
        for piece in &facts.pieces_extra {
            pipe.sadd(format!("{p}:pieces_extra"), piece).ignore();
        }
        for m in &facts.match_expected {
            pipe.sadd(format!("{p}:match_expected"), m).ignore();
        }
        for m in &facts.match_done {
            pipe.sadd(format!("{p}:match_done"), m).ignore();
        }
        for (rid, item) in &facts.final_items {
            let u = &item.user_id;
            pipe.sadd(format!("{p}:final:{u}"), rid).ignore();
            pipe.sadd(format!("{p}:all_final"), rid).ignore();
            pipe.hset_nx(format!("{p}:state:{u}"), rid, &item.state)
                .ignore();
            if let Some(r) = &item.failed_reason {
                pipe.hset(format!("{p}:failed"), rid, r).ignore();
            }
        }
        for u in &facts.aggregated {
            pipe.sadd(format!("{p}:agg_done"), u).ignore();
        }
        let mut c = self.conn.clone();
        let _: () = pipe.query_async(&mut c).await?;
        self.register_items(batch, &facts.learners).await?;
        self.open_batch(batch, facts.pieces_expected).await
    }
}

/// Everything the store says about a batch's progress (see `layout`).
#[derive(Debug, Default, Clone)]
pub struct RestoredFacts {
    /// From `batch.json`.
    pub pieces_expected: u64,
    /// Segments the clean pre-pass stored (expected beyond the plan's pieces).
    pub pieces_extra: Vec<String>,
    /// Pieces with a `done.json`.
    pub pieces_done: Vec<String>,
    /// `piece:partition` ids the done pieces produced.
    pub match_expected: Vec<String>,
    /// `piece:partition` ids with a matched file.
    pub match_done: Vec<String>,
    /// Items per learner from the matched files.
    pub learners: BTreeMap<String, LearnerItems>,
    /// Items with a state in the item log, by response id.
    pub final_items: BTreeMap<String, RestoredItem>,
    /// Learners with a rows file.
    pub aggregated: Vec<String>,
}

/// One item's final state, as the item log holds it.
#[derive(Debug, Clone)]
pub struct RestoredItem {
    /// Its learner.
    pub user_id: String,
    /// Why it failed, if it did.
    pub failed_reason: Option<String>,
    /// The state (JSON), as [`Ledger::finalize_item`] records it.
    pub state: String,
}
