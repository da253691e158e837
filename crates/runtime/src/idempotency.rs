//! Idempotency keys in Redis: "this job already completed" markers and short
//! leases that keep two deliveries of one item from both doing an expensive
//! side effect at once.
//!
//! Redis is the fast path only: every effect is also written under a
//! deterministic key in the durable store, so a lost marker costs a repeated,
//! harmless re-run, never a wrong result.

use std::time::Duration;

use redis::AsyncCommands;

use crate::redis_conn::RedisConn;
use engage_model::envelope::StageName;

/// How long completion markers are kept.
pub const DONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Redis failures of idempotency operations (transient for the job).
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Redis did not answer or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Completion markers and leases of one namespace.
#[derive(Clone, Debug)]
pub struct Idempotency {
    conn: RedisConn,
    ns: String,
}

/// A held lease; release it with [`Idempotency::release`].
#[derive(Debug)]
pub struct Lease {
    key: String,
    token: String,
}

impl Idempotency {
    /// Markers under `{ns}:…`.
    pub fn new(conn: RedisConn, ns: impl Into<String>) -> Self {
        Self {
            conn,
            ns: ns.into(),
        }
    }

    fn done_key(&self, stage: StageName, job_id: &str) -> String {
        format!("{}:done:{}:{}", self.ns, stage, job_id)
    }

    /// True if this job's effects and follow-up messages are already complete.
    pub async fn is_done(&self, stage: StageName, job_id: &str) -> Result<bool, IdempotencyError> {
        let mut c = self.conn.clone();
        Ok(c.exists(self.done_key(stage, job_id)).await?)
    }

    /// Forgets that a job completed, so that a re-published copy runs again
    /// (the reconciler re-drives work whose follow-ups were lost).
    pub async fn forget(&self, stage: StageName, job_id: &str) -> Result<(), IdempotencyError> {
        let mut c = self.conn.clone();
        let _: () = c.del(self.done_key(stage, job_id)).await?;
        Ok(())
    }

    /// Records that a job completed (its effects and follow-ups are durable).
    pub async fn mark_done(&self, stage: StageName, job_id: &str) -> Result<(), IdempotencyError> {
        let mut c = self.conn.clone();
        let _: () = c
            .set_ex(self.done_key(stage, job_id), 1u8, DONE_TTL.as_secs())
            .await?;
        Ok(())
    }

    /// Tries to take a lease on `item` for `ttl`. `None` means someone else holds it.
    pub async fn try_lease(
        &self,
        item: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, IdempotencyError> {
        let key = format!("{}:lease:{}", self.ns, item);
        let token = uuid::Uuid::new_v4().to_string();
        let mut c = self.conn.clone();
        let ok: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(ok.map(|_| Lease { key, token }))
    }

    /// Releases a lease if it is still ours (compare-and-delete).
    pub async fn release(&self, lease: Lease) -> Result<(), IdempotencyError> {
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        let mut c = self.conn.clone();
        let _: i64 = script
            .key(&lease.key)
            .arg(&lease.token)
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }
}
